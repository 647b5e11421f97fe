"""The whole program through the real engine: K3s over SSH on test machines, then everything on the cluster.

`__main__.py` itself runs (tests/e2e/whole_program.py) against machines that the harness starts on
this host (tests/e2e/machines.py: a network namespace each, real sshd, the machine's own host key),
which install the K3s stand-in from the e2e's K3s mirror (tests/e2e/k3s_cluster.py) through the real
node scripts. The kubernetes provider gets its kubeconfig from the first server's `kubeconfig` step,
and reaches the API server through that machine's port 6443, as it reaches a real first server.

The cases run in order on one cluster of the production stack's shape (its first server and four
agents): preview, up, a second up and refresh, the secrets, then changes to the machines, then
destroy. Each records what the engine did (printed at the end of `make e2e`).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi import automation as auto

from tests.e2e.apiserver import ApiServer, wait_until
from tests.e2e.engine import name_of
from tests.e2e.k3s_cluster import provision
from tests.e2e.test_kubernetes_layer import warnings_of
from tests.e2e.whole_program import Cluster, Variant, cluster_fixture, machine_specs, state

pytestmark = pytest.mark.e2e

COMMAND = "command:remote:Command"
NODE_COMPONENT = "sophia:cluster:K3sNode"
PRODUCTION = Variant("production", "production")
SETTLE_TIMEOUT = 120.0


def steps_of(run_steps: list[tuple[str, str, str]]) -> dict[str, str]:
    """`<node>-<step>` -> the engine's op, for every remote command the run touched."""
    return {name_of(urn): op for op, typ, urn in run_steps if typ == COMMAND}


cluster = cluster_fixture(PRODUCTION)


def test_up_from_nothing_makes_the_cluster_and_everything_on_it(cluster: Cluster, apiserver: ApiServer) -> None:
    run = cluster.engine.run("up")
    assert set(run.changes) == {"create"}, run.describe()
    assert warnings_of(run) == [], "\n".join(warnings_of(run))
    names = [n["name"] for n in cluster.nodes]
    # Every machine joined, under its own name, and is Ready with the labels K3s and the program gave it.
    for name in names:
        node = apiserver.get(f"/api/v1/nodes/{name}")
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert ready["Ready"] == "True", name
        assert node["metadata"]["labels"]["kubernetes.io/arch"] == cluster.machine(name).spec.arch
        assert node["spec"].get("unschedulable") is not True, name
    # Each machine ran its own steps (sshd accepted sessions of the machine's user) and runs K3s.
    for name in names:
        machine = cluster.machine(name)
        assert machine.sessions() > 0, name
        assert machine.exec("systemctl is-active k3s k3s-agent 2>/dev/null | grep -c ^active").strip() == "1"
        # Every file on the machine that holds a token or a key is root's alone (the real file modes, on
        # a real filesystem, as the steps left them): found by content, not by a list of names.
        holders = machine.exec(
            "grep -rlE 'K10[0-9a-f]{64}::|BEGIN (EC |OPENSSH )?PRIVATE KEY|client-key-data' "
            "/etc/rancher /var/lib/rancher 2>/dev/null || true"
        ).split()
        tokens = [f"/etc/rancher/k3s/{f}" for f in ("sophia-join-token", "sophia-agent-token")]
        for path in sorted({*holders, *(t for t in tokens if machine.exec(f"test -e {t} && echo y || true").strip())}):
            owner_mode = machine.exec(f"stat -c '%U %a' {path}").strip()
            assert owner_mode in ("root 600", "root 400"), f"{name}: {path} is {owner_mode}"
    # The provider's kubeconfig is the `kubeconfig` step's output: the first server's address, not the harness's.
    resources = state(cluster.engine)
    provider = next(r for r in resources if r["type"] == "pulumi:providers:kubernetes")
    kubeconfig = yaml.safe_load(revealed(provider["inputs"]["kubeconfig"]))
    first = cluster.machine(names[0])
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://{first.address}:6443"
    # The K3s binary came from the mirror, for each architecture the machines have.
    assert {p.rsplit("/", 1)[-1] for p in cluster.mirror.fetched} >= {"k3s", "k3s-arm64"}


def test_second_up_and_refresh_change_nothing(cluster: Cluster) -> None:
    preview = cluster.engine.run("preview")
    assert set(preview.changes) == {"same"}, f"{preview.describe()}\n{preview.detailed}"
    up = cluster.engine.run("up")
    assert set(up.changes) == {"same"}, up.describe()
    refresh = cluster.engine.run("refresh")
    assert set(refresh.changes) == {"same"}, f"{refresh.describe()}\n{refresh.detailed}"
    preview = cluster.engine.run("preview")
    assert set(preview.changes) == {"same"}, preview.describe()


def secret_values(cluster: Cluster) -> dict[str, str]:
    """Every secret the run handled: the stand-ins, the SSH key, the generated and the secure tokens."""
    values = dict(cluster.engine.config.stand_ins)
    values["ssh private key body"] = "".join(cluster.fleet.private_key.splitlines()[1:-1])
    for resource in state(cluster.engine):
        if resource["type"] == "random:index/randomPassword:RandomPassword":
            values[f"token {name_of(resource['urn'])}"] = revealed(resource["outputs"]["result"])
    first = cluster.machine(cluster.nodes[0]["name"])
    for path in ("/var/lib/rancher/k3s/server/token", "/var/lib/rancher/k3s/server/agent-token"):
        values[path] = first.path(path).read_text().strip().rsplit(":", 1)[-1]
    return values


def test_no_secret_in_plain_text_in_state_events_or_logs(cluster: Cluster) -> None:
    engine = cluster.engine
    secrets = secret_values(cluster)
    env = dict(os.environ, **engine.stack.workspace.env_vars)
    exported = subprocess.run(
        [str(Path(engine.stack.workspace.pulumi_command.command)), "stack", "export", "--stack", engine.config.stack],
        cwd=engine.stack.workspace.work_dir, env=env, capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    backend = Path(engine.stack.workspace.env_vars["PULUMI_BACKEND_URL"].removeprefix("file://"))
    at_rest = "\n".join(p.read_text(errors="replace") for p in backend.rglob("*") if p.is_file())
    events = "\n".join(e for run in engine.runs for e in run.events)
    machine_logs = "\n".join(
        p.read_text(errors="replace")
        for m in cluster.fleet.machines.values()
        for p in (m.sshd_log, *m.path("/var/log/k3s.log").parent.glob("*.log"))
        if p.exists()
    )
    for where, text in (("stack export", exported), ("backend files", at_rest), ("engine events", events),
                        ("machine logs", machine_logs)):  # fmt: skip
        leaked = [key for key, value in secrets.items() if value and value in text]
        assert leaked == [], f"{where} holds {leaked}"
        encoded = [key for key, value in secrets.items() if value and base64.b64encode(value.encode()).decode() in text]
        assert encoded == [], f"{where} holds base64 of {encoded}"
    engine.log.append(f"    no secret ({len(secrets)} values, tokens included) in the export, backend, events or logs")


def revealed(value: Any) -> str:
    """A value of `export_stack()` (which shows secrets, as `{"plaintext": <JSON>}` objects) as its text."""
    if isinstance(value, dict) and "plaintext" in value:
        return str(json.loads(value["plaintext"]))
    return str(value)


def changed_steps(run_steps: list[tuple[str, str, str]]) -> dict[str, str]:
    return {name: op for name, op in steps_of(run_steps).items() if op != "same"}


def other_changes(run_steps: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """Every change the run made to anything but a remote command or a K3sNode component."""
    return [(op, urn) for op, typ, urn in run_steps if op != "same" and typ not in (COMMAND, NODE_COMPONENT)]


def test_a_label_change_runs_only_that_machines_admit(cluster: Cluster, apiserver: ApiServer) -> None:
    node = cluster.nodes[2]
    node.setdefault("labels", {})["sophia.ai/e2e"] = "relabelled"
    cluster.write_settings()
    run = cluster.engine.run("up")
    assert changed_steps(run.steps) == {f"{node['name']}-admit": "update"}, run.describe()
    assert other_changes(run.steps) == []
    labels = apiserver.get(f"/api/v1/nodes/{node['name']}")["metadata"]["labels"]
    assert labels.get("sophia.ai/e2e") == "relabelled"


EXTRA = "sophia-e2e-extra"


def test_adding_a_machine_runs_only_its_steps(cluster: Cluster, apiserver: ApiServer) -> None:
    template = next(n for n in cluster.nodes if n["role"] == "agent" and n["arch"] == "amd64")
    node = {**{k: v for k, v in template.items() if k not in ("host", "hostKey", "privateIp")}, "name": EXTRA}
    node["labels"] = {"sophia.ai/instance": "e2e-extra"}
    spec = machine_specs(cluster.variant)[cluster.nodes.index(template)]
    machine = cluster.fleet.add(type(spec)(**{**spec.__dict__, "name": EXTRA}))
    provision(machine, apiserver)
    cluster.nodes.append(node)
    cluster.write_settings()
    run = cluster.engine.run("up")
    changed = changed_steps(run.steps)
    assert changed and all(name.startswith(f"{EXTRA}-") for name in changed), changed
    assert set(changed.values()) == {"create"}, changed
    assert [urn for _, urn in other_changes(run.steps)] == []
    node_object = apiserver.get(f"/api/v1/nodes/{EXTRA}")
    assert {c["type"]: c["status"] for c in node_object["status"]["conditions"]}["Ready"] == "True"


def test_a_machine_answering_with_another_host_key_is_refused_before_any_command(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The extra machine's entry pins a key that is not its own: its first step fails at the SSH
    handshake, its sshd accepts no session, and no other machine's step runs."""
    machine = cluster.machine(EXTRA)
    other_key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True, timeout=30)
    kind, key, *_ = Path(f"{other_key}.pub").read_text().split()
    sessions = machine.sessions()
    real_key = machine.host_key
    machine.host_key = f"{kind} {key}"
    try:
        cluster.write_settings()
        with pytest.raises(Exception, match=r"host key mismatch|handshake failed"):
            cluster.engine.run("up")
        failed = cluster.engine.runs[-1]
        assert machine.sessions() == sessions
        assert all(name.startswith(f"{EXTRA}-") for name in changed_steps(failed.steps)), failed.describe()
    finally:
        machine.host_key = real_key
        cluster.write_settings()
    run = cluster.engine.run("up")
    assert set(run.changes) <= {"same", "update"}, run.describe()


def k3s_starts(cluster: Cluster) -> dict[str, str]:
    """How often K3s started on each machine (the stand-in logs one line per start)."""
    return {
        m.name: m.exec("cat /var/log/k3s*.log 2>/dev/null | grep -c 'running as' || true")
        for m in cluster.fleet.machines.values()
    }


def test_ssh_key_rotation_as_the_runbook_says_then_a_removal_with_the_new_key(
    cluster: Cluster, apiserver: ApiServer, tmp_path: Path
) -> None:
    """README, "Rotate the SSH key": the new public key onto the machines, the new private key in
    the stack and `up`; then the old public key off the machines. A removal after that runs its
    deletes (drain, uninstall, Node removal) with the new key: the next case."""
    new_key = tmp_path / "id_new"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(new_key)], check=True, timeout=30)
    new_public = Path(f"{new_key}.pub").read_text().strip()
    old_public = cluster.fleet.public_key
    keys_file = "/home/ubuntu/.ssh/authorized_keys"
    for machine in cluster.fleet.machines.values():
        machine.exec(f"echo {new_public!r} >> {keys_file}")
    engine = cluster.engine
    key = f"{engine.config.project}:sshPrivateKey"
    engine.stack.set_config(key, auto.ConfigValue(new_key.read_text(), secret=True))
    engine.config.stand_ins[key] = new_key.read_text()
    restarts_before = {
        m.name: m.exec("grep -c 'running as' /var/log/k3s*.log || true") for m in cluster.fleet.machines.values()
    }
    run = engine.run("up")
    ops = set(steps_of(run.steps).values())
    assert ops == {"update"}, run.describe()
    assert other_changes(run.steps) == []
    restarts_after = {
        m.name: m.exec("grep -c 'running as' /var/log/k3s*.log || true") for m in cluster.fleet.machines.values()
    }
    assert restarts_after == restarts_before, "the rotation restarted K3s"
    old_line = old_public.split()[1]
    for machine in cluster.fleet.machines.values():
        machine.exec(f"sed -i '\\|{old_line}|d' {keys_file}")
        assert old_line not in machine.exec(f"cat {keys_file}")


HELD = "e2e-held"


def held_workload(node: str) -> list[tuple[str, dict[str, Any]]]:
    """A Deployment whose pod is bound to `node`, and a budget that allows no disruption of it."""
    labels = {"app": HELD}
    pod = {"nodeName": node, "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": HELD, "namespace": HELD},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": pod}},
    }  # fmt: skip
    budget = {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": HELD, "namespace": HELD},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}},
    }  # fmt: skip
    return [
        ("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": HELD}}),
        (f"/apis/apps/v1/namespaces/{HELD}/deployments", deployment),
        (f"/apis/policy/v1/namespaces/{HELD}/poddisruptionbudgets", budget),
    ]


def test_removing_an_agent_evicts_within_the_disruption_budget_then_uninstalls_only_it(
    cluster: Cluster, apiserver: ApiServer
) -> None:
    """After the key rotation above: the removal's deletes run with the key now in state. The drain
    evicts through the eviction API, which refuses while the budget forbids it (the pod stays, the
    node cordoned); once the budget is gone (README: fix what blocks it), the same drain finishes, the
    Node goes and K3s is uninstalled from that machine only."""
    for path, body in held_workload(EXTRA):
        created = apiserver.request("POST", path, body)
        assert created.status == 201, created.body

    def held_pod_ready() -> bool:
        pods = apiserver.items(f"/api/v1/namespaces/{HELD}/pods")
        budget = apiserver.get(f"/apis/policy/v1/namespaces/{HELD}/poddisruptionbudgets/{HELD}")
        return bool(pods) and (budget.get("status") or {}).get("currentHealthy") == 1

    wait_until("the held pod Ready on the extra machine", held_pod_ready, SETTLE_TIMEOUT, interval=1)
    held = apiserver.items(f"/api/v1/namespaces/{HELD}/pods")[0]["metadata"]["name"]

    cluster.nodes[:] = [n for n in cluster.nodes if n["name"] != EXTRA]
    cluster.write_settings()
    outcome: list[BaseException | None] = []

    def removal() -> None:
        try:
            cluster.engine.run("up")
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=removal, name="removal-up")
    thread.start()
    try:

        def refused() -> bool:
            return any("disruption budget" in e for e in cluster.engine.runs[-1].events) or bool(outcome)

        wait_until("the drain's eviction refused by the budget", refused, SETTLE_TIMEOUT, interval=1)
        assert not outcome, f"the removal ended before the budget was lifted: {outcome}"
        assert apiserver.exists(f"/api/v1/namespaces/{HELD}/pods/{held}"), "the budget did not hold the pod"
        assert apiserver.get(f"/api/v1/nodes/{EXTRA}")["spec"].get("unschedulable") is True
        apiserver.request("DELETE", f"/apis/policy/v1/namespaces/{HELD}/poddisruptionbudgets/{HELD}")
    finally:
        thread.join(timeout=900)
    assert outcome == [None], outcome
    run = cluster.engine.runs[-1]
    changed = changed_steps(run.steps)
    assert changed and all(name.startswith(f"{EXTRA}-") for name in changed), changed
    assert set(changed.values()) == {"delete"}, changed
    assert any(f"evicting pod {HELD}/{held}" in e for e in run.events), "the drain did not evict through the API"
    assert not apiserver.exists(f"/api/v1/nodes/{EXTRA}")
    extra = cluster.machine(EXTRA)
    assert extra.exec("ls /usr/local/bin/k3s /var/lib/rancher/k3s 2>/dev/null || true").strip() == ""
    for node in cluster.nodes:
        machine = cluster.machine(node["name"])
        assert machine.exec("test -x /usr/local/bin/k3s && echo yes || true").strip() == "yes", machine.name
    cluster.fleet.remove(EXTRA)
    apiserver.request("DELETE", f"/api/v1/namespaces/{HELD}")


def test_destroy_removes_everything_and_leaves_the_machines_as_they_were(
    cluster: Cluster, apiserver: ApiServer
) -> None:
    run = cluster.engine.run("destroy")
    assert set(run.changes) == {"delete"}, run.describe()
    assert state(cluster.engine) == []
    for node in cluster.nodes:
        machine = cluster.machine(node["name"])
        leftovers = machine.exec(
            "ls -d /usr/local/bin/k3s /etc/rancher/k3s /var/lib/rancher/k3s /etc/systemd/system/k3s*.service "
            "/etc/rancher/k3s/sophia-join-token 2>/dev/null || true"
        ).split()
        assert leftovers == [], f"{node['name']}: {leftovers}"
    # Every joining node's Node object was removed by its claim step's delete. The first server's
    # goes with the cluster's datastore on a real cluster; here the datastore is the e2e's one API
    # server, which outlives the cluster (k3s_standin.py), so the harness removes it.
    for node in cluster.nodes[1:]:
        assert not apiserver.exists(f"/api/v1/nodes/{node['name']}"), node["name"]
