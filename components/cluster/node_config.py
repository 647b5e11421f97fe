"""What each machine is told: its K3s config.yaml and the complete script of every step.

Everything here is a pure function of the typed cluster settings, so the tests can build and run
exactly what `pulumi up` sends over SSH. A step's script is a complete bash program: a prelude of
`export NAME=value` lines (shell-quoted; sshd usually refuses environment variables, so nothing is
passed through the SSH session's environment), then scripts/lib.sh, then the step's own file.
Secrets never appear in a script: the join tokens travel on standard input only.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Final
from urllib.parse import quote

import yaml

from components.gpu import GPU_PRESENT_LABEL, GPU_TYPE_LABEL
from components.host_ports import API_PORT, peer_ports
from components.k3s import (
    DATA_DIR,
    ETCD_S3_SECRET,
    LOCAL_STORAGE_CLASS,
    RELEASE_BINARIES,
    RELEASE_DOWNLOADS,
    checksum_file,
)
from components.settings.cluster import Arch, ClusterSettings, Node, Role

SCRIPTS_DIR: Final = Path(__file__).resolve().parent / "scripts"

CONFIG_FILE: Final = "/etc/rancher/k3s/config.yaml"
TOKEN_FILE: Final = "/etc/rancher/k3s/sophia-join-token"
AGENT_TOKEN_FILE: Final = "/etc/rancher/k3s/sophia-agent-token"
# Where K3s writes the secure (K10, CA-pinning) form of each token on a server (K3s docs, cli/token).
SERVER_TOKEN_PATH: Final = "/var/lib/rancher/k3s/server/token"
AGENT_TOKEN_PATH: Final = "/var/lib/rancher/k3s/server/agent-token"
MARKER_FILE: Final = "/etc/rancher/k3s/sophia-node"
APPLIED_FILE: Final = "/var/lib/rancher/k3s/sophia-applied"
ADMIN_KUBECONFIG: Final = "/etc/rancher/k3s/k3s.yaml"
AGENT_KUBECONFIG: Final = "/var/lib/rancher/k3s/agent/kubelet.kubeconfig"
LEASE_NAME: Final = "sophia-server-restart"
RESTORE_PATH: Final = "/usr/local/sbin/sophia-etcd-restore"
# Where K3s's installer puts the binary and its systemd unit (k3s-io/k3s install.sh: BIN_DIR,
# SYSTEMD_DIR), kept so that a machine installed by it and one installed here look the same.
K3S_BINARY: Final = "/usr/local/bin/k3s"
UNIT_DIR: Final = "/etc/systemd/system"
# Node annotations through which admit tells its own changes from an operator's (admit.sh).
TAINTS_ANNOTATION: Final = "sophia.ai/applied-taints"
DRAINED_ANNOTATION: Final = "sophia.ai/drained"

# Bounds of the waits. A first server start pulls images and initialises etcd; ten minutes is
# generous on Lambda machines and still ends a stuck `pulumi up` with a message instead of a hang.
READY_TIMEOUT_SECONDS: Final = 600
DRAIN_TIMEOUT_SECONDS: Final = 600
# A server holding the restart lease gives it back when Ready again; one that died holding it keeps
# it at most this long: longer than any restart that is still going to succeed.
LEASE_SECONDS: Final = READY_TIMEOUT_SECONDS + 300
# The token steps' wait for a join token file on the first server. K3s writes both files while it
# starts, before its API server answers, so the steps (which run after `ready`) normally find them at
# once; they wait only for a K3s that is restarting under them (an operator's restart, a crash and
# systemd's `Restart=always` 5 s later). A K3s server gets from its start to the token files in
# seconds (its bootstrap, before etcd and the API server): 60 s covers a slow start, or a crash and
# several of systemd's restarts, and a file still missing then is not coming without someone looking
# (docs/operations.md, "A join token file is missing"), so the step fails rather than holding every
# joining node's `prepare` for the ten minutes of READY_TIMEOUT_SECONDS.
TOKEN_FILE_TIMEOUT_SECONDS: Final = 60
# One API request (kubectl --request-timeout); the waits above retry, so one slow answer is no failure.
KUBE_REQUEST_TIMEOUT_SECONDS: Final = 30
# One download (the K3s binary is about 70 MB).
DOWNLOAD_TIMEOUT_SECONDS: Final = 300

# Lambda Stack images; `ID:VERSION_ID` as in /etc/os-release.
SUPPORTED_OS: Final = ("ubuntu:22.04", "ubuntu:24.04")
UNAME_MACHINE: Final = {Arch.AMD64: "x86_64", Arch.ARM64: "aarch64"}

# Ports K3s listens on (K3s docs, "Inbound rules for K3s nodes"); preflight wants them free.
SERVER_PORTS: Final = ("tcp/6443", "tcp/2379", "tcp/2380", "tcp/10250")
AGENT_PORTS: Final = ("tcp/10250",)
FLANNEL_PORTS: Final = {"vxlan": ("udp/8472",), "wireguard-native": ("udp/51820",)}


# servicelb (klipper) is replaced by MetalLB; Traefik stays as the ingress controller.
DISABLED_COMPONENTS: Final[tuple[str, ...]] = ("servicelb",)


class Step(StrEnum):
    """The steps of one machine, in the order they run. Each is a `remote.Command` named `<node>-<step>`."""

    PREFLIGHT = "preflight"
    CLAIM = "claim"
    PREPARE = "prepare"
    INSTALL = "install"
    READY = "ready"
    SERVER_TOKEN = "server-token"
    AGENT_TOKEN = "agent-token"
    ADMIT = "admit"
    KUBECONFIG = "kubeconfig"


def service_name(role: Role) -> str:
    """The systemd service K3s runs as: `k3s` on servers, `k3s-agent` on agents (as K3s's installer names them)."""
    return "k3s" if role is Role.SERVER else "k3s-agent"


def unit_file(role: Role) -> str:
    return f"{UNIT_DIR}/{service_name(role)}.service"


def systemd_unit(role: Role) -> str:
    """The systemd unit of K3s on a node of this role, as K3s's installer writes it.

    The content of k3s-io/k3s install.sh `create_systemd_service_file` (Type=notify: K3s tells
    systemd when it is up; KillMode=process and Delegate=yes: a restart of K3s leaves the pods'
    containers running, in cgroups K3s manages; no Limit* accounting; TimeoutStartSec=0: no start
    timeout, which the install step bounds itself; the modules K3s's networking needs loaded first),
    with the command alone on ExecStart: every setting is in /etc/rancher/k3s/config.yaml. Its
    environment files are kept: K3s's docs put proxy settings (HTTP_PROXY, NO_PROXY, ...) in
    /etc/systemd/system/<service>.service.env, where the installer wrote them from its environment
    (k3s-io/docs docs/advanced.md, "Configuring an HTTP proxy"), so a machine behind a proxy keeps
    them; nothing here writes those files.
    """
    return (
        "[Unit]\n"
        "Description=Lightweight Kubernetes\n"
        "Documentation=https://k3s.io\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
        "\n"
        "[Service]\n"
        "Type=notify\n"
        "EnvironmentFile=-/etc/default/%N\n"
        "EnvironmentFile=-/etc/sysconfig/%N\n"
        f"EnvironmentFile=-{unit_file(role)}.env\n"
        "KillMode=process\n"
        "Delegate=yes\n"
        "User=root\n"
        "LimitNOFILE=1048576\n"
        "LimitNPROC=infinity\n"
        "LimitCORE=infinity\n"
        "TasksMax=infinity\n"
        "TimeoutStartSec=0\n"
        "Restart=always\n"
        "RestartSec=5s\n"
        "ExecStartPre=-/sbin/modprobe br_netfilter\n"
        "ExecStartPre=-/sbin/modprobe overlay\n"
        f"ExecStart={K3S_BINARY} {role.value}\n"
    )


def release_url(cluster: ClusterSettings, asset: str) -> str:
    """One asset of the pinned K3s release, from `cluster.k3sMirror` or else K3s's GitHub releases.

    The mirror is laid out as the release itself: `<base>/<version>/<asset>`, the version with its `+`
    percent-encoded as GitHub's release URLs have it (`.../download/v1.29.1-rc2%2Bk3s1/...` in the K3s
    docs, k3s-io/docs docs/installation/airgap.md, "Manually Deploy Images Method"): a literal `+` in a
    path is a space to some servers.
    """
    base = cluster.k3s_mirror.rstrip("/") if cluster.k3s_mirror else RELEASE_DOWNLOADS
    return f"{base}/{quote(cluster.k3s_version, safe='')}/{asset}"


def uses_private_network(cluster: ClusterSettings) -> bool:
    return cluster.private_network


def node_address(cluster: ClusterSettings, node: Node) -> str:
    """The address the other nodes reach this node on: its private one on a private network.

    Without a private network it is the public `host`, which K3s gets as `node-external-ip`; the
    node's `node-ip` is then left to K3s (the address of its default-route interface), because on a
    machine behind NAT the public address is on no interface and K3s could not bind to it. That is
    K3s's documented setup for nodes without a shared private network (docs: networking, "distributed
    hybrid or multicloud cluster"), with `flannel-external-ip` so that pod traffic uses the public
    addresses, encrypted by WireGuard.
    """
    return node.private_ip if uses_private_network(cluster) and node.private_ip else node.host


def flannel_backend(cluster: ClusterSettings) -> str:
    """VXLAN over the private network; without one, pod traffic crosses the internet, encrypted."""
    return "vxlan" if uses_private_network(cluster) else "wireguard-native"


def url_host(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def server_url(cluster: ClusterSettings) -> str:
    """Where joining nodes register: the first server, on the address the nodes reach it by."""
    return f"https://{url_host(node_address(cluster, cluster.first_server))}:{API_PORT}"


def api_server_url(cluster: ClusterSettings) -> str:
    return f"https://{url_host(cluster.api_endpoint)}:{API_PORT}"


def node_labels(node: Node) -> dict[str, str]:
    labels = dict(node.labels)
    if node.gpu is not None:
        labels[GPU_TYPE_LABEL] = node.gpu.model.label
        labels[GPU_PRESENT_LABEL] = "true"
    return dict(sorted(labels.items()))


def is_first(cluster: ClusterSettings, node: Node) -> bool:
    return node.name == cluster.first_server.name


@dataclass(frozen=True)
class K3sConfig:
    """/etc/rancher/k3s/config.yaml: each field is the K3s flag of the same name (`_` for `-`).

    Unset fields (None, empty) are left out, so an agent's file holds agent flags only.
    """

    token_file: str
    node_name: str
    node_external_ip: str
    node_ip: str | None = None
    node_label: tuple[str, ...] = ()
    node_taint: tuple[str, ...] = ()
    agent_token_file: str | None = None
    cluster_init: bool | None = None
    server: str | None = None
    flannel_external_ip: bool | None = None
    tls_san: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()
    flannel_backend: str | None = None
    secrets_encryption: bool | None = None
    write_kubeconfig_mode: str | None = None
    etcd_snapshot_schedule_cron: str | None = None
    etcd_snapshot_retention: int | None = None
    supervisor_metrics: bool | None = None
    etcd_s3: bool | None = None
    etcd_s3_config_secret: str | None = None

    def as_flags(self) -> dict[str, object]:
        flags: dict[str, object] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None or value == ():
                continue
            flags[item.name.replace("_", "-")] = list(value) if isinstance(value, tuple) else value
        return flags

    def to_yaml(self) -> str:
        """Deterministic: keys sorted, block style; the same settings give the same bytes."""
        return yaml.safe_dump(self.as_flags(), sort_keys=True, default_flow_style=False)


def k3s_config(cluster: ClusterSettings, node: Node) -> K3sConfig:
    """The K3s configuration of one node, from the typed settings."""
    first_server = node.role is Role.SERVER and is_first(cluster, node)
    common = K3sConfig(
        cluster_init=True if first_server else None,
        server=None if first_server else server_url(cluster),
        token_file=TOKEN_FILE,
        node_name=node.name,
        node_ip=node_address(cluster, node) if uses_private_network(cluster) else None,
        node_external_ip=node.host,
        # No `node-label`: K3s re-applies it at every start (k3s-io/k3s pkg/agent/run.go,
        # updateMutableLabels) and only then, so a label in this file would tie every label change to a
        # K3s restart. The admit step sets the labels alone: a change runs only that node's admit.
        # Taints stay: `node-taint` registers the node tainted, before any pod can land on it.
        node_taint=tuple(str(t) for t in node.taints),
    )
    if node.role is not Role.SERVER:
        return common
    return replace(
        common,
        # Agents join with this token, never with the server token (full administrator access).
        agent_token_file=AGENT_TOKEN_FILE,
        tls_san=tuple(sorted({cluster.api_endpoint, node.host, node_address(cluster, node)})),
        disable=DISABLED_COMPONENTS,
        flannel_backend=flannel_backend(cluster),
        flannel_external_ip=None if uses_private_network(cluster) else True,
        secrets_encryption=True,
        write_kubeconfig_mode="0600",
        etcd_snapshot_schedule_cron=cluster.etcd_snapshots.schedule,
        # The count of snapshots kept per server, locally and in the bucket: K3s v1.35 prunes the
        # bucket by `etcd-s3-retention`, which takes this value while it is unset (k3s-io/k3s#13770;
        # docs.k3s.io cli/etcd-snapshot, "S3 Retention"). It stays unset: as an etcd-s3 option in
        # this file it would make K3s ignore the Secret (below).
        etcd_snapshot_retention=cluster.etcd_snapshots.retention,
        # Only the switch and the Secret's name: K3s reads the endpoint, bucket, region, folder and
        # keys from that Secret, and only while no other etcd-s3 option is set
        # (k3s-io/k3s pkg/etcd/s3/s3.go GetClient), so none of them is in this file.
        # K3s's own metrics (etcd snapshot results among them) on the supervisor port, 6443, which the
        # monitoring stack scrapes as the API server; the snapshot alert reads them.
        supervisor_metrics=True,
        etcd_s3=True if cluster.backups is not None else None,
        etcd_s3_config_secret=ETCD_S3_SECRET if cluster.backups is not None else None,
    )


def firewall_ports(cluster: ClusterSettings, node: Node) -> tuple[str, ...]:
    """`proto/port` (or `proto/first:last`) this node must accept from the other machines."""
    # The one list (components/host_ports.py, README "Machines"): K3s's ports, pod traffic, and the
    # host-network pods Prometheus scrapes from another machine.
    return peer_ports(server=node.role is Role.SERVER, flannel_backend=flannel_backend(cluster))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def script_body(name: str) -> str:
    """A script file without its shebang and `set` line (the composed script has them once)."""
    lines = (SCRIPTS_DIR / name).read_text().splitlines()
    kept = [line for line in lines if not line.startswith("#!") and line != "set -euo pipefail"]
    return "\n".join(kept).strip("\n") + "\n"


def compose(node_name: str, step: str, script: str, values: Mapping[str, str], *, runs_on: str) -> str:
    """A complete bash script: settings as exports, then lib.sh, then the step's script.

    The header says which machine runs it: a node's cluster-side steps run on the first server,
    which a reader of `nodes/<node>/` could not otherwise tell.
    """
    prelude = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in values.items())
    machine = f"{runs_on} itself" if runs_on == node_name else f"{runs_on}, the first server, on behalf of {node_name}"
    return (
        "#!/usr/bin/env bash\n"
        "set -euo pipefail\n"
        f"# sophia-infra: step '{step}' of node {node_name}, from components/cluster/scripts/{script}\n"
        f"# runs on {machine}\n"
        f"export STEP={shlex.quote(f'{node_name}-{step}')}\n"
        f"{prelude}\n"
        f"{script_body('lib.sh')}\n"
        f"{script_body(script)}"
    )


@dataclass(frozen=True)
class NodeScripts:
    """Every script one node's steps run, and what re-runs them."""

    node: Node
    first: bool
    config: str
    preflight: str
    prepare: str
    uninstall: str
    install: str
    ready: str
    claim: str | None
    remove: str | None
    admit: str
    drain: str | None
    kubeconfig: str | None
    server_token: str | None
    """First server only: prints the secure server token that other servers join with."""
    agent_token: str | None
    """First server only: prints the secure agent token that agents join with."""
    restore: str | None = None
    """On servers with backups: the restore tool the install step puts at RESTORE_PATH (not a step)."""

    @property
    def install_triggers(self) -> list[str]:
        """A changed version, config or install script re-runs the install (remote.Command `triggers`)."""
        return [self.node.name, sha256(self.config), sha256(self.install)]


def node_scripts(cluster: ClusterSettings, node: Node) -> NodeScripts:
    first = is_first(cluster, node)
    service = service_name(node.role)
    own_kubeconfig = ADMIN_KUBECONFIG if node.role is Role.SERVER else AGENT_KUBECONFIG
    config = k3s_config(cluster, node).to_yaml()
    backend = flannel_backend(cluster)
    ports = (*(SERVER_PORTS if node.role is Role.SERVER else AGENT_PORTS), *FLANNEL_PORTS[backend])
    name = node.name

    request_timeout = {"KUBE_REQUEST_TIMEOUT": str(KUBE_REQUEST_TIMEOUT_SECONDS)}

    def on_node(step: str, script: str, extra: Mapping[str, str]) -> str:
        base = {"NODE_NAME": name, "K3S_SERVICE": service, "KUBECONFIG_PATH": own_kubeconfig} | request_timeout
        return compose(name, step, script, base | dict(extra), runs_on=name)

    def on_first_server(step: str, script: str, extra: Mapping[str, str] | None = None) -> str:
        base = {"NODE_NAME": name, "K3S_SERVICE": "k3s", "KUBECONFIG_PATH": ADMIN_KUBECONFIG} | request_timeout
        return compose(name, step, script, base | dict(extra or {}), runs_on=cluster.first_server.name)

    files = {"TOKEN_FILE": TOKEN_FILE, "MARKER_FILE": MARKER_FILE}
    if node.role is Role.SERVER:
        files["AGENT_TOKEN_FILE"] = AGENT_TOKEN_FILE
    timeouts = {
        "READY_TIMEOUT": str(READY_TIMEOUT_SECONDS),
        "DRAIN_TIMEOUT": str(DRAIN_TIMEOUT_SECONDS),
        "DRAINED_ANNOTATION": DRAINED_ANNOTATION,
    }
    token_wait = {"TOKEN_FILE_TIMEOUT": str(TOKEN_FILE_TIMEOUT_SECONDS)}
    labels = node_labels(node)
    restore = None
    if node.role is Role.SERVER and cluster.backups is not None:
        restore = on_node(
            "restore",
            "restore.sh",
            {
                "READY_TIMEOUT": str(READY_TIMEOUT_SECONDS),
                "DATA_DIR": DATA_DIR,
                "S3_ENDPOINT": cluster.backups.endpoint_host,
                "S3_BUCKET": cluster.backups.bucket,
                "S3_REGION": cluster.backups.region,
                "S3_FOLDER": cluster.etcd_snapshots.folder,
                "FIRST_SERVER": "true" if first else "false",
            },
        )
    # Only servers have a restore path: an agent's install leaves the file alone (it never has one).
    # Base64: one line in the install script's prelude, like every other setting, instead of a
    # second script (with an export prelude of its own) inside the first.
    encoded = base64.b64encode(restore.encode()).decode() if restore else ""
    restore_files = {"RESTORE_PATH": RESTORE_PATH, "RESTORE_SCRIPT_B64": encoded} if node.role is Role.SERVER else {}
    return NodeScripts(
        node=node,
        first=first,
        config=config,
        preflight=on_node(
            Step.PREFLIGHT.value,
            "preflight.sh",
            {
                "EXPECTED_ARCH": node.arch.value,
                "EXPECTED_MACHINE": UNAME_MACHINE[node.arch],
                "SUPPORTED_OS": " ".join(SUPPORTED_OS),
                "REQUIRED_PORTS": " ".join(ports),
                "GPU_COUNT": str(node.gpu.count if node.gpu else 0),
                "GPU_PRODUCT": node.gpu.model.product if node.gpu else "",
                "FLANNEL_BACKEND": backend,
                "NODE_IP" if uses_private_network(cluster) else "PUBLIC_IP": node_address(cluster, node),
                "FIREWALL_PORTS": " ".join(firewall_ports(cluster, node)),
            },
        ),
        prepare=on_node(Step.PREPARE.value, "prepare.sh", files),
        uninstall=on_node(
            Step.PREPARE.value, "uninstall.sh", files | {"K3S_UNIT_FILE": unit_file(node.role), "DATA_DIR": DATA_DIR}
        ),
        install=on_node(
            Step.INSTALL.value,
            "install.sh",
            {
                "NODE_ROLE": node.role.value,
                "K3S_VERSION": cluster.k3s_version,
                "K3S_CONFIG": config,
                "SERVER_URL": "" if first else server_url(cluster),
                "CONFIG_FILE": CONFIG_FILE,
                "TOKEN_FILE": TOKEN_FILE,
                "APPLIED_FILE": APPLIED_FILE,
                "K3S_ARCH": node.arch.value,
                "K3S_ASSET": RELEASE_BINARIES[node.arch.value],
                "K3S_BINARY_URL": release_url(cluster, RELEASE_BINARIES[node.arch.value]),
                # The pinned sha256 when the settings have one; otherwise the release's checksum file.
                "K3S_SHA256": cluster.k3s_sha256.get(node.arch, ""),
                "K3S_SHA256_URL": release_url(cluster, checksum_file(node.arch.value)),
                "K3S_UNIT": systemd_unit(node.role),
                "K3S_UNIT_FILE": unit_file(node.role),
                "READY_TIMEOUT": str(READY_TIMEOUT_SECONDS),
                "LEASE_NAME": LEASE_NAME,
                "LEASE_SECONDS": str(LEASE_SECONDS),
                "DOWNLOAD_TIMEOUT": str(DOWNLOAD_TIMEOUT_SECONDS),
            }
            | restore_files,
        ),
        ready=on_node(
            Step.READY.value,
            "ready.sh",
            {"READY_TIMEOUT": str(READY_TIMEOUT_SECONDS), "GPU_COUNT": str(node.gpu.count if node.gpu else 0)},
        ),
        claim=None
        if first
        else on_first_server(Step.CLAIM.value, "claim.sh", {"NODE_IP": node_address(cluster, node)}),
        remove=None if first else on_first_server(Step.CLAIM.value, "remove.sh", timeouts),
        admit=on_first_server(
            Step.ADMIT.value,
            "admit.sh",
            timeouts
            | {
                "NODE_LABELS": "\n".join(f"{k}={v}" for k, v in labels.items()),
                "NODE_TAINTS": "\n".join(str(t) for t in node.taints),
                "TAINTS_ANNOTATION": TAINTS_ANNOTATION,
            },
        ),
        # The first server is the last node standing on `pulumi destroy`: there is nowhere to drain to.
        drain=None
        if first
        else on_first_server(
            Step.ADMIT.value,
            "drain.sh",
            timeouts
            | {
                "NODE_ROLE": node.role.value,
                "LOCAL_STORAGE_CLASS": LOCAL_STORAGE_CLASS,
                "ALLOW_DATA_LOSS": "true" if node.allow_data_loss else "false",
            },
        ),
        kubeconfig=on_node(Step.KUBECONFIG.value, "kubeconfig.sh", {"API_SERVER_URL": api_server_url(cluster)})
        if first
        else None,
        restore=restore,
        server_token=on_node(Step.SERVER_TOKEN.value, "token.sh", token_wait | {"TOKEN_PATH": SERVER_TOKEN_PATH})
        if first
        else None,
        agent_token=on_node(Step.AGENT_TOKEN.value, "token.sh", token_wait | {"TOKEN_PATH": AGENT_TOKEN_PATH})
        if first
        else None,
    )
