"""The node scripts themselves, run as composed for the production stack, on fake machines.

Each test runs the exact script text `pulumi up` would send over SSH (built by node_config from the
production settings) with bash, against a scratch root and stubbed system commands (see
cluster_fakes.py): no network, no root, no K3s.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.cluster.node_config import SCRIPTS_DIR, NodeScripts, firewall_ports, node_address, node_scripts
from components.settings.cluster import ClusterSettings
from components.settings.stack import load_settings
from render.engine import REMOTE_COMMAND
from render.model import Rendered
from render.stack import PROJECT_DIR, load_stack
from tests.cluster_fakes import (
    ADMIN_CLIENT_KEY,
    Machine,
    StepRun,
    add_pod,
    add_volume,
    cluster_state,
    k3s_release_binary,
    set_cluster_state,
)
from tests.support import production_document, script_exports, settings_from, write_stack

TOKEN = "K10sophiatesttoken0123456789abcdefABCDEF"
SERVER_PASSWORD = "sophiatestserverpassword0123456789"
AGENT_PASSWORD = "sophiatestagentpassword0123456789"
SERVER = "sophia-production-instance"
AGENT = "sophia-ai-core"
AGENT_A10 = "sophia-development"


def cluster_from(tmp_path: Path, document: dict[str, Any] | None = None) -> ClusterSettings:
    directory = tmp_path / f"stack-{time.monotonic_ns()}"
    directory.mkdir()
    return settings_from(directory, document or production_document()).cluster


def scripts_for(cluster: ClusterSettings, name: str) -> NodeScripts:
    return node_scripts(cluster, next(n for n in cluster.nodes if n.name == name))


def with_exports(script: str, **values: str) -> str:
    """The script with some of its one-line settings changed (the prelude is authoritative)."""
    for key, value in values.items():
        script, count = re.subn(rf"^export {key}=.*$", f"export {key}={value}", script, flags=re.M)
        assert count == 1, key
    return script


@pytest.fixture
def cluster(tmp_path: Path) -> ClusterSettings:
    return cluster_from(tmp_path)


@pytest.fixture
def api(tmp_path: Path) -> Path:
    return tmp_path / "api"


def machine(tmp_path: Path, api: Path, name: str, arch: str = "x86_64", gpus: str = "") -> Machine:
    m = Machine(tmp_path / name, api)
    m.set("machine", arch + "\n")
    if gpus:
        m.set("gpus", gpus)
    return m


def step_of(run: StepRun) -> str:
    """The step a script belongs to, `<node>-<step>`: the name of the remote.Command that runs it."""
    match = re.search(r"^export STEP=(.*)$", run.script, flags=re.M)
    assert match, run.script[:200]
    (name,) = shlex.split(match[1])
    return name


def tokens_for(m: Machine, scripts: NodeScripts) -> str:
    """What `prepare` reads on stdin, as cluster.py builds it: the generated short tokens for the first
    server; for any other node the secure tokens the first server wrote (what its token steps print)."""
    if scripts.first:
        return f"{SERVER_PASSWORD}\n{AGENT_PASSWORD}\n"
    state = cluster_state(m.cluster)
    if "ca_hash" not in state:
        return TOKEN  # no first server in this fake cluster: the token is not checked
    secure = f"K10{state['ca_hash']}::"
    if scripts.node.role.value == "server":
        return f"{secure}server:{state['server_password']}\n{AGENT_PASSWORD}\n"
    return f"{secure}node:{state['agent_password']}\n"


def bring_up(m: Machine, scripts: NodeScripts) -> None:
    for script, stdin in (
        (scripts.preflight, ""),
        (scripts.prepare, tokens_for(m, scripts)),
        (scripts.install, ""),
        (scripts.ready, ""),
    ):
        result = m.run(script, stdin)
        assert result.returncode == 0, result.output


def test_every_script_file_passes_shellcheck() -> None:
    files = sorted(SCRIPTS_DIR.glob("*.sh"))
    assert len(files) >= 10
    done = subprocess.run(
        [
            shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or "shellcheck",
            "--shell=bash",
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout


def test_install_twice_on_an_unchanged_node_changes_nothing_the_second_time(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    scripts = scripts_for(cluster, SERVER)
    bring_up(server, scripts)
    assert server.binaries_downloaded() == [f"{cluster.k3s_version} k3s"]
    assert server.restarts("k3s") == 1
    before = server.files()

    again = server.run(scripts.install)

    assert again.returncode == 0, again.output
    assert "nothing to do" in again.stdout
    for script, stdin in ((scripts.preflight, ""), (scripts.prepare, tokens_for(server, scripts)), (scripts.ready, "")):
        rerun = server.run(script, stdin)
        assert rerun.returncode == 0, rerun.output
    assert server.files() == before
    assert server.binaries_downloaded() == [f"{cluster.k3s_version} k3s"]
    assert server.restarts("k3s") == 1
    assert not any(call[:1] == ["curl"] for call in server.calls()[-20:])


def test_a_changed_config_rewrites_config_yaml_and_restarts_without_reinstalling(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    bring_up(agent, scripts_for(cluster, AGENT_A10))
    document = production_document()
    node = next(n for n in document["config"]["sophia-infra:cluster"]["nodes"] if n["name"] == AGENT_A10)
    # A taint is K3s configuration (`node-taint`); a label is not (the admit step's alone).
    node["taints"] = [{"key": "sophia.ai/dedicated", "value": "dev", "effect": "PreferNoSchedule"}]
    changed = scripts_for(cluster_from(tmp_path, document), AGENT_A10)

    result = agent.run(changed.install)

    assert result.returncode == 0, result.output
    config = (agent.root / "etc/rancher/k3s/config.yaml").read_text()
    assert config == changed.config
    assert "sophia.ai/dedicated=dev:PreferNoSchedule" in config
    assert agent.restarts("k3s-agent") == 2
    assert len(agent.binaries_downloaded()) == 1
    assert oct((agent.root / "etc/rancher/k3s/config.yaml").stat().st_mode & 0o777) == "0o600"


def test_a_changed_version_reinstalls_k3s(tmp_path: Path, api: Path, cluster: ClusterSettings) -> None:
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    bring_up(agent, scripts_for(cluster, AGENT_A10))
    document = production_document()
    document["config"]["sophia-infra:cluster"]["k3sVersion"] = "v1.35.6+k3s1"
    upgraded = scripts_for(cluster_from(tmp_path, document), AGENT_A10)

    result = agent.run(upgraded.install)

    assert result.returncode == 0, result.output
    assert agent.binaries_downloaded() == [f"{cluster.k3s_version} k3s", "v1.35.6+k3s1 k3s"]
    assert agent.installed_k3s() == "v1.35.6+k3s1 k3s"
    assert agent.restarts("k3s-agent") == 2
    assert upgraded.install_triggers != scripts_for(cluster, AGENT_A10).install_triggers


def test_a_rerun_after_an_applied_config_change_restarts_nothing_and_takes_no_lease(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    bring_up(server, scripts_for(cluster, SERVER))
    document = production_document()
    document["config"]["sophia-infra:cluster"]["etcdSnapshots"]["retention"] = 30
    changed = scripts_for(cluster_from(tmp_path, document), SERVER)
    applied = server.run(changed.install)
    assert applied.returncode == 0, applied.output
    assert server.restarts("k3s") == 2
    # A running server restarts only under the lease: the change did take it (and gave it back).
    leases_taken = len(cluster_state(api)["lease_history"])
    assert leases_taken > 0

    again = server.run(changed.install)

    assert again.returncode == 0, again.output
    assert server.restarts("k3s") == 2
    assert len(cluster_state(api)["lease_history"]) == leases_taken
    assert "nothing to do" in again.stdout


def test_an_interrupted_install_completes_when_run_again(tmp_path: Path, api: Path, cluster: ClusterSettings) -> None:
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    scripts = scripts_for(cluster, AGENT_A10)
    assert agent.run(scripts.prepare, TOKEN).returncode == 0
    agent.set("fail-restart")  # config written and K3s installed, then the restart dies

    first = agent.run(scripts.install)
    assert first.returncode != 0
    assert not (agent.root / "var/lib/rancher/k3s/sophia-applied").exists()

    second = agent.run(scripts.install)
    assert second.returncode == 0, second.output
    assert agent.restarts("k3s-agent") == 1
    assert len(agent.binaries_downloaded()) == 1  # the binary from the interrupted run is the right one
    third = agent.run(scripts.install)
    assert "nothing to do" in third.stdout
    assert agent.restarts("k3s-agent") == 1


def test_the_join_token_reaches_only_a_root_only_file(tmp_path: Path, api: Path, cluster: ClusterSettings) -> None:
    agent = machine(tmp_path, api, AGENT, arch="aarch64", gpus="NVIDIA GH200 480GB\n")
    scripts = scripts_for(cluster, AGENT)
    bring_up(agent, scripts)

    token_file = agent.root / "etc/rancher/k3s/sophia-join-token"
    assert token_file.read_text() == TOKEN
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert TOKEN not in "".join((scripts.prepare, scripts.install, scripts.ready))
    # Every command the scripts started, with its arguments and environment: no token anywhere.
    assert agent.calls()
    assert TOKEN not in agent.call_log()
    assert "token-file: /etc/rancher/k3s/sophia-join-token" in (agent.root / "etc/rancher/k3s/config.yaml").read_text()


def test_no_step_whose_output_is_logged_prints_a_secret(
    tmp_path: Path, api: Path, cluster: ClusterSettings, production: Rendered
) -> None:
    # Every step of the first server and of a GPU agent, through a whole life: the join, a changed
    # configuration (a server restart under the lease), the agent's removal.
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    agent = machine(tmp_path, api, AGENT, arch="aarch64", gpus="NVIDIA GH200 480GB\n")
    first, joining = scripts_for(cluster, SERVER), scripts_for(cluster, AGENT)
    assert first.kubeconfig is not None
    assert joining.claim is not None and joining.drain is not None and joining.remove is not None
    assert first.server_token is not None and first.agent_token is not None
    bring_up(server, first)
    server.run(first.admit)
    server.run(first.kubeconfig)
    server.run(first.server_token)
    server.run(first.agent_token)
    server.run(joining.claim)
    bring_up(agent, joining)
    server.run(joining.admit)
    document = production_document()
    cluster_doc = document["config"]["sophia-infra:cluster"]
    cluster_doc["etcdSnapshots"]["retention"] = 30
    next(n for n in cluster_doc["nodes"] if n["name"] == AGENT)["labels"]["sophia.ai/tier"] = "core"
    changed = cluster_from(tmp_path, document)
    for m, name in ((server, SERVER), (agent, AGENT)):
        scripts = scripts_for(changed, name)
        m.run(scripts.install)
        m.run(scripts.ready)
        server.run(scripts.admit)
    server.run(joining.drain)
    agent.run(joining.uninstall)
    server.run(joining.remove)

    runs = server.runs + agent.runs
    assert [step_of(r) for r in runs if r.result.returncode != 0] == []
    logging = {c["name"]: c["inputs"]["logging"] for c in production.by_type(REMOTE_COMMAND)}
    assert {step_of(r) for r in runs} == {name for name in logging if name.startswith((f"{SERVER}-", f"{AGENT}-"))}
    secrets = {
        "the server token": SERVER_PASSWORD,
        "the agent token": AGENT_PASSWORD,
        "the admin client key": ADMIN_CLIENT_KEY,
    }
    printed = [
        f"{step_of(r)} printed {what}"
        for r in runs
        for what, secret in secrets.items()
        if secret in r.result.output and logging[step_of(r)] != "none"
    ]
    assert printed == []
    # The secrets are within reach of the steps: the steps that hand them to Pulumi print them, unlogged.
    assert {step_of(r) for r in runs if any(secret in r.result.output for secret in secrets.values())} == {
        f"{SERVER}-kubeconfig",
        f"{SERVER}-server-token",
        f"{SERVER}-agent-token",
    }


def test_prepare_without_a_token_fails(tmp_path: Path, api: Path, cluster: ClusterSettings) -> None:
    agent = machine(tmp_path, api, AGENT_A10)
    result = agent.run(scripts_for(cluster, AGENT_A10).prepare, "")
    assert result.returncode != 0
    assert "no join token arrived on standard input" in result.stderr


def test_two_configured_nodes_on_one_machine_fail_at_prepare(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    shared = machine(tmp_path, api, "shared")
    assert shared.run(scripts_for(cluster, AGENT_A10).prepare, TOKEN).returncode == 0
    result = shared.run(scripts_for(cluster, "sophia-data-pipeline").prepare, TOKEN)
    assert result.returncode != 0
    assert "already node 'sophia-development'" in result.stderr


def test_privileged_commands_go_through_non_interactive_sudo(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    bring_up(agent, scripts_for(cluster, AGENT_A10))
    calls = agent.calls()
    systemctl_via_sudo = [c for c in calls if c[0] == "sudo" and "systemctl" in c]
    assert systemctl_via_sudo
    assert all(c[1] == "-n" for c in calls if c[0] == "sudo")


def test_preflight_passes_on_the_configured_machine_and_writes_nothing(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    agent = machine(tmp_path, api, AGENT, arch="aarch64", gpus="NVIDIA GH200 480GB\n")
    before = agent.files()
    result = agent.run(scripts_for(cluster, AGENT).preflight)
    assert result.returncode == 0, result.output
    assert agent.files() == before


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda m: m.set("machine", "x86_64\n"), "CPU architecture is x86_64, but the configuration says arm64"),
        (
            lambda m: m.set("gpus", "NVIDIA GH200 480GB\nNVIDIA GH200 480GB\n"),
            "sees 2 GPU(s), the configuration says 1",
        ),
        (lambda m: m.set("gpus", "NVIDIA H100 80GB HBM3\n"), "GPU 'NVIDIA H100 80GB HBM3' is not a NVIDIA GH200"),
        (lambda m: m.unset("gpus"), "nvidia-smi failed"),
        (lambda m: (m.root / "usr/bin/nvidia-container-runtime").unlink(), "nvidia-container-runtime is missing"),
        (lambda m: m.set("listeners", 'tcp LISTEN 0 4096 *:10250 *:* users:(("kubelet",pid=9,fd=3))\n'), "port 10250"),
        (lambda m: m.set("no-sudo"), "cannot run sudo without a password"),
        (lambda m: (m.root / "etc/os-release").write_text("ID=debian\nVERSION_ID=12\n"), "operating system is"),
        (lambda m: m.set("no-wireguard"), "wireguard kernel module is missing"),
    ],
)
def test_preflight_fails_with_a_message_naming_the_mismatch(
    tmp_path: Path, api: Path, cluster: ClusterSettings, setup: Any, message: str
) -> None:
    agent = machine(tmp_path, api, AGENT, arch="aarch64", gpus="NVIDIA GH200 480GB\n")
    setup(agent)
    result = agent.run(scripts_for(cluster, AGENT).preflight)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (agent.root / "etc/rancher").exists()


def test_preflight_does_not_take_an_a100_for_an_a10(tmp_path: Path, api: Path, cluster: ClusterSettings) -> None:
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A100-SXM4-40GB\n")
    result = agent.run(scripts_for(cluster, AGENT_A10).preflight)
    assert result.returncode != 0
    assert "is not a NVIDIA A10" in result.stderr


def test_preflight_accepts_ports_held_by_k3s_itself(tmp_path: Path, api: Path, cluster: ClusterSettings) -> None:
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    server.set("listeners", 'tcp LISTEN 0 4096 *:6443 *:* users:(("k3s-server",pid=7,fd=9))\n')
    assert server.run(scripts_for(cluster, SERVER).preflight).returncode == 0


def test_preflight_on_a_running_node_accepts_the_kernels_flannel_socket(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    scripts = scripts_for(cluster, AGENT_A10)
    agent.set("listeners", "udp UNCONN 0 0 0.0.0.0:51820 0.0.0.0:*\n")
    before_install = agent.run(scripts.preflight)
    assert before_install.returncode != 0
    assert "udp port 51820 is in use" in before_install.stderr
    bring_up_after_preflight = [(scripts.prepare, TOKEN), (scripts.install, "")]
    for script, stdin in bring_up_after_preflight:
        assert agent.run(script, stdin).returncode == 0
    assert agent.run(scripts.preflight).returncode == 0


def test_a_node_that_cannot_reach_the_first_server_fails_its_install_saying_so(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    scripts = scripts_for(cluster, AGENT_A10)
    assert agent.run(scripts.prepare, TOKEN).returncode == 0
    agent.set("server-unreachable")
    quick = scripts.install.replace("wait_until $((SECONDS + 60)) server_answers", "wait_until $SECONDS server_answers")

    result = agent.run(quick)

    assert result.returncode != 0
    first = node_address(cluster, cluster.first_server)
    assert f"cannot reach the first server at https://{first}:6443" in result.stderr
    assert agent.installed_k3s() is None


def test_agents_join_and_are_admitted_with_labels_and_taints(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    bring_up(server, scripts_for(cluster, SERVER))
    agent = machine(tmp_path, api, AGENT, arch="aarch64", gpus="NVIDIA GH200 480GB\n")
    scripts = scripts_for(cluster, AGENT)
    assert scripts.claim is not None
    assert server.run(scripts.claim).returncode == 0
    bring_up(agent, scripts)

    result = server.run(scripts.admit)

    assert result.returncode == 0, result.output
    node = cluster_state(api)["nodes"][AGENT]
    assert node["labels"]["gpu-type"] == "gh200"
    assert node["labels"]["nvidia.com/gpu.present"] == "true"
    assert node["taints"] == ["nvidia.com/gpu=true:NoSchedule"]
    assert node["unschedulable"] is False


def test_claim_refuses_a_node_name_taken_by_another_machine(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    bring_up(server, scripts_for(cluster, SERVER))
    api_state = cluster_state(api)
    api_state["nodes"][AGENT] = {"ip": "203.0.113.9", "labels": {}, "taints": [], "ready": True, "unschedulable": False}
    set_cluster_state(api, api_state)
    claim = scripts_for(cluster, AGENT).claim
    assert claim is not None

    result = server.run(claim)

    assert result.returncode != 0
    assert f"already has a node named {AGENT} at 203.0.113.9" in result.stderr


def test_ready_gives_up_after_its_timeout_with_the_service_log(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    scripts = scripts_for(cluster, AGENT_A10)
    agent.set("never-ready")
    assert agent.run(scripts.prepare, TOKEN).returncode == 0
    assert agent.run(scripts.install).returncode == 0

    result = agent.run(with_exports(scripts.ready, READY_TIMEOUT="1"))

    assert result.returncode != 0
    assert f"node {AGENT_A10} did not register as Ready within 1s" in result.stderr
    assert "k3s said why" in result.stderr


def test_ready_fails_on_a_gpu_node_whose_k3s_has_no_nvidia_runtime(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    scripts = scripts_for(cluster, AGENT_A10)
    assert agent.run(scripts.preflight).returncode == 0
    (agent.root / "usr/bin/nvidia-container-runtime").unlink()  # gone between preflight and start
    assert agent.run(scripts.prepare, TOKEN).returncode == 0
    assert agent.run(scripts.install).returncode == 0

    result = agent.run(scripts.ready)

    assert result.returncode != 0
    assert "did not register the nvidia container runtime" in result.stderr


def test_the_kubeconfig_points_at_the_api_endpoint(tmp_path: Path, api: Path, cluster: ClusterSettings) -> None:
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    scripts = scripts_for(cluster, SERVER)
    bring_up(server, scripts)
    assert scripts.kubeconfig is not None

    result = server.run(scripts.kubeconfig)

    assert result.returncode == 0, result.output
    assert f"server: https://{cluster.api_endpoint}:6443" in result.stdout
    assert "127.0.0.1" not in result.stdout


def test_removing_an_agent_drains_uninstalls_and_deletes_its_node(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    bring_up(server, scripts_for(cluster, SERVER))
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    scripts = scripts_for(cluster, AGENT_A10)
    bring_up(agent, scripts)
    assert scripts.drain is not None
    assert scripts.remove is not None

    for on, script in ((server, scripts.drain), (agent, scripts.uninstall), (server, scripts.remove)):
        result = on.run(script)
        assert result.returncode == 0, result.output
        again = on.run(script)  # each delete step can be re-run after an interruption
        assert again.returncode == 0, again.output

    assert AGENT_A10 not in cluster_state(api)["nodes"]
    assert not (agent.root / "usr/local/bin/k3s").exists()
    assert not (agent.root / "etc/rancher/k3s").exists()


def test_a_drain_that_cannot_finish_leaves_the_node_schedulable_and_fails(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    bring_up(server, scripts_for(cluster, SERVER))
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    scripts = scripts_for(cluster, AGENT_A10)
    bring_up(agent, scripts)
    assert scripts.drain is not None
    add_pod(api, AGENT_A10, "sophia-api-0", pdb=True)  # its PodDisruptionBudget allows no eviction now

    result = server.run(scripts.drain)

    assert result.returncode != 0
    assert "PodDisruptionBudget" in result.stderr
    assert "uncordoned and stays in the cluster" in result.stderr
    node = cluster_state(api)["nodes"][AGENT_A10]
    assert node["unschedulable"] is False


def _agent_with_volumes(tmp_path: Path, api: Path, cluster: ClusterSettings) -> tuple[Machine, Machine, NodeScripts]:
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    bring_up(server, scripts_for(cluster, SERVER))
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    scripts = scripts_for(cluster, AGENT_A10)
    bring_up(agent, scripts)
    add_volume(api, "pvc-1111", "sophia-data/data-redis-0", AGENT_A10)
    add_volume(api, "pvc-2222", "monitoring/prometheus-db-0", AGENT_A10)
    # Not this node's, not bound, or not local-path: none of them holds the removal up.
    add_volume(api, "pvc-3333", "sophia-data/data-postgres-0", SERVER)
    add_volume(api, "pvc-4444", "sophia-data/old-0", AGENT_A10, phase="Released")
    add_volume(api, "pvc-5555", "sophia-data/nfs-0", AGENT_A10, cls="nfs")
    return server, agent, scripts


def test_removing_a_node_with_bound_local_volumes_refuses_and_names_them(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    server, _, scripts = _agent_with_volumes(tmp_path, api, cluster)
    assert scripts.drain is not None

    result = server.run(scripts.drain)

    assert result.returncode != 0
    (line,) = [line for line in result.stderr.splitlines() if "FAILED" in line]
    assert f"node {AGENT_A10} holds bound local-path volumes" in line
    assert "monitoring/prometheus-db-0 (pvc-2222), sophia-data/data-redis-0 (pvc-1111);" in line
    assert "pvc-3333" not in line and "pvc-4444" not in line and "pvc-5555" not in line
    assert "allowDataLoss: true" in line
    # Refused before the drain: the node was never cordoned and nothing was evicted.
    assert cluster_state(api)["nodes"][AGENT_A10]["unschedulable"] is False
    assert not any(call[2:3] == ["drain"] for call in server.calls() if call[:1] == ["k3s"])


def test_a_node_whose_settings_allow_data_loss_is_removed_with_its_volumes(tmp_path: Path, api: Path) -> None:
    document = production_document()
    nodes = document["config"]["sophia-infra:cluster"]["nodes"]
    next(n for n in nodes if n["name"] == AGENT_A10)["allowDataLoss"] = True
    cluster = cluster_from(tmp_path, document)
    server, _, scripts = _agent_with_volumes(tmp_path, api, cluster)
    assert scripts.drain is not None

    result = server.run(scripts.drain)

    assert result.returncode == 0, result.output
    assert "allowDataLoss is set" in result.stdout
    assert cluster_state(api)["nodes"][AGENT_A10]["unschedulable"] is True


def test_the_data_guard_fails_closed_when_the_api_does_not_answer(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    server, _, scripts = _agent_with_volumes(tmp_path, api, cluster)
    assert scripts.drain is not None
    (api / "api-down").touch()

    result = server.run(scripts.drain)

    assert result.returncode != 0
    assert cluster_state(api)["nodes"][AGENT_A10]["unschedulable"] is False


def three_servers() -> dict[str, Any]:
    """Production with three servers, on a private network (K3s's etcd needs one)."""
    document = production_document()
    for i, node in enumerate(document["config"]["sophia-infra:cluster"]["nodes"]):
        node["privateIp"] = f"10.19.0.{i + 2}"
        if node["name"] in ("sophia-mcp-orchestrator", "sophia-data-pipeline"):
            node["role"] = "server"
    return document


def _two_running_servers(tmp_path: Path, api: Path) -> tuple[ClusterSettings, list[Machine], list[NodeScripts]]:
    cluster = cluster_from(tmp_path, three_servers())
    names = [n.name for n in cluster.servers]
    gpus = {"sophia-production-instance": "Quadro RTX 6000\n", "sophia-mcp-orchestrator": "NVIDIA RTX A6000\n"}
    gpus["sophia-data-pipeline"] = "NVIDIA A100-SXM4-80GB\n"
    machines = [machine(tmp_path, api, n, gpus=gpus[n]) for n in names]
    for m, n in zip(machines, cluster.servers, strict=True):
        m.set("addresses", f"{n.host} {n.private_ip}")
    scripts = [scripts_for(cluster, n) for n in names]
    for m, s in zip(machines, scripts, strict=True):
        bring_up(m, s)
    return cluster, machines, scripts


def test_server_restarts_take_turns_through_the_lease(tmp_path: Path, api: Path) -> None:
    _, machines, _ = _two_running_servers(tmp_path, api)
    document = three_servers()
    cluster_doc = document["config"]["sophia-infra:cluster"]
    cluster_doc["etcdSnapshots"]["retention"] = 30  # a server config change: every server restarts
    changed = cluster_from(tmp_path, document)
    joiners = machines[1:]

    processes = [m.start(scripts_for(changed, m.root.name).install) for m in joiners]
    outputs = [p.stdout.read() if p.stdout else "" for p in processes]
    for p in processes:
        p.wait(timeout=120)

    assert [p.returncode for p in processes] == [0, 0], outputs
    state = cluster_state(api)
    history = [(holder, at) for _, holder, at in state["lease_history"]]
    restarts = dict(state["restarts"][-2:])
    # Each server's restart happened while it held the lease, and the lease was free in between.
    holders = [h for h, _ in history]
    assert holders.count("") == 2
    for m in joiners:
        name = m.root.name
        taken = max(at for holder, at in history if holder == name)
        released = min(at for holder, at in history if holder == "" and at > taken)
        assert taken <= restarts[name] <= released
        others = [at for holder, at in history if holder not in ("", name)]
        assert not any(taken < at < released for at in others)
    assert state["leases"]["sophia-server-restart"]["holder"] == ""


def test_a_lease_left_by_a_dead_server_is_taken_over_after_it_expires(tmp_path: Path, api: Path) -> None:
    _, machines, _ = _two_running_servers(tmp_path, api)
    state = cluster_state(api)
    state["leases"]["sophia-server-restart"] = {
        "rv": "9000",
        "holder": "sophia-gone",
        "renew": "2020-01-01T00:00:00.000000Z",
        "seconds": "900",
    }
    set_cluster_state(api, state)
    document = three_servers()
    document["config"]["sophia-infra:cluster"]["etcdSnapshots"]["retention"] = 30
    changed = scripts_for(cluster_from(tmp_path, document), machines[1].root.name)

    result = machines[1].run(changed.install)

    assert result.returncode == 0, result.output
    assert cluster_state(api)["leases"]["sophia-server-restart"]["holder"] == ""


def test_a_server_waits_for_a_live_lease_and_gives_up_with_a_clear_message(tmp_path: Path, api: Path) -> None:
    _, machines, _ = _two_running_servers(tmp_path, api)
    state = cluster_state(api)
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    state["leases"]["sophia-server-restart"] = {"rv": "9000", "holder": "sophia-busy", "renew": now, "seconds": "900"}
    set_cluster_state(api, state)
    document = three_servers()
    document["config"]["sophia-infra:cluster"]["etcdSnapshots"]["retention"] = 30
    changed = scripts_for(cluster_from(tmp_path, document), machines[1].root.name)
    restarts = machines[1].restarts("k3s")

    result = machines[1].run(with_exports(changed.install, LEASE_SECONDS="2"))

    assert result.returncode != 0
    assert "for server 'sophia-busy' to finish restarting" in result.stderr
    assert machines[1].restarts("k3s") == restarts


def test_agents_restart_without_the_lease(tmp_path: Path, api: Path, cluster: ClusterSettings) -> None:
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    bring_up(server, scripts_for(cluster, SERVER))
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    bring_up(agent, scripts_for(cluster, AGENT_A10))
    assert not any("lease" in call for call in agent.calls())


def test_a_removed_server_leaves_etcd_before_it_is_uninstalled(tmp_path: Path, api: Path) -> None:
    cluster, machines, _ = _two_running_servers(tmp_path, api)
    first, leaving = machines[0], machines[1]
    scripts = scripts_for(cluster, leaving.root.name)
    assert scripts.drain is not None
    assert scripts.remove is not None

    drained = first.run(scripts.drain)

    assert drained.returncode == 0, drained.output
    # Two of three servers removed at once keep quorum only if each leaves etcd while it still runs.
    assert [name for name, _ in cluster_state(api)["etcd_removed"]] == [leaving.root.name]
    assert leaving.installed_k3s() is not None  # not uninstalled yet
    for on, script in ((leaving, scripts.uninstall), (first, scripts.remove), (first, scripts.drain)):
        result = on.run(script)
        assert result.returncode == 0, result.output
    assert leaving.root.name not in cluster_state(api)["nodes"]


def test_a_server_whose_etcd_member_stays_is_not_uninstalled(tmp_path: Path, api: Path) -> None:
    cluster, machines, _ = _two_running_servers(tmp_path, api)
    first, leaving = machines[0], machines[1]
    drain = scripts_for(cluster, leaving.root.name).drain
    assert drain is not None
    (api / "etcd-stuck").touch()

    result = first.run(with_exports(drain, DRAIN_TIMEOUT="1"))

    assert result.returncode != 0
    assert f"did not remove the etcd member of server {leaving.root.name}" in result.stderr


def test_draining_an_agent_leaves_etcd_alone(tmp_path: Path, api: Path, cluster: ClusterSettings) -> None:
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    bring_up(server, scripts_for(cluster, SERVER))
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    scripts = scripts_for(cluster, AGENT_A10)
    bring_up(agent, scripts)
    assert scripts.drain is not None

    assert server.run(scripts.drain).returncode == 0
    annotations = [call for call in server.calls() if call[:2] == ["k3s", "kubectl"] and "annotate" in call]
    assert not any("etcd.k3s.cattle.io/remove=true" in call for call in annotations)
    assert "etcd_removed" not in cluster_state(api)


def _admitted_agent(tmp_path: Path, api: Path, cluster: ClusterSettings) -> tuple[Machine, Machine, NodeScripts]:
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    bring_up(server, scripts_for(cluster, SERVER))
    agent = machine(tmp_path, api, AGENT, arch="aarch64", gpus="NVIDIA GH200 480GB\n")
    scripts = scripts_for(cluster, AGENT)
    bring_up(agent, scripts)
    admitted = server.run(scripts.admit)
    assert admitted.returncode == 0, admitted.output
    return server, agent, scripts


def _set_node(api: Path, name: str, **fields: Any) -> None:
    state = cluster_state(api)
    state["nodes"][name].update(fields)
    set_cluster_state(api, state)


def test_every_kubectl_call_is_bounded_and_every_download_has_a_time_limit(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    server, agent, scripts = _admitted_agent(tmp_path, api, cluster)
    assert scripts.drain is not None
    assert server.run(scripts.drain).returncode == 0
    calls = server.calls() + agent.calls()

    kubectl = [c for c in calls if c[:2] == ["k3s", "kubectl"]]
    assert kubectl
    assert all(any(a.startswith("--request-timeout=") for a in c) for c in kubectl), kubectl
    downloads = [c for c in calls if c[0] == "curl"]
    assert downloads
    assert all("--max-time" in c for c in downloads), downloads
    assert agent.downloads(), "the K3s binary and its checksums are downloads too"


def test_admit_keeps_a_cordon_set_by_hand(tmp_path: Path, api: Path, cluster: ClusterSettings) -> None:
    server, _, scripts = _admitted_agent(tmp_path, api, cluster)
    _set_node(api, AGENT, unschedulable=True)  # kubectl cordon, by an operator

    result = server.run(scripts.admit)

    assert result.returncode == 0, result.output
    assert cluster_state(api)["nodes"][AGENT]["unschedulable"] is True
    assert "stays cordoned" in result.stdout


def test_admit_lifts_the_cordon_of_its_own_drain(tmp_path: Path, api: Path, cluster: ClusterSettings) -> None:
    server, _, scripts = _admitted_agent(tmp_path, api, cluster)
    assert scripts.drain is not None
    assert server.run(scripts.drain).returncode == 0
    assert cluster_state(api)["nodes"][AGENT]["unschedulable"] is True

    result = server.run(scripts.admit)

    assert result.returncode == 0, result.output
    node = cluster_state(api)["nodes"][AGENT]
    assert node["unschedulable"] is False
    assert "sophia.ai/drained" not in node["annotations"]


def test_admit_removes_a_taint_dropped_from_the_settings_and_keeps_one_set_by_hand(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    server, _, _ = _admitted_agent(tmp_path, api, cluster)
    state = cluster_state(api)
    _set_node(api, AGENT, taints=[*state["nodes"][AGENT]["taints"], "maintenance=true:NoSchedule"])
    document = production_document()
    # PreferNoSchedule: the settings refuse a taint that would keep ai-memory or the device plugin off it.
    node = next(n for n in document["config"]["sophia-infra:cluster"]["nodes"] if n["name"] == AGENT)
    node["taints"] = [{"key": "sophia.ai/dedicated", "value": "ai-core", "effect": "PreferNoSchedule"}]
    changed = scripts_for(cluster_from(tmp_path, document), AGENT)

    result = server.run(changed.admit)
    again = server.run(changed.admit)

    assert result.returncode == 0, result.output
    assert again.returncode == 0, again.output
    assert sorted(cluster_state(api)["nodes"][AGENT]["taints"]) == [
        "maintenance=true:NoSchedule",
        "sophia.ai/dedicated=ai-core:PreferNoSchedule",
    ]
    assert "removed taint nvidia.com/gpu:NoSchedule" in result.stdout


def test_joins_use_the_secure_tokens_the_first_server_wrote_and_agents_get_the_agent_token(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    first = scripts_for(cluster, SERVER)
    bring_up(server, first)
    assert first.server_token is not None
    assert first.agent_token is not None
    server_token = server.run(first.server_token)
    agent_token = server.run(first.agent_token)
    assert server_token.returncode == 0, server_token.output
    assert agent_token.returncode == 0, agent_token.output
    assert server_token.stdout.startswith("K10") and "::server:" in server_token.stdout
    assert agent_token.stdout.startswith("K10") and "::node:" in agent_token.stdout
    assert SERVER_PASSWORD not in agent_token.stdout
    assert SERVER_PASSWORD not in server.call_log()  # printed by cat, never an argument or variable

    agent = machine(tmp_path, api, AGENT, arch="aarch64", gpus="NVIDIA GH200 480GB\n")
    scripts = scripts_for(cluster, AGENT)
    for script, stdin in ((scripts.preflight, ""), (scripts.prepare, agent_token.stdout), (scripts.install, "")):
        result = agent.run(script, stdin)
        assert result.returncode == 0, result.output
    assert cluster_state(api)["agent_join_users"] == ["node"]
    assert SERVER_PASSWORD not in (agent.root / "etc/rancher/k3s/sophia-join-token").read_text()
    assert not (agent.root / "etc/rancher/k3s/sophia-agent-token").exists()


def test_a_join_with_a_short_token_is_refused(tmp_path: Path, api: Path, cluster: ClusterSettings) -> None:
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    bring_up(server, scripts_for(cluster, SERVER))
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    scripts = scripts_for(cluster, AGENT_A10)
    assert agent.run(scripts.prepare, f"{AGENT_PASSWORD}\n").returncode == 0

    result = agent.run(scripts.install)

    assert result.returncode != 0
    assert "does not pin the cluster CA" in result.stderr


def test_a_server_without_its_agent_token_fails_at_prepare(tmp_path: Path, api: Path, cluster: ClusterSettings) -> None:
    server = machine(tmp_path, api, SERVER)
    result = server.run(scripts_for(cluster, SERVER).prepare, f"{SERVER_PASSWORD}\n")
    assert result.returncode != 0
    assert "no agent token arrived" in result.stderr


def test_the_token_step_refuses_a_token_that_pins_no_ca(tmp_path: Path, api: Path, cluster: ClusterSettings) -> None:
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    first = scripts_for(cluster, SERVER)
    bring_up(server, first)
    (server.root / "var/lib/rancher/k3s/server/agent-token").write_text(f"{AGENT_PASSWORD}\n")
    assert first.agent_token is not None

    result = server.run(first.agent_token)

    assert result.returncode != 0
    assert AGENT_PASSWORD not in result.output
    assert "not a secure K10 token" in result.stderr


def test_the_token_step_waits_for_a_file_k3s_writes_late_and_hands_it_out(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    """A K3s restarting under the step writes its token file a moment after the step started: the
    step waits for it (within TOKEN_FILE_TIMEOUT) and prints what K3s wrote."""
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    first = scripts_for(cluster, SERVER)
    bring_up(server, first)
    token_file = server.root / "var/lib/rancher/k3s/server/agent-token"
    written = token_file.read_text()
    token_file.unlink()
    assert first.agent_token is not None

    step = server.start(with_exports(first.agent_token, TOKEN_FILE_TIMEOUT="30"))
    try:
        time.sleep(1.0)
        assert step.poll() is None, "the step did not wait for the missing file"
        token_file.write_text(written)
        step.wait(timeout=30)
        assert step.stdout is not None
        output = step.stdout.read()
    finally:
        if step.poll() is None:
            step.kill()
            step.wait(timeout=10)

    assert step.returncode == 0, output
    assert output == written


def test_the_token_step_fails_naming_the_file_and_the_machine_when_k3s_never_writes_it(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    first = scripts_for(cluster, SERVER)
    bring_up(server, first)
    (server.root / "var/lib/rancher/k3s/server/token").unlink()
    assert first.server_token is not None

    started = time.monotonic()
    result = server.run(with_exports(first.server_token, TOKEN_FILE_TIMEOUT="1"))

    assert result.returncode != 0
    assert time.monotonic() - started < 20, "the wait is not bounded by TOKEN_FILE_TIMEOUT"
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"[{SERVER}-server-token] FAILED: K3s did not write /var/lib/rancher/k3s/server/token on {SERVER} "
        'within 1s (see docs/operations.md, "A join token file is missing")'
    ]


def test_preflight_says_whether_the_public_address_is_on_an_interface(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    scripts = scripts_for(cluster, AGENT_A10)
    host = scripts.node.host
    agent.set("addresses", f"{host} 172.17.0.1")
    direct = agent.run(scripts.preflight)
    agent.set("addresses", "10.0.0.7")
    behind_nat = agent.run(scripts.preflight)

    assert direct.returncode == 0, direct.output
    assert f"{host} on an interface" in direct.stdout
    assert behind_nat.returncode == 0, behind_nat.output
    assert f"{host} not on an interface (NAT): node-ip is the interface address" in behind_nat.stdout


def test_preflight_fails_when_the_private_address_is_not_the_machines(tmp_path: Path, api: Path) -> None:
    cluster = cluster_from(tmp_path, three_servers())
    scripts = scripts_for(cluster, AGENT_A10)
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    agent.set("addresses", scripts.node.host)

    result = agent.run(scripts.preflight)

    assert result.returncode != 0
    assert f"privateIp {scripts.node.private_ip} is not an address of this machine" in result.stderr


def test_preflight_says_what_an_active_ufw_must_allow(tmp_path: Path, api: Path, cluster: ClusterSettings) -> None:
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    scripts = scripts_for(cluster, SERVER)
    ssh = "22/tcp|ALLOW|IN|Anywhere\n"
    server.set("ufw-rules", ssh + "6443/tcp|ALLOW|IN|203.0.113.0/24\n")

    result = server.run(scripts.preflight)

    assert result.returncode != 0
    line = next(x for x in result.stderr.splitlines() if "ufw is active" in x)
    for port in ("tcp 2379:2380", "tcp 10250", "udp 51820", "tcp 7946", "udp 7946", "tcp 9100"):
        assert port in line, port
    assert "tcp 6443" not in line
    # No list of the other machines' addresses: it would make every machine's preflight change (and
    # re-run) whenever a machine is added; the line says where the addresses are.
    assert "from the address of every other machine (its privateIp, or its host)" in line
    ports = [p.split("/") for p in firewall_ports(cluster, scripts.node)]
    server.set("ufw-rules", ssh + "".join(f"{number}/{proto}|ALLOW|IN|192.0.2.0/24\n" for proto, number in ports))
    assert server.run(scripts.preflight).returncode == 0


# ---- getting K3s onto a machine: the release binary, its sha256, the unit, the way back --------------

STACKS = ("production", "development")
ASSETS = {"amd64": "k3s", "arm64": "k3s-arm64"}
UNAME = {"amd64": "x86_64", "arm64": "aarch64"}
GITHUB = "https://github.com/k3s-io/k3s/releases/download"
MIRROR = "https://k3s-mirror.internal.example/k3s"


def stack_document(stack: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())
    return document


def stack_cluster(tmp_path: Path, stack: str, **settings: Any) -> ClusterSettings:
    """The stack's cluster settings, with `settings` (k3sMirror, k3sSha256, ...) added to them."""
    document = stack_document(stack)
    document["config"]["sophia-infra:cluster"].update(settings)
    directory = tmp_path / f"stack-{time.monotonic_ns()}"
    directory.mkdir()
    config = load_stack(stack, stack_file=write_stack(directory, document, stack))
    return load_settings(config.stack, config.config, config.secret_keys).cluster


def release_pins(version: str) -> dict[str, str]:
    """`cluster.k3sSha256` as an operator copies it from the release's sha256sum-<arch>.txt files."""
    return {arch: hashlib.sha256(k3s_release_binary(version, asset)).hexdigest() for arch, asset in ASSETS.items()}


def prepared_machines(tmp_path: Path, cluster: ClusterSettings) -> list[tuple[Machine, NodeScripts]]:
    """A fake machine for every node (of the node's arch, each with a cluster of its own), claimed and holding
    its tokens: what the install step finds."""
    prepared = []
    for node in cluster.nodes:
        m = Machine(tmp_path / node.name, tmp_path / f"api-{node.name}")
        m.set("machine", UNAME[node.arch.value] + "\n")
        scripts = node_scripts(cluster, node)
        result = m.run(scripts.prepare, tokens_for(m, scripts))
        assert result.returncode == 0, result.output
        prepared.append((m, scripts))
    return prepared


def installed(tmp_path: Path, cluster: ClusterSettings) -> list[tuple[Machine, NodeScripts]]:
    machines = prepared_machines(tmp_path, cluster)
    for m, scripts in machines:
        result = m.run(scripts.install)
        assert result.returncode == 0, f"{scripts.node.name}: {result.output}"
    return machines


def unit_path(m: Machine, scripts: NodeScripts) -> Path:
    service = "k3s" if scripts.node.role.value == "server" else "k3s-agent"
    return m.root / f"etc/systemd/system/{service}.service"


@pytest.mark.parametrize("stack", STACKS)
def test_every_node_installs_its_archs_release_binary_checked_against_the_releases_checksums(
    tmp_path: Path, stack: str
) -> None:
    cluster = stack_cluster(tmp_path, stack)
    release = f"{GITHUB}/{cluster.k3s_version.replace('+', '%2B')}"
    for m, scripts in installed(tmp_path, cluster):
        node = scripts.node
        asset = ASSETS[node.arch.value]
        # The release's checksum file first, then the binary: both from GitHub's release URLs.
        assert m.downloads() == [f"{release}/sha256sum-{node.arch.value}.txt", f"{release}/{asset}"], node.name
        assert m.installed_k3s() == f"{cluster.k3s_version} {asset}"
        binary = m.root / "usr/local/bin/k3s"
        assert binary.read_bytes() == k3s_release_binary(cluster.k3s_version, asset)
        assert binary.stat().st_mode & 0o777 == 0o755
        for command in ("kubectl", "crictl", "ctr"):
            assert (m.root / "usr/local/bin" / command).readlink() == Path("k3s"), command
        unit = unit_path(m, scripts).read_text()
        assert f"\nExecStart=/usr/local/bin/k3s {node.role.value}\n" in unit
        for line in ("Type=notify", "KillMode=process", "Delegate=yes", "TimeoutStartSec=0", "Restart=always"):
            assert f"\n{line}\n" in unit, line
        calls = m.calls()
        reload_at = calls.index(["systemctl", "daemon-reload"])
        restart_at = next(i for i, c in enumerate(calls) if c[:1] == ["systemctl"] and "restart" in c)
        assert reload_at < restart_at
        assert m.restarts(unit_path(m, scripts).stem) == 1
    if stack == "production":
        assert any(node.arch.value == "arm64" for node in cluster.nodes)  # the GH200 machine: k3s-arm64


@pytest.mark.parametrize("stack", STACKS)
def test_a_binary_that_does_not_match_its_sha256_is_refused_and_nothing_on_the_machine_changes(
    tmp_path: Path, stack: str
) -> None:
    unpinned = stack_cluster(tmp_path, stack)
    pinned = stack_cluster(tmp_path, stack, k3sSha256=release_pins(unpinned.k3s_version))
    for cluster, source in ((unpinned, "sha256sum-"), (pinned, "cluster.k3sSha256.")):
        for m, scripts in prepared_machines(tmp_path / source, cluster):
            node = scripts.node
            m.set("tampered-binary")  # what the download server sends is not the release's binary
            before = m.files()

            result = m.run(scripts.install)

            assert result.returncode != 0
            (line,) = [x for x in result.stderr.splitlines() if "FAILED" in x]
            published = hashlib.sha256(k3s_release_binary(cluster.k3s_version, ASSETS[node.arch.value])).hexdigest()
            assert f"expected {published}" in line and "has sha256 " in line and source in line, line
            assert m.files() == before, node.name
            assert not (m.root / "usr/local/bin/k3s").exists()
            assert not unit_path(m, scripts).exists()
            assert m.restarts(unit_path(m, scripts).stem) == 0
            assert not any(c[:1] == ["systemctl"] for c in m.calls()), node.name


@pytest.mark.parametrize("stack", STACKS)
def test_a_mirror_serves_the_release_and_pinned_sha256s_replace_its_checksum_files(tmp_path: Path, stack: str) -> None:
    version = stack_cluster(tmp_path, stack).k3s_version
    cluster = stack_cluster(tmp_path, stack, k3sMirror=MIRROR, k3sSha256=release_pins(version))
    for m, scripts in installed(tmp_path, cluster):
        # The mirror's layout is the release's; with the sha256 pinned, its checksum files are not read.
        assert m.downloads() == [f"{MIRROR}/{version.replace('+', '%2B')}/{ASSETS[scripts.node.arch.value]}"]
        assert m.installed_k3s() == f"{version} {ASSETS[scripts.node.arch.value]}"
        assert "github.com" not in m.call_log()


@pytest.mark.parametrize("stack", STACKS)
def test_install_on_every_node_is_idempotent(tmp_path: Path, stack: str) -> None:
    for m, scripts in installed(tmp_path, stack_cluster(tmp_path, stack)):
        before, calls = m.files(), len(m.calls())

        again = m.run(scripts.install)

        assert again.returncode == 0, again.output
        assert "nothing to do" in again.stdout
        assert m.files() == before
        assert [c[:2] for c in m.calls()[calls:] if c[0] in ("curl", "systemctl")] == [["systemctl", "is-active"]], (
            scripts.node.name
        )


def start_container(m: Machine) -> tuple[subprocess.Popen[bytes], int]:
    """A containerd shim of this machine's K3s (by its command line, as k3s-killall.sh finds them) with a
    container process under it: real processes, which only an uninstall of this machine may kill."""
    shim = m.root / "var/lib/rancher/k3s/data/0a1b2c/bin/containerd-shim-runc-v2"
    process = subprocess.Popen(
        ["bash", "-c", 'sleep 300 & echo $!; exec -a "$0" sleep 300', str(shim)], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    child = int(process.stdout.readline())
    return process, child


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("stack", STACKS)
def test_uninstall_removes_everything_k3s_put_on_every_node_and_can_run_again(tmp_path: Path, stack: str) -> None:
    for m, scripts in installed(tmp_path, stack_cluster(tmp_path, stack)):
        name = scripts.node.name
        shim, container = start_container(m)
        try:
            assert "/run/k3s/" in (m.root / "proc/self/mounts").read_text()
            result = m.run(scripts.uninstall)
            assert result.returncode == 0, result.output
            shim.wait(timeout=10)
        finally:
            shim.kill()
        assert not running(container), f"{name}: a container outlived the uninstall"
        # Unmounted (deepest first) before anything was removed; the interfaces deleted.
        assert [line.split()[1] for line in (m.root / "proc/self/mounts").read_text().splitlines()] == ["/"]
        assert [line.split()[1] for line in (m.fake / "links").read_text().splitlines()] == ["lo:", "eth0:"]
        # K3s's packet filter rules gone, ufw's kept.
        rules = (m.fake / "iptables-save").read_text()
        assert "-A ufw-user-input -p tcp --dport 22 -j ACCEPT" in rules
        assert "KUBE-" not in rules and "flannel" not in rules.lower()
        gone = ["etc/rancher/k3s", "var/lib/rancher/k3s", "var/lib/kubelet", "run/k3s", "run/flannel"]
        gone += ["usr/local/bin/k3s", "usr/local/bin/kubectl", "usr/local/bin/crictl", "usr/local/bin/ctr"]
        assert [p for p in gone if (m.root / p).exists() or (m.root / p).is_symlink()] == [], name
        assert not unit_path(m, scripts).exists()
        service = unit_path(m, scripts).stem
        assert ["systemctl", "stop", service] in m.calls() and ["systemctl", "disable", service] in m.calls()

        again = m.run(scripts.uninstall)

        assert again.returncode == 0, again.output
        assert "K3s is not installed" in again.stdout


def test_uninstall_cleans_a_machine_the_k3s_installer_set_up_without_running_its_scripts(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    scripts = scripts_for(cluster, AGENT_A10)
    bring_up(agent, scripts)
    # What K3s's installer left besides what the install step also writes.
    ran = agent.fake / "installer-script-ran"
    leftovers = ["usr/local/bin/k3s-killall.sh", "usr/local/bin/k3s-agent-uninstall.sh"]
    for script in leftovers:
        (agent.root / script).write_text(f"#!/bin/sh\ntouch {ran}\n")
        (agent.root / script).chmod(0o755)
    (agent.root / "etc/systemd/system/k3s-agent.service.env").write_text("")

    result = agent.run(scripts.uninstall)

    assert result.returncode == 0, result.output
    assert not ran.exists()
    for path in [*leftovers, "etc/systemd/system/k3s-agent.service.env", "usr/local/bin/k3s"]:
        assert not (agent.root / path).exists(), path


def test_uninstall_removes_nothing_under_a_mount_it_could_not_unmount(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    scripts = scripts_for(cluster, AGENT_A10)
    bring_up(agent, scripts)
    busy = agent.root / "var/lib/kubelet/pods/5e6f/volumes/kubernetes.io~projected/kube-api-access"
    agent.set("busy-mount", str(busy))  # neither `umount -f` nor `umount -l` takes it away

    result = agent.run(scripts.uninstall)

    assert result.returncode != 0
    assert f"could not unmount {busy}; nothing under it was removed" in result.stderr
    assert (agent.root / "var/lib/kubelet/pods/5e6f").exists()
    assert (agent.root / "var/lib/rancher/k3s").exists()
    assert (agent.root / "etc/rancher/k3s/config.yaml").exists()


def at_version(scripts: NodeScripts, version: str) -> str:
    """The node's install script for another K3s release, as a changed `k3sVersion` renders it (changed in
    the prelude: the settings themselves may refuse releases the pinned charts do not support)."""
    exports = script_exports(scripts.install)
    encoded = (exports["K3S_VERSION"].replace("+", "%2B"), version.replace("+", "%2B"))
    return with_exports(
        scripts.install,
        K3S_VERSION=shlex.quote(version),
        K3S_BINARY_URL=shlex.quote(exports["K3S_BINARY_URL"].replace(*encoded)),
        K3S_SHA256_URL=shlex.quote(exports["K3S_SHA256_URL"].replace(*encoded)),
    )


@pytest.mark.parametrize("stack", STACKS)
def test_install_refuses_a_downgrade_or_a_skipped_minor_before_changing_anything(tmp_path: Path, stack: str) -> None:
    cluster = stack_cluster(tmp_path, stack)
    assert cluster.k3s_version == "v1.35.5+k3s1"
    refusals = {
        "v1.35.4+k3s1": "runs K3s v1.35.5+k3s1, newer than k3sVersion v1.35.4+k3s1, and K3s cannot be downgraded",
        "v1.35.5+k3s0": "newer than k3sVersion v1.35.5+k3s0",
        "v1.34.9+k3s1": "newer than k3sVersion v1.34.9+k3s1",
        "v1.37.0+k3s1": "runs K3s v1.35.5+k3s1 and k3sVersion v1.37.0+k3s1 skips minor versions, which K3s does"
        " not support (K3s docs, upgrades/manual): upgrade one minor at a time, first to the latest v1.36 release",
    }
    for m, scripts in installed(tmp_path, cluster):
        for version, refusal in refusals.items():
            before, calls = m.files(), len(m.calls())

            result = m.run(at_version(scripts, version))

            assert result.returncode != 0
            (line,) = [x for x in result.stderr.splitlines() if "FAILED" in x]
            assert refusal in line, line
            assert m.files() == before
            assert not any(c[0] in ("curl", "systemctl") for c in m.calls()[calls:])
        # One minor up, and a new K3s revision of the same Kubernetes release, are upgrades K3s supports.
        for version in ("v1.36.2+k3s1", "v1.36.2+k3s2"):
            result = m.run(at_version(scripts, version))
            assert result.returncode == 0, result.output
            assert m.installed_k3s() == f"{version} {ASSETS[scripts.node.arch.value]}"


def test_a_node_the_k3s_installer_set_up_gets_this_unit_and_one_restart_without_a_download(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    scripts = scripts_for(cluster, AGENT_A10)
    bring_up(agent, scripts)
    # As the installer left it: its unit (the command on continuation lines) and the applied record of
    # the install step before this one (the version and the config's sha256, no unit).
    unit = agent.root / "etc/systemd/system/k3s-agent.service"
    unit.write_text(
        unit.read_text().replace(
            "ExecStart=/usr/local/bin/k3s agent\n", "ExecStart=/usr/local/bin/k3s \\\n    agent \\\n\n"
        )
    )
    applied = agent.root / "var/lib/rancher/k3s/sophia-applied"
    applied.write_text(" ".join(applied.read_text().split()[:2]) + "\n")
    downloads = len(agent.downloads())

    result = agent.run(scripts.install)

    assert result.returncode == 0, result.output
    assert "wrote /etc/systemd/system/k3s-agent.service" in result.stdout
    assert "\nExecStart=/usr/local/bin/k3s agent\n" in unit.read_text()
    assert agent.restarts("k3s-agent") == 2
    assert len(agent.downloads()) == downloads
    assert "nothing to do" in agent.run(scripts.install).stdout


def test_every_uninstall_command_that_could_hang_is_bounded(
    tmp_path: Path, api: Path, cluster: ClusterSettings
) -> None:
    agent = machine(tmp_path, api, AGENT_A10, gpus="NVIDIA A10\n")
    scripts = scripts_for(cluster, AGENT_A10)
    bring_up(agent, scripts)
    calls = len(agent.calls())

    assert agent.run(scripts.uninstall).returncode == 0

    privileged = [c[3:] for c in agent.calls()[calls:] if c[:3] == ["sudo", "-n", "--"]]
    waits = [c for c in privileged if c[:2] in (["systemctl", "stop"], ["umount", "-f"], ["umount", "-l"])]
    assert waits == []  # each of them runs under `timeout`
    bounded = [c[2:] for c in privileged if c[0] == "timeout"]
    assert ["systemctl", "stop", "k3s-agent"] in bounded
    assert sum(c[0] == "umount" for c in bounded) == 3


def test_preflight_reads_ufw_as_root(tmp_path: Path, api: Path, cluster: ClusterSettings) -> None:
    """ufw refuses a user that is not root; a preflight that asked without sudo would see no firewall."""
    server = machine(tmp_path, api, SERVER, gpus="Quadro RTX 6000\n")
    server.set("ufw-rules", "22/tcp|ALLOW|IN|Anywhere\n")
    assert server.run(scripts_for(cluster, SERVER).preflight).returncode != 0
    ufw = [c for c in server.calls() if "ufw" in c]
    assert ufw == [["sudo", "-n", "--", "ufw", "status"], ["ufw", "status"]]
