"""The K3s stand-in: what the e2e's K3s mirror serves as the `k3s` binary of the pinned release.

K3s itself is not to be had here (the Go module proxy answers 403 for every version of
github.com/k3s-io/k3s), so the real install step downloads this program from the e2e's mirror,
checks it against the sha256 the stack pins (cluster.k3sSha256), installs it as /usr/local/bin/k3s
and starts it through the unit it wrote. The harness (tests/e2e/k3s_mirror.py) fills in the
`@...@` values below for the version and architecture it serves; this file is never run in place.

Where the program depends on K3s, the stand-in behaves like it:
- `k3s --version` prints `k3s version <version> (...)` on its first line, as K3s does.
- `k3s kubectl ...` (and `kubectl` through the install's symlink) is a real kubectl
  (k8s.io/kubernetes cmd/kubectl, the API server's version).
- `k3s server` and `k3s agent` read /etc/rancher/k3s/config.yaml (the flags the install step wrote)
  and refuse a key K3s would not know for that role.
- The first server (`cluster-init: true`) writes the secure tokens K3s writes,
  /var/lib/rancher/k3s/server/token (`K10<sha256 of the cluster CA>::server:<token>`) and
  server/agent-token (`K10<hash>::node:<agent token>`), root-only; and records a hash of both
  passwords in the cluster (K3s keeps its bootstrap data in its datastore). A second start with other
  tokens fails, as K3s fails on bootstrap data encrypted with another token.
- A joining node (`server: <url>`) joins only with a token whose password the cluster knows (an agent:
  the agent or the server token; a server: the server token), and, with a K10 token, only a server
  whose CA certificate hashes to the token's pin: otherwise it exits with K3s's kind of message and
  `systemctl restart` fails.
- Every node registers its Node object with the kubelet's own credentials (system:node:<name>, so the
  API server's NodeRestriction judges its labels, as it judges a kubelet's): its name, the labels of
  `node-label` with the ones K3s and the kubelet add (kubernetes.io/arch, os, hostname, node roles),
  the taints of `node-taint` (registered with the node, as `--register-with-taints`), its addresses
  (`node-ip` or the interface's, `node-external-ip`), and `nvidia.com/gpu` capacity for every GPU
  nvidia-smi lists (what the device plugin advertises without time-slicing; with
  `platform.gpuSharing` the real plugin advertises `replicas` per GPU, which the e2e's kwok nodes
  model, tests/e2e/instances.py, and this stand-in does not). It keeps the Node Ready (status and a
  Lease in kube-node-lease) while it runs; a pod bound to the node is marked Running and Ready (a
  Job's pod Succeeded), and a pod being deleted (a drain's eviction) is removed, as the kubelet
  confirms it.
- A server writes /etc/rancher/k3s/k3s.yaml (mode `write-kubeconfig-mode`), the admin kubeconfig for
  https://127.0.0.1:6443, and answers on port 6443 of every address of the machine; an agent writes
  /var/lib/rancher/k3s/agent/kubelet.kubeconfig for https://127.0.0.1:6444, its local load balancer.
  On a machine with /usr/bin/nvidia-container-runtime, containerd's config names the `nvidia` runtime.
- It tells systemd it is up (READY=1 on $NOTIFY_SOCKET) once its node is registered.

Where it differs:
- No container runs: no containerd, kubelet, flannel or etcd. Every server's port 6443 forwards to
  the e2e's one kube-apiserver (on etcd of its own); the cluster has one datastore whatever the
  number of servers. A server answers the drain step's `etcd.k3s.cattle.io/remove` annotation with
  `etcd.k3s.cattle.io/removed-node-name`, as K3s's etcd member controller does, but no member is
  removed from anything.
- Credentials are pre-issued by the harness (/opt/sophia-k3s-stand-in: the cluster CA, the admin
  client certificate and this node's kubelet certificate), where K3s mints them from the CA it
  creates or receives with the token.
- `k3s etcd-snapshot` and the other subcommands are refused.
- A fault the harness can inject (a knob, never set by the program): when the file
  /opt/sophia-k3s-stand-in/token-delay exists as a server starts, it holds a number of seconds or
  `never`, and the server writes its two token files that much later, in the background, or not at
  all, while it registers its node and says READY=1 as usual. K3s writes them during its start,
  before its API server answers; this stands for a K3s that is (re)starting under the token steps,
  or one that failed to write them (tests/e2e/test_faults_machines.py).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

VERSION = "@VERSION@"
ARCH = "@ARCH@"
KUBECTL = "@KUBECTL@"
UPSTREAM = "@UPSTREAM@"
"""host:port of the e2e's API server as the machines reach it (the harness's forwarder on the bridge)."""

STAND_IN = "/opt/sophia-k3s-stand-in"
CONFIG = "/etc/rancher/k3s/config.yaml"
DATA = "/var/lib/rancher/k3s"
ADMIN_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
AGENT_KUBECONFIG = f"{DATA}/agent/kubelet.kubeconfig"
CONTAINERD_CONFIG = f"{DATA}/agent/etc/containerd/config.toml"
BOOTSTRAP_SECRET = "k3s-stand-in-bootstrap"
TOKEN_DELAY = f"{STAND_IN}/token-delay"
HEARTBEAT_SECONDS = 10
POD_SYNC_SECONDS = 2
LEASE_SECONDS = 40

# The config.yaml keys each role understands (K3s's `k3s server --help` / `k3s agent --help`); the
# stand-in refuses any other, as K3s refuses an unknown flag.
AGENT_KEYS = {
    "token-file", "token", "server", "node-name", "node-ip", "node-external-ip", "node-label",
    "node-taint", "flannel-iface", "kubelet-arg", "data-dir", "with-node-id", "selinux", "lb-server-port",
}  # fmt: skip
SERVER_KEYS = AGENT_KEYS | {
    "cluster-init", "agent-token-file", "agent-token", "tls-san", "disable", "flannel-backend",
    "flannel-external-ip", "secrets-encryption", "write-kubeconfig-mode", "etcd-snapshot-schedule-cron",
    "etcd-snapshot-retention", "supervisor-metrics", "etcd-s3", "etcd-s3-config-secret",
    "etcd-s3-retention", "cluster-cidr", "service-cidr", "kube-apiserver-arg", "advertise-address",
}  # fmt: skip


def log(message: str) -> None:
    """One line of the unit's log, with the time to the millisecond (the e2e orders restarts by it)."""
    now = time.time()
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now))}.{int(now % 1 * 1000):03d}Z {message}", flush=True)


def fatal(message: str) -> None:
    log(f'level=fatal msg="{message}"')
    sys.exit(1)


def read(path: str) -> str:
    return Path(path).read_text()


def write(path: str, text: str, mode: int) -> None:
    """Through a file created with `mode` (never readable by others, even for a moment), then renamed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as f:
        f.write(text)
    tmp.chmod(mode)
    tmp.replace(target)


def ca_hash() -> str:
    return hashlib.sha256(Path(f"{STAND_IN}/ca.crt").read_bytes()).hexdigest()


class Api:
    """A client of the API server behind `base`, with a client certificate from the stand-in's stash."""

    def __init__(self, base: str, cert: str) -> None:
        self.base = base
        self.context = ssl.create_default_context(cafile=f"{STAND_IN}/ca.crt")
        self.context.load_cert_chain(f"{STAND_IN}/{cert}.crt", f"{STAND_IN}/{cert}.key")

    def call(self, method: str, path: str, body: Any = None, content: str = "application/json") -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": content})
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=15) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")


def kubeconfig(server: str, cert: str) -> str:
    def data(name: str) -> str:
        return base64.b64encode(Path(f"{STAND_IN}/{name}").read_bytes()).decode()

    cluster = {"server": server, "certificate-authority-data": data("ca.crt")}
    user = {"client-certificate-data": data(f"{cert}.crt"), "client-key-data": data(f"{cert}.key")}
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "default", "cluster": cluster}],
            "users": [{"name": "default", "user": user}],
            "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
            "current-context": "default",
        },
        sort_keys=False,
    )  # fmt: skip


def forward(listen: tuple[str, int], upstream: tuple[str, int]) -> None:
    """Accepts on `listen` and pipes every connection to `upstream`, in threads, for as long as K3s runs."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(listen)
    server.listen(128)

    def pipe(client: socket.socket) -> None:
        try:
            with client, socket.create_connection(upstream, timeout=10) as remote:
                remote.settimeout(None)
                sockets = [client, remote]
                while True:
                    ready, _, _ = select.select(sockets, [], [], 300)
                    if not ready:
                        return
                    for s in ready:
                        chunk = s.recv(65536)
                        if not chunk:
                            return
                        (remote if s is client else client).sendall(chunk)
        except OSError:
            return

    def accept() -> None:
        while True:
            client, _ = server.accept()
            threading.Thread(target=pipe, args=(client,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host"}


def supervise(listen: tuple[str, int], upstream: tuple[str, int]) -> None:
    """K3s's port 6443 on a server: TLS; `/ping` and `/cacerts` answered here, as K3s's supervisor
    answers them; every other request proxied to the API server, naming the client this port
    authenticated by its certificate (the API server's request-header authentication)."""
    ca = Path(f"{STAND_IN}/ca.crt").read_bytes()
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(f"{STAND_IN}/serving.crt", f"{STAND_IN}/serving.key")
    serving.load_verify_locations(f"{STAND_IN}/ca.crt")
    serving.verify_mode = ssl.CERT_OPTIONAL
    client = ssl.create_default_context(cafile=f"{STAND_IN}/ca.crt")
    client.load_cert_chain(f"{STAND_IN}/front-proxy.crt", f"{STAND_IN}/front-proxy.key")

    class Supervisor(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def body(self) -> bytes | None:
            if "chunked" in self.headers.get("Transfer-Encoding", ""):
                data = b""
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    data += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return data
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else None

        def proxy(self) -> None:
            if self.path == "/ping":
                self.answer(200, b"pong", "text/plain")
                return
            if self.path == "/cacerts":
                self.answer(200, ca, "text/plain")
                return
            body = self.body()
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in HOP_BY_HOP and not k.lower().startswith("x-remote-")
            }
            connection = http.client.HTTPSConnection(upstream[0], upstream[1], context=client, timeout=600)
            connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", f"{upstream[0]}:{upstream[1]}")
            for key, value in headers.items():
                connection.putheader(key, value)
            peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
            subject: list[tuple[str, str]] = [
                (str(item[0]), str(item[1])) for rdn in (peer or {}).get("subject", ()) for item in rdn
            ]
            user = next((v for k, v in subject if k == "commonName"), None)
            if user:
                connection.putheader("X-Remote-User", user)
                for group in (v for k, v in subject if k == "organizationName"):
                    connection.putheader("X-Remote-Group", group)
            if body is not None:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            self.send_response(response.status, response.reason)
            length = response.getheader("Content-Length")
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            if length is not None:
                self.send_header("Content-Length", length)
            else:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                while chunk := response.read1(65536):
                    if length is None:
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    else:
                        self.wfile.write(chunk)
                    self.wfile.flush()
                if length is None:
                    self.wfile.write(b"0\r\n\r\n")
            finally:
                connection.close()

        # http.server dispatches on these names.
        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = proxy  # noqa: N815

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that hangs up mid-handshake (a probe, a cancelled watch) is no error of K3s's

    server = Server(listen, Supervisor)
    server.socket = serving.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def interface_address() -> str:
    """The address of the interface the default route leaves by: K3s's node-ip when none is set."""
    # `route get` asks the kernel which source address it would use; it sends nothing.
    argv = ["ip", "-4", "-o", "route", "get", "1.1.1.1"]
    out = subprocess.run(argv, check=False, capture_output=True, text=True).stdout.split()
    return out[out.index("src") + 1] if "src" in out else "127.0.0.1"


def gpu_count() -> int:
    try:
        argv = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
        out = subprocess.run(argv, check=False, capture_output=True, text=True)
    except FileNotFoundError:
        return 0
    return len([line for line in out.stdout.splitlines() if line.strip()]) if out.returncode == 0 else 0


def address_of(url: str) -> tuple[str, int]:
    """`https://host:port` (host possibly `[v6]`) as (host, port)."""
    host, _, port = url.split("//", 1)[1].rstrip("/").rpartition(":")
    return host.strip("[]"), int(port)


def password_of(token: str) -> str:
    """The password part of a token: `K10<hash>::<user>:<password>`, or the whole short token."""
    return token.split("::", 1)[1].split(":", 1)[1] if token.startswith("K10") and "::" in token else token


def digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def bootstrap(api: Api, server_password: str, agent_password: str) -> None:
    """The first server records its tokens (hashed) in the cluster; a restart with others fails."""
    want = {"server": digest(server_password), "agent": digest(agent_password)}
    path = f"/api/v1/namespaces/kube-system/secrets/{BOOTSTRAP_SECRET}"
    status, body = api.call("GET", path)
    if status == 200:
        have = {k: base64.b64decode(v).decode() for k, v in (body.get("data") or {}).items()}
        if have != want:
            fatal(
                "starting kubernetes: preparing server: bootstrap data already found and encrypted with different token"
            )
        return
    data = {k: base64.b64encode(v.encode()).decode() for k, v in want.items()}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": BOOTSTRAP_SECRET, "namespace": "kube-system"},
              "type": "Opaque", "data": data}  # fmt: skip
    status, body = api.call("POST", "/api/v1/namespaces/kube-system/secrets", secret)
    if status != 201:
        fatal(f"writing bootstrap data: {status} {body.get('message', '')}")


def token_delay() -> float | None:
    """The harness's knob (module docstring): seconds before the token files are written, None for never."""
    if not Path(TOKEN_DELAY).exists():
        return 0.0
    text = read(TOKEN_DELAY).strip()
    return None if text == "never" else float(text)


def write_tokens(server_password: str, agent_password: str) -> None:
    """The secure tokens K3s writes at start (both root-only), unless the knob delays or withholds them."""
    pin = ca_hash()

    def write_both() -> None:
        write(f"{DATA}/server/token", f"K10{pin}::server:{server_password}\n", 0o600)
        write(f"{DATA}/server/agent-token", f"K10{pin}::node:{agent_password}\n", 0o600)
        log('level=info msg="wrote the token files"')

    delay = token_delay()
    if delay is None:
        log(f'level=info msg="not writing the token files ({TOKEN_DELAY}: never)"')
    elif delay > 0:
        log(f'level=info msg="writing the token files in {delay:g} s ({TOKEN_DELAY})"')
        later = threading.Timer(delay, write_both)
        later.daemon = True  # a stop before then ends the process without them, as it would end K3s
        later.start()
    else:
        write_both()


def join(api: Api, server: str, token: str, role: str) -> None:
    """A joining node's checks: the server's CA against the token's pin, then the password."""
    # As K3s: the server's CA bundle from its /cacerts (insecurely: it is what the pin checks), then
    # its hash against the token's pin, before anything secret is sent.
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"{server}/cacerts", context=insecure, timeout=10) as response:
            served = response.read()
    except (OSError, ssl.SSLError) as error:
        fatal(f"starting kubernetes: preparing {role}: failed to get CA certs: {error}")
    if token.startswith("K10") and token[3:].split("::", 1)[0] != hashlib.sha256(served).hexdigest():
        fatal(f"starting kubernetes: preparing {role}: token CA hash does not match the server's CA at {server}")
    status, body = api.call("GET", f"/api/v1/namespaces/kube-system/secrets/{BOOTSTRAP_SECRET}")
    if status != 200:
        fatal(f"starting kubernetes: preparing {role}: the server has no bootstrap data yet ({status})")
    known = {k: base64.b64decode(v).decode() for k, v in (body.get("data") or {}).items()}
    allowed = {known["server"]} if role == "server" else {known["server"], known["agent"]}
    if digest(password_of(token)) not in allowed:
        fatal(f"starting kubernetes: preparing {role}: {server}/cacerts: 401 Unauthorized")


def node_object(config: dict[str, Any], role: str, name: str) -> dict[str, Any]:
    labels = {
        "kubernetes.io/arch": ARCH,
        "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": name,
        "beta.kubernetes.io/arch": ARCH,
        "beta.kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": "k3s",
    }
    for item in config.get("node-label") or []:
        key, _, value = str(item).partition("=")
        labels[key] = value
    taints = []
    for item in config.get("node-taint") or []:
        key_value, _, effect = str(item).partition(":")
        key, _, value = key_value.partition("=")
        taints.append({"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect})
    addresses = [{"type": "InternalIP", "address": str(config.get("node-ip") or interface_address())}]
    if config.get("node-external-ip"):
        addresses.append({"type": "ExternalIP", "address": str(config["node-external-ip"])})
    addresses.append({"type": "Hostname", "address": name})
    capacity = {"cpu": "8", "memory": "65536Mi", "pods": "110", "ephemeral-storage": "500Gi"}
    gpus = gpu_count()
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
    annotations = {"k3s.io/node-args": json.dumps([role]), "node.alpha.kubernetes.io/ttl": "0"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"taints": taints} if taints else {},
        "status": {"capacity": capacity, "allocatable": capacity, "addresses": addresses},
    }


def conditions(ready: bool) -> list[dict[str, str]]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    healthy = [("MemoryPressure", "False"), ("DiskPressure", "False"), ("PIDPressure", "False")]
    rows = [{"type": t, "status": s, "reason": f"Kubelet{'Has' if s == 'True' else 'HasNo'}{t}"} for t, s in healthy]
    rows.append({"type": "Ready", "status": "True" if ready else "False", "reason": "KubeletReady"})
    return [dict(r, lastHeartbeatTime=now, lastTransitionTime=now, message="k3s stand-in") for r in rows]


def register(api: Api, node: dict[str, Any]) -> None:
    name = node["metadata"]["name"]
    status, body = api.call("POST", "/api/v1/nodes", {k: v for k, v in node.items() if k != "status"})
    if status not in (201, 409):
        fatal(f"Unable to register node with API server: {status} {body.get('message', '')}")
    if status == 409:
        # A restart (an upgrade, a new config): the kubelet re-applies what it owns of its Node.
        patch = {"metadata": {"labels": node["metadata"]["labels"], "annotations": node["metadata"]["annotations"]}}
        status, body = api.call("PATCH", f"/api/v1/nodes/{name}", patch, "application/strategic-merge-patch+json")
        if status != 200:
            fatal(f"Unable to update node {name}: {status} {body.get('message', '')}")
    heartbeat(api, node)


def heartbeat(api: Api, node: dict[str, Any]) -> None:
    name = node["metadata"]["name"]
    status_patch = {"status": dict(node["status"], conditions=conditions(True), nodeInfo={
        "kubeletVersion": VERSION, "kubeProxyVersion": VERSION, "architecture": ARCH, "operatingSystem": "linux",
        "containerRuntimeVersion": "containerd://stand-in", "osImage": "Ubuntu 22.04.5 LTS", "kernelVersion": "",
        "machineID": "", "systemUUID": "", "bootID": ""})}  # fmt: skip
    patch_type = "application/strategic-merge-patch+json"
    code, body = api.call("PATCH", f"/api/v1/nodes/{name}/status", status_patch, patch_type)
    if code != 200:
        log(f'level=error msg="node status update failed: {code} {body.get("message", "")}"')
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": name, "namespace": "kube-node-lease"},
             "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now}}  # fmt: skip
    path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
    code, _ = api.call("PATCH", path, {"spec": lease["spec"]}, "application/merge-patch+json")
    if code == 404:
        api.call("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)


def sync_pods(api: Api, name: str) -> None:
    """The little of a kubelet the program depends on: a pod bound to this node runs and is Ready (no
    container really starts), and a pod being deleted (a drain's eviction) is gone once it was told to
    stop, as the kubelet confirms a graceful deletion."""
    status, body = api.call("GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{name}")
    if status != 200:
        return
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for pod in body.get("items") or []:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        if meta.get("deletionTimestamp"):
            api.call("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
            continue
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Running", "Succeeded", "Failed"):
            continue
        if any(o.get("kind") == "Job" for o in meta.get("ownerReferences") or []):
            # A Job's pod (a Helm hook's, say) runs to completion, as kwok's pod-complete stage has it.
            finished = [{"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
                         "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now,
                                                  "finishedAt": now}}} for c in pod["spec"]["containers"]]  # fmt: skip
            scheduled = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now}]
            done = {"status": {"phase": "Succeeded", "containerStatuses": finished, "startTime": now,
                               "conditions": scheduled}}  # fmt: skip
            api.call("PATCH", f"{path}/status", done, "application/strategic-merge-patch+json")
            continue
        conditions = [{"type": t, "status": "True", "lastTransitionTime": now}
                      for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]  # fmt: skip
        containers = [{"name": c["name"], "image": c["image"], "imageID": "", "ready": True, "restartCount": 0,
                       "started": True, "state": {"running": {"startedAt": now}}}
                      for c in pod["spec"]["containers"]]  # fmt: skip
        patch = {"status": {"phase": "Running", "conditions": conditions, "containerStatuses": containers,
                            "startTime": now, "hostIP": node_ip_of(pod), "podIP": "10.42.0.1"}}  # fmt: skip
        api.call("PATCH", f"{path}/status", patch, "application/strategic-merge-patch+json")


def node_ip_of(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("hostIP") or interface_address())


ETCD_REMOVE = "etcd.k3s.cattle.io/remove"
ETCD_REMOVED = "etcd.k3s.cattle.io/removed-node-name"


def remove_etcd_members(api: Api) -> None:
    """What K3s's etcd member controller does on every server (k3s-io/k3s pkg/etcd, the node's
    `etcd.k3s.cattle.io/remove` annotation): it removes that node's etcd member and records
    `etcd.k3s.cattle.io/removed-node-name`. No etcd runs here, so only the record is made."""
    status, body = api.call("GET", "/api/v1/nodes")
    if status != 200:
        return
    for node in body.get("items") or []:
        annotations = node["metadata"].get("annotations") or {}
        if annotations.get(ETCD_REMOVE) == "true" and ETCD_REMOVED not in annotations:
            patch = {"metadata": {"annotations": {ETCD_REMOVED: node["metadata"]["name"]}}}
            api.call("PATCH", f"/api/v1/nodes/{node['metadata']['name']}", patch, "application/merge-patch+json")


def notify_ready() -> None:
    target = os.environ.get("NOTIFY_SOCKET")
    if target:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"READY=1", target)


def run(role: str) -> None:
    if not Path(CONFIG).exists():
        fatal(f"{CONFIG} not found")
    config = yaml.safe_load(read(CONFIG)) or {}
    unknown = sorted(set(config) - (SERVER_KEYS if role == "server" else AGENT_KEYS))
    if unknown:
        fatal(f"flag provided but not defined: -{unknown[0]}")
    name = str(config.get("node-name") or socket.gethostname())
    token = read(config["token-file"]).strip() if config.get("token-file") else str(config.get("token") or "")
    if not token:
        fatal("--token is required")
    upstream_host, upstream_port = UPSTREAM.rsplit(":", 1)
    admin = Api(f"https://{UPSTREAM}", "admin")
    if role == "server":
        agent_token = read(config["agent-token-file"]).strip() if config.get("agent-token-file") else token
        if config.get("cluster-init"):
            bootstrap(admin, password_of(token), password_of(agent_token))
        else:
            join(admin, str(config.get("server") or ""), token, role)
        write_tokens(password_of(token), password_of(agent_token))
        supervise(("0.0.0.0", 6443), (upstream_host, int(upstream_port)))
        mode = int(str(config.get("write-kubeconfig-mode") or "0600"), 8)
        write(ADMIN_KUBECONFIG, kubeconfig("https://127.0.0.1:6443", "admin"), mode)
    else:
        server = str(config.get("server") or "")
        if not server:
            fatal("--server is required for an agent")
        join(admin, server, token, role)
        forward(("127.0.0.1", 6444), address_of(server))
    local = "https://127.0.0.1:6444" if role == "agent" else "https://127.0.0.1:6443"
    write(AGENT_KUBECONFIG, kubeconfig(local, "node"), 0o600)
    if Path("/usr/bin/nvidia-container-runtime").exists():
        write(CONTAINERD_CONFIG, "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'nvidia']\n"
              "  runtime_type = \"io.containerd.runc.v2\"\n"
              "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'nvidia'.options]\n"
              "  BinaryName = \"/usr/bin/nvidia-container-runtime\"\n", 0o600)  # fmt: skip
    kubelet = Api(f"https://{UPSTREAM}", "node")
    node = node_object(config, role, name)
    register(kubelet, node)
    log(f'level=info msg="k3s stand-in {VERSION} ({ARCH}) running as {role} {name}"')
    notify_ready()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    last_heartbeat = time.monotonic()
    while not stopping.wait(POD_SYNC_SECONDS):
        try:
            sync_pods(kubelet, name)
            if role == "server":
                remove_etcd_members(admin)
            if time.monotonic() - last_heartbeat >= HEARTBEAT_SECONDS:
                heartbeat(kubelet, node)
                last_heartbeat = time.monotonic()
        except (OSError, http.client.HTTPException, ValueError) as error:
            # As a kubelet: an API server that is away (restarting) is tried again at the next sync.
            log(f'level=error msg="API server unreachable: {type(error).__name__}: {error}"')
    log('level=info msg="shutting down"')


def main(argv: list[str]) -> None:
    program = Path(argv[0]).name
    if program == "kubectl":
        os.execv(KUBECTL, ["kubectl", *argv[1:]])
    args = argv[1:]
    if args and args[0] in ("--version", "-v", "version"):
        print(f"k3s version {VERSION} (e2e stand-in)\ngo version {sys.version.split()[0]} (python)")
        return
    if args and args[0] == "kubectl":
        os.execv(KUBECTL, ["kubectl", *args[1:]])
    if args and args[0] in ("server", "agent") and len(args) == 1:
        run(args[0])
        return
    print(f"k3s stand-in: unsupported: {' '.join(args)}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main(sys.argv)
