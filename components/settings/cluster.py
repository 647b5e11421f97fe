"""The machines and how K3s runs on them."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from components.gpu import GPU_AGENT_TOLERATIONS, GPU_AGENTS, Toleration
from components.k3s import RELEASE_BINARIES, checksum_file
from components.settings.reader import DNS_NAME, LABEL_KEY, LABEL_VALUE, Value

K3S_VERSION = re.compile(r"^v1\.\d{2}\.\d{1,2}\+k3s\d+$")
# The Kubernetes minors (1.x) this program can deploy, first and last: the render validates every
# object against kubernetes-validate's schemas (1.25 to 1.37 in kubernetes-validate 1.37.0,
# requirements-dev.txt), and every pinned chart declares the Kubernetes it installs on in its
# Chart.yaml `kubeVersion` (the highest floor: `>=1.29.0-0` of cloudnative-pg 0.29.0 and
# plugin-barman-cloud 0.7.0; none sets a ceiling). tests/test_settings.py derives both ends from the
# chart packages themselves and from kubernetes-validate, so this cannot drift from them.
SUPPORTED_KUBERNETES_MINORS: tuple[int, int] = (29, 37)
SSH_HOST_KEY = re.compile(
    r"^(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|ssh-rsa) [A-Za-z0-9+/]+={0,3}$"
)
# pulumi-command 1.2.1 offers the pinned key's own type as the only host-key algorithm, and for an
# RSA key that type is `ssh-rsa` (SHA-1 signatures), which OpenSSH >= 8.8 no longer signs with: the
# handshake would fail on every step. The format is recognised so the refusal can say why.
REFUSED_HOST_KEY_TYPES = {
    "ssh-rsa": "an ssh-rsa key, which pulumi-command can only verify with SHA-1 signatures and OpenSSH >= 8.8 "
    "refuses; pin the machine's ed25519 key instead (ssh-keyscan -t ed25519 <host>)",
}
# The length of the public key (`Q`, an uncompressed point 0x04 || x || y) of each ECDSA curve
# (RFC 5656 section 3.1: string "ecdsa-sha2-<curve>", string <curve>, string Q), and of an ed25519
# key (RFC 8709 section 4: string "ssh-ed25519", string key, 32 bytes).
_ECDSA_POINT_BYTES = {"nistp256": 65, "nistp384": 97, "nistp521": 133}
_ED25519_KEY_BYTES = 32
# Labels the kubelet refuses to set on its own Node at start (`--node-labels`, K3s's `node-label`):
# any key in the kubernetes.io or k8s.io namespaces (or a subdomain of either) except these keys and
# the [*.]kubelet.kubernetes.io and [*.]node.kubernetes.io namespaces (k8s.io/kubernetes v1.35.4
# cmd/kubelet/app/options/options.go:152 and :176 isKubernetesLabel; k8s.io/kubelet v0.35.4
# pkg/apis/well_known_labels.go:35-80 IsKubeletLabel).
KUBELET_LABELS = (
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
)
KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")
# Five numeric cron fields (`*`, `n`, `a-b`, each with an optional `/step`, comma-separated): K3s
# takes more (names such as MON), but the backup alert computes the longest gap from these.
_CRON_FIELD = r"(\*|[0-9]{1,2}(-[0-9]{1,2})?)(/[1-9][0-9]?)?(,(\*|[0-9]{1,2}(-[0-9]{1,2})?)(/[1-9][0-9]?)?)*"
CRON = re.compile(rf"^{_CRON_FIELD}(\s+{_CRON_FIELD}){{4}}$")
# What K3s's etcd-s3 and Barman Cloud both accept: an https endpoint without a path, S3 bucket
# naming rules, and a folder of plain path segments.
S3_ENDPOINT = re.compile(r"^https://[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?(:[0-9]{1,5})?$")
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
S3_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}[a-z0-9]$")
S3_FOLDER = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
# A sha256 as the K3s release's sha256sum-<arch>.txt lists it: 64 lowercase hex digits.
SHA256 = re.compile(r"^[0-9a-f]{64}$")


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

    def keeps_off(self, tolerations: tuple[Toleration, ...]) -> bool:
        """Whether this taint keeps pods with these tolerations off the node (PreferNoSchedule only discourages)."""
        if not self.key or self.effect not in ("NoSchedule", "NoExecute"):
            return False
        return not any(t.tolerates(self.key, self.value, self.effect) for t in tolerations)


def tolerations_text(tolerations: tuple[Toleration, ...]) -> str:
    return ", ".join(str(t) for t in tolerations)


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
    allow_data_loss: bool = False
    """Removing this node may delete the local-path volumes on it (their data is lost with the machine)."""


@dataclass(frozen=True)
class BackupStorage:
    """The S3-compatible bucket every backup goes to (etcd snapshots, PostgreSQL); its keys are in ESC."""

    endpoint: str
    """`https://host[:port]`, no path."""
    bucket: str
    region: str

    @property
    def endpoint_host(self) -> str:
        """The endpoint as K3s's etcd-s3-endpoint wants it: host[:port], https implied."""
        return self.endpoint.removeprefix("https://")


@dataclass(frozen=True)
class EtcdSnapshots:
    schedule: str
    retention: int
    folder: str = "etcd"
    """The folder of the backup bucket that holds them (cluster.backups)."""


@dataclass(frozen=True)
class ClusterSettings:
    k3s_version: str
    api_endpoint: str
    etcd_snapshots: EtcdSnapshots
    nodes: tuple[Node, ...]
    backups: BackupStorage | None = None
    """None: snapshots stay on the servers' own disks (lost with the machine)."""
    k3s_mirror: str | None = None
    """`cluster.k3sMirror`: where the K3s release is downloaded from, laid out as the release itself
    (`<base>/<version>/<asset>`); None: K3s's GitHub releases."""
    k3s_sha256: dict[Arch, str] = field(default_factory=dict)
    """`cluster.k3sSha256`: the pinned sha256 of the K3s binary of each architecture (from the release's
    sha256sum-<arch>.txt). An architecture without one is checked against the release's own file."""

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


def _ssh_string(data: bytes, at: int) -> tuple[bytes, int] | None:
    """One SSH wire-format `string` (uint32 length, then that many bytes) at `at`, and the offset after it."""
    if at + 4 > len(data):
        return None
    (length,) = struct.unpack(">I", data[at : at + 4])
    end = at + 4 + length
    return (data[at + 4 : end], end) if end <= len(data) else None


def host_key_problem(key: str) -> str | None:
    """What is wrong with the base64 part of a `<type> <base64>` host key, or None.

    A key cut short or mistyped still matches the text pattern, and would only fail at `pulumi up`
    as a host key mismatch on the first SSH connection; so the blob is decoded and held to the SSH
    wire format of its type: the same type string inside, and a public key of the type's length.
    """
    kind, _, blob = key.partition(" ")
    try:
        data = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return "is not valid base64 (a character is missing or wrong: copy the whole line of ssh-keyscan)"
    inner = _ssh_string(data, 0)
    if inner is None or inner[0] != kind.encode():
        return f"does not decode to an {kind} key (it must start with the type {kind!r} in SSH wire format)"
    fields: list[bytes] = []
    at = inner[1]
    while at < len(data):
        item = _ssh_string(data, at)
        if item is None:
            return f"is cut short: the {kind} key ends in the middle of a field (copy the whole line of ssh-keyscan)"
        fields.append(item[0])
        at = item[1]
    if kind == "ssh-ed25519":
        if len(fields) != 1 or len(fields[0]) != _ED25519_KEY_BYTES:
            return f"is not an ed25519 public key: it must hold one {_ED25519_KEY_BYTES}-byte key"
    elif kind.startswith("ecdsa-sha2-"):
        curve = kind.removeprefix("ecdsa-sha2-")
        size = _ECDSA_POINT_BYTES[curve]
        if len(fields) != 2 or fields[0] != curve.encode() or len(fields[1]) != size or fields[1][:1] != b"\x04":
            return f"is not an {kind} public key: it must hold the curve {curve!r} and a {size}-byte point"
    return None


def kubelet_refuses_label(key: str) -> bool:
    """Whether the kubelet refuses `key` in its own `--node-labels` (see KUBELET_LABELS)."""
    namespace = key.split("/", 1)[0] if "/" in key else ""

    def within(domain: str) -> bool:
        return namespace == domain or namespace.endswith("." + domain)

    if not (within("kubernetes.io") or within("k8s.io")):
        return False
    return key not in KUBELET_LABELS and not any(within(n) for n in KUBELET_LABEL_NAMESPACES)


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
    # K3s takes `host` as the node's `node-external-ip` (and as its `node-ip` without a private
    # network), flags that hold addresses, never names (K3s docs, cli/server "--node-external-ip
    # value (agent/networking) IPv4/IPv6 external IP addresses to advertise for node"): a DNS name
    # there stops K3s at start. So an address only; resolving a name here would tie the cluster to
    # whatever the name resolves to on the day of `pulumi up`.
    host = _node_host(section.required("host"))
    private = section.optional("privateIp")
    role = section.required("role").choice([r.value for r in Role])
    arch_text = section.required("arch").choice([a.value for a in Arch])
    arch = Arch(arch_text) if arch_text else None
    user_value = section.optional("sshUser")
    port_value = section.optional("sshPort")
    host_key_value = section.required("hostKey")
    host_key = host_key_value.string(pattern=SSH_HOST_KEY, what="an SSH public host key ('<type> <base64>')")
    refused = REFUSED_HOST_KEY_TYPES.get(host_key.split(" ", 1)[0])
    if refused is not None:
        host_key_value.fail(f"is {refused}")
        host_key = ""
    wire_problem = host_key_problem(host_key) if host_key else None
    if wire_problem is not None:
        host_key_value.fail(wire_problem)
        host_key = ""
    gpu_value = section.optional("gpu")
    labels_value = section.optional("labels")
    taints_value = section.optional("taints")
    data_loss_value = section.optional("allowDataLoss")
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
        labels=_node_labels(labels_value) if labels_value else {},
        taints=taints_value.list_of(_read_taint, maximum=20) if taints_value else (),
        allow_data_loss=data_loss_value.boolean() if data_loss_value else False,
    )
    section.close()
    return node


def _node_host(value: Value) -> str:
    text = value.string()
    if not text:
        return ""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if DNS_NAME.fullmatch(text) and not text.rsplit(".", 1)[-1].isdigit():
        value.fail(
            f"is the name {text!r}, but K3s takes this as the node's address (node-external-ip, and node-ip"
            " without a private network), which must be an IP address: write the machine's address"
            f" (dig +short {text})"
        )
    else:
        value.fail(f"must be an IP address, got {text!r}")
    return ""


def _node_labels(value: Value) -> dict[str, str]:
    labels = value.labels()
    for key in labels:
        if kubelet_refuses_label(key):
            value.problems.add(
                f"{value.path}.{key}",
                "is in the kubernetes.io/k8s.io namespace, which the kubelet refuses to set on its own node"
                f" (it would not start); only {', '.join(KUBELET_LABELS)} and the"
                f" {' and '.join(f'[*.]{n}/' for n in KUBELET_LABEL_NAMESPACES)} namespaces are allowed:"
                " use a label of your own domain instead (such as sophia.ai/role)",
            )
    return {k: v for k, v in labels.items() if not kubelet_refuses_label(k)}


def _check_nodes(nodes_value: Value, nodes: tuple[Node, ...]) -> None:
    for attribute, what in (("name", "name"), ("host", "host")):
        seen = Counter(getattr(n, attribute) for n in nodes if getattr(n, attribute))
        for i, node in enumerate(nodes):
            if getattr(node, attribute) and seen[getattr(node, attribute)] > 1:
                nodes_value.problems.add(
                    f"{nodes_value.path}[{i}].{attribute}", f"duplicate {what} {getattr(node, attribute)!r}"
                )
    first_with_key: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if not node.host_key:
            continue
        first = first_with_key.setdefault(node.host_key, i)
        if first != i:
            nodes_value.problems.add(
                f"{nodes_value.path}[{i}].hostKey",
                f"is the host key of nodes[{first}] ({nodes[first].name}); two machines cannot share a host key",
            )
    for i, node in enumerate(nodes):
        for j, taint in enumerate(node.taints):
            if node.gpu is not None and taint.keeps_off(GPU_AGENT_TOLERATIONS):
                nodes_value.problems.add(
                    f"{nodes_value.path}[{i}].taints[{j}]",
                    f"{taint} keeps {GPU_AGENTS} off GPU machine {node.name}, so its GPUs are never offered "
                    f"(they tolerate {tolerations_text(GPU_AGENT_TOLERATIONS)})",
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


def _folder(value: Value) -> str:
    return value.string(pattern=S3_FOLDER, what="a folder such as etcd or backups/etcd (no leading or trailing /)")


def _read_backups(value: Value) -> BackupStorage:
    section = value.section()
    backups = BackupStorage(
        endpoint=section.required("endpoint").string(
            pattern=S3_ENDPOINT, what="an https URL without a path, such as https://s3.us-east-1.amazonaws.com"
        ),
        bucket=section.required("bucket").string(pattern=S3_BUCKET, what="an S3 bucket name"),
        region=section.required("region").string(pattern=S3_REGION, what="a region such as us-east-1"),
    )
    section.close()
    return backups


def _read_sha256(value: Value | None) -> dict[Arch, str]:
    if value is None:
        return {}
    section = value.section()
    pins: dict[Arch, str] = {}
    for arch in Arch:
        pin = section.optional(arch.value)
        if pin is not None:
            text = pin.string(
                pattern=SHA256,
                what=f"the sha256 of the K3s binary for {arch.value} (64 hex digits 0-9a-f, as in the release's"
                f" {checksum_file(arch.value)})",
            )
            # A malformed pin is reported once, as malformed: "" here only until the problems stop the run.
            pins[arch] = text
    section.close()
    return pins


def _check_pins(value: Value, mirror: str | None, pins: dict[Arch, str], nodes: tuple[Node, ...]) -> None:
    """A mirror serves the checksum files too, so it could vouch for its own binary: with one, every
    architecture the machines use needs its pinned sha256."""
    if mirror is None:
        return
    for arch in Arch:
        users = [n.name for n in nodes if n.arch is arch and n.name]
        if users and arch not in pins:
            value.problems.add(
                f"{value.path}.k3sSha256.{arch.value}",
                f"is required with cluster.k3sMirror (the {arch.value} machines {', '.join(users)} install the K3s"
                f" binary from the mirror, and only a pinned sha256 proves it is the release's): copy the line for"
                f" {RELEASE_BINARIES[arch.value]} from the release's {checksum_file(arch.value)}",
            )


def read_cluster(value: Value) -> ClusterSettings:
    section = value.section()
    version_value = section.required("k3sVersion")
    version = version_value.string(pattern=K3S_VERSION, what="a K3s release such as v1.35.5+k3s1")
    first, last = SUPPORTED_KUBERNETES_MINORS
    if version and not first <= int(version.split(".")[1]) <= last:
        version_value.fail(
            f"{version} is Kubernetes 1.{version.split('.')[1]}, outside the 1.{first} to 1.{last} that the pinned"
            " charts (their kubeVersion) and the render's schemas support; K3s moves one minor at a time, so"
            " upgrade a running cluster minor by minor within that range"
        )
        version = ""
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
        folder_value = snap.optional("folder")
        snapshots = EtcdSnapshots(
            schedule_value.string(pattern=CRON, what="a cron expression with five numeric fields")
            if schedule_value
            else snapshots.schedule,
            retention_value.integer(minimum=1, maximum=1000) if retention_value else snapshots.retention,
            _folder(folder_value) if folder_value else snapshots.folder,
        )
        snap.close()
    backups_value = section.optional("backups")
    backups = _read_backups(backups_value) if backups_value else None
    mirror_value = section.optional("k3sMirror")
    mirror = mirror_value.mirror_url("a K3s release mirror") or None if mirror_value else None
    pins = _read_sha256(section.optional("k3sSha256"))
    nodes_value = section.required("nodes")
    nodes = nodes_value.list_of(lambda v: _read_node(v, default_user, default_port), minimum=1, maximum=500)
    section.close()
    _check_nodes(nodes_value, nodes)
    _check_pins(value, mirror, pins, nodes)
    servers = [n for n in nodes if n.role is Role.SERVER]
    api_endpoint = endpoint_value.host() if endpoint_value else (servers[0].host if servers else "")
    return ClusterSettings(version, api_endpoint, snapshots, nodes, backups, mirror, pins)
