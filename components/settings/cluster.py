"""The machines and how K3s runs on them."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from components.settings.reader import LABEL_KEY, LABEL_VALUE, Value

K3S_VERSION = re.compile(r"^v1\.\d{2}\.\d{1,2}\+k3s\d+$")
SSH_HOST_KEY = re.compile(
    r"^(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|ssh-rsa) [A-Za-z0-9+/]+={0,3}$"
)
CRON = re.compile(r"^(\S+\s+){4}\S+$")


class Role(StrEnum):
    SERVER = "server"
    AGENT = "agent"


class Arch(StrEnum):
    AMD64 = "amd64"
    ARM64 = "arm64"


@dataclass(frozen=True)
class GpuModel:
    """A GPU model Lambda Labs rents, and the CPU architecture of the machines that carry it."""

    label: str
    product: str
    arch: Arch


# The `gpu-type` node label value of each GPU model; GH200 machines are Grace (arm64) machines.
GPU_MODELS: dict[str, GpuModel] = {
    m.label: m
    for m in (
        GpuModel("a10", "NVIDIA A10", Arch.AMD64),
        GpuModel("a100", "NVIDIA A100", Arch.AMD64),
        GpuModel("a6000", "NVIDIA RTX A6000", Arch.AMD64),
        GpuModel("rtx6000", "NVIDIA Quadro RTX 6000", Arch.AMD64),
        GpuModel("h100", "NVIDIA H100", Arch.AMD64),
        GpuModel("b200", "NVIDIA B200", Arch.AMD64),
        GpuModel("gh200", "NVIDIA GH200", Arch.ARM64),
    )
}

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class Gpu:
    model: GpuModel
    count: int


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


@dataclass(frozen=True)
class Node:
    """One machine of the cluster."""

    name: str
    host: str
    private_ip: str | None
    role: Role
    arch: Arch
    ssh_user: str
    ssh_port: int
    host_key: str
    gpu: Gpu | None
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()


@dataclass(frozen=True)
class EtcdSnapshots:
    schedule: str
    retention: int


@dataclass(frozen=True)
class ClusterSettings:
    k3s_version: str
    api_endpoint: str
    etcd_snapshots: EtcdSnapshots
    nodes: tuple[Node, ...]

    @property
    def servers(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role is Role.SERVER)

    @property
    def first_server(self) -> Node:
        """The server that initialises the embedded etcd; every other node joins through it."""
        return self.servers[0]

    @property
    def private_network(self) -> bool:
        """Whether the nodes talk over their private addresses: only when every machine has one.

        A machine without a private address cannot reach the others' private addresses (a join to a
        private server URL, pod traffic to a private flannel endpoint, etcd peering would all fail),
        so otherwise every node uses its public one.
        """
        return all(n.private_ip for n in self.nodes)

    @property
    def kubernetes_minor(self) -> str:
        """`1.35` for `v1.35.5+k3s1`."""
        return ".".join(self.k3s_version[1:].split(".")[:2])


def _read_taint(value: Value) -> Taint:
    section = value.section()
    key = section.required("key").string(pattern=LABEL_KEY, what="a Kubernetes taint key")
    raw_value = section.optional("value")
    taint_value = raw_value.string(pattern=LABEL_VALUE, what="a Kubernetes taint value") if raw_value else ""
    effect = section.required("effect").choice(TAINT_EFFECTS)
    section.close()
    return Taint(key, taint_value, effect)


def _read_gpu(value: Value, arch: Arch | None) -> Gpu | None:
    section = value.section()
    type_value = section.required("type")
    model = GPU_MODELS.get(type_value.choice(sorted(GPU_MODELS)))
    count = section.required("count").integer(minimum=1, maximum=16)
    section.close()
    if model is None:
        return None
    if arch is not None and model.arch is not arch:
        type_value.fail(f"{model.product} machines are {model.arch.value}, but the node's arch is {arch.value}")
    return Gpu(model, count)


def _read_node(value: Value, default_user: str, default_port: int) -> Node:
    section = value.section()
    name = section.required("name").dns_label()
    host = section.required("host").host()
    private = section.optional("privateIp")
    role = section.required("role").choice([r.value for r in Role])
    arch_text = section.required("arch").choice([a.value for a in Arch])
    arch = Arch(arch_text) if arch_text else None
    user_value = section.optional("sshUser")
    port_value = section.optional("sshPort")
    host_key = section.required("hostKey").string(
        pattern=SSH_HOST_KEY, what="an SSH public host key ('<type> <base64>')"
    )
    gpu_value = section.optional("gpu")
    labels_value = section.optional("labels")
    taints_value = section.optional("taints")
    node = Node(
        name=name,
        host=host,
        private_ip=private.ip() if private else None,
        role=Role(role) if role else Role.AGENT,
        arch=arch or Arch.AMD64,
        ssh_user=user_value.string(pattern=re.compile(r"^[a-z_][a-z0-9_-]{0,31}$"), what="a Unix user name")
        if user_value
        else default_user,
        ssh_port=port_value.integer(minimum=1, maximum=65535) if port_value else default_port,
        host_key=host_key,
        gpu=_read_gpu(gpu_value, arch) if gpu_value else None,
        labels=labels_value.labels() if labels_value else {},
        taints=taints_value.list_of(_read_taint, maximum=20) if taints_value else (),
    )
    section.close()
    return node


def _check_nodes(nodes_value: Value, nodes: tuple[Node, ...]) -> None:
    for attribute, what in (("name", "name"), ("host", "host")):
        seen = Counter(getattr(n, attribute) for n in nodes if getattr(n, attribute))
        for i, node in enumerate(nodes):
            if getattr(node, attribute) and seen[getattr(node, attribute)] > 1:
                nodes_value.problems.add(
                    f"{nodes_value.path}[{i}].{attribute}", f"duplicate {what} {getattr(node, attribute)!r}"
                )
    private = Counter(n.private_ip for n in nodes if n.private_ip)
    for i, node in enumerate(nodes):
        if node.private_ip and private[node.private_ip] > 1:
            nodes_value.problems.add(f"{nodes_value.path}[{i}].privateIp", f"duplicate address {node.private_ip!r}")
    if not nodes:
        return
    servers = [n for n in nodes if n.role is Role.SERVER]
    if not servers:
        nodes_value.fail("needs at least one node with role server")
    elif len(servers) > 1 and len(servers) % 2 == 0:
        nodes_value.fail(
            f"has {len(servers)} servers; etcd needs an odd number of servers to keep quorum (1, 3, 5, ...)"
        )
    elif len(servers) > 1 and not all(n.private_ip for n in nodes):
        nodes_value.fail(
            f"has {len(servers)} servers but not every machine has a privateIp; K3s's embedded etcd peers"
            " over each server's node-ip and is not supported across public addresses only: give every"
            " machine its privateIp on one private network, or keep one server"
        )


def read_cluster(value: Value) -> ClusterSettings:
    section = value.section()
    version = section.required("k3sVersion").string(pattern=K3S_VERSION, what="a K3s release such as v1.35.5+k3s1")
    endpoint_value = section.optional("apiEndpoint")
    user_value = section.optional("sshUser")
    port_value = section.optional("sshPort")
    default_user = user_value.string() if user_value else "ubuntu"
    default_port = port_value.integer(minimum=1, maximum=65535) if port_value else 22
    snapshots_value = section.optional("etcdSnapshots")
    snapshots = EtcdSnapshots("0 */6 * * *", 28)
    if snapshots_value:
        snap = snapshots_value.section()
        schedule_value = snap.optional("schedule")
        retention_value = snap.optional("retention")
        snapshots = EtcdSnapshots(
            schedule_value.string(pattern=CRON, what="a cron expression with five fields")
            if schedule_value
            else snapshots.schedule,
            retention_value.integer(minimum=1, maximum=1000) if retention_value else snapshots.retention,
        )
        snap.close()
    nodes_value = section.required("nodes")
    nodes = nodes_value.list_of(lambda v: _read_node(v, default_user, default_port), minimum=1, maximum=500)
    section.close()
    _check_nodes(nodes_value, nodes)
    servers = [n for n in nodes if n.role is Role.SERVER]
    api_endpoint = endpoint_value.host() if endpoint_value else (servers[0].host if servers else "")
    return ClusterSettings(version, api_endpoint, snapshots, nodes)
