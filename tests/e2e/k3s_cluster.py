"""What stands behind the test machines' K3s: its mirror, its credentials and the way to the API server.

- `K3sMirror`: an HTTPS server on the test bridge laid out as K3s's GitHub releases are
  (`<base>/<version, + as %2B>/<asset>`: `k3s`, `k3s-arm64`, `sha256sum-<arch>.txt`), serving the K3s
  stand-in (tests/e2e/k3s_standin.py) for each version a test asks for. The stack's
  `cluster.k3sMirror` points at it and `cluster.k3sSha256` pins what it serves, as an operator
  behind a restricted network would set them; the machines trust its certificate through the e2e
  CA in their /etc/ssl/certs bundle, as an operator's machines trust their internal CA.
- `ApiForwarder`: the bridge's port 6443, forwarded to the e2e's kube-apiserver on 127.0.0.1. Every
  stand-in server's own port 6443 forwards here: the cluster's one datastore.
- `provision`: the credentials a stand-in uses (the cluster CA, the admin client certificate, the
  node's kubelet certificate `system:node:<name>`, the serving certificate of its port 6443 and the
  front-proxy certificate it forwards API requests with), in the machine's /opt/sophia-k3s-stand-in.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import select
import shutil
import socket
import ssl
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tests.e2e.apiserver import ApiServer, sign
from tests.e2e.machines import STAND_IN_DIR, Machine, gateway

STAND_IN_SOURCE: Final = Path(__file__).with_name("k3s_standin.py")
API_PORT: Final = 6443
MIRROR_PORT: Final = 8443
ASSETS: Final = {"amd64": "k3s", "arm64": "k3s-arm64"}
CLIENT_CERTIFICATE: Final = (
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
)


def stand_in_binary(version: str, arch: str, kubectl: Path) -> bytes:
    """The stand-in as the mirror serves it for one version and architecture."""
    text = STAND_IN_SOURCE.read_text()
    for placeholder, value in {
        "@VERSION@": version,
        "@ARCH@": arch,
        "@KUBECTL@": str(kubectl),
        "@UPSTREAM@": f"{gateway()}:{API_PORT}",
    }.items():
        text = text.replace(placeholder, value)
    return f"#!{sys.executable}\n{text}".encode()


HOLD_TIMEOUT: Final = 300.0
"""The longest a held download waits (install.sh's own limit for one download is 300 s too)."""


@dataclass
class K3sMirror:
    url: str
    kubectl: Path
    fetched: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    held: dict[str, threading.Event] = field(default_factory=dict)
    """Client address -> what releases it: a download of a K3s binary by that client waits (`hold`)."""
    holding: list[str] = field(default_factory=list)
    """The client addresses whose binary download is being held right now."""

    @contextlib.contextmanager
    def hold(self, address: str) -> Iterator[threading.Event]:
        """While the block runs, the machine at `address` gets no K3s binary: its download waits until
        the event is set, the block ends or HOLD_TIMEOUT passes, so a test knows its install is in
        flight (`holding`) and can make something happen to the machine meanwhile."""
        release = threading.Event()
        self.held[address] = release
        try:
            yield release
        finally:
            release.set()
            self.held.pop(address, None)

    def publish(self, version: str) -> dict[str, str]:
        """Serves `version` for every architecture; returns the sha256 of each binary (`cluster.k3sSha256`)."""
        folder = urllib.parse.quote(version, safe="")
        pins: dict[str, str] = {}
        for arch, asset in ASSETS.items():
            data = stand_in_binary(version, arch, self.kubectl)
            pins[arch] = hashlib.sha256(data).hexdigest()
            self.files[f"/{folder}/{asset}"] = data
            self.files[f"/{folder}/sha256sum-{arch}.txt"] = f"{pins[arch]}  {asset}\n".encode()
        return pins


class _MirrorHandler(http.server.BaseHTTPRequestHandler):
    def __init__(self, *args: Any, mirror: K3sMirror, **kwargs: Any) -> None:
        self.mirror = mirror
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self.mirror.fetched.append(self.path)
        data = self.mirror.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        client = self.client_address[0]
        release = self.mirror.held.get(client)
        if release is not None and self.path.rsplit("/", 1)[-1] in ASSETS.values():
            self.mirror.holding.append(client)
            try:
                release.wait(HOLD_TIMEOUT)
            finally:
                self.mirror.holding.remove(client)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # ssl.SSLError and a broken pipe among them
            pass  # a held client that went away meanwhile (a machine that rebooted)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # `fetched` is the log


@contextlib.contextmanager
def k3s_mirror(server: ApiServer, kubectl: Path) -> Iterator[K3sMirror]:
    """The mirror on the bridge's gateway address, HTTPS with a certificate of the e2e CA."""
    host = gateway()
    sign(server.pki, "k3s-mirror", "/CN=k3s-mirror", f"basicConstraints=CA:FALSE\nsubjectAltName=IP:{host}\n")
    mirror = K3sMirror(url=f"https://{host}:{MIRROR_PORT}", kubectl=kubectl)
    httpd = http.server.ThreadingHTTPServer((host, MIRROR_PORT), functools.partial(_MirrorHandler, mirror=mirror))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(server.pki / "k3s-mirror.crt"), str(server.pki / "k3s-mirror.key"))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, name="k3s-mirror", daemon=True)
    thread.start()
    try:
        yield mirror
    finally:
        httpd.shutdown()
        thread.join(timeout=10)
        httpd.server_close()


@contextlib.contextmanager
def api_forwarder(server: ApiServer) -> Iterator[str]:
    """The bridge's port 6443 piped to the API server on loopback; yields `host:port`."""
    upstream = urllib.parse.urlsplit(server.url)
    target = (str(upstream.hostname), int(upstream.port or 443))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((gateway(), API_PORT))
    listener.listen(256)
    stop = threading.Event()

    def pipe(client: socket.socket) -> None:
        try:
            with client, socket.create_connection(target, timeout=10) as remote:
                remote.settimeout(None)
                while not stop.is_set():
                    ready, _, _ = select.select([client, remote], [], [], 1.0)
                    for s in ready:
                        chunk = s.recv(65536)
                        if not chunk:
                            return
                        (remote if s is client else client).sendall(chunk)
        except OSError:
            return

    def accept() -> None:
        listener.settimeout(0.5)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=pipe, args=(client,), daemon=True).start()

    thread = threading.Thread(target=accept, name="api-forwarder", daemon=True)
    thread.start()
    try:
        yield f"{gateway()}:{API_PORT}"
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


def provision(machine: Machine, server: ApiServer) -> None:
    """The stand-in's credentials on `machine` (k3s_standin.py: where it differs from K3s)."""
    pki = server.pki
    node = f"node-{machine.name}"
    if not (pki / f"{node}.crt").exists():
        sign(pki, node, f"/O=system:nodes/CN=system:node:{machine.name}", CLIENT_CERTIFICATE)
    stash = machine.path(STAND_IN_DIR)
    stash.mkdir(parents=True, exist_ok=True)
    for source, target in (
        ("ca.crt", "ca.crt"),
        ("admin.crt", "admin.crt"),
        ("admin.key", "admin.key"),
        ("apiserver.crt", "serving.crt"),
        ("apiserver.key", "serving.key"),
        ("front-proxy.crt", "front-proxy.crt"),
        ("front-proxy.key", "front-proxy.key"),
        (f"{node}.crt", "node.crt"),
        (f"{node}.key", "node.key"),
    ):
        shutil.copyfile(pki / source, stash / target)
        (stash / target).chmod(0o600)
    stash.chmod(0o700)
