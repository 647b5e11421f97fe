"""A real Kubernetes control plane on 127.0.0.1 for the e2e: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok.

Built by `make apiserver` from the Go module proxy (tests/e2e/engine/). Configured the way K3s runs
its API server where that matters to the objects the program applies: RBAC with the Node authorizer,
no anonymous access, privileged pods allowed, Pod Security admission (on by default; namespaces opt
in with their labels), NodeRestriction, Secrets encrypted at rest (production sets
`secrets-encryption`), K3s's service range, and what K3s ships: the `nvidia` RuntimeClass, its
helm-controller's HelmChartConfig CRD (the upstream file, ../shared/third_party/crds) and its
`local-path` storage (a stand-in provisioner: tests/e2e/local_path.py). The controller manager gives
namespaces their `default` ServiceAccount, turns Deployments, StatefulSets, DaemonSets and Jobs into
real Pods (which the API server's own Pod Security admission then judges), binds volumes, keeps
Endpoints and finalizes deleted namespaces; the scheduler places the Pods on the Nodes kwok
simulates (tests/e2e/kwok.py: one per machine of the stack, registered by the test), and kwok makes
them Running and Ready, or Succeeded for a Job's. No metrics API (so no HPA controller either).

One difference from K3s's API server, and only this one: no container runs, so no admission webhook
could answer, and the API server runs without the two webhook admission plugins
(WEBHOOK_ADMISSION_PLUGINS below). The charts' webhook configurations are created as on a real
cluster, and never called.

Everything listens on loopback only; every wait is bounded; `control_plane` stops every process it
started, also when starting fails.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.argocd import INTERVAL as ARGOCD_INTERVAL
from tests.e2e.argocd import ArgoCdStandIn
from tests.e2e.kwok import kwok_argv
from tests.e2e.local_path import INTERVAL as LOCAL_PATH_INTERVAL
from tests.e2e.local_path import LocalPathProvisioner
from tests.e2e.machines import all_test_addresses
from tests.e2e.third_party import verified

LOOPBACK = "127.0.0.1"
SERVICE_RANGE = "10.43.0.0/16"  # K3s's default service CIDR: addresses allocated, never dialled
START_TIMEOUT = 120.0
# K3s (>= v1.29) creates the RuntimeClass of the NVIDIA container runtime it finds on a node; the API
# server's RuntimeClass admission refuses a GPU pod naming one that does not exist.
K3S_RUNTIME_CLASSES = (
    {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "nvidia"}, "handler": "nvidia"},
)
# What K3s installs itself (its helm-controller's CRDs) before anything of ours runs.
K3S_CRDS = ("crds/helm.cattle.io_helmchartconfigs.yaml",)
# Admission webhooks are served by the add-ons' pods, which do not run here: calling one could only
# fail (or, with failurePolicy Ignore, time out first). The only flag in which this control plane
# differs from a K3s server's.
WEBHOOK_ADMISSION_PLUGINS = ("MutatingAdmissionWebhook", "ValidatingAdmissionWebhook")
STOP_TIMEOUT = 15.0
FRONT_PROXY = "sophia-e2e-front-proxy"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


class ControlPlaneError(Exception):
    """A component did not start, or the API server answered with an unexpected status."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.5) -> None:
    """Poll `check` until it is true; fail after `timeout` seconds naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def sign(pki: Path, name: str, subject: str, extensions: str) -> None:
    """An EC key and a certificate for it, signed by the test CA, valid for one day."""
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=pki)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=pki)
    (pki / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "1", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=pki,
    )  # fmt: skip


def make_pki(pki: Path) -> None:
    """CA, API serving certificate, admin and controller-manager client certificates, SA signing key."""
    pki.mkdir(parents=True)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=pki)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=sophia-e2e-ca", "-days", "1", "-sha256",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", "ca.crt", cwd=pki,
    )  # fmt: skip
    sign(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        # The test machines reach it through their K3s stand-ins' port 6443 on every test address.
        f"subjectAltName=IP:{LOOPBACK},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc,"
        + ",".join(f"IP:{address}" for address in all_test_addresses())
        + "\n",
    )
    client = (
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    )
    # system:masters is what K3s's own admin kubeconfig carries.
    sign(pki, "admin", "/O=system:masters/CN=sophia-e2e-admin", client)
    # The K3s stand-ins' supervisor port proxies API requests with this certificate, naming the client
    # it authenticated in X-Remote-User/X-Remote-Group (the API server's request-header authentication,
    # which it trusts from this name only).
    sign(pki, "front-proxy", f"/CN={FRONT_PROXY}", client)
    # The RBAC bootstrap policy binds system:kube-controller-manager and system:kube-scheduler to
    # exactly what each needs.
    sign(pki, "controller-manager", "/CN=system:kube-controller-manager", client)
    sign(pki, "scheduler", "/CN=system:kube-scheduler", client)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=pki)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    # Secrets encrypted at rest, as K3s's `secrets-encryption: true` does (secretbox, one fresh key).
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    (pki / "encryption.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "apiserver.config.k8s.io/v1",
                "kind": "EncryptionConfiguration",
                "resources": [
                    {
                        "resources": ["secrets"],
                        "providers": [{"secretbox": {"keys": [{"name": "e2e", "secret": key}]}}, {"identity": {}}],
                    }
                ],
            }
        )
    )


def kubeconfig(server: str, pki: Path, user: str) -> str:
    def data(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority-data": data("ca.crt")}}],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": data(f"{user}.crt"),
                        "client-key-data": data(f"{user}.key"),
                    },
                }
            ],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
            "current-context": "e2e",
        }
    )


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, Any]
    warnings: tuple[str, ...]


@dataclass
class ApiServer:
    """The running API server, and a small client for it (the admin user, TLS verified)."""

    url: str
    pki: Path
    kubeconfig: str
    version: str = ""
    _context: ssl.SSLContext = field(init=False, repr=False)
    _restart: Callable[[], None] | None = field(default=None, init=False, repr=False)

    def restart(self) -> None:
        """Stops kube-apiserver and starts it again on the same port, flags and etcd; returns once it is
        ready (`control_plane` sets how)."""
        if self._restart is None:
            raise ControlPlaneError("this API server was not started by control_plane: it cannot restart it")
        self._restart()

    def __post_init__(self) -> None:
        self._context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        self._context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Response:
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, context=self._context, timeout=30) as resp:
                return Response(resp.status, _json(resp.read()), tuple(resp.headers.get_all("Warning") or ()))
        except urllib.error.HTTPError as err:
            return Response(err.code, _json(err.read()), tuple(err.headers.get_all("Warning") or ()))

    def get(self, path: str) -> dict[str, Any]:
        response = self.request("GET", path)
        if response.status != 200:
            raise ControlPlaneError(f"GET {path}: {response.status} {response.body.get('message', '')}")
        return response.body

    def exists(self, path: str) -> bool:
        response = self.request("GET", path)
        if response.status not in (200, 404):
            raise ControlPlaneError(f"GET {path}: {response.status} {response.body.get('message', '')}")
        return response.status == 200

    def items(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(path)["items"]
        return items


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {"message": raw.decode(errors="replace")}
    return value if isinstance(value, dict) else {"value": value}


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    argv: list[str] = field(default_factory=list)

    def tail(self, lines: int = 25) -> str:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(text[-lines:])

    def check_running(self) -> None:
        if self.popen.poll() is not None:
            raise ControlPlaneError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        # Each runs in a process group of its own: signal that, so nothing it started stays behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(STOP_TIMEOUT)


def _start(name: str, argv: list[str], workdir: Path) -> _Process:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    return _Process(name, popen, log, argv)


def _healthy(url: str, context: ssl.SSLContext | None) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def control_plane(bin_dir: Path, workdir: Path) -> Iterator[ApiServer]:
    """etcd, kube-apiserver and kube-controller-manager, started in order, each awaited; all stopped after."""
    pki = workdir / "pki"
    make_pki(pki)
    processes: list[_Process] = []
    try:
        etcd_client, etcd_peer = free_port(), free_port()
        etcd = _start(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=e2e",
                f"--data-dir={workdir / 'etcd'}",
                f"--listen-client-urls=http://{LOOPBACK}:{etcd_client}",
                f"--advertise-client-urls=http://{LOOPBACK}:{etcd_client}",
                f"--listen-peer-urls=http://{LOOPBACK}:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://{LOOPBACK}:{etcd_peer}",
                f"--initial-cluster=e2e=http://{LOOPBACK}:{etcd_peer}",
                "--listen-metrics-urls=",
                # A throwaway store on a shared disk: durability buys nothing here.
                "--unsafe-no-fsync",
            ],
            workdir,
        )
        processes.append(etcd)

        def etcd_up() -> bool:
            etcd.check_running()
            return _healthy(f"http://{LOOPBACK}:{etcd_client}/health", None)

        wait_until("etcd /health", etcd_up, START_TIMEOUT)

        port = free_port()
        url = f"https://{LOOPBACK}:{port}"
        apiserver = _start(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://{LOOPBACK}:{etcd_client}",
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                f"--secure-port={port}",
                f"--cert-dir={workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_RANGE}",
                f"--encryption-provider-config={pki / 'encryption.yaml'}",
                # As K3s: Node and RBAC authorization, NodeRestriction added to the default admission
                # plugins (PodSecurity is one of those), privileged pods allowed, no anonymous access.
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--disable-admission-plugins={','.join(WEBHOOK_ADMISSION_PLUGINS)}",
                "--allow-privileged=true",
                "--anonymous-auth=false",
                "--profiling=false",
                f"--requestheader-client-ca-file={pki / 'ca.crt'}",
                f"--requestheader-allowed-names={FRONT_PROXY}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            ],
            workdir,
        )
        processes.append(apiserver)
        server = ApiServer(url=url, pki=pki, kubeconfig=kubeconfig(url, pki, "admin"))

        def apiserver_ready() -> bool:
            apiserver.check_running()
            return server.request("GET", "/readyz").status == 200 if _port_open(port) else False

        wait_until("kube-apiserver /readyz", apiserver_ready, START_TIMEOUT)
        server.version = str(server.get("/version")["gitVersion"])
        for runtime_class in K3S_RUNTIME_CLASSES:
            created = server.request("POST", "/apis/node.k8s.io/v1/runtimeclasses", runtime_class)
            if created.status != 201:
                raise ControlPlaneError(f"RuntimeClass: {created.status} {created.body.get('message', '')}")
        for crd_file in K3S_CRDS:
            crd = yaml.safe_load(verified(crd_file))
            name = crd["metadata"]["name"]
            created = server.request("POST", CRDS, crd)
            if created.status != 201:
                raise ControlPlaneError(f"CRD {name}: {created.status} {created.body.get('message', '')}")
            wait_until(f"CRD {name} established", partial(established, server, name), START_TIMEOUT)

        (workdir / "controller-manager.kubeconfig").write_text(kubeconfig(url, pki, "controller-manager"))
        manager_config = str(workdir / "controller-manager.kubeconfig")
        manager = _start(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={manager_config}",
                f"--authentication-kubeconfig={manager_config}",
                f"--authorization-kubeconfig={manager_config}",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={free_port()}",
                f"--cert-dir={workdir / 'controller-manager-certs'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-cluster-ip-range={SERVICE_RANGE}",
                "--leader-elect=false",
                # K3s ships metrics-server; this control plane has no metrics API, so the HPA controller
                # could only fail, and the provider relays its FailedGetResourceMetric events as warnings.
                "--controllers=*,-horizontalpodautoscaling",
                # As K3s: each controller acts as its own ServiceAccount, with the RBAC bootstrap policy's roles.
                "--use-service-account-credentials=true",
                "--profiling=false",
            ],
            workdir,
        )
        processes.append(manager)

        def controllers_running() -> bool:
            manager.check_running()
            return server.exists("/api/v1/namespaces/default/serviceaccounts/default")

        wait_until("kube-controller-manager (the default ServiceAccount)", controllers_running, START_TIMEOUT)

        (workdir / "scheduler.kubeconfig").write_text(kubeconfig(url, pki, "scheduler"))
        scheduler_config = str(workdir / "scheduler.kubeconfig")
        scheduler_port = free_port()
        scheduler = _start(
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                f"--kubeconfig={scheduler_config}",
                f"--authentication-kubeconfig={scheduler_config}",
                f"--authorization-kubeconfig={scheduler_config}",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={scheduler_port}",
                f"--cert-dir={workdir / 'scheduler-certs'}",
                "--leader-elect=false",
                "--profiling=false",
            ],
            workdir,
        )
        processes.append(scheduler)
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE  # its self-signed serving cert

        def scheduler_up() -> bool:
            scheduler.check_running()
            return _healthy(f"https://{LOOPBACK}:{scheduler_port}/healthz", insecure)

        wait_until("kube-scheduler /healthz", scheduler_up, START_TIMEOUT)

        (workdir / "admin.kubeconfig").write_text(server.kubeconfig)
        kwok = _start("kwok", kwok_argv(bin_dir / "kwok", workdir / "admin.kubeconfig"), workdir)
        processes.append(kwok)
        # What running pods would do that the program relies on: each stand-in says which and why.
        provisioner, argocd = LocalPathProvisioner(server), ArgoCdStandIn(server)
        provisioner.start()
        argocd.start()

        def restart() -> None:
            # The same argv (port, flags, etcd, certificates): what a restarted K3s server's API server is.
            nonlocal apiserver
            stand_ins = (provisioner.errors, argocd.errors)
            before = [len(errors) for errors in stand_ins]
            apiserver.stop()
            apiserver.log.rename(apiserver.log.with_name(f"kube-apiserver.{int(time.time())}.log"))
            restarted = _start("kube-apiserver", apiserver.argv, workdir)
            processes[processes.index(apiserver)] = restarted
            apiserver = restarted
            wait_until("kube-apiserver /readyz after its restart", apiserver_ready, START_TIMEOUT)
            # The stand-ins' requests failed while it was away, as every client's did: not their errors.
            time.sleep(2 * max(LOCAL_PATH_INTERVAL, ARGOCD_INTERVAL))
            for errors, kept in zip(stand_ins, before, strict=True):
                del errors[kept:]

        server._restart = restart
        try:
            yield server
        finally:
            argocd.stop()
            provisioner.stop()
        provisioner.check()
        argocd.check()
        for process in processes:
            process.check_running()
    finally:
        for process in reversed(processes):
            process.stop()


def established(server: ApiServer, crd_name: str) -> bool:
    conditions = server.get(f"{CRDS}/{crd_name}").get("status", {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((LOOPBACK, port)) == 0
