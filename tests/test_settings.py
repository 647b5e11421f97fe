"""Bad configuration fails before anything is touched, with one line naming the key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from components.settings.cluster import SUPPORTED_KUBERNETES_MINORS, Arch, Role
from components.settings.stack import ConfigError
from tests.support import problems_of, production_document, settings_from

Doc = dict[str, Any]


def cluster(doc: Doc) -> Doc:
    return doc["config"]["sophia-infra:cluster"]  # type: ignore[no-any-return]


def node(doc: Doc, i: int) -> Doc:
    return cluster(doc)["nodes"][i]  # type: ignore[no-any-return]


def test_the_production_stack_is_valid(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, production_document())
    assert [n.name for n in settings.cluster.nodes] == [
        "sophia-production-instance",
        "sophia-ai-core",
        "sophia-mcp-orchestrator",
        "sophia-data-pipeline",
        "sophia-development",
    ]
    assert settings.cluster.first_server.name == "sophia-production-instance"
    assert settings.cluster.first_server.role is Role.SERVER
    gh200 = settings.cluster.nodes[1]
    assert gh200.arch is Arch.ARM64
    assert gh200.gpu is not None
    assert gh200.gpu.model.label == "gh200"
    assert [str(t) for t in gh200.taints] == ["nvidia.com/gpu=true:NoSchedule"]
    assert settings.cluster.kubernetes_minor == "1.35"
    assert settings.network.ingress_address == "192.222.58.232"
    assert settings.images.registry == "docker.io/scoobyjava15"
    assert settings.gitops.branch == "main"


def _set(path: str, value: object) -> Callable[[Doc], None]:
    """A mutation setting `config.<path>` (dots and [i]) to `value`; `...` deletes the key."""

    def mutate(doc: Doc) -> None:
        target: Any = doc["config"]
        parts = path.replace("[", ".[").split(".")
        for part in parts[:-1]:
            target = target[int(part[1:-1])] if part.startswith("[") else target[part]
        last = parts[-1]
        key: Any = int(last[1:-1]) if last.startswith("[") else last
        if value is ...:
            del target[key]
        else:
            target[key] = value

    return mutate


def _all(*mutations: Callable[[Doc], None]) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        for change in mutations:
            change(doc)

    return mutate


# Stand-in sha256 pins (the format of a release's sha256sum-<arch>.txt; no real binary's).
PIN_AMD64 = "a" * 64
PIN_ARM64 = "b" * 64

CASES: list[tuple[str, Callable[[Doc], None], str]] = [
    ("unknown top-level key", _set("sophia-infra:colour", "blue"), "sophia-infra:colour: unknown key"),
    (
        "unknown nested key",
        _set("sophia-infra:cluster.nodes[0].colour", "blue"),
        "sophia-infra:cluster.nodes[0].colour: unknown key",
    ),
    ("missing section", _set("sophia-infra:network", ...), "sophia-infra:network: is required"),
    ("missing key", _set("sophia-infra:cluster.k3sVersion", ...), "sophia-infra:cluster.k3sVersion: is required"),
    (
        "wrong type",
        _set("sophia-infra:cluster.nodes[1].sshPort", "22"),
        "sophia-infra:cluster.nodes[1].sshPort: must be a whole number, got a string",
    ),
    (
        "boolean for a number",
        _set("sophia-infra:cluster.nodes[1].sshPort", True),
        "sophia-infra:cluster.nodes[1].sshPort: must be a whole number, got a boolean",
    ),
    (
        "invalid host",
        _set("sophia-infra:cluster.nodes[2].host", "999.1.1.1"),
        "sophia-infra:cluster.nodes[2].host: must be an IP address, got '999.1.1.1'",
    ),
    (
        "invalid private IP",
        _set("sophia-infra:cluster.nodes[2].privateIp", "10.0.0.300"),
        "sophia-infra:cluster.nodes[2].privateIp: must be an IP address, got '10.0.0.300'",
    ),
    (
        "invalid CIDR",
        _set("sophia-infra:network.loadBalancerAddresses", ["192.222.58.232/33"]),
        "sophia-infra:network.loadBalancerAddresses[0]: must be an IP address block as a CIDR (192.0.2.10/32)"
        " or a range (a-b), got '192.222.58.232/33'",
    ),
    (
        "invalid domain",
        _set("sophia-infra:network.domain", "sophia_ai.example"),
        "sophia-infra:network.domain: must be a DNS name, got 'sophia_ai.example'",
    ),
    (
        "duplicate node name",
        _set("sophia-infra:cluster.nodes[3].name", "sophia-ai-core"),
        "sophia-infra:cluster.nodes[1].name: duplicate name 'sophia-ai-core'",
    ),
    (
        "duplicate host",
        _set("sophia-infra:cluster.nodes[4].host", "192.0.2.10"),
        "sophia-infra:cluster.nodes[4].host: duplicate host '192.0.2.10'",
    ),
    (
        "no server",
        _set("sophia-infra:cluster.nodes[0].role", "agent"),
        "sophia-infra:cluster.nodes: needs at least one node with role server",
    ),
    (
        "even number of servers",
        _set("sophia-infra:cluster.nodes[2].role", "server"),
        "sophia-infra:cluster.nodes: has 2 servers; etcd needs an odd number of servers to keep quorum (1, 3, 5, ...)",
    ),
    (
        "unknown role",
        _set("sophia-infra:cluster.nodes[2].role", "master"),
        "sophia-infra:cluster.nodes[2].role: must be one of server, agent, got 'master'",
    ),
    (
        "unknown arch",
        _set("sophia-infra:cluster.nodes[2].arch", "x86_64"),
        "sophia-infra:cluster.nodes[2].arch: must be one of amd64, arm64, got 'x86_64'",
    ),
    (
        "unknown GPU type",
        _set("sophia-infra:cluster.nodes[2].gpu.type", "rtx4090"),
        "sophia-infra:cluster.nodes[2].gpu.type: must be one of a10, a100, a6000, b200, gh200, h100, rtx6000,"
        " got 'rtx4090'",
    ),
    (
        "GPU count below one",
        _set("sophia-infra:cluster.nodes[2].gpu.count", 0),
        "sophia-infra:cluster.nodes[2].gpu.count: must be between 1 and 16, got 0",
    ),
    (
        "GPU model on the wrong architecture",
        _set("sophia-infra:cluster.nodes[1].arch", "amd64"),
        "sophia-infra:cluster.nodes[1].gpu.type: NVIDIA GH200 machines are arm64, but the node's arch is amd64",
    ),
    (
        "malformed K3s version",
        _set("sophia-infra:cluster.k3sVersion", "1.35.5"),
        "sophia-infra:cluster.k3sVersion: must be a K3s release such as v1.35.5+k3s1, got '1.35.5'",
    ),
    (
        "malformed host key",
        _set("sophia-infra:cluster.nodes[0].hostKey", "AAAAC3NzaC1lZDI1NTE5"),
        "sophia-infra:cluster.nodes[0].hostKey: must be an SSH public host key ('<type> <base64>'),"
        " got 'AAAAC3NzaC1lZDI1NTE5'",
    ),
    (
        "ssh-rsa host key",
        _set("sophia-infra:cluster.nodes[0].hostKey", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ=="),
        "sophia-infra:cluster.nodes[0].hostKey: is an ssh-rsa key, which pulumi-command can only verify with SHA-1"
        " signatures and OpenSSH >= 8.8 refuses; pin the machine's ed25519 key instead (ssh-keyscan -t ed25519 <host>)",
    ),
    (
        "host key cut short",
        _set(
            "sophia-infra:cluster.nodes[0].hostKey",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE/8SNRdonHWbMbr5J6I/fwLprmtJJ0c0qbtOnUO",
        ),
        "sophia-infra:cluster.nodes[0].hostKey: is cut short: the ssh-ed25519 key ends in the middle of a field"
        " (copy the whole line of ssh-keyscan)",
    ),
    (
        "host key with its last characters dropped",
        _set(
            "sophia-infra:cluster.nodes[0].hostKey",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE/8SNRdonHWbMbr5J6I/fwLprmtJJ0c0qbtOnUOVp/",
        ),
        "sophia-infra:cluster.nodes[0].hostKey: is not valid base64 (a character is missing or wrong: copy the"
        " whole line of ssh-keyscan)",
    ),
    (
        "host key of another type than it says",
        _set(
            "sophia-infra:cluster.nodes[0].hostKey",
            "ecdsa-sha2-nistp256 AAAAC3NzaC1lZDI1NTE5AAAAIE/8SNRdonHWbMbr5J6I/fwLprmtJJ0c0qbtOnUOVp/T",
        ),
        "sophia-infra:cluster.nodes[0].hostKey: does not decode to an ecdsa-sha2-nistp256 key (it must start with"
        " the type 'ecdsa-sha2-nistp256' in SSH wire format)",
    ),
    (
        "hostname as a node's host",
        _set("sophia-infra:cluster.nodes[2].host", "gpu-2.lambda.example"),
        "sophia-infra:cluster.nodes[2].host: is the name 'gpu-2.lambda.example', but K3s takes this as the node's"
        " address (node-external-ip, and node-ip without a private network), which must be an IP address: write"
        " the machine's address (dig +short gpu-2.lambda.example)",
    ),
    (
        "a node label the kubelet may not set",
        _set("sophia-infra:cluster.nodes[1].labels", {"node-role.kubernetes.io/worker": "true"}),
        "sophia-infra:cluster.nodes[1].labels.node-role.kubernetes.io/worker: is in the kubernetes.io/k8s.io"
        " namespace, which the kubelet refuses to set on its own node (it would not start); only"
        " kubernetes.io/hostname, topology.kubernetes.io/zone, topology.kubernetes.io/region,"
        " failure-domain.beta.kubernetes.io/zone, failure-domain.beta.kubernetes.io/region,"
        " beta.kubernetes.io/instance-type, node.kubernetes.io/instance-type, kubernetes.io/os, kubernetes.io/arch,"
        " beta.kubernetes.io/os, beta.kubernetes.io/arch and the [*.]kubelet.kubernetes.io/ and"
        " [*.]node.kubernetes.io/ namespaces are allowed: use a label of your own domain instead (such as"
        " sophia.ai/role)",
    ),
    (
        "a K3s downgrade by seven minors",
        _set("sophia-infra:cluster.k3sVersion", "v1.28.5+k3s1"),
        "sophia-infra:cluster.k3sVersion: v1.28.5+k3s1 is Kubernetes 1.28, outside the 1.29 to 1.37 that the"
        " pinned charts (their kubeVersion) and the render's schemas support; K3s moves one minor at a time, so"
        " upgrade a running cluster minor by minor within that range",
    ),
    (
        "a K3s minor newer than the schemas",
        _set("sophia-infra:cluster.k3sVersion", "v1.38.0+k3s1"),
        "sophia-infra:cluster.k3sVersion: v1.38.0+k3s1 is Kubernetes 1.38, outside the 1.29 to 1.37 that the"
        " pinned charts (their kubeVersion) and the render's schemas support; K3s moves one minor at a time, so"
        " upgrade a running cluster minor by minor within that range",
    ),
    (
        "load-balancer address is a node's",
        _set("sophia-infra:network.loadBalancerAddresses", ["192.0.2.8/29"]),
        "sophia-infra:network.loadBalancerAddresses[0]: 192.0.2.8/29 includes 192.0.2.10, the address of node"
        " sophia-production-instance",
    ),
    (
        "load-balancer blocks that overlap",
        _set("sophia-infra:network.loadBalancerAddresses", ["198.51.100.0/30", "198.51.100.2-198.51.100.9"]),
        "sophia-infra:network.loadBalancerAddresses: blocks 198.51.100.0/30 and 198.51.100.2-198.51.100.9 overlap",
    ),
    (
        "load-balancer range that starts at a node's address",
        _set("sophia-infra:network.loadBalancerAddresses", ["192.0.2.10-192.0.2.12"]),
        "sophia-infra:network.loadBalancerAddresses[0]: 192.0.2.10-192.0.2.12 includes 192.0.2.10, the address of"
        " node sophia-production-instance",
    ),
    (
        "image tag latest",
        _set("sophia-infra:images.tags", {"sophia-backend": "latest"}),
        "sophia-infra:images.tags.sophia-backend: must be a pinned tag, not 'latest'",
    ),
    (
        "empty image tag",
        _set("sophia-infra:images.tags", {"sophia-backend": ""}),
        "sophia-infra:images.tags.sophia-backend: must not be empty",
    ),
    (
        "empty node list",
        _set("sophia-infra:cluster.nodes", []),
        "sophia-infra:cluster.nodes: must have at least 1 entry, got 0",
    ),
    (
        "GitOps repository not https",
        _set("sophia-infra:gitops.repoUrl", "git@github.com:ai-cherry/sophia-main.git"),
        "sophia-infra:gitops.repoUrl: must be an https URL of a Git repository,"
        " got 'git@github.com:ai-cherry/sophia-main.git'",
    ),
    (
        "chart mirror over plain http on the network",
        _set("sophia-infra:platform.chartMirror", "http://charts.internal.example/helm"),
        "sophia-infra:platform.chartMirror: must be an https:// URL of a Helm repository (http:// only on"
        " 127.0.0.0/8, localhost or [::1]), got 'http://charts.internal.example/helm'",
    ),
    (
        "K3s mirror over plain http on the network",
        _set("sophia-infra:cluster.k3sMirror", "http://mirror.internal.example/k3s"),
        "sophia-infra:cluster.k3sMirror: must be an https:// URL of a K3s release mirror (http:// only on"
        " 127.0.0.0/8, localhost or [::1]), got 'http://mirror.internal.example/k3s'",
    ),
    (
        "K3s mirror without the pin of an architecture the machines use",
        _all(
            _set("sophia-infra:cluster.k3sMirror", "https://mirror.internal.example/k3s"),
            _set("sophia-infra:cluster.k3sSha256", {"amd64": PIN_AMD64}),
        ),
        "sophia-infra:cluster.k3sSha256.arm64: is required with cluster.k3sMirror (the arm64 machines"
        " sophia-ai-core install the K3s binary from the mirror, and only a pinned sha256 proves it is the"
        " release's): copy the line for k3s-arm64 from the release's sha256sum-arm64.txt",
    ),
    (
        "K3s pin that is not a sha256",
        _set("sophia-infra:cluster.k3sSha256", {"amd64": PIN_AMD64.upper()}),
        "sophia-infra:cluster.k3sSha256.amd64: must be the sha256 of the K3s binary for amd64 (64 hex digits"
        f" 0-9a-f, as in the release's sha256sum-amd64.txt), got '{PIN_AMD64.upper()}'",
    ),
    (
        "K3s mirror with a malformed pin: one line, about the pin",
        _all(
            _set("sophia-infra:cluster.k3sMirror", "https://mirror.internal.example/k3s"),
            _set("sophia-infra:cluster.k3sSha256", {"amd64": PIN_AMD64, "arm64": "sha256:" + PIN_ARM64}),
        ),
        "sophia-infra:cluster.k3sSha256.arm64: must be the sha256 of the K3s binary for arm64 (64 hex digits"
        f" 0-9a-f, as in the release's sha256sum-arm64.txt), got 'sha256:{PIN_ARM64}'",
    ),
    (
        "chart mirror that is no http(s) URL",
        _set("sophia-infra:platform.chartMirror", "ftp://charts.internal.example/helm"),
        "sophia-infra:platform.chartMirror: must be an https:// URL of a Helm repository (http:// only on"
        " 127.0.0.0/8, localhost or [::1]), got 'ftp://charts.internal.example/helm'",
    ),
    *(
        (
            f"chart mirror on port {port}, which no server listens on",
            _set("sophia-infra:platform.chartMirror", f"https://charts.internal.example:{port}/helm"),
            "sophia-infra:platform.chartMirror: must be an https:// URL of a Helm repository (http:// only on"
            f" 127.0.0.0/8, localhost or [::1]), got 'https://charts.internal.example:{port}/helm'",
        )
        for port in (0, 65536)
    ),
    (
        "Argo CD application path that is not a relative path in the repository",
        _set(
            "sophia-infra:gitops.applications",
            [{"name": "sophia-main", "path": "/etc/kubernetes", "namespace": "sophia-gitops"}],
        ),
        "sophia-infra:gitops.applications[0].path: must be a relative path in the repository, got '/etc/kubernetes'",
    ),
    (
        "an LLM model name with spaces",
        _set("sophia-infra:llmGateway.models", ["gpt-4o", "GPT 4o"]),
        "sophia-infra:llmGateway.models[1]: must be a model name, got 'GPT 4o'",
    ),
    (
        "Argo CD application into a namespace Pulumi manages",
        _set(
            "sophia-infra:gitops.applications",
            [{"name": "sophia-main", "path": "k8s/base", "namespace": "sophia-apps"}],
        ),
        "sophia-infra:gitops.applications[0].namespace: 'sophia-apps' is managed by Pulumi; an Argo CD Application"
        " needs a namespace of its own",
    ),
    (
        "K3s pin for an architecture K3s has no binary for here",
        _set("sophia-infra:cluster.k3sSha256", {"arm": PIN_AMD64}),
        "sophia-infra:cluster.k3sSha256.arm: unknown key",
    ),
]


@pytest.mark.parametrize(("mutate", "line"), [(m, line) for _, m, line in CASES], ids=[c[0] for c in CASES])
def test_each_problem_is_one_line_naming_the_key(tmp_path: Path, mutate: Callable[[Doc], None], line: str) -> None:
    doc = production_document()
    mutate(doc)
    assert line in problems_of(tmp_path, doc)


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    doc = production_document()
    node(doc, 0)["host"] = "not an address"
    node(doc, 3)["arch"] = "sparc"
    doc["config"]["sophia-infra:network"]["acmeEmail"] = "nobody"
    problems = problems_of(tmp_path, doc)
    assert [p.split(":")[1] for p in problems] == [
        "cluster.nodes[0].host",
        "cluster.nodes[3].arch",
        "network.acmeEmail",
    ]


def test_a_config_error_is_a_clean_pulumi_run_error(tmp_path: Path) -> None:
    import pulumi

    doc = production_document()
    del cluster(doc)["k3sVersion"]
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, doc)
    assert isinstance(caught.value, pulumi.RunError)
    assert str(caught.value) == "sophia-infra:cluster.k3sVersion: is required"


def test_what_pulumi_prints_for_a_config_error_is_each_problem_on_a_line_of_its_own(tmp_path: Path) -> None:
    doc = production_document()
    del cluster(doc)["k3sVersion"]
    doc["config"]["sophia-infra:network"]["acmeEmail"] = "nobody"
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, doc)
    assert str(caught.value).splitlines() == [str(p) for p in caught.value.problems]
    assert len(caught.value.problems) == 2


def test_load_balancer_blocks_side_by_side_or_of_both_ip_versions_do_not_overlap(tmp_path: Path) -> None:
    blocks = ["198.51.100.0/30", "198.51.100.4-198.51.100.9", "2001:db8::/126"]
    doc = production_document()
    doc["config"]["sophia-infra:network"]["loadBalancerAddresses"] = blocks
    assert [b.text for b in settings_from(tmp_path, doc).network.load_balancer_pool] == blocks


def test_a_node_without_its_own_ssh_user_uses_the_clusters(tmp_path: Path) -> None:
    doc = production_document()
    cluster(doc)["sshUser"] = "deploy"
    for entry in cluster(doc)["nodes"]:
        entry.pop("sshUser", None)
    assert {n.ssh_user for n in settings_from(tmp_path, doc).cluster.nodes} == {"deploy"}


def test_what_a_stack_leaves_out_takes_its_documented_default(tmp_path: Path) -> None:
    """etcd snapshots every 6 hours, 28 kept (docs/architecture.md); no Argo CD application."""
    doc = production_document()
    del cluster(doc)["etcdSnapshots"]
    del doc["config"]["sophia-infra:gitops"]["applications"]
    settings = settings_from(tmp_path, doc)
    assert (settings.cluster.etcd_snapshots.schedule, settings.cluster.etcd_snapshots.retention) == ("0 */6 * * *", 28)
    assert settings.gitops.applications == ()


def test_the_oldest_supported_kubernetes_minor_is_accepted(tmp_path: Path) -> None:
    doc = production_document()
    cluster(doc)["k3sVersion"] = f"v1.{SUPPORTED_KUBERNETES_MINORS[0]}.0+k3s1"
    assert settings_from(tmp_path, doc).cluster.k3s_version == cluster(doc)["k3sVersion"]


def test_a_machine_that_repeats_another_ones_address_or_host_key_is_named(tmp_path: Path) -> None:
    doc = production_document()
    node(doc, 0)["privateIp"] = node(doc, 1)["privateIp"] = "10.19.0.2"
    node(doc, 1)["hostKey"] = node(doc, 0)["hostKey"]
    keys = {p.split(": ", 1)[0] for p in problems_of(tmp_path, doc)}
    assert {"sophia-infra:cluster.nodes[1].privateIp", "sophia-infra:cluster.nodes[1].hostKey"} <= keys


def test_a_node_label_in_k8s_io_is_refused_like_one_in_kubernetes_io(tmp_path: Path) -> None:
    doc = production_document()
    node(doc, 1)["labels"] = {"node-role.k8s.io/worker": "true"}
    (problem,) = problems_of(tmp_path, doc)
    assert problem.startswith(
        "sophia-infra:cluster.nodes[1].labels.node-role.k8s.io/worker: is in the kubernetes.io/k8s.io namespace"
    )


def test_every_bad_key_of_a_mapping_is_reported(tmp_path: Path) -> None:
    doc = production_document()
    tags = doc["config"]["sophia-infra:images"]["tags"]
    tags["Bad Name"] = tags["Other Bad"] = "v1"
    bad_keys = [p for p in problems_of(tmp_path, doc) if "key must be" in p]
    assert [p.split(": ", 1)[0] for p in bad_keys] == [
        "sophia-infra:images.tags.Bad Name",
        "sophia-infra:images.tags.Other Bad",
    ]


def test_three_servers_keep_quorum(tmp_path: Path) -> None:
    doc = production_document()
    for i in range(5):
        node(doc, i)["privateIp"] = f"10.19.0.{i + 2}"
    node(doc, 1)["role"] = "server"
    node(doc, 2)["role"] = "server"
    settings = settings_from(tmp_path, doc)
    assert [n.name for n in settings.cluster.servers] == [
        "sophia-production-instance",
        "sophia-ai-core",
        "sophia-mcp-orchestrator",
    ]


def test_the_api_endpoint_defaults_to_the_first_server(tmp_path: Path) -> None:
    assert settings_from(tmp_path, production_document()).cluster.api_endpoint == "192.0.2.10"


def test_several_servers_over_public_addresses_only_are_refused_saying_why(tmp_path: Path) -> None:
    doc = production_document()
    for i in range(4):  # one machine without a private address is enough
        node(doc, i)["privateIp"] = f"10.19.0.{i + 2}"
    node(doc, 1)["role"] = "server"
    node(doc, 2)["role"] = "server"
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, doc)
    (problem,) = caught.value.problems
    assert str(problem).startswith("sophia-infra:cluster.nodes: has 3 servers but not every machine has a privateIp")
    assert "embedded etcd" in str(problem)


def test_a_malformed_k3s_pin_is_one_problem_even_with_a_mirror(tmp_path: Path) -> None:
    doc = production_document()
    cluster(doc)["k3sMirror"] = "https://mirror.internal.example/k3s"
    cluster(doc)["k3sSha256"] = {"amd64": PIN_AMD64, "arm64": "x"}
    assert [p.split(":", 2)[1] for p in problems_of(tmp_path, doc)] == ["cluster.k3sSha256.arm64"]


@pytest.mark.parametrize(
    "mirror",
    [
        "https://mirror.internal.example/k3s/",
        "http://127.0.0.2:8080",
        "http://[::1]/r",
        "http://localhost:5000/k3s",
        "https://mirror.internal.example:1/k3s",
        "https://mirror.internal.example:65535/k3s",
    ],
)
def test_a_k3s_mirror_with_every_used_architecture_pinned_is_accepted(tmp_path: Path, mirror: str) -> None:
    doc = production_document()
    cluster(doc)["k3sMirror"] = mirror
    cluster(doc)["k3sSha256"] = {"amd64": PIN_AMD64, "arm64": PIN_ARM64}
    settings = settings_from(tmp_path, doc).cluster
    assert settings.k3s_mirror == mirror
    assert {arch.value: pin for arch, pin in settings.k3s_sha256.items()} == {"amd64": PIN_AMD64, "arm64": PIN_ARM64}


def test_node_labels_the_kubelet_may_set_are_kept(tmp_path: Path) -> None:
    doc = production_document()
    node(doc, 1)["labels"] = {"node.kubernetes.io/pool": "gpu", "topology.kubernetes.io/zone": "us-east-1a"}
    labels = settings_from(tmp_path, doc).cluster.nodes[1].labels
    assert labels == {"node.kubernetes.io/pool": "gpu", "topology.kubernetes.io/zone": "us-east-1a"}


def test_every_ecdsa_and_ed25519_host_key_in_wire_format_is_accepted(tmp_path: Path) -> None:
    import base64
    import struct

    def string(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    keys = [
        f"ecdsa-sha2-{curve} "
        + base64.b64encode(
            string(f"ecdsa-sha2-{curve}".encode()) + string(curve.encode()) + string(b"\x04" + b"\x01" * (size - 1))
        ).decode()
        for curve, size in (("nistp256", 65), ("nistp384", 97), ("nistp521", 133))
    ]
    keys.append("ssh-ed25519 " + base64.b64encode(string(b"ssh-ed25519") + string(b"\x02" * 32)).decode())
    for key in keys:
        doc = production_document()
        node(doc, 0)["hostKey"] = key
        assert settings_from(tmp_path, doc).cluster.nodes[0].host_key == key


def test_the_supported_kubernetes_minors_are_what_the_charts_and_the_schemas_support() -> None:
    """Derived from the real chart packages (Chart.yaml `kubeVersion`) and from kubernetes-validate."""
    import re

    from kubernetes_validate.utils import all_versions

    from components.platform.charts import CHARTS
    from components.settings.cluster import SUPPORTED_KUBERNETES_MINORS
    from tests.chart_packages import chart_yaml

    floors: list[int] = []
    ceilings: list[int] = []
    for chart in CHARTS:
        constraint = chart_yaml(chart, "Chart.yaml").get("kubeVersion", "")
        for op, minor in re.findall(r"(>=|>|<=|<)\s*1\.(\d+)", constraint):
            bound = {">=": 0, ">": 1, "<=": 0, "<": -1}[op] + int(minor)
            (floors if op.startswith(">") else ceilings).append(bound)
    schemas = sorted({int(v.split(".")[1]) for v in all_versions()})
    first = max([*floors, schemas[0]])
    last = min([*ceilings, schemas[-1]])
    assert (first, last) == SUPPORTED_KUBERNETES_MINORS
