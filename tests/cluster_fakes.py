"""A fake Lambda machine and a fake K3s cluster, for running the real node scripts in tests.

A `Machine` is a scratch directory used as SOPHIA_ROOT (every system path in the scripts is prefixed
with it) plus stub programs on PATH: sudo, id, uname, ss, ip, ufw, nvidia-smi, modinfo, curl,
systemctl, journalctl, umount. The curl stub serves a K3s release as GitHub (or a mirror laid out
like it) does: `<base>/<version>/k3s|k3s-arm64` is a fake K3s binary that knows its version and
asset, `<base>/<version>/sha256sum-<arch>.txt` the sha256 of the binary it serves there; the install
step puts that binary at /usr/local/bin/k3s itself. The simple stubs are one bash script (sudo alone
is most of the calls, and bash starts ten times faster than Python); K3s and its service starting
are Python. Every stub call is logged with its arguments and the environment it was given, so a test
can see what a script ran, and that a secret never reached an argument list or an environment; and
every script run keeps what it printed, which pulumi-command logs, so a test can see that no secret
is in it.
A `FakeCluster` directory is the API server those `k3s kubectl` calls talk to: nodes and leases in
one state file (marshal: the stub starts faster without json), changed under a file lock so that
concurrent scripts see one consistent cluster; tests read and set it with cluster_state and
set_cluster_state.
"""

from __future__ import annotations

import json
import marshal
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml

STUB = r"""
import fcntl, marshal, os, sys, time


class Path(str):
    # The little of pathlib.Path this stub uses, on os alone: importing pathlib was a fifth of what a
    # kubectl call cost, and the scripts make hundreds of them.
    def __truediv__(self, other):
        return Path(os.path.join(self, other))

    @property
    def parent(self):
        return Path(os.path.dirname(self))

    def exists(self):
        return os.path.exists(self)

    def read_text(self):
        with open(self) as f:
            return f.read()

    def write_text(self, text):
        with open(self, "w") as f:
            f.write(text)

    def read_bytes(self):
        with open(self, "rb") as f:
            return f.read()

    def write_bytes(self, data):
        with open(self, "wb") as f:
            f.write(data)

    def touch(self):
        open(self, "a").close()
        os.utime(self)

    def unlink(self, missing_ok=False):
        try:
            os.unlink(self)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def mkdir(self, parents=False, exist_ok=False):
        if parents:
            os.makedirs(self, exist_ok=exist_ok)
        elif not (exist_ok and os.path.isdir(self)):
            os.mkdir(self)


root = Path(os.environ["SOPHIA_ROOT"])
fake = root / "fake"
cluster = Path(os.environ["FAKE_CLUSTER"])
# The cluster's state in marshal form: importing json (and re with it) was half of what a kubectl call cost.
STATE = "@CLUSTER_STATE@"


def log_call(command):
    # As the shell stub logs: the count, the command and its arguments, then the environment exactly
    # as this process received it, each NUL-terminated, in a file of this call's own.
    with open("/proc/self/environ", "rb") as given:
        environ = given.read()
    fields = b"".join(os.fsencode(field) + b"\0" for field in [str(len(command)), *command])
    with open(fake / "calls" / f"{time.time_ns() // 1000}-{os.getpid()}", "wb") as record:
        record.write(fields + environ)


if sys.argv[1:2] == ["--logged"]:
    # Handed on by the shell stub (systemctl restart, start), which logged the call already.
    name, args = sys.argv[2], sys.argv[3:]
else:
    name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
    log_call([name, *args])


def flag(path):
    return (fake / path).exists()


def out(text):
    sys.stdout.write(text)
    sys.exit(0)


def fail(text, code=1):
    sys.stderr.write(text + "\n")
    sys.exit(code)


class Api:
    def __enter__(self):
        cluster.mkdir(parents=True, exist_ok=True)
        self.lock = open(cluster / "lock", "a")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        self.path = cluster / STATE
        empty = {"nodes": {}, "leases": {}, "rv": 0}
        self.state = marshal.loads(self.path.read_bytes()) if self.path.exists() else empty
        return self

    def __exit__(self, *exc):
        self.path.write_bytes(marshal.dumps(self.state))
        self.lock.close()

    def next_rv(self):
        self.state["rv"] += 1
        return str(self.state["rv"])


if name == "systemctl":
    command = [a for a in args if not a.startswith("-")]
    verb, service = command[0], command[-1]
    if verb in ("restart", "start"):
        if flag("fail-restart"):
            (fake / "fail-restart").unlink()
            fail(f"Job for {service}.service failed")
        # systemd starts what it loaded at the last daemon-reload (the shell stub keeps a copy), and
        # only a unit whose ExecStart is the K3s binary in the service's role starts K3s.
        loaded = fake / "loaded-units" / f"{service}.service"
        if not loaded.exists():
            fail(f"Failed to restart {service}.service: Unit {service}.service not found.")
        on_disk = root / "etc/systemd/system" / f"{service}.service"
        if not on_disk.exists() or on_disk.read_text() != loaded.read_text():
            fail(f"Warning: The unit file of {service}.service changed on disk. Run 'systemctl daemon-reload'.")
        role = "server" if service == "k3s" else "agent"
        if f"\nExecStart=/usr/local/bin/k3s {role}\n" not in loaded.read_text():
            fail(f"{service}.service: ExecStart is not /usr/local/bin/k3s {role}")
        if not os.access(root / "usr/local/bin/k3s", os.X_OK):
            fail(f"{service}.service: Failed at step EXEC spawning /usr/local/bin/k3s: No such file or directory")
        (fake / f"active-{service}").touch()
        # What a running K3s leaves on the machine: mounts under /run/k3s and /var/lib/kubelet (in the
        # scratch root, so a real mount table is never touched) and the CNI and flannel interfaces.
        mounts = root / "proc/self/mounts"
        mounts.parent.mkdir(parents=True, exist_ok=True)
        mounts.write_text(
            f"shm {root}/run/k3s/containerd/io.containerd.grpc.v1.cri/sandboxes/0a1b/shm tmpfs rw 0 0\n"
            f"overlay {root}/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/0a1b/rootfs overlay rw 0 0\n"
            f"tmpfs {root}/var/lib/kubelet/pods/5e6f/volumes/kubernetes.io~projected/kube-api-access tmpfs rw 0 0\n"
            "/dev/sda1 / ext4 rw 0 0\n"
        )
        for directory in ("run/k3s/containerd", "var/lib/kubelet/pods/5e6f", "run/flannel"):
            (root / directory).mkdir(parents=True, exist_ok=True)
        # ... and packet filter rules among ufw's: kube-proxy's chains, flannel's masquerading.
        (fake / "iptables-save").write_text(
            "*filter\n:INPUT DROP [0:0]\n:KUBE-FIREWALL - [0:0]\n:ufw-user-input - [0:0]\n"
            "-A INPUT -j KUBE-FIREWALL\n-A ufw-user-input -p tcp --dport 22 -j ACCEPT\nCOMMIT\n"
            "*nat\n:POSTROUTING ACCEPT [0:0]\n:FLANNEL-POSTRTG - [0:0]\n"
            "-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\nCOMMIT\n"
        )
        (fake / "links").write_text(
            "1: lo: <LOOPBACK,UP> mtu 65536 qdisc noqueue state UNKNOWN\n"
            "2: eth0: <BROADCAST,UP> mtu 1500 qdisc mq state UP\n"
            "3: flannel-wg: <POINTOPOINT,UP> mtu 1420 qdisc noqueue state UNKNOWN\n"
            "4: cni0: <BROADCAST,UP> mtu 1420 qdisc noqueue state UP\n"
            "5: veth0a1b@if2: <BROADCAST,UP> mtu 1420 qdisc noqueue master cni0 state UP\n"
        )
        count = fake / f"restarts-{service}"
        count.write_text(str(int(count.read_text()) + 1 if count.exists() else 1))
        import yaml  # here only: every stub call starts a Python, and yaml doubles what that costs

        config = yaml.safe_load((root / "etc/rancher/k3s/config.yaml").read_text())
        if service == "k3s":
            admin = root / "etc/rancher/k3s/k3s.yaml"
            admin.write_text(
                "clusters:\n- cluster:\n    server: https://127.0.0.1:6443\n  name: default\n"
                f"users:\n- name: default\n  user:\n    client-key-data: {os.environ['FAKE_ADMIN_KEY']}\n"
            )
        else:
            kubelet = root / "var/lib/rancher/k3s/agent/kubelet.kubeconfig"
            kubelet.parent.mkdir(parents=True, exist_ok=True)
            kubelet.write_text("server: https://127.0.0.1:6444\n")
        # K3s registers the nvidia runtime when it finds the NVIDIA container runtime at start.
        containerd = root / "var/lib/rancher/k3s/agent/etc/containerd/config.toml"
        containerd.parent.mkdir(parents=True, exist_ok=True)
        runtime = (root / "usr/bin/nvidia-container-runtime").exists()
        table = "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'nvidia']\n"
        containerd.write_text(table if runtime else "")
        token_of = lambda key: (root / config[key][1:]).read_text() if key in config else ""
        with Api() as api:
            # K3s's token handling: the first server writes both tokens in secure form, K10<CA hash>::
            # <user>:<password>; a joining node checks the CA hash before it sends its password.
            if config.get("cluster-init"):
                api.state.setdefault("ca_hash", "fakecahash0123")
                api.state["server_password"] = token_of("token-file")
                api.state["agent_password"] = token_of("agent-token-file") or api.state["server_password"]
                server_dir = root / "var/lib/rancher/k3s/server"
                server_dir.mkdir(parents=True, exist_ok=True)
                ca = api.state["ca_hash"]
                (server_dir / "token").write_text(f"K10{ca}::server:{api.state['server_password']}\n")
                (server_dir / "agent-token").write_text(f"K10{ca}::node:{api.state['agent_password']}\n")
            elif "ca_hash" in api.state:
                token = token_of("token-file")
                if not token.startswith(f"K10{api.state['ca_hash']}::"):
                    fail(f"{service}: token does not pin the cluster CA; refusing to join")
                user, password = token.split("::", 1)[1].split(":", 1)
                expected = {"server": api.state["server_password"], "node": api.state["agent_password"]}
                if service == "k3s" and user != "server" or expected.get(user) != password:
                    fail(f"{service}: join token rejected")
                if service == "k3s-agent":
                    api.state.setdefault("agent_join_users", []).append(user)
            node = config["node-name"]
            if node not in api.state["nodes"]:
                taints = config.get("node-taint", [])
                labels = dict(item.split("=", 1) for item in config.get("node-label", []))
                ip = config.get("node-ip", config["node-external-ip"])
                api.state["nodes"][node] = {"ip": ip, "labels": labels, "taints": taints,
                                            "unschedulable": False, "annotations": {},
                                            "etcd": service == "k3s"}
            api.state["nodes"][node]["ready"] = not flag("never-ready")
            api.state["restarts"] = api.state.get("restarts", []) + [[node, time.time()]]
        sys.exit(0)
    sys.exit(0)
if name == "k3s":
    if args[0] == "--version":
        # The binary the curl stub served says which release it is (FAKE_K3S_RELEASE, set before this code).
        version, asset = globals()["FAKE_K3S_RELEASE"]
        out(f"k3s version {version} (fake {asset})\ngo version go1.24\n")
    if args[0] == "server":
        # `k3s server --cluster-reset ...`: etcd is reset to the snapshot, then K3s exits.
        if flag("active-k3s"):
            fail("etcd: a K3s server is already running on this machine")
        if flag("reset-fails"):
            fail("failed to download snapshot from S3: bucket does not exist")
        import json

        with open(fake / "resets.log", "a") as resets:
            resets.write(json.dumps(args) + "\n")
        out("Managed etcd cluster membership has been reset, restart without --cluster-reset flag now\n")
    assert args[0] == "kubectl", args
    rest, namespace, kubeconfig = [], None, None
    i = 1
    while i < len(args):
        if args[i] == "--kubeconfig":
            kubeconfig = args[i + 1]; i += 2
        elif args[i] == "-n":
            namespace = args[i + 1]; i += 2
        else:
            rest.append(args[i]); i += 1
    if not kubeconfig or not Path(kubeconfig).exists():
        fail(f"error: stat {kubeconfig}: no such file or directory")
    words = [a for a in rest if not a.startswith("-")]
    flags = [a for a in rest if a.startswith("-")]
    jsonpath = next((f for f in rest if f.startswith("jsonpath=")), "")
    with Api() as api:
        nodes, leases = api.state["nodes"], api.state["leases"]
        if words[:1] == ["get"] and "--raw" in rest:
            out("ok" if any(flag(f"active-{s}") for s in ("k3s", "k3s-agent")) else "")
        if words[:2] == ["get", "node"]:
            node = nodes.get(words[2])
            if node is None:
                out("")
            if "name" in rest:
                out(f"node/{words[2]}\n")
            if "removed-node-name" in jsonpath:
                out(node.get("annotations", {}).get("etcd.k3s.cattle.io/removed-node-name", ""))
            if jsonpath.startswith("jsonpath={.metadata.annotations."):
                key = jsonpath[len("jsonpath={.metadata.annotations."):-1].replace("\\.", ".")
                out(node.get("annotations", {}).get(key, ""))
            if "spec.unschedulable" in jsonpath:
                out("true" if node["unschedulable"] else "")
            if "spec.taints" in jsonpath:
                out("".join(f"{t.split('=')[0].split(':')[0]}:{t.rsplit(':', 1)[1]}\n" for t in node["taints"]))
            if "Ready" in jsonpath:
                out("True" if node["ready"] else "False")
            if "addresses" in jsonpath:
                out(node["ip"])
            import json

            out(json.dumps(node))
        if words[:2] == ["get", "lease"]:
            lease = leases.get(words[2])
            out("" if lease is None else f"{lease['rv']}|{lease['holder']}|{lease['renew']}|{lease['seconds']}")
        if words[:2] == ["get", "etcdsnapshotfiles"]:
            if (cluster / "api-down").exists():
                fail("The connection to the server 127.0.0.1:6443 was refused")
            out("".join(f"{v['name']}|{v['created']}|{v['ready']}\n" for v in api.state.get("snapshots", [])))
        if words[:2] == ["get", "pv"]:
            # The PersistentVolumes a test put in the state, in the fields drain.sh's jsonpath asks for.
            if (cluster / "api-down").exists():
                fail("The connection to the server 127.0.0.1:6443 was refused")
            out("".join(f"{v['name']}|{v['phase']}|{v['class']}|{v['claim']}|{v['node']}\n"
                        for v in api.state.get("pvs", [])))
        if words[:2] == ["get", "pods"]:
            out("pod/sophia-api-0\n")
        if words[0] in ("create", "replace"):
            import yaml

            doc = yaml.safe_load(sys.stdin.read())
            lease_name = doc["metadata"]["name"]
            current = leases.get(lease_name)
            if words[0] == "create" and current is not None:
                fail(f'Error from server (AlreadyExists): leases "{lease_name}" already exists')
            if words[0] == "replace" and (current is None or doc["metadata"].get("resourceVersion") != current["rv"]):
                fail("Error from server (Conflict): the object has been modified")
            leases[lease_name] = {"rv": api.next_rv(), "holder": doc["spec"].get("holderIdentity", ""),
                                  "renew": doc["spec"]["renewTime"], "seconds": doc["spec"]["leaseDurationSeconds"]}
            api.state.setdefault("lease_history", []).append([lease_name, leases[lease_name]["holder"], time.time()])
            out(f"lease.coordination.k8s.io/{lease_name} {words[0]}d\n")
        if words[:2] == ["label", "node"]:
            key, value = words[3].split("=", 1)
            nodes[words[2]]["labels"][key] = value
            out("")
        if words[:2] == ["taint", "node"] and words[3].endswith("-"):
            node = nodes[words[2]]
            gone = words[3][:-1]
            kept = [t for t in node["taints"] if f"{t.split('=')[0].split(':')[0]}:{t.rsplit(':', 1)[1]}" != gone]
            if len(kept) == len(node["taints"]):
                fail(f'error: taint "{gone}" not found')
            node["taints"] = kept
            out("")
        if words[:2] == ["taint", "node"]:
            node = nodes[words[2]]
            node["taints"] = [t for t in node["taints"] if t.split("=")[0] != words[3].split("=")[0]] + [words[3]]
            out("")
        if words[:2] == ["annotate", "node"] and words[3].endswith("-") and "=" not in words[3]:
            nodes[words[2]].setdefault("annotations", {}).pop(words[3][:-1], None)
            out("")
        if words[:2] == ["annotate", "node"]:
            key, value = words[3].split("=", 1)
            node = nodes[words[2]]
            node.setdefault("annotations", {})[key] = value
            # K3s's etcd member controller: removes the member of a server and records it.
            if key == "etcd.k3s.cattle.io/remove" and node.get("etcd") and not (cluster / "etcd-stuck").exists():
                node["annotations"]["etcd.k3s.cattle.io/removed-node-name"] = words[2]
                api.state.setdefault("etcd_removed", []).append([words[2], time.time()])
            out("")
        if words[0] == "uncordon":
            nodes[words[1]]["unschedulable"] = False
            out("")
        if words[0] == "drain":
            nodes[words[1]]["unschedulable"] = True
            if (cluster / "drain-fails").exists():
                fail("error when evicting pods/sophia-api-0: Cannot evict pod: it would violate the disruption budget")
            out(f"node/{words[1]} drained\n")
        if words[:2] == ["delete", "node"]:
            nodes.pop(words[2], None)
            out("")
    fail(f"fake kubectl does not know: {rest}")
fail(f"no stub behaviour for {name} {args}")
"""

CLUSTER_STATE = "state.marshal"
"""The file of the fake cluster's state in its directory (the stub's STATE, filled in when compiled)."""
# Where yaml is, for the Python stub, which starts without site (-S) and so without site-packages.
_YAML_HOME = str(Path(yaml.__file__).parent.parent)
_STUB_CODE: list[bytes] = []


# The Python stub's program: the same text on every machine (it finds the compiled stub through
# SOPHIA_ROOT), so that a K3s binary served from it has one sha256 in a test, as a release's has.
_PROGRAM = (
    f"#!{sys.executable} -IS\n"
    "import marshal, os, sys\n"
    f"sys.path.append({_YAML_HOME!r})\n"
    "exec(marshal.loads(open(os.environ['SOPHIA_ROOT'] + '/fake-bin/fake-program.code', 'rb').read()))\n"
)


def k3s_release_binary(version: str, asset: str) -> bytes:
    """The fake K3s binary the curl stub serves as a release's asset (the stub's fake_k3s writes the same)."""
    first, rest = _PROGRAM.split("\n", 1)
    return f"{first}\nFAKE_K3S_RELEASE = ('{version}', '{asset}')\n{rest}".encode()


def _stub_code() -> bytes:
    """The Python stub compiled once per test process, as marshal data for the interpreter running it."""
    if not _STUB_CODE:
        source = STUB.replace("@CLUSTER_STATE@", CLUSTER_STATE)
        _STUB_CODE.append(marshal.dumps(compile(source, "fake-program", "exec")))
    return _STUB_CODE[0]


# The commands whose fake behaviour is a few lines, in bash: bash starts in about a millisecond where
# Python takes 10 to 25, and the scripts make hundreds of such calls per machine, most through sudo.
# systemctl restart and start (which play K3s starting) are handed on to the Python stub.
SHELL_STUB = r"""#!/bin/bash
name=${0##*/}
fake=$SOPHIA_ROOT/fake
# The call as the command received it: the count, the command and its arguments, then its environment
# exactly as given (/proc/$$/environ, not bash's view of it), each NUL-terminated, in a file of this
# call's own (concurrent calls cannot interleave), named by the time in microseconds (they sort in order).
mapfile -d '' -t environ < /proc/$$/environ
printf '%s\0' "$(($# + 1))" "$name" "$@" "${environ[@]}" > "$fake/calls/${EPOCHREALTIME//[!0-9]/}-$$"

flag() { [[ -e $fake/$1 ]]; }
# fake_k3s VERSION ASSET: the fake K3s binary of a release (k3s_release_binary is the same text).
fake_k3s() {
    head -n 1 "$FAKE_K3S_PROGRAM"
    printf "FAKE_K3S_RELEASE = ('%s', '%s')\n" "$1" "$2"
    tail -n +2 "$FAKE_K3S_PROGRAM"
}
show() {
    local text=""
    [[ -e $fake/$1 ]] || { echo "fake: no $1" >&2; exit 1; }
    IFS= read -r -d '' text < "$fake/$1"
    printf '%s' "$text"
}
fail() { echo "$1" >&2; exit "${2:-1}"; }

case $name in
sudo)
    flag no-sudo && fail "sudo: a password is required"
    while [[ $1 == -n || $1 == -- ]]; do shift; done
    (($#)) || fail "sudo: no command"
    exec "$@"
    ;;
id)
    for arg; do [[ $arg == -un ]] && { echo ubuntu; exit 0; }; done
    if flag root; then echo 0; else echo 1000; fi
    ;;
uname) show machine ;;
ss) if flag listeners; then show listeners; fi ;;
ip)
    if [[ $* == "-o link show" ]]; then
        if flag links; then show links; fi
        exit 0
    fi
    if [[ $1 == link && $2 == delete ]]; then
        grep -q "^[0-9]*: $3[:@]" "$fake/links" 2>/dev/null || fail "Cannot find device \"$3\"" 1
        grep -v "^[0-9]*: $3[:@]" "$fake/links" > "$fake/links.new" || true
        mv "$fake/links.new" "$fake/links"
        exit 0
    fi
    [[ $* == "netns list" ]] && exit 0
    addresses=()
    if flag addresses; then read -r -d '' -a addresses < "$fake/addresses"; fi
    for i in "${!addresses[@]}"; do
        printf '%d: eth%d    inet %s/24 scope global eth%d\n' $((i + 2)) "$i" "${addresses[i]}" "$i"
    done
    ;;
ufw) if flag ufw-status; then show ufw-status; else echo "Status: inactive"; fi ;;
modinfo) if flag no-wireguard; then exit 1; fi ;;
journalctl) echo "fake journal: k3s said why" ;;
nvidia-smi)
    flag gpus || fail "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver" 9
    show gpus
    ;;
curl)
    flag curl-fails && fail "curl: (22) The requested URL returned error: 404" 22
    args=("$@")
    url=${args[-1]}
    for i in "${!args[@]}"; do
        [[ ${args[i]} == -o ]] || continue
        # A K3s release: <base>/<version, + as %2B>/<asset>.
        asset=${url##*/} version=${url%/*}
        version=${version##*/}
        [[ $version == v*%2Bk3s* ]] || fail "curl: (22) The requested URL returned error: 404" 22
        version=${version//%2B/+}
        case $asset in
        k3s | k3s-arm64)
            fake_k3s "$version" "$asset" > "${args[i + 1]}"
            if flag tampered-binary; then echo "# tampered in transit" >> "${args[i + 1]}"; fi
            ;;
        sha256sum-amd64.txt | sha256sum-arm64.txt)
            arch=${asset#sha256sum-} && arch=${arch%.txt}
            binary=k3s && [[ $arch == amd64 ]] || binary=k3s-$arch
            sum=$(fake_k3s "$version" "$binary" | sha256sum)
            # As the release's file: a line per asset of the architecture, the binary's among them.
            other=$(printf '%s' "$version images" | sha256sum)
            printf '%s  %s\n' "${other%% *}" "k3s-airgap-images-$arch.tar.zst" "${sum%% *}" "$binary" \
                > "${args[i + 1]}"
            ;;
        *) fail "curl: (22) The requested URL returned error: 404" 22 ;;
        esac
        exit 0
    done
    [[ $url == */ping ]] && ! flag server-unreachable && { printf pong; exit 0; }
    fail "curl: (28) Connection timed out" 28
    ;;
iptables-save | ip6tables-save) if flag "$name"; then show "$name"; fi ;;
iptables-restore | ip6tables-restore) cat > "$fake/${name%-restore}-save" ;;
umount)
    mounts=$SOPHIA_ROOT/proc/self/mounts
    path=${*: -1}
    grep -q " $path " "$mounts" 2>/dev/null || fail "umount: $path: not mounted." 32
    if flag busy-mount && [[ $path == "$(show busy-mount)" ]]; then fail "umount: $path: target is busy." 32; fi
    grep -v " $path " "$mounts" > "$mounts.new" || true
    mv "$mounts.new" "$mounts"
    ;;
systemctl)
    command=()
    for arg; do [[ $arg == -* ]] || command+=("$arg"); done
    verb=${command[0]} service=${command[-1]}
    case $verb in
    is-active) flag "active-$service" || exit 3 ;;
    stop) rm -f "$fake/active-$service" ;;
    daemon-reload)
        # What systemd loaded: the unit files as they are now.
        rm -rf "$fake/loaded-units" && mkdir "$fake/loaded-units"
        for unit in "$SOPHIA_ROOT"/etc/systemd/system/*.service; do
            if [[ -e $unit ]]; then cp "$unit" "$fake/loaded-units/"; fi
        done
        ;;
    restart | start) exec @PYTHON_PROGRAM@ --logged "$name" "$@" ;;
    esac
    ;;
*) fail "no stub behaviour for $name $*" ;;
esac
exit 0
"""
SHELL_STUBS = ("sudo", "id", "uname", "ss", "ip", "ufw", "modinfo", "journalctl", "nvidia-smi", "curl", "systemctl")
# What the uninstall step runs besides: what it unmounts and the packet filter rules it rewrites.
UNINSTALL_STUBS = ("umount", "iptables-save", "iptables-restore", "ip6tables-save", "ip6tables-restore")
# The private key K3s writes into the admin kubeconfig (`client-key-data`): a secret every server holds.
ADMIN_CLIENT_KEY = "LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCmZha2UtYWRtaW4ta2V5"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass(frozen=True)
class StepRun:
    """One script run on a machine, and what it printed (what pulumi-command would log of it)."""

    script: str
    result: Result


@dataclass
class Machine:
    """One fake machine: a scratch root, its stubs, and the cluster it talks to."""

    root: Path
    cluster: Path
    bin: Path = field(init=False)
    runs: list[StepRun] = field(init=False, default_factory=list)
    """Every `run` on this machine, in order."""

    def __post_init__(self) -> None:
        self.fake = self.root / "fake"
        self.fake.mkdir(parents=True)
        self.bin = self.root / "fake-bin"
        self.bin.mkdir()
        # The Python stub (K3s: kubectl, the service starting) runs from its compiled code, without site:
        # it starts for every kubectl call, and compiling it and importing site were half of what that cost.
        code = self.bin / "fake-program.code"
        code.write_bytes(_stub_code())
        program = self.bin / "fake-program"
        program.write_text(_PROGRAM)
        program.chmod(0o755)
        shell = self.bin / "fake-shell"
        shell.write_text(SHELL_STUB.replace("@PYTHON_PROGRAM@", shlex.quote(str(program))))
        shell.chmod(0o755)
        for stub in (*SHELL_STUBS, *UNINSTALL_STUBS):
            (self.bin / stub).symlink_to(shell)
        # The stubs tell what they are by their name: the K3s binaries the curl stub serves are the Python
        # one with the release they are (fake_k3s), installed as /usr/local/bin/k3s.
        self.k3s_source = self.bin / "k3s-source"
        self.k3s_source.mkdir()
        shutil.copy(program, self.k3s_source / "k3s")
        (self.fake / "calls").mkdir()
        (self.root / "etc").mkdir()
        (self.root / "etc/os-release").write_text('ID=ubuntu\nVERSION_ID="22.04"\n')
        self.set("machine", "x86_64\n")
        (self.root / "usr/bin").mkdir(parents=True)
        (self.root / "usr/bin/nvidia-container-runtime").write_text("#!/bin/sh\n")
        (self.root / "usr/bin/nvidia-container-runtime").chmod(0o755)

    def set(self, name: str, content: str = "") -> None:
        (self.fake / name).write_text(content)

    def unset(self, name: str) -> None:
        (self.fake / name).unlink(missing_ok=True)

    def _env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "HOME": str(self.root),
            "SOPHIA_ROOT": str(self.root),
            "FAKE_CLUSTER": str(self.cluster),
            "FAKE_K3S_PROGRAM": str(self.k3s_source / "k3s"),
            "FAKE_ADMIN_KEY": ADMIN_CLIENT_KEY,
            "POLL_SECONDS": "0.1",
        }

    def run(self, script: str, stdin: str = "", extra_env: dict[str, str] | None = None) -> Result:
        done = subprocess.run(
            ["bash", "-c", script],
            input=stdin,
            capture_output=True,
            text=True,
            env=self._env() | (extra_env or {}),
            timeout=120,
            check=False,
        )
        result = Result(done.returncode, done.stdout, done.stderr)
        self.runs.append(StepRun(script, result))
        return result

    def start(self, script: str, stdin: str = "") -> subprocess.Popen[str]:
        process = subprocess.Popen(
            ["bash", "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self._env(),
        )
        assert process.stdin is not None
        process.stdin.write(stdin)
        process.stdin.close()
        return process

    def logged_calls(self) -> list[tuple[list[str], dict[str, str]]]:
        """Every stub call in the order made: the command with its arguments, and its environment."""
        records = sorted(self.fake.glob("calls/*"), key=lambda path: tuple(map(int, path.name.split("-"))))
        calls: list[tuple[list[str], dict[str, str]]] = []
        for path in records:
            fields = [os.fsdecode(field) for field in path.read_bytes().split(b"\0")[:-1]]
            count = int(fields[0])
            command, environ = fields[1 : count + 1], fields[count + 1 :]
            calls.append((command, dict(entry.partition("=")[::2] for entry in environ)))
        return calls

    def calls(self) -> list[list[str]]:
        return [command for command, _ in self.logged_calls()]

    def call_log(self) -> str:
        """Every stub call as a JSON line {"cmd": [...], "env": {...}}, for a search of the whole text."""
        return "".join(json.dumps({"cmd": command, "env": env}) + "\n" for command, env in self.logged_calls())

    def restarts(self, service: str) -> int:
        path = self.fake / f"restarts-{service}"
        return int(path.read_text()) if path.exists() else 0

    def downloads(self) -> list[str]:
        """Every K3s release asset downloaded, as its URL, in order."""
        return [call[-1] for call in self.calls() if call[:1] == ["curl"] and "-o" in call]

    def binaries_downloaded(self) -> list[str]:
        """The K3s binaries downloaded, `<version> <asset>`, in order."""
        return [
            f"{unquote(url.rsplit('/', 2)[1])} {url.rsplit('/', 1)[1]}"
            for url in self.downloads()
            if url.rsplit("/", 1)[1] in ("k3s", "k3s-arm64")
        ]

    def installed_k3s(self) -> str | None:
        """`<version> <asset>` of the K3s binary at /usr/local/bin/k3s, None without one."""
        binary = self.root / "usr/local/bin/k3s"
        if not binary.exists():
            return None
        match = re.search(r"^FAKE_K3S_RELEASE = \('([^']*)', '([^']*)'\)$", binary.read_text(), flags=re.M)
        assert match, "not a K3s binary the curl stub served"
        return f"{match[1]} {match[2]}"

    def files(self) -> dict[str, tuple[bytes, int, int]]:
        """Every file under the machine's system paths: content, mode and modification time."""
        result: dict[str, tuple[bytes, int, int]] = {}
        for top in ("etc", "usr", "var"):
            base = self.root / top
            if not base.exists():
                continue
            for path in sorted(base.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    stat = path.stat()
                    result[str(path.relative_to(self.root))] = (path.read_bytes(), stat.st_mode, stat.st_mtime_ns)
        return result


def cluster_state(cluster: Path) -> dict[str, Any]:
    """The fake cluster's state: nodes, leases, volumes, snapshots and what happened to them."""
    path = cluster / CLUSTER_STATE
    state: dict[str, Any] = marshal.loads(path.read_bytes()) if path.exists() else {"nodes": {}, "leases": {}, "rv": 0}
    return state


def set_cluster_state(cluster: Path, state: dict[str, Any]) -> None:
    """Replace the fake cluster's state (a test setting the scene: a lease held, a node's fields)."""
    cluster.mkdir(parents=True, exist_ok=True)
    (cluster / CLUSTER_STATE).write_bytes(marshal.dumps(state))


def add_volume(
    cluster: Path, name: str, claim: str, node: str, *, phase: str = "Bound", cls: str = "local-path"
) -> None:
    """A PersistentVolume in the fake cluster, with node affinity to `node` as local-path makes it."""
    state = cluster_state(cluster)
    state.setdefault("pvs", []).append({"name": name, "phase": phase, "class": cls, "claim": claim, "node": node})
    set_cluster_state(cluster, state)


def add_snapshot(cluster: Path, name: str, created: str, *, ready: str = "true") -> None:
    """An S3 etcd snapshot K3s recorded (an ETCDSnapshotFile of node `s3`)."""
    state = cluster_state(cluster)
    state.setdefault("snapshots", []).append({"name": name, "created": created, "ready": ready})
    set_cluster_state(cluster, state)
