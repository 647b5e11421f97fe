"""Faults during the whole program's `pulumi up`, through the real engine: an API server that restarts
under the Kubernetes layer, and a run that CI cancels in the middle of a join and in the middle of a
release's install.

The cases run in order on one cluster of the production stack's shape (tests/e2e/whole_program.py):

1. The API server restarts (stopped, then started on the same port, flags and etcd:
   `ApiServer.restart`) while the first Helm release of the Kubernetes layer installs, on the `up`
   that makes the cluster from nothing. The run rides it out, or fails naming what failed; after
   docs/operations.md's runbook "The API server restarted during `pulumi up`", the next `up`
   converges: every Kubernetes object the render has is on the API server and in the state, once,
   no other object carries the program's field manager, no Helm release is left pending, and a
   second `up` changes nothing.
2. A machine is added, and CI cancels the `up` while that machine's `install` runs: the K3s mirror holds
   its download of the binary (`K3sMirror.hold`), and the machine is frozen (every process in it
   SIGSTOPped) for as long as the cancel takes, so the step outlasts the grace CI gives and the
   interruption lands while it is in flight, every time.
3. A release (the NVIDIA device plugin's, which nothing depends on) is installed again, and CI cancels
   the `up` once Helm has recorded the install: the GPU agents are frozen from before Helm creates
   anything, so its DaemonSet's pods are not Ready and Helm's wait holds the install in flight.

CI's cancel is GitHub Actions' (docs.github.com, "Workflow cancellation reference"): SIGINT, 7500 ms
for the process to exit, SIGTERM, 2500 ms more, then the process tree is killed. `cancel_as_ci` sends
exactly that to the `pulumi` CLI the automation API runs. After each cancel the test does what the
runbook "A `pulumi up` was interrupted" says, with the same commands (the built `pulumi` and
`kubectl`), then `up`; the next `up` converges: nothing pending in the state, no lock, no machine
cordoned, every machine's steps in the state, every Secret of the render on the API server, no Helm
release pending, and a second `up` changes nothing.

Every fault is undone in a `finally` (machines resumed, the API server running), every wait bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi import automation as auto

from render.stack import PROJECT_DIR
from tests.e2e.apiserver import ApiServer, wait_until
from tests.e2e.engine import Engine, Run, name_of
from tests.e2e.k3s_cluster import provision
from tests.e2e.machines import Machine, run
from tests.e2e.test_kubernetes_layer import Object, path_of, warnings_of
from tests.e2e.whole_program import (
    Cluster,
    Variant,
    cluster_fixture,
    cluster_settings,
    machine_specs,
    stack_file,
    state,
)

pytestmark = pytest.mark.e2e

PRODUCTION = Variant("production, with faults", "production")
STACK = PRODUCTION.stack
COMMAND = "command:remote:Command"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
NVIDIA_COMPONENT = "sophia:platform:NvidiaGpu"
# GitHub Actions' cancel (docs.github.com, "Workflow cancellation reference"): SIGINT to the step's
# process, SIGTERM if it has not exited within 7500 ms, and the process tree killed 2500 ms later.
SIGINT_GRACE = 7.5
SIGTERM_GRACE = 2.5
STEP_TIMEOUT = 600.0
"""How long a case waits for the step it interrupts to start."""
RUN_TIMEOUT = 1200.0
SETTLE_TIMEOUT = 120.0
HELM_INSTALLING = 2.0
"""After its step starts, how long a release's install runs before the API server restarts: Helm has
recorded the release (pending-install) and is applying the chart."""
JOINING = "sophia-e2e-joining"
UNWATCHED_RELEASE = "nvidia-device-plugin"
"""The release the third case installs again: nothing depends on it, and its pods run on GPU machines only."""
FIELD_MANAGER = re.compile(r"^pulumi-kubernetes")
"""How the kubernetes provider names itself in an object's managedFields (server-side apply)."""
RUNBOOKS = PROJECT_DIR / "docs" / "operations.md"

# The runbooks' commands, exactly as docs/operations.md writes them (each case checks that it does).
CANCEL = f"pulumi cancel --stack {STACK} --yes"
DROP_PENDING_OPERATIONS = (
    f"pulumi stack export --stack {STACK} | jq 'del(.deployment.pending_operations)' "
    f"| pulumi stack import --stack {STACK}"
)
API_SERVER_READY = "kubectl get --raw /readyz"
PENDING_RELEASES = (
    "kubectl get secrets --all-namespaces --selector "
    "'owner=helm,status in (pending-install,pending-upgrade,pending-rollback)'"
)
DELETE_PENDING_RELEASE = "kubectl --namespace <namespace> delete secret <name>"


def runbook(title: str) -> str:
    """The text of docs/operations.md's runbook `### <title>`."""
    text = RUNBOOKS.read_text()
    found = re.search(rf"(?ms)^### {re.escape(title)}\n(.*?)(?=^##|\Z)", text)
    assert found, f"docs/operations.md has no runbook {title!r}"
    return found[1]


INTERRUPTED = "A `pulumi up` was interrupted"
API_RESTARTED = "The API server restarted during `pulumi up`"


# Its `destroy` at the end takes every machine the cases added too (whole_program.cluster_on_machines).
cluster = cluster_fixture(PRODUCTION)


@pytest.fixture(scope="module")
def rendered(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """`make render` of the stack on these machines (their addresses and keys, the mirrors), run in a
    process of its own: the mock engine's settings are process-wide, and this one runs the real engine."""
    out = tmp_path_factory.mktemp("faults-render")
    settings = cluster_settings(
        cluster.variant, cluster.fleet, k3s_mirror=cluster.mirror.url, k3s_sha256=cluster.pins,
        chart_mirror=cluster.chart_mirror, nodes=[dict(n) for n in cluster.nodes],
    )  # fmt: skip
    stack_path = out / f"Pulumi.{STACK}.yaml"
    stack_path.write_text(yaml.safe_dump({**stack_file(STACK), "config": settings}))
    done = subprocess.run(
        [sys.executable, "-m", "render", "--stack", STACK, "--stack-file", str(stack_path), "--out", str(out / "r")],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    # Exit 1 is a check of the render that failed (the e2e's mirrors are on this host); the resources
    # are written all the same, and only they are compared here.
    assert done.returncode in (0, 1), done.stderr[-2000:]
    resources: list[dict[str, Any]] = json.loads((out / "r" / "resources.json").read_text())["resources"]
    return resources


@pytest.fixture(scope="module")
def kubeconfig(apiserver: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator's kubeconfig for the runbooks' `kubectl` commands."""
    path = tmp_path_factory.mktemp("operator") / "kubeconfig"
    path.write_text(apiserver.kubeconfig)
    path.chmod(0o600)
    return path


# --- running `up` while the test acts ------------------------------------------------------------


@dataclass
class Background:
    """An engine operation in a thread of its own, so the test can act while it runs."""

    run: Run
    outcome: list[BaseException | None]
    output: list[str]

    @property
    def done(self) -> bool:
        return bool(self.outcome)

    @property
    def error(self) -> BaseException | None:
        return self.outcome[0] if self.outcome else None


@contextlib.contextmanager
def in_background(engine: Engine, operation: str) -> Iterator[Background]:
    """Starts `operation`; after the block, waits for it to end (bounded)."""
    count = len(engine.runs)
    outcome: list[BaseException | None] = []
    output: list[str] = []

    def target() -> None:
        try:
            engine.run(operation, on_output=output.append)
            outcome.append(None)
        except BaseException as error:  # kept for the test's thread, which judges it
            outcome.append(error)

    thread = threading.Thread(target=target, name=f"{operation}-in-background", daemon=True)
    thread.start()
    try:
        wait_until(f"the {operation} to start", lambda: len(engine.runs) > count or bool(outcome), 60)
        assert len(engine.runs) > count, f"{operation} did not start: {outcome}"
        yield Background(engine.runs[count], outcome, output)
    finally:
        thread.join(timeout=RUN_TIMEOUT)
    assert not thread.is_alive(), f"{operation} still running after {RUN_TIMEOUT:.0f} s"


def started(background: Background, what: str, match: Callable[[str, str, str], bool]) -> tuple[str, str, str]:
    """The first step of the run for which `match(op, type, urn)` holds, once the engine has started it."""

    def found() -> tuple[str, str, str] | None:
        return next((s for s in list(background.run.steps) if match(*s)), None)

    wait_until(what, lambda: found() is not None or background.done, STEP_TIMEOUT, interval=0.1)
    step = found()
    assert step is not None, f"the run ended before {what}: {background.error}"
    return step


# --- CI's cancel, and machines that hang ---------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and parent, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    found = _stat(pid)
    return found is not None and found[0] != "Z"


def cli_process(engine: Engine) -> int:
    """The `pulumi` CLI the automation API started for the running operation (a child of this process)."""
    command = engine.stack.workspace.pulumi_command.command
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        found = _stat(int(entry.name))
        if found is None or found[1] != os.getpid():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv[0].decode() == command:
                return int(entry.name)
    raise AssertionError(f"no {command} running under this process")


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (found := _stat(int(entry.name))) is not None:
            parents.setdefault(found[1], []).append(int(entry.name))
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        tree.append(current)
        queue.extend(parents.get(current, []))
    return tree


def exits_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def cancel_as_ci(pid: int) -> list[str]:
    """GitHub Actions' cancel of a step, to the CLI: SIGINT; SIGTERM 7.5 s later if it still runs; its
    process tree killed 2.5 s after that. Returns the signals it took."""
    os.kill(pid, signal.SIGINT)
    if exits_within(pid, SIGINT_GRACE):
        return ["SIGINT"]
    os.kill(pid, signal.SIGTERM)
    if exits_within(pid, SIGTERM_GRACE):
        return ["SIGINT", "SIGTERM"]
    for member in process_tree(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
    return ["SIGINT", "SIGTERM", "SIGKILL"]


def machine_processes(machine: Machine) -> set[int]:
    return {int(p) for p in run(["ip", "netns", "pids", machine.namespace], check=False).split()}


@contextlib.contextmanager
def frozen(machines: Sequence[Machine]) -> Iterator[None]:
    """Every process of each machine stopped (SIGSTOP), as a machine that hangs: its sshd answers no
    one and a step running on it makes no progress. All resumed (SIGCONT) after the block."""
    stopped: set[int] = set()
    try:
        # Twice: a process forked while the first pass ran is stopped by the second.
        for _ in range(2):
            for machine in machines:
                for pid in machine_processes(machine) - stopped:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGSTOP)
                    stopped.add(pid)
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


# --- what the runbooks say, run as they say it ----------------------------------------------------


def as_documented(
    cluster: Cluster, bins: Path, kubeconfig: Path, title: str, command: str, **placeholders: str
) -> subprocess.CompletedProcess[str]:
    """Runs `command` exactly as the runbook `title` writes it (its `<placeholders>` filled in), in an
    operator's shell (bash, `pipefail` as a careful operator sets it) whose PATH has the built `pulumi`
    and `kubectl` first, in the stack's project directory."""
    assert command in runbook(title), f"the runbook {title!r} does not say `{command}`"
    for key, value in placeholders.items():
        command = command.replace(f"<{key}>", shlex.quote(value))
    pulumi = Path(cluster.engine.stack.workspace.pulumi_command.command)
    env = {**os.environ, **cluster.engine.stack.workspace.env_vars, "KUBECONFIG": str(kubeconfig)}
    env["PATH"] = os.pathsep.join([str(pulumi.parent), str(bins), env["PATH"]])
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], cwd=cluster.engine.stack.workspace.work_dir, env=env,
        capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False,
    )  # fmt: skip
    cluster.engine.log.append(f"    runbook: `{command}` exited {done.returncode}")
    assert done.returncode == 0, f"`{command}`:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def pending_releases(cluster: Cluster, bins: Path, kubeconfig: Path, title: str) -> list[tuple[str, str]]:
    """(namespace, Secret) of every Helm release record left pending, as the runbook lists them."""
    listed = as_documented(cluster, bins, kubeconfig, title, PENDING_RELEASES)
    rows = [line.split() for line in listed.stdout.splitlines()[1:] if line.strip()]
    return [(row[0], row[1]) for row in rows]


def follow_runbook(cluster: Cluster, bins: Path, kubeconfig: Path, title: str) -> list[str]:
    """The runbook's commands in its order, but for the final `pulumi up`; returns what it did."""
    did = []
    if title == INTERRUPTED:
        as_documented(cluster, bins, kubeconfig, title, CANCEL)
        did.append(CANCEL)
        as_documented(cluster, bins, kubeconfig, title, DROP_PENDING_OPERATIONS)
        did.append(DROP_PENDING_OPERATIONS)
    else:
        ready = as_documented(cluster, bins, kubeconfig, title, API_SERVER_READY)
        assert ready.stdout.strip() == "ok", ready.stdout
        did.append(API_SERVER_READY)
    for namespace, name in pending_releases(cluster, bins, kubeconfig, title):
        as_documented(cluster, bins, kubeconfig, title, DELETE_PENDING_RELEASE, namespace=namespace, name=name)
        did.append(DELETE_PENDING_RELEASE.replace("<namespace>", namespace).replace("<name>", name))
    return did


# --- what a converged stack is --------------------------------------------------------------------


def pending_operations(engine: Engine) -> list[str]:
    deployment = engine.stack.export_stack().deployment or {}
    return [f"{op['type']} {name_of(op['resource']['urn'])}" for op in deployment.get("pending_operations") or []]


def lock_files(engine: Engine) -> list[str]:
    """The file backend's locks of the stack (a DIY backend keeps one per running update)."""
    backend = Path(engine.stack.workspace.env_vars["PULUMI_BACKEND_URL"].removeprefix("file://"))
    return sorted(str(p.relative_to(backend)) for p in (backend / ".pulumi" / "locks").rglob("*") if p.is_file())


def rendered_objects(rendered: list[dict[str, Any]]) -> set[tuple[str, str, str | None, str]]:
    """(apiVersion, kind, namespace, name) of every Kubernetes object the render has."""
    objects = set()
    for resource in rendered:
        inputs = resource.get("inputs") or {}
        if resource["type"].startswith("kubernetes:") and "kind" in inputs:
            metadata = inputs["metadata"]
            objects.add((inputs["apiVersion"], inputs["kind"], metadata.get("namespace"), metadata["name"]))
    return objects


def state_objects(engine: Engine) -> list[Object]:
    objects = []
    for resource in state(engine):
        outputs = resource.get("outputs") or {}
        if resource["type"].startswith("kubernetes:") and "kind" in outputs:
            metadata = outputs["metadata"]
            objects.append(
                Object(
                    resource["urn"], outputs["apiVersion"], outputs["kind"], metadata.get("namespace"), metadata["name"]
                )
            )
    return objects


def node_steps(resources: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Each machine's steps (`<node>-<step>` under its K3sNode) in these resources."""
    nodes = {r["urn"]: name_of(r["urn"]) for r in resources if r["type"] == "sophia:cluster:K3sNode"}
    steps: dict[str, set[str]] = {}
    for resource in resources:
        node = nodes.get(resource.get("parent") or "")
        if resource["type"] == COMMAND and node is not None:
            steps.setdefault(node, set()).add(name_of(resource["urn"]).removeprefix(f"{node}-"))
    return steps


def helm_records(apiserver: ApiServer) -> list[dict[str, str]]:
    """Helm's release records (its storage Secrets): name, namespace, version and status of each."""
    return [
        {**s["metadata"]["labels"], "namespace": s["metadata"]["namespace"]}
        for s in apiserver.items("/api/v1/secrets?labelSelector=owner%3Dhelm")
    ]


def assert_converged(cluster: Cluster, apiserver: ApiServer, rendered: list[dict[str, Any]]) -> None:
    """Nothing pending, nothing locked, nothing cordoned, nothing missing, no release half-done."""
    engine = cluster.engine
    assert pending_operations(engine) == []
    assert lock_files(engine) == []
    names = [n["name"] for n in cluster.nodes]
    for name in names:
        node = apiserver.get(f"/api/v1/nodes/{name}")
        assert node["spec"].get("unschedulable") is not True, f"{name} is left cordoned"
        assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True", name
    # Every machine's steps, each once: those the render has for it (an added agent: an agent's).
    expected = node_steps(rendered)
    agent_steps = next(s for n, s in expected.items() if n != names[0])
    in_state = node_steps(state(engine))
    assert set(in_state) == set(names)
    for name in names:
        assert in_state[name] == expected.get(name, agent_steps), name
    commands = [name_of(r["urn"]) for r in state(engine) if r["type"] == COMMAND]
    assert len(commands) == len(set(commands))
    # Every Secret of the render is on the API server.
    for api_version, kind, namespace, name in rendered_objects(rendered):
        if kind == "Secret":
            assert apiserver.exists(f"/api/{api_version}/namespaces/{namespace}/secrets/{name}"), f"{namespace}/{name}"
    # Every release of the render is deployed, its latest record too, and no record is pending.
    records = helm_records(apiserver)
    assert [r for r in records if r["status"].startswith("pending")] == []
    for resource in rendered:
        if resource["type"] == HELM_RELEASE:
            release, namespace = resource["inputs"]["name"], resource["inputs"]["namespace"]
            mine = [r for r in records if r["name"] == release and r["namespace"] == namespace]
            assert mine, f"no Helm record of {namespace}/{release}"
            latest = max(mine, key=lambda r: int(r["version"]))
            assert latest["status"] == "deployed", f"{namespace}/{release}: {latest}"


def assert_second_up_changes_nothing(engine: Engine) -> Run:
    again = engine.run("up")
    assert set(again.changes) == {"same"}, again.describe()
    return again


def cli_said(background: Background) -> list[str]:
    """What the operator sees in CI's log: the CLI's own words for the signals it got (pulumi/pulumi
    pkg/backend, its cancellation scope), in its output or its events. The first is always there: the
    CLI goes on for seconds after it; a terminated CLI may exit before its last words are written."""
    said = "\n".join([*background.output, *background.run.events])
    assert "^C received; cancelling." in said, said[-3000:]
    return [words for words in ("^C received; cancelling.", "SIGTERM received; terminating") if words in said]


def errors_of(run: Run) -> list[str]:
    return [w for w in run.warnings if w.startswith("error: ")]


# --- the cases --------------------------------------------------------------------------------------


def test_an_api_server_restart_while_a_release_installs_then_the_runbook_converges(
    *, cluster: Cluster, apiserver: ApiServer, bins: Path, kubeconfig: Path, rendered: list[dict[str, Any]],
    report: list[str],
) -> None:  # fmt: skip
    engine = cluster.engine
    began = time.monotonic()
    with in_background(engine, "up") as up:
        step = started(
            up, "the first Helm release's install", lambda op, typ, _: typ == HELM_RELEASE and op == "create"
        )
        time.sleep(HELM_INSTALLING)
        restart_began = time.monotonic()
        apiserver.restart()
        restart_took = time.monotonic() - restart_began
    first = up.run
    report.append(
        f"    API server restarted ({restart_took:.1f} s) while release {name_of(step[2])} installed: the up "
        + ("rode it out" if up.error is None else f"failed: {'; '.join(errors_of(first))[:600]}")
    )
    did: list[str] = []
    if up.error is not None:
        assert isinstance(up.error, auto.CommandError), up.error
        # It fails naming what failed: an error diagnostic on a resource's URN.
        named = [e for e in errors_of(first) if not e.startswith("error: -:")]
        assert named, first.warnings
        did = follow_runbook(cluster, bins, kubeconfig, API_RESTARTED)
        converged = engine.run("up")
        assert warnings_of(converged) == [], "\n".join(warnings_of(converged))
    assert_converged(cluster, apiserver, rendered)

    # Every object of the render is in the state once and on the API server, and no other object
    # carries the provider's field manager: nothing duplicated, orphaned or half-applied.
    wanted = rendered_objects(rendered)
    objects = state_objects(engine)
    keys = [(o.api_version, o.kind, o.namespace, o.name) for o in objects]
    assert len(keys) == len(set(keys)), "an object twice in the state"
    assert set(keys) == wanted
    for obj in objects:
        assert apiserver.exists(path_of(apiserver, obj)), obj
    managed = set()
    for api_version, kind in {(a, k) for a, k, _, _ in wanted}:
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        plural = path_of(apiserver, Object("", api_version, kind, "x", "x")).split("/")[-2]
        for item in apiserver.items(f"{base}/{plural}"):
            fields = item["metadata"].get("managedFields") or []
            # Helm's release records are written by Helm inside the provider, under its name too: they
            # are Helm's own bookkeeping (helm_records), not objects of the program.
            helm_record = (item["metadata"].get("labels") or {}).get("owner") == "helm"
            if not helm_record and any(FIELD_MANAGER.match(f.get("manager", "")) for f in fields):
                meta = item["metadata"]
                managed.add((api_version, kind, meta.get("namespace"), meta["name"]))
    assert managed, "no object carries the provider's field manager: FIELD_MANAGER is wrong"
    assert managed <= wanted, f"objects of the program's the render does not have: {sorted(managed - wanted)}"
    again = assert_second_up_changes_nothing(engine)
    report.append(
        f"    then {', '.join(f'`{c}`' for c in did) or 'no runbook step'} and `pulumi up`: {len(keys)} objects as "
        f"the render has them, no release pending, a second up {again.describe().splitlines()[0]} "
        f"({time.monotonic() - began:.0f} s)"
    )


def test_a_run_cancelled_as_ci_cancels_it_in_the_middle_of_a_join_converges_after_the_runbook(
    *, cluster: Cluster, apiserver: ApiServer, bins: Path, kubeconfig: Path, rendered: list[dict[str, Any]],
    report: list[str],
) -> None:  # fmt: skip
    engine = cluster.engine
    began = time.monotonic()
    template = next(n for n in cluster.nodes if n["role"] == "agent" and n["arch"] == "amd64")
    spec = machine_specs(cluster.variant)[cluster.nodes.index(template)]
    machine = cluster.fleet.add(type(spec)(**{**spec.__dict__, "name": JOINING}))
    provision(machine, apiserver)
    node = {k: v for k, v in template.items() if k not in ("host", "hostKey", "privateIp")}
    cluster.nodes.append({**node, "name": JOINING, "labels": {"sophia.ai/instance": "e2e-joining"}})
    cluster.write_settings()
    install = f"{JOINING}-install"
    # The mirror holds the machine's K3s download, so its install is in flight, not done, when the cancel
    # comes: counting SSH sessions after the engine's event raced an install that had already finished.
    with cluster.mirror.hold(machine.address), in_background(engine, "up") as up:
        started(up, f"{install} to start", lambda op, typ, urn: typ == COMMAND and name_of(urn) == install)
        wait_until(
            f"{install} downloading K3s",
            lambda: machine.address in cluster.mirror.holding or up.done,
            SETTLE_TIMEOUT,
            0.1,
        )
        assert not up.done, f"the up ended before {install} downloaded K3s: {up.error}"
        with frozen([machine]):
            signals = cancel_as_ci(cli_process(engine))
    assert isinstance(up.error, auto.CommandError), up.error
    said = cli_said(up)
    # The cancel landed while the install ran (held, then frozen): it is not in the state.
    assert "install" not in node_steps(state(engine)).get(JOINING, set())
    pending, locks = pending_operations(engine), lock_files(engine)
    report.append(
        f"    up cancelled as CI cancels it ({', '.join(signals)}) while {install} ran (its K3s download held, the "
        f"machine frozen); the CLI said {said}; pending {pending}, locks {locks}; the run said: "
        + "; ".join(errors_of(up.run))[:600]
    )
    did = follow_runbook(cluster, bins, kubeconfig, INTERRUPTED)
    converged = engine.run("up")
    assert warnings_of(converged) == [], "\n".join(warnings_of(converged))
    changed = {name_of(urn): op for op, typ, urn in converged.changed()}
    assert changed and all(name.startswith(f"{JOINING}") for name in changed), changed
    assert_converged(cluster, apiserver, rendered)
    labels = apiserver.get(f"/api/v1/nodes/{JOINING}")["metadata"]["labels"]
    assert labels.get("sophia.ai/instance") == "e2e-joining"
    again = assert_second_up_changes_nothing(engine)
    report.append(
        f"    then {', '.join(f'`{c}`' for c in did)} and `pulumi up` ({converged.describe().splitlines()[0]}, only "
        f"{JOINING}'s steps): converged; a second up {again.describe().splitlines()[0]} "
        f"({time.monotonic() - began:.0f} s)"
    )


def test_a_run_cancelled_as_ci_cancels_it_while_a_release_installs_converges_after_the_runbook(
    *, cluster: Cluster, apiserver: ApiServer, bins: Path, kubeconfig: Path, rendered: list[dict[str, Any]],
    report: list[str],
) -> None:  # fmt: skip
    engine = cluster.engine
    began = time.monotonic()
    release = next(r for r in state(engine) if r["type"] == HELM_RELEASE and name_of(r["urn"]) == UNWATCHED_RELEASE)
    # The harness's way to a release being installed by a real `up`: remove it first (nothing depends on it).
    removed = engine.run("destroy", target=[release["urn"]])
    assert removed.changes.get("delete") == 1, removed.describe()
    # The GPU agents: the device plugin's pods there are not made Ready while they hang. The first server
    # keeps running: the provider reaches the API server through it.
    agents = [cluster.machine(n["name"]) for n in cluster.nodes[1:] if n.get("gpu")]
    assert agents
    assert not [r for r in helm_records(apiserver) if r["name"] == UNWATCHED_RELEASE], "destroy left Helm records"
    with in_background(engine, "up") as up:
        # Frozen from the moment the engine reaches the release's component, before Helm creates anything:
        # its pods can never be made Ready in time, however slow this host is to read the engine's events.
        started(up, "the NVIDIA component", lambda op, typ, urn: typ == NVIDIA_COMPONENT)
        with frozen(agents):
            started(up, f"{UNWATCHED_RELEASE}'s install", lambda op, typ, urn: typ == HELM_RELEASE and op == "create")
            # Cancelled once Helm has recorded the install (pending-install): the install has begun.
            wait_until(
                f"Helm's record of {UNWATCHED_RELEASE}'s install",
                lambda: any(r["name"] == UNWATCHED_RELEASE for r in helm_records(apiserver)) or up.done,
                SETTLE_TIMEOUT,
                0.1,
            )
            assert not up.done, f"the up ended before Helm recorded {UNWATCHED_RELEASE}'s install: {up.error}"
            signals = cancel_as_ci(cli_process(engine))
    assert isinstance(up.error, auto.CommandError), up.error
    said = cli_said(up)
    pending, locks = pending_operations(engine), lock_files(engine)
    records = [(r["version"], r["status"]) for r in helm_records(apiserver) if r["name"] == UNWATCHED_RELEASE]
    report.append(
        f"    up cancelled as CI cancels it ({', '.join(signals)}) while {UNWATCHED_RELEASE} installed; the CLI said "
        f"{said}; pending {pending}, locks {locks}, Helm records {records}; the run said: "
        + "; ".join(errors_of(up.run))[:600]
    )
    # The cancel landed mid-install: Helm's newest record of it is not `deployed` (`failed`, as Helm writes
    # a cancelled install's outcome, or pending if it could not), so the next `up` must install it again.
    assert records, f"no Helm record of {UNWATCHED_RELEASE}: its install had not begun"
    assert max(records, key=lambda r: int(r[0]))[1] != "deployed", records
    did = follow_runbook(cluster, bins, kubeconfig, INTERRUPTED)
    converged = engine.run("up")
    assert warnings_of(converged) == [], "\n".join(warnings_of(converged))
    changed = {name_of(urn) for _, _, urn in converged.changed()}
    assert changed == {UNWATCHED_RELEASE}, changed
    assert_converged(cluster, apiserver, rendered)
    again = assert_second_up_changes_nothing(engine)
    report.append(
        f"    then {', '.join(f'`{c}`' for c in did)} and `pulumi up` ({converged.describe().splitlines()[0]}): "
        f"converged; a second up {again.describe().splitlines()[0]} ({time.monotonic() - began:.0f} s)"
    )
