"""Simulated machines for the e2e: one kwok Node per machine of the stack, shaped as K3s registers it.

kwok (sigs.k8s.io/kwok, built by `make apiserver` from the Go module proxy) takes over the Nodes
annotated `kwok.x-k8s.io/node: fake`: its stages (the ones its module ships, beside the binary)
keep them Ready with a lease heartbeat, and move the pods the scheduler binds to them to Running
and Ready, or Succeeded for a Job's pods; a deleted pod is removed. Nothing runs in a container.

`machine_node` is what the kubelet of K3s would register for a machine of the settings: its name
(K3s's `node-name`, the settings' node name), K3s's and the kubelet's own labels, the labels and
taints the program applies (components.cluster.node_config.node_labels, the node's taints), and
the capacity the real machine advertises: the Lambda instance type's vCPUs and memory
(tests/e2e/instances.py), the kubelet's default 110 pods, and `nvidia.com/gpu` as the NVIDIA device
plugin advertises it: one per GPU, times the time-slicing replicas when `platform.gpuSharing`
shares them (components/platform/nvidia.py: renameByDefault false, so the name stays).
It is also what the whole-program e2e's K3s stand-in registers.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from components.cluster.node_config import node_address, node_labels
from components.gpu import ARCH_LABEL, GPU_RESOURCE
from components.settings.cluster import ClusterSettings, Node, Role, Taint
from components.settings.platform import GpuSharing
from tests.e2e.instances import EVICTION_HARD_MEMORY_MI, instance_type

if TYPE_CHECKING:
    from tests.e2e.apiserver import ApiServer

KWOK_ANNOTATION: Final = "kwok.x-k8s.io/node"
KWOK_SELECTOR: Final = f"{KWOK_ANNOTATION}=fake"
# The kubelet's default --max-pods.
MAX_PODS: Final = 110
# K3s's default cluster CIDR: kwok hands pod IPs from it, as flannel would.
CLUSTER_CIDR: Final = "10.42.0.0/16"
# The kubelet's default node lease duration.
LEASE_SECONDS: Final = 40
NODES: Final = "/api/v1/nodes"


def k3s_labels(cluster: ClusterSettings, node: Node) -> dict[str, str]:
    """What the kubelet and K3s label every node with (kubelet: well-known labels; K3s: instance-type
    `k3s`, and the role labels of servers, which run etcd here)."""
    labels = {
        ARCH_LABEL: node.arch.value,
        "beta.kubernetes.io/arch": node.arch.value,
        "kubernetes.io/os": "linux",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/hostname": node.name,
        "node.kubernetes.io/instance-type": "k3s",
        "beta.kubernetes.io/instance-type": "k3s",
    }
    if node.role is Role.SERVER:
        labels |= {
            "node-role.kubernetes.io/control-plane": "true",
            "node-role.kubernetes.io/master": "true",
            "node-role.kubernetes.io/etcd": "true",
        }
    return labels


def capacity(node: Node, sharing: GpuSharing) -> tuple[dict[str, str], dict[str, str]]:
    """The node's (capacity, allocatable)."""
    if node.gpu is None:
        raise KeyError(f"{node.name}: a machine without a GPU has no Lambda instance type in tests/e2e/instances.py")
    shape = instance_type(node.gpu.model.label, node.gpu.count)
    gpus = str(node.gpu.count * sharing.replicas)
    memory_mi = shape.memory_gib * 1024
    common = {"cpu": str(shape.vcpus), "pods": str(MAX_PODS), GPU_RESOURCE: gpus, "ephemeral-storage": "500Gi"}
    return (
        {**common, "memory": f"{memory_mi}Mi"},
        {**common, "memory": f"{memory_mi - EVICTION_HARD_MEMORY_MI}Mi"},
    )


def taint(t: Taint) -> dict[str, str]:
    return {k: v for k, v in (("key", t.key), ("value", t.value), ("effect", t.effect)) if v}


def machine_node(cluster: ClusterSettings, node: Node, sharing: GpuSharing) -> dict[str, Any]:
    """The Node object of one machine, as its kubelet registers it, for kwok to keep."""
    total, allocatable = capacity(node, sharing)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "annotations": {KWOK_ANNOTATION: "fake"},
            "labels": {**k3s_labels(cluster, node), **node_labels(node)},
        },
        "spec": {"taints": [taint(t) for t in node.taints]} if node.taints else {},
        "status": {
            "capacity": total,
            "allocatable": allocatable,
            "addresses": [
                {"type": "InternalIP", "address": node_address(cluster, node)},
                {"type": "Hostname", "address": node.name},
            ],
            "nodeInfo": {"architecture": node.arch.value, "operatingSystem": "linux"},
        },
    }


def kwok_argv(kwok: Path, kubeconfig: Path) -> list[str]:
    """kwok's command line: the Nodes it owns, and the stages shipped with its module (build.sh copies
    them beside the binary: `<component>/stages`; without stages kwok exits "no stages found")."""
    stages = sorted((kwok.resolve().parent.parent / "stages").glob("*.yaml"))
    if not stages:
        raise FileNotFoundError(f"no kwok stages beside {kwok.resolve()}: rebuild with `make apiserver`")
    return [
        str(kwok),
        f"--kubeconfig={kubeconfig}",
        f"--manage-nodes-with-annotation-selector={KWOK_SELECTOR}",
        f"--cidr={CLUSTER_CIDR}",
        f"--node-lease-duration-seconds={LEASE_SECONDS}",
        *(f"--config={stage}" for stage in stages),
    ]


def register_nodes(server: ApiServer, nodes: Iterable[dict[str, Any]], timeout: float = 120.0) -> None:
    """Creates the Nodes and waits until kwok has made every one Ready (its node-initialize stage)."""
    from tests.e2e.apiserver import wait_until  # apiserver.py starts kwok with kwok_argv below

    names = []
    for node in nodes:
        created = server.request("POST", NODES, node)
        if created.status != 201:
            raise RuntimeError(f"Node {node['metadata']['name']}: {created.status} {created.body.get('message', '')}")
        names.append(str(node["metadata"]["name"]))

    def ready() -> bool:
        return all(node_ready(server.get(f"{NODES}/{name}")) for name in names)

    wait_until(f"kwok to make {len(names)} Nodes Ready", ready, timeout)


def remove_nodes(server: ApiServer, names: Iterable[str], timeout: float = 120.0) -> None:
    """Deletes the Nodes (the controller manager's pod GC then removes their pods) and waits until they are gone."""
    from tests.e2e.apiserver import wait_until

    wanted = list(names)
    for name in wanted:
        server.request("DELETE", f"{NODES}/{name}")
    wait_until("the Nodes to be gone", lambda: not any(server.exists(f"{NODES}/{n}") for n in wanted), timeout)


def node_ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def nodes_of(cluster: ClusterSettings, sharing: GpuSharing) -> list[dict[str, Any]]:
    return [machine_node(cluster, node, sharing) for node in cluster.nodes]


def node_names(nodes: Iterable[dict[str, Any]]) -> list[str]:
    return [str(n["metadata"]["name"]) for n in nodes]


def describe_node(node: dict[str, Any]) -> str:
    """`name (arch, N nvidia.com/gpu, tainted)` for the e2e's report."""
    labels, allocatable = node["metadata"]["labels"], node["status"]["allocatable"]
    tainted = ", tainted" if node["spec"].get("taints") else ""
    return f"{node['metadata']['name']} ({labels[ARCH_LABEL]}, {allocatable[GPU_RESOURCE]} {GPU_RESOURCE}{tainted})"
