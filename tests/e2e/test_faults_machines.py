"""Faults on the machines during `pulumi up`, through the real engine, each followed by its runbook.

On a cluster of its own, of production's shape (its first server and four agents; then two more
agents), the cases run in order:

1. The first server's K3s never writes its join token files (the K3s stand-in's `token-delay` knob,
   tests/e2e/k3s_standin.py): the first `up` fails at the token steps within their bound, each
   naming the file and the machine; no joining machine gets past its checks and the Kubernetes
   layer does not start.
2. docs/operations.md, "A join token file is missing", step by step: K3s restarted on the first
   server writes the files, here late (the knob again), and the next `up` waits for them, hands them
   out and converges: everything the first run finished stays as it was.
3. Two machines join in one `up`; one of them goes down (a reboot: every process in it killed,
   sshd and its sessions with them) while its `install` downloads K3s (the K3s mirror holds that
   machine's download, so the install is known to be in flight). The `up` fails at once naming the
   machine and the step; the other new machine's steps are done and in the state, no other
   machine's step ran or was undone. Then docs/operations.md, "A machine went away during
   `pulumi up`", step by step: the machine comes back, the next `up` runs only what was left on it,
   and one more `up` changes nothing.

Every fault is undone in a `finally`, also when the case fails.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from pulumi import automation as auto

from components.cluster.node_config import AGENT_TOKEN_PATH, SERVER_TOKEN_PATH, TOKEN_FILE_TIMEOUT_SECONDS
from tests.e2e.apiserver import ApiServer, wait_until
from tests.e2e.engine import Run, name_of
from tests.e2e.k3s_cluster import provision
from tests.e2e.machines import STAND_IN_DIR, Machine, boot_machine, halt_machine
from tests.e2e.test_whole_program import (
    COMMAND,
    PRODUCTION,
    SETTLE_TIMEOUT,
    changed_steps,
    other_changes,
    steps_of,
)
from tests.e2e.whole_program import Cluster, cluster_fixture, machine_specs, state

pytestmark = pytest.mark.e2e

cluster = cluster_fixture(PRODUCTION)

TOKEN_DELAY = f"{STAND_IN_DIR}/token-delay"
"""The K3s stand-in's knob (its docstring): seconds before a starting server writes its token files, or `never`."""
TOKEN_LATE_SECONDS = 25
"""How late the restarted first server writes its token files: well inside the token steps' bound,
and long enough that the `up` after the restart reaches them before the files exist."""
FIRST_SERVER_CHAIN_BOUND = 300.0
"""The first server's own steps (preflight, prepare, install, ready) on a fresh machine, with room."""
VANISH_FAIL_BOUND = 60.0
"""How soon after a machine goes down the `up` must have failed: its SSH session ends with it."""
TOKEN_STEPS = ("server-token", "agent-token")
JOINING_STEPS = ("prepare", "install", "ready", "admit")
AGENT_STEPS = ("preflight", "claim", *JOINING_STEPS)


def first_server(cluster: Cluster) -> Machine:
    return cluster.machine(cluster.nodes[0]["name"])


def step_names(node: str, steps: tuple[str, ...]) -> set[str]:
    return {f"{node}-{step}" for step in steps}


def recorded_steps(cluster: Cluster) -> set[str]:
    """`<node>-<step>` of every remote command the stack's state holds."""
    return {name_of(r["urn"]) for r in state(cluster.engine) if r["type"] == COMMAND}


def urn_of(run: Run, name: str) -> str:
    return next(urn for _, _, urn in run.steps if name_of(urn) == name)


def ssh(cluster: Cluster, machine: Machine, command: str, tmp_path: Path) -> str:
    """`ssh ubuntu@<host> <command>` as an operator runs it: the stack's key, the machine's pinned host key."""
    key = tmp_path / "id_operator"
    if not key.exists():
        key.write_text(cluster.fleet.private_key)
        key.chmod(0o600)
    known_hosts = tmp_path / f"known_hosts-{machine.name}"
    known_hosts.write_text(f"{machine.address} {machine.host_key}\n")
    argv = [
        "ssh", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
        f"{machine.spec.user}@{machine.address}", command,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"ssh {machine.name} {command!r}: exit {done.returncode}: {done.stderr}"
    return done.stdout


def kubectl(cluster: Cluster, bins: Path, tmp_path: Path, *args: str) -> str:
    """`kubectl ...` with the kubeconfig the stack exports (`pulumi stack output kubeconfig --show-secrets`)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(str(cluster.engine.stack.outputs()["kubeconfig"].value))
    kubeconfig.chmod(0o600)
    argv = [str(bins / "kubectl"), "--kubeconfig", str(kubeconfig), "--request-timeout=30s", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def ready_nodes(output: str) -> dict[str, str]:
    """`kubectl get nodes -o yaml` as node name -> its Ready condition's status."""
    return {
        node["metadata"]["name"]: {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        for node in yaml.safe_load(output)["items"]
    }


@dataclass
class TokenKnob:
    """The first server's token-delay knob, set and cleared inside the machine: a file written into its
    overlay's upper layer from outside may stay unseen by the machine (overlayfs caches lookups)."""

    machine: Machine

    def set(self, value: str) -> None:
        self.machine.exec(f"printf '%s\\n' {shlex.quote(value)} > {TOKEN_DELAY}")

    def clear(self) -> None:
        self.machine.exec(f"rm -f {TOKEN_DELAY}")


@pytest.fixture
def token_knob(cluster: Cluster) -> Iterator[TokenKnob]:
    """The knob, cleared after the case whatever happened."""
    knob = TokenKnob(first_server(cluster))
    try:
        yield knob
    finally:
        knob.clear()


def test_a_token_file_k3s_never_writes_fails_the_token_steps_naming_it_and_no_machine_joins(
    cluster: Cluster, apiserver: ApiServer, token_knob: TokenKnob
) -> None:
    first = first_server(cluster)
    token_knob.set("never")
    started = time.monotonic()
    with pytest.raises(auto.CommandError) as failure:
        cluster.engine.run("up")
    took = time.monotonic() - started
    run = cluster.engine.runs[-1]
    error = str(failure.value)
    # One line per file, naming it and the machine, from each token step.
    for step, path in zip(TOKEN_STEPS, (SERVER_TOKEN_PATH, AGENT_TOKEN_PATH), strict=True):
        bound = TOKEN_FILE_TIMEOUT_SECONDS
        line = f"[{first.name}-{step}] FAILED: K3s did not write {path} on {first.name} within {bound}s"
        assert line in error, error[-4000:]
        cluster.engine.log.append(f"    {line}")
    # Within the bound: each token step waited its TOKEN_FILE_TIMEOUT_SECONDS, and no longer.
    assert took < FIRST_SERVER_CHAIN_BOUND + TOKEN_FILE_TIMEOUT_SECONDS, f"the up took {took:.0f} s to fail"
    for step in TOKEN_STEPS:
        waited = time.time() - run.started[urn_of(run, f"{first.name}-{step}")]
        assert TOKEN_FILE_TIMEOUT_SECONDS - 1 <= waited < TOKEN_FILE_TIMEOUT_SECONDS + 60, f"{step}: {waited:.0f} s"
    # The first server is up, and its finished steps are in the state; the token steps are not.
    recorded = recorded_steps(cluster)
    assert step_names(first.name, ("preflight", "prepare", "install", "ready")) <= recorded, sorted(recorded)
    assert not recorded & step_names(first.name, TOKEN_STEPS)
    assert not (cluster.engine.stack.export_stack().deployment or {}).get("pending_operations")
    # No joining machine got past its read-only checks: nothing installed, no Node.
    ran = set(steps_of(run.steps))
    for node in cluster.nodes[1:]:
        name = node["name"]
        assert not ran & step_names(name, JOINING_STEPS), sorted(ran & step_names(name, JOINING_STEPS))
        machine = cluster.machine(name)
        assert machine.exec("ls /usr/local/bin/k3s /etc/rancher/k3s/config.yaml 2>/dev/null || true").strip() == ""
        assert not apiserver.exists(f"/api/v1/nodes/{name}"), name
    # The Kubernetes layer waits for the whole cluster: none of it started.
    assert [urn for _, typ, urn in run.steps if typ.startswith("kubernetes:")] == []


def test_the_missing_token_runbook_restarts_k3s_and_the_next_up_waits_for_the_late_files_and_converges(
    cluster: Cluster, apiserver: ApiServer, bins: Path, token_knob: TokenKnob, tmp_path: Path
) -> None:
    """docs/operations.md, "A join token file is missing". The restarted K3s writes its token files
    TOKEN_LATE_SECONDS after it is up (the knob): the `up` of step 2 finds them missing and waits."""
    first = first_server(cluster)
    token_knob.set(str(TOKEN_LATE_SECONDS))
    # 1. On the first server: `sudo systemctl restart k3s`.
    ssh(cluster, first, "sudo systemctl restart k3s", tmp_path)
    token_knob.clear()  # read as K3s started; the next start writes them at once again
    assert not first.path(SERVER_TOKEN_PATH).exists(), "the restarted K3s wrote its token file at once"
    # 2. `pulumi up`.
    run = cluster.engine.run("up")
    # The token steps started before the files existed, and handed out what K3s wrote once it did.
    written = first.path(SERVER_TOKEN_PATH).stat().st_mtime
    for step in TOKEN_STEPS:
        urn = urn_of(run, f"{first.name}-{step}")
        assert run.started[urn] < written <= run.finished[urn], f"{step} did not wait for the late file"
    # Everything left from the failed run ran, once; nothing it finished ran again or changed.
    assert set(run.changes) <= {"create", "same"}, run.describe()
    expected = step_names(first.name, TOKEN_STEPS)
    for node in cluster.nodes[1:]:
        expected |= step_names(node["name"], JOINING_STEPS)
    assert changed_steps(run.steps) == dict.fromkeys(expected, "create"), run.describe()
    # 3. `kubectl get nodes`: every machine Ready.
    nodes = ready_nodes(kubectl(cluster, bins, tmp_path, "get", "nodes", "-o", "yaml"))
    assert {n["name"]: nodes.get(n["name"]) for n in cluster.nodes} == {n["name"]: "True" for n in cluster.nodes}


STEADY = "sophia-e2e-steady"
VANISHING = "sophia-e2e-vanishing"


def k3s_starts_but(cluster: Cluster, *down: str) -> dict[str, str]:
    """How often K3s started on each machine (test_whole_program.k3s_starts), but those that are down."""
    return {
        m.name: m.exec("cat /var/log/k3s*.log 2>/dev/null | grep -c 'running as' || true").strip()
        for m in cluster.fleet.machines.values()
        if m.name not in down
    }


def add_agent(cluster: Cluster, apiserver: ApiServer, name: str) -> Machine:
    """A new amd64 agent machine in the stack file, shaped as production's first amd64 agent."""
    template = next(n for n in cluster.nodes if n["role"] == "agent" and n["arch"] == "amd64")
    node = {**{k: v for k, v in template.items() if k not in ("host", "hostKey", "privateIp")}, "name": name}
    node["labels"] = {"sophia.ai/instance": name}
    spec = machine_specs(cluster.variant)[cluster.nodes.index(template)]
    machine = cluster.fleet.add(type(spec)(**{**spec.__dict__, "name": name}))
    provision(machine, apiserver)
    cluster.nodes.append(node)
    return machine


def test_a_machine_that_goes_down_mid_install_fails_the_up_naming_it_and_the_runbook_finishes_only_its_steps(
    cluster: Cluster, apiserver: ApiServer, bins: Path, tmp_path: Path
) -> None:
    add_agent(cluster, apiserver, STEADY)
    vanishing = add_agent(cluster, apiserver, VANISHING)
    cluster.write_settings()
    starts = k3s_starts_but(cluster)
    outcome: list[BaseException | None] = []

    def up() -> None:
        try:
            cluster.engine.run("up")
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=up, name="vanishing-up")
    halted = False
    try:
        with cluster.mirror.hold(vanishing.address):
            thread.start()
            wait_until(
                f"{VANISHING}'s install downloading K3s",
                lambda: vanishing.address in cluster.mirror.holding or bool(outcome),
                SETTLE_TIMEOUT,
            )
            steady_done = step_names(STEADY, AGENT_STEPS)
            wait_until(
                f"every step of {STEADY} done",
                # list(): one step of the C code, while the engine's thread adds to the dict
                lambda: steady_done <= set(map(name_of, list(cluster.engine.runs[-1].finished))) or bool(outcome),
                SETTLE_TIMEOUT,
            )
            assert not outcome, f"the up ended before the fault: {outcome}"
            down = time.monotonic()
            halt_machine(vanishing)  # a reboot: sshd, its sessions and the install die with it
            halted = True
            thread.join(VANISH_FAIL_BOUND)
            assert not thread.is_alive(), f"the up still ran {VANISH_FAIL_BOUND:.0f} s after the machine went down"
            failed_after = time.monotonic() - down
        error = outcome[0]
        assert isinstance(error, auto.CommandError), error
        text = str(error)
        assert f"command:remote:Command ({VANISHING}-install)" in text, text[-4000:]
        said = next((line.strip()[:160] for line in text.splitlines() if "error: " in line and "running" in line), "?")
        cluster.engine.log.append(f"    {VANISHING} down mid-install: the up failed {failed_after:.1f} s later: {said}")
        failed = cluster.engine.runs[-1]
        # Only the two new machines' steps ran, each a create; nothing else changed or was undone.
        changed = changed_steps(failed.steps)
        assert set(changed.values()) == {"create"}, changed
        assert all(n.startswith((f"{STEADY}-", f"{VANISHING}-")) for n in changed), changed
        assert other_changes(failed.steps) == []
        # The state holds what finished: all of the steady machine's steps, the vanished one's up to prepare.
        recorded = recorded_steps(cluster)
        assert step_names(STEADY, AGENT_STEPS) <= recorded
        assert step_names(VANISHING, ("preflight", "claim", "prepare")) <= recorded
        assert not recorded & step_names(VANISHING, ("install", "ready", "admit"))
        assert not (cluster.engine.stack.export_stack().deployment or {}).get("pending_operations")
        assert apiserver.get(f"/api/v1/nodes/{STEADY}")["metadata"]["labels"]["sophia.ai/instance"] == STEADY
        others = {name: count for name, count in starts.items() if name != VANISHING}
        assert k3s_starts_but(cluster, VANISHING) == {**others, STEADY: "1"}

        # docs/operations.md, "A machine went away during `pulumi up`":
        # 1. Bring the machine back and check that it answers: `ssh ubuntu@<host> true`.
        boot_machine(vanishing)
        halted = False
        ssh(cluster, vanishing, "true", tmp_path)
        # 2. `pulumi up`: only the failed step and those after it run, on that machine alone.
        run = cluster.engine.run("up")
        assert changed_steps(run.steps) == dict.fromkeys(step_names(VANISHING, ("install", "ready", "admit")), "create")
        assert other_changes(run.steps) == [], run.describe()
        # 3. `kubectl get node <name>`: Ready.
        assert ready_nodes(kubectl(cluster, bins, tmp_path, "get", "nodes", "-o", "yaml"))[VANISHING] == "True"
    finally:
        if halted:
            boot_machine(vanishing)
        thread.join(timeout=900)
    assert k3s_starts_but(cluster) == {**starts, STEADY: "1", VANISHING: "1"}
    # And one more `up` changes nothing.
    again = cluster.engine.run("up")
    assert set(again.changes) == {"same"}, again.describe()
