"""Invariants of the K3s cluster over the rendered production stack (and variations of it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.cluster.node_config import flannel_backend, node_address, node_scripts
from components.gpu import GPU_PRESENT_LABEL, GPU_TAINT_KEY, GPU_TYPE_LABEL
from components.settings.stack import Settings, load_settings
from render.__main__ import render
from render.bench import host_key
from render.engine import _SECRET_SIG, REMOTE_COMMAND, StandInCloud, run_program
from render.model import Rendered, build
from render.stack import StackConfig, load_stack
from tests.support import production_document, script_exports, settings_from, stack_from

FIRST = "sophia-production-instance"

CLUSTER_ONLY_PROGRAM = """
import pulumi

from components.cluster import K3sCluster, K3sClusterArgs
from components.settings.stack import load_settings, stack_config
from components.settings.secrets import SecretKey

settings = load_settings(pulumi.get_stack(), *stack_config())
cluster = K3sCluster(
    "sophia", K3sClusterArgs(cluster=settings.cluster, ssh_private_key=settings.secrets[SecretKey.SSH_PRIVATE_KEY])
)
"""


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return settings_from(tmp_path_factory.mktemp("settings"), production_document())


def commands(rendered: Rendered) -> list[dict[str, Any]]:
    return rendered.by_type(REMOTE_COMMAND)


def command(rendered: Rendered, name: str) -> dict[str, Any]:
    return next(c for c in commands(rendered) if c["name"] == name)


def exports(script: str) -> dict[str, str]:
    """The settings a composed script starts with (its `export NAME=value` prelude)."""
    return script_exports(script)


def k3s_config(rendered: Rendered, node: str) -> dict[str, Any]:
    loaded = yaml.safe_load(exports(command(rendered, f"{node}-install")["inputs"]["create"])["K3S_CONFIG"])
    assert isinstance(loaded, dict)
    return loaded


def command_graph(rendered: Rendered) -> dict[str, set[str]]:
    """Each Command's name and the Commands it waits for, directly or through other resources."""
    by_urn = {r["urn"]: r for r in rendered.resources}

    def waits_for(urn: str, seen: frozenset[str]) -> Iterator[str]:
        for dep in by_urn[urn]["dependencies"]:
            if dep in seen or dep not in by_urn:
                continue
            if by_urn[dep]["type"] == REMOTE_COMMAND:
                yield by_urn[dep]["name"]
            else:
                yield from waits_for(dep, seen | {dep})

    return {c["name"]: set(waits_for(c["urn"], frozenset())) for c in commands(rendered)}


def longest_chain(graph: dict[str, set[str]]) -> int:
    lengths: dict[str, int] = {}

    def length(name: str) -> int:
        if name not in lengths:
            lengths[name] = 1 + max((length(d) for d in graph[name]), default=0)
        return lengths[name]

    return max(length(n) for n in graph)


def unwrap(value: Any) -> Any:
    """A mock engine input with its secret wrappers taken off (values as the provider gets them)."""
    if isinstance(value, dict):
        if _SECRET_SIG in value.values() and "value" in value:
            return unwrap(value["value"])
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


class RawInputs(StandInCloud):
    """The stand-in cloud, also keeping what each Command was really given (secrets unwrapped)."""

    seen: dict[str, dict[str, Any]] = {}

    def new_resource(self, args: Any) -> tuple[str | None, dict[str, Any]]:
        if args.typ == REMOTE_COMMAND:
            RawInputs.seen[args.name] = unwrap(dict(args.inputs))
        return super().new_resource(args)


@pytest.fixture(scope="module")
def raw_commands() -> tuple[StackConfig, dict[str, dict[str, Any]]]:
    """The production program run once more, recording the Commands' inputs before any redaction."""
    stack = load_stack("production")
    RawInputs.seen = {}
    patch = pytest.MonkeyPatch()
    patch.setattr("render.engine.StandInCloud", RawInputs)
    try:
        run_program(stack)
    finally:
        patch.undo()
    return stack, dict(RawInputs.seen)


def test_every_machine_has_its_steps_in_order_under_nodes(production: Rendered, settings: Settings) -> None:
    assert set(production.node_scripts) == {n.name for n in settings.cluster.nodes}
    for node, steps in production.node_scripts.items():
        names = [step for step, _ in steps]
        expected = ["preflight", "prepare", "install", "ready", "admit"]
        if node != FIRST:
            expected.insert(1, "claim")
        assert [n for n in names if n in expected] == expected, node
        assert ("kubeconfig" in names) == (node == FIRST)
        assert production.out_dir is not None
        written = sorted(p.name for p in (production.out_dir / "nodes" / node).glob("*.sh"))
        assert f"0{names.index('install') + 1}-install.sh" in written


def test_every_ssh_connection_pins_the_machines_host_key(
    raw_commands: tuple[StackConfig, dict[str, dict[str, Any]]], settings: Settings
) -> None:
    stack, raw = raw_commands
    by_host = {n.host: n for n in settings.cluster.nodes}
    ssh_key = stack.stand_ins["sophia-infra:sshPrivateKey"]
    # Six steps a node, plus the first server's two token steps.
    assert len(raw) == 6 * len(settings.cluster.nodes) + 2
    for name, inputs in raw.items():
        connection = inputs["connection"]
        node = by_host[connection["host"]]
        assert connection["hostKey"] == node.host_key, name
        assert connection["user"] == node.ssh_user == "ubuntu"
        assert connection["privateKey"] == ssh_key, name
        assert "password" not in connection


def test_the_ssh_connection_and_its_key_are_secret_in_the_render(production: Rendered) -> None:
    for c in commands(production):
        assert c["inputs"]["connection"]["privateKey"] == "[secret]", c["name"]
    reviewed = {r["name"]: production.component_outputs[r["urn"]] for r in production.by_type("sophia:cluster:K3sNode")}
    assert all(out["hostKey"].startswith("ssh-ed25519 ") for out in reviewed.values())


def test_the_cluster_side_steps_of_every_node_run_on_the_first_server(
    raw_commands: tuple[StackConfig, dict[str, dict[str, Any]]], settings: Settings
) -> None:
    _, raw = raw_commands
    first_host = settings.cluster.first_server.host
    for node in settings.cluster.nodes:
        for step in ("claim", "admit"):
            inputs = raw.get(f"{node.name}-{step}")
            if inputs is not None:
                assert inputs["connection"]["host"] == first_host
        for step in ("preflight", "prepare", "install", "ready"):
            assert raw[f"{node.name}-{step}"]["connection"]["host"] == node.host


def test_step_scripts_are_plain_complete_bash_and_the_token_travels_on_stdin_only(
    production: Rendered, raw_commands: tuple[StackConfig, dict[str, dict[str, Any]]]
) -> None:
    _, raw = raw_commands
    token = raw[f"{FIRST}-prepare"]["stdin"].split("\n")[0]
    assert token.startswith("rendered-random-")
    for c in commands(production):
        for script in (c["inputs"]["create"], c["inputs"].get("delete")):
            if script is None:
                continue
            assert script != "[secret]", c["name"]
            assert script.startswith("#!/usr/bin/env bash\nset -euo pipefail\n"), c["name"]
        has_stdin = "stdin" in c["inputs"]
        assert has_stdin == c["name"].endswith("-prepare"), c["name"]
        if has_stdin:
            assert c["inputs"]["stdin"] == "[secret]"
    for name, inputs in raw.items():
        assert token not in inputs["create"], name
        assert token not in inputs.get("delete", ""), name
        assert "environment" not in inputs, name


def test_the_kubeconfig_is_a_secret_output_and_never_logged(production: Rendered) -> None:
    assert production.outputs["kubeconfig"] == "[secret]"
    fetch = command(production, f"{FIRST}-kubeconfig")
    assert fetch["inputs"]["logging"] == "none"
    assert fetch["inputs"]["addPreviousOutputInEnv"] is False
    provider = next(r for r in production.by_type("pulumi:providers:kubernetes") if r["name"] == "sophia")
    assert provider["inputs"]["kubeconfig"] == "[secret]"
    assert production.outputs["apiEndpoint"] == "192.0.2.10"
    assert production.outputs["nodes"][0] == FIRST


def test_joining_nodes_wait_for_the_first_server_only(production: Rendered, settings: Settings) -> None:
    graph = command_graph(production)
    for node in settings.cluster.nodes:
        if node.name == FIRST:
            continue
        own = {f"{node.name}-{s}" for s in ("preflight", "claim", "prepare", "install", "ready", "admit")}
        waited: set[str] = set()
        todo = list(own)
        while todo:
            for dep in graph[todo.pop()]:
                if dep not in waited:
                    waited.add(dep)
                    todo.append(dep)
        others = {w for w in waited - own if not w.startswith(f"{FIRST}-")}
        assert not others, f"{node.name} waits for {sorted(others)}"
        assert f"{FIRST}-ready" in waited


def test_the_longest_chain_of_ssh_steps_is_the_same_for_50_machines_as_for_5(
    production: Rendered, fifty_machines: Rendered
) -> None:
    added = len(fifty_machines.by_type("sophia:cluster:K3sNode")) - len(production.by_type("sophia:cluster:K3sNode"))
    assert added == 45
    assert len(commands(fifty_machines)) == len(commands(production)) + added * 6
    assert longest_chain(command_graph(fifty_machines)) == longest_chain(command_graph(production)) == 9


def _three_server_graph(tmp_path: Path, extra_agents: int) -> tuple[dict[str, set[str]], set[str], set[str]]:
    document = production_document()
    nodes = document["config"]["sophia-infra:cluster"]["nodes"]
    for i, node in enumerate(nodes):
        node["privateIp"] = f"10.19.0.{i + 2}"  # several servers need a private network
        if node["name"] in ("sophia-mcp-orchestrator", "sophia-data-pipeline"):
            node["role"] = "server"
    template = next(n for n in nodes if n["name"] == "sophia-development")
    for i in range(extra_agents):
        name = f"sophia-extra-{i}"
        nodes.append(
            dict(
                template,
                name=name,
                host=f"198.51.100.{i + 10}",
                privateIp=f"10.19.1.{i + 2}",
                hostKey=host_key(name),
                labels={},
            )
        )
    directory = tmp_path / f"agents-{extra_agents}"
    directory.mkdir()
    program = directory / "cluster_only.py"
    program.write_text(CLUSTER_ONLY_PROGRAM)
    graph = command_graph(build("production", run_program(stack_from(directory, document), program)))
    servers = {n["name"] for n in nodes if n["role"] == "server"}
    agents = {n["name"] for n in nodes if n["role"] != "server"}
    return graph, servers, agents


def test_agents_upgrade_only_after_every_server(tmp_path: Path) -> None:
    graph, servers, agents = _three_server_graph(tmp_path, 0)

    def waited(name: str) -> set[str]:
        seen: set[str] = set()
        todo = [name]
        while todo:
            for dep in graph[todo.pop()]:
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    # K3s: upgrade servers first, one at a time, then agents; a server's ready re-runs after its restart.
    for agent in agents:
        assert {f"{s}-ready" for s in servers} <= waited(f"{agent}-install"), agent
    for server in servers:
        steps = [c for c in graph if c.startswith(f"{server}-")]
        assert not any(w.startswith(f"{a}-") for c in steps for w in waited(c) for a in agents), server
    bigger, _, _ = _three_server_graph(tmp_path, 40)
    assert longest_chain(bigger) == longest_chain(graph)


def test_removal_drains_then_uninstalls_then_deletes_the_node(production: Rendered, settings: Settings) -> None:
    graph = command_graph(production)
    for node in settings.cluster.nodes:
        name = node.name
        prepare = command(production, f"{name}-prepare")["inputs"]
        assert "uninstall" in prepare["delete"]
        if name == FIRST:
            assert "delete" not in command(production, f"{name}-admit")["inputs"]
            continue
        admit = command(production, f"{name}-admit")["inputs"]
        claim = command(production, f"{name}-claim")["inputs"]
        assert 'kube drain "$NODE_NAME"' in admit["delete"]
        assert 'kube delete node "$NODE_NAME"' in claim["delete"]
        # Pulumi deletes a resource only after everything that depends on it: admit (drain) goes
        # first, then prepare (uninstall), then claim (Node object removal).
        assert f"{name}-ready" in graph[f"{name}-admit"]
        assert f"{name}-install" in graph[f"{name}-ready"]
        assert f"{name}-prepare" in graph[f"{name}-install"]
        assert f"{name}-claim" in graph[f"{name}-prepare"]


def test_a_step_that_drains_uninstalls_or_removes_is_never_replaced_while_its_node_stays(production: Rendered) -> None:
    # pulumi-command 1.2.1 replaces a Command only when `triggers` change, and a replaced Command
    # runs its old `delete`: a drain, an uninstall or a Node removal on a machine that stays.
    holders = [c for c in commands(production) if c["inputs"].get("delete")]
    assert {c["name"].rsplit("-", 1)[-1] for c in holders} == {"claim", "prepare", "admit"}
    for resource in holders:
        assert "triggers" not in resource["inputs"], resource["name"]
        # The SDK itself declares `triggers[*]` replace-on-change; nothing else may be added to it.
        assert resource["options"].get("replaceOnChanges", []) == ["triggers[*]"], resource["name"]


def test_every_step_keeps_the_current_ssh_connection_in_state_for_its_delete(production: Rendered) -> None:
    # Any other changed input, the connection included, is an in-place update that runs `create`
    # again and stores the new connection; a later delete runs with what is in state. Ignoring
    # connection changes would keep a rotated-away key there, and the drain on removal would fail.
    for resource in commands(production):
        assert "connection" not in resource["options"].get("ignoreChanges", []), resource["name"]


def test_a_changed_version_or_config_reruns_the_install_through_triggers(
    production: Rendered, settings: Settings, tmp_path: Path
) -> None:
    for node in settings.cluster.nodes:
        install = command(production, f"{node.name}-install")["inputs"]
        scripts = node_scripts(settings.cluster, node)
        assert install["triggers"] == scripts.install_triggers
        ready = command(production, f"{node.name}-ready")["inputs"]
        assert ready["triggers"] == [f"{node.name}-install-id"]
    document = production_document()
    document["config"]["sophia-infra:cluster"]["k3sVersion"] = "v1.35.6+k3s1"
    upgraded = settings_from(tmp_path, document).cluster
    for before, after in zip(settings.cluster.nodes, upgraded.nodes, strict=True):
        assert node_scripts(upgraded, after).install_triggers != node_scripts(settings.cluster, before).install_triggers


def test_a_label_change_changes_only_that_nodes_admit(settings: Settings, tmp_path: Path) -> None:
    document = production_document()
    relabelled = document["config"]["sophia-infra:cluster"]["nodes"][2]
    relabelled["labels"] = {**relabelled.get("labels", {}), "sophia.ai/tier": "batch"}
    changed = settings_from(tmp_path, document).cluster
    for before, after in zip(settings.cluster.nodes, changed.nodes, strict=True):
        old, new = node_scripts(settings.cluster, before), node_scripts(changed, after)
        differing = {f.name for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(new, f.name)}
        assert differing == ({"node", "admit"} if after.name == relabelled["name"] else set()), after.name


def test_gpu_machines_join_labelled_and_the_gh200_tainted(production: Rendered, settings: Settings) -> None:
    for node in settings.cluster.nodes:
        config = k3s_config(production, node.name)
        assert node.gpu is not None
        # Labels are admit's alone (a label change must restart nothing); taints register with the node.
        assert "node-label" not in config
        admit = exports(command(production, f"{node.name}-admit")["inputs"]["create"])
        labels = set(admit["NODE_LABELS"].splitlines())
        assert {f"{GPU_TYPE_LABEL}={node.gpu.model.label}", f"{GPU_PRESENT_LABEL}=true"} <= labels
        assert {f"{key}={value}" for key, value in node.labels.items()} <= labels
        assert admit["NODE_TAINTS"].splitlines() == config.get("node-taint", [])
    gh200 = k3s_config(production, "sophia-ai-core")
    assert gh200["node-taint"] == [f"{GPU_TAINT_KEY}=true:NoSchedule"]
    assert exports(command(production, "sophia-ai-core-preflight")["inputs"]["create"])["EXPECTED_MACHINE"] == "aarch64"


def test_the_first_server_initialises_a_hardened_cluster(production: Rendered, settings: Settings) -> None:
    config = k3s_config(production, FIRST)
    snapshots = settings.cluster.etcd_snapshots
    assert config["cluster-init"] is True
    assert "server" not in config
    assert config["disable"] == ["servicelb"]
    assert settings.cluster.api_endpoint in config["tls-san"]
    assert config["secrets-encryption"] is True
    assert config["write-kubeconfig-mode"] == "0600"
    assert config["etcd-snapshot-schedule-cron"] == snapshots.schedule
    assert config["etcd-snapshot-retention"] == snapshots.retention
    assert config["token-file"] == "/etc/rancher/k3s/sophia-join-token"
    assert config["node-name"] == FIRST
    # The production machines have no private addresses: pod traffic crosses the internet encrypted,
    # between the public addresses (node-external-ip), which may be on no interface (NAT).
    assert config["flannel-backend"] == "wireguard-native"
    assert config["flannel-external-ip"] is True
    assert config["node-external-ip"] == settings.cluster.first_server.host
    assert "node-ip" not in config
    install = exports(command(production, f"{FIRST}-install")["inputs"]["create"])
    assert install["K3S_VERSION"] == settings.cluster.k3s_version


def test_agents_join_the_first_server_with_the_token_file(production: Rendered, settings: Settings) -> None:
    for node in settings.cluster.nodes:
        if node.name == FIRST:
            continue
        config = k3s_config(production, node.name)
        assert config["server"] == f"https://{node_address(settings.cluster, settings.cluster.first_server)}:6443"
        assert "cluster-init" not in config
        assert config["token-file"] == "/etc/rancher/k3s/sophia-join-token"
        # No private network: K3s's own node-ip (the interface address), the public host as external IP.
        assert "node-ip" not in config
        assert config["node-external-ip"] == node.host == node_address(settings.cluster, node)


def test_flannel_uses_vxlan_when_every_machine_has_a_private_address(tmp_path: Path) -> None:
    document = production_document()
    for i, node in enumerate(document["config"]["sophia-infra:cluster"]["nodes"]):
        node["privateIp"] = f"10.19.0.{i + 2}"
    cluster = settings_from(tmp_path, document).cluster
    assert flannel_backend(cluster) == "vxlan"
    first = node_scripts(cluster, cluster.first_server)
    config = yaml.safe_load(first.config)
    assert config["flannel-backend"] == "vxlan"
    assert config["node-ip"] == "10.19.0.2"
    assert config["node-external-ip"] == cluster.first_server.host
    assert "flannel-external-ip" not in config


def test_with_private_addresses_on_some_machines_only_every_node_uses_its_public_one(tmp_path: Path) -> None:
    document = production_document()
    nodes = document["config"]["sophia-infra:cluster"]["nodes"]
    nodes[0]["privateIp"] = "10.19.0.2"  # the first server
    nodes[1]["privateIp"] = "10.19.0.3"
    cluster = settings_from(tmp_path, document).cluster
    assert flannel_backend(cluster) == "wireguard-native"
    for node in cluster.nodes:
        scripts = node_scripts(cluster, node)
        config = yaml.safe_load(scripts.config)
        # A machine without a private address could neither join a private server URL nor reach a
        # private flannel endpoint.
        assert "node-ip" not in config, node.name
        assert config["node-external-ip"] == node.host, node.name
        assert config.get("flannel-external-ip", True) is True, node.name
        assert config.get("server", f"https://{cluster.first_server.host}:6443") == (
            f"https://{cluster.first_server.host}:6443"
        )
        if scripts.claim is not None:
            assert exports(scripts.claim)["NODE_IP"] == node.host


# The K3s flags this project may write to config.yaml, with their value types, as `k3s agent --help`
# and `k3s server --help` list them (docs.k3s.io cli/agent and cli/server). K3s skips a key that is
# not a flag of the running command with only a warning in its log ("Unknown flag ... found in
# config.yaml, skipping", pkg/configfilearg/parser.go), so a misspelt key would silently do nothing.
K3S_AGENT_FLAGS: dict[str, type] = {
    "server": str,
    "token-file": str,
    "node-name": str,
    "node-ip": str,
    "node-external-ip": str,
    "node-label": list,
    "node-taint": list,
    "flannel-iface": str,
}
K3S_SERVER_FLAGS: dict[str, type] = K3S_AGENT_FLAGS | {
    "agent-token-file": str,
    "cluster-init": bool,
    "tls-san": list,
    "disable": list,
    "flannel-backend": str,
    "flannel-external-ip": bool,
    "secrets-encryption": bool,
    "write-kubeconfig-mode": str,
    "etcd-snapshot-schedule-cron": str,
    "etcd-snapshot-retention": int,
    "supervisor-metrics": bool,
    "etcd-s3": bool,
    "etcd-s3-config-secret": str,
}


def test_every_config_key_is_a_flag_of_the_k3s_command_the_node_runs(production: Rendered, settings: Settings) -> None:
    for node in settings.cluster.nodes:
        config = k3s_config(production, node.name)
        install = exports(command(production, f"{node.name}-install")["inputs"]["create"])
        flags = K3S_SERVER_FLAGS if install["NODE_ROLE"] == "server" else K3S_AGENT_FLAGS
        assert node.role.value == install["NODE_ROLE"]
        for key, value in config.items():
            assert key in flags, f"{node.name}: {key} is not a k3s {install['NODE_ROLE']} flag"
            assert isinstance(value, flags[key]), f"{node.name}: {key}={value!r}"
        assert config["flannel-backend" if node.role.value == "server" else "node-name"]


# The binary of each architecture in a K3s release, as GitHub serves it (the release's `+` as %2B).
GITHUB_RELEASE = "https://github.com/k3s-io/k3s/releases/download/v1.35.5%2Bk3s1"
RELEASE_ASSETS = {"amd64": "k3s", "arm64": "k3s-arm64"}


@pytest.mark.parametrize("stack", ["production", "development"])
def test_every_node_installs_the_release_binary_of_its_arch_checked_against_the_releases_checksums(
    stack: str, tmp_path: Path
) -> None:
    config = load_stack(stack)
    rendered, _ = render(config, tmp_path / stack)
    cluster = load_settings(config.stack, config.config, config.secret_keys).cluster
    assert cluster.k3s_version == "v1.35.5+k3s1"
    for node in cluster.nodes:
        install = exports(command(rendered, f"{node.name}-install")["inputs"]["create"])
        asset = RELEASE_ASSETS[node.arch.value]
        assert install["K3S_BINARY_URL"] == f"{GITHUB_RELEASE}/{asset}", node.name
        assert install["K3S_SHA256_URL"] == f"{GITHUB_RELEASE}/sha256sum-{node.arch.value}.txt", node.name
        assert install["K3S_SHA256"] == ""  # no pin in the stack file: the release's own checksums
        service = "k3s" if node.role.value == "server" else "k3s-agent"
        assert install["K3S_SERVICE"] == service
        assert install["K3S_UNIT_FILE"] == f"/etc/systemd/system/{service}.service"
        exec_start = [line for line in install["K3S_UNIT"].splitlines() if line.startswith("ExecStart=")]
        assert exec_start == [f"ExecStart=/usr/local/bin/k3s {node.role.value}"], node.name
        create = command(rendered, f"{node.name}-install")["inputs"]["create"]
        # No installer is fetched or run: nothing from the installer's URLs, none of its variables.
        assert "raw.githubusercontent.com" not in create and "get.k3s.io" not in create
        assert "INSTALL_K3S_" not in create
    assert any(n.arch.value == "arm64" for n in cluster.nodes) or stack == "development"


def test_the_join_tokens_are_generated_stable_secrets(production: Rendered) -> None:
    tokens = production.by_type("random:index/randomPassword:RandomPassword")
    assert sorted(t["name"] for t in tokens) == ["sophia-agent-token", "sophia-join-token"]
    for token in tokens:
        assert token["inputs"]["length"] >= 32
        assert token["inputs"]["special"] is False
        assert "keepers" not in token["inputs"]
        assert token["provider"] is not None


def test_joins_pin_the_cluster_ca_and_agents_never_hold_the_server_token(
    production: Rendered, raw_commands: tuple[StackConfig, dict[str, dict[str, Any]]], settings: Settings
) -> None:
    _, raw = raw_commands
    server_password, agent_password = raw[f"{FIRST}-prepare"]["stdin"].splitlines()
    assert server_password != agent_password
    config = k3s_config(production, FIRST)
    assert config["agent-token-file"] == "/etc/rancher/k3s/sophia-agent-token"
    # What the first server's token steps print (K3s's secure K10 tokens; stand-ins here).
    secure = {step: raw[f"{FIRST}-{step}"] for step in ("server-token", "agent-token")}
    assert exports(secure["server-token"]["create"])["TOKEN_PATH"] == "/var/lib/rancher/k3s/server/token"
    assert exports(secure["agent-token"]["create"])["TOKEN_PATH"] == "/var/lib/rancher/k3s/server/agent-token"
    stand_in = {step: f"rendered stdout of {FIRST}-{step}" for step in secure}
    for step in secure:
        rendered_step = command(production, f"{FIRST}-{step}")
        assert rendered_step["inputs"]["logging"] == "none", step
        assert "stdout" in rendered_step["options"].get("additionalSecretOutputs", ["stdout"])
    for node in settings.cluster.nodes:
        if node.name == FIRST:
            continue
        stdin = raw[f"{node.name}-prepare"]["stdin"]
        assert server_password not in stdin, node.name
        if node.role.value == "server":
            assert stdin == f"{stand_in['server-token']}\n{agent_password}\n", node.name
        else:
            assert stdin == f"{stand_in['agent-token']}\n", node.name
            assert "agent-token-file" not in k3s_config(production, node.name)


def test_every_step_uses_the_clusters_own_ssh_provider(production: Rendered) -> None:
    # The cluster's own command provider (Argo CD's password-mtime command has one of its own, locally).
    (ssh,) = [p for p in production.by_type("pulumi:providers:command") if p["name"] == "sophia-ssh"]
    assert all(c["provider"] == ssh["urn"] for c in commands(production))
