"""A fake Lambda machine and a fake K3s cluster, for running the real node scripts in tests.

A `Machine` is a scratch directory used as SOPHIA_ROOT (every system path in the scripts is prefixed
with it) plus stub programs on PATH: sudo, id, uname, ss, ip, ufw, nvidia-smi, modinfo, curl,
systemctl, journalctl, and for the uninstall umount, iptables-save/-restore, pgrep and ps, each checking
its arguments against the real tool's. The curl stub serves a K3s release as GitHub (or a mirror laid out
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


def is_root():
    # As the shell stub tells it: sudo started this process (it sets SUDO_UID), or the user is root.
    return "SUDO_UID" in os.environ or flag("root")


def bounded_by_timeout():
    # A start that can hang runs under coreutils `timeout`, which is then this process's parent: its
    # command line (`timeout 600 ...`), recorded for the tests; None when unbounded.
    parent = os.getppid()
    with open(f"/proc/{parent}/comm") as comm:
        if comm.read().strip() != "timeout":
            return None
    with open(f"/proc/{parent}/cmdline", "rb") as cmdline:
        line = cmdline.read().replace(b"\0", b" ").decode().strip()
    with open(fake / "bounded.log", "a") as log:
        log.write(line + "\n")
    return line


def duration(text):
    # Go's time.ParseDuration, which kubectl's --timeout (a DurationVar) uses: "600s", "10m", "1h30m";
    # a bare number other than 0 has no unit and is refused. Seconds, or None when not a duration.
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    if text == "0":
        return 0.0
    total, number, i = 0.0, "", 0
    if not text:
        return None
    while i < len(text):
        if text[i].isdigit() or text[i] == ".":
            number += text[i]; i += 1
            continue
        unit = text[i:i + 2] if text[i:i + 2] in units else text[i]
        if not number or unit not in units:
            return None
        total += float(number) * units[unit]
        number, i = "", i + len(unit)
    return None if number else total


def request_timeout(text):
    # client-go clientcmd ParseTimeout: a bare integer is seconds, otherwise a Go duration.
    return float(text) if text.isdigit() else duration(text)


BOOL, VALUE = "bool", "value"
# The flags of each kubectl subcommand the scripts may use, as kubectl v1.35 defines them (cobra/pflag):
# k8s.io/kubectl pkg/cmd/<command>/<command>.go; drain's in pkg/cmd/drain/drain.go NewCmdDrain (force,
# ignore-daemonsets, delete-emptydir-data, grace-period, timeout, pod-selector, disable-eviction,
# skip-wait-for-delete-timeout, chunk-size, dry-run, selector). `--delete-local-data` is gone since 1.23.
GLOBAL_FLAGS = {"--kubeconfig": VALUE, "--request-timeout": VALUE, "-n": VALUE, "--namespace": VALUE}
COMMAND_FLAGS = {
    "get": {"--ignore-not-found": BOOL, "-o": VALUE, "--output": VALUE, "--raw": VALUE, "-A": BOOL,
            "--all-namespaces": BOOL, "--field-selector": VALUE, "-l": VALUE, "--selector": VALUE},
    "annotate": {"--overwrite": BOOL},
    "label": {"--overwrite": BOOL},
    "taint": {"--overwrite": BOOL},
    "uncordon": {},
    "cordon": {},
    "drain": {"--force": BOOL, "--ignore-daemonsets": BOOL, "--delete-emptydir-data": BOOL, "--grace-period": VALUE,
              "--timeout": VALUE, "--pod-selector": VALUE, "--disable-eviction": BOOL,
              "--skip-wait-for-delete-timeout": VALUE, "--chunk-size": VALUE, "--dry-run": VALUE, "-l": VALUE,
              "--selector": VALUE},
    "delete": {"--ignore-not-found": BOOL, "--wait": BOOL, "--timeout": VALUE},
    "create": {"-f": VALUE, "--filename": VALUE},
    "replace": {"-f": VALUE, "--filename": VALUE},
}
ALIASES = {"--output": "-o", "--namespace": "-n", "--filename": "-f", "--all-namespaces": "-A", "--selector": "-l"}


def kubectl_args(argv):
    # The positional words and the flags (by canonical name) of a kubectl command line, parsed as pflag
    # does: `--flag=value` or `--flag value`, a bool as `--flag` or `--flag=true|false`. A flag the
    # subcommand does not define fails as kubectl fails it ("error: unknown flag"), and so does a
    # --request-timeout or --timeout that is not a duration.
    command = next((a for i, a in enumerate(argv) if not a.startswith("-")
                    and not (i and argv[i - 1] in GLOBAL_FLAGS)), None)
    if command not in COMMAND_FLAGS:
        fail(f'error: unknown command "{command}" for "kubectl"')
    known = GLOBAL_FLAGS | COMMAND_FLAGS[command]
    words, opts, i = [], {}, 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            words.append(arg)
            continue
        key, has_value, value = arg.partition("=")
        kind = known.get(key)
        if kind is None:
            fail(f"error: unknown flag: {key}\nSee 'kubectl {command} --help' for usage.")
        if kind == BOOL:
            if has_value and value not in ("true", "false"):
                fail(f'error: invalid argument "{value}" for "{key}" flag: strconv.ParseBool: '
                     f'parsing "{value}": invalid syntax')
            value = value if has_value else "true"
        elif not has_value:
            if i >= len(argv):
                fail(f"error: flag needs an argument: {key}")
            value = argv[i]
            i += 1
        opts[ALIASES.get(key, key)] = value
    if "--request-timeout" not in opts:
        fail("fake kubectl: no --request-timeout: an API server that accepts and never answers "
             "would hold the step for ever", 64)
    if request_timeout(opts["--request-timeout"]) is None:
        fail(f'error: invalid argument "{opts["--request-timeout"]}" for "--request-timeout" flag')
    if "--timeout" in opts and duration(opts["--timeout"]) is None:
        fail(f'error: invalid argument "{opts["--timeout"]}" for "--timeout" flag: time: missing unit in duration')
    return words, opts


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
            # K3s writes the admin kubeconfig with the mode `write-kubeconfig-mode` says, 0600 without it.
            os.chmod(admin, int(str(config.get("write-kubeconfig-mode", "0600")), 8))
        else:
            kubelet = root / "var/lib/rancher/k3s/agent/kubelet.kubeconfig"
            kubelet.parent.mkdir(parents=True, exist_ok=True)
            kubelet.write_text("server: https://127.0.0.1:6444\n")
            os.chmod(kubelet, 0o600)
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
                for file, user, password in (("token", "server", "server_password"),
                                             ("agent-token", "node", "agent_password")):
                    (server_dir / file).write_text(f"K10{ca}::{user}:{api.state[password]}\n")
                    os.chmod(server_dir / file, 0o600)  # as K3s keeps them: root's only
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
                # What runs on every node of this stack once it is up: a DaemonSet's pod (node-exporter,
                # from kube-prometheus-stack) and a workload pod with an emptyDir (a Deployment's, through
                # its ReplicaSet), so that every drain meets both kinds kubectl drain refuses by default.
                api.state.setdefault("pods", []).extend([
                    {"namespace": "monitoring", "name": f"node-exporter-{node}", "node": node, "owner": "DaemonSet"},
                    {"namespace": "sophia", "name": f"scratch-{node}", "node": node, "owner": "ReplicaSet",
                     "emptyDir": True},
                ])
            api.state["nodes"][node]["ready"] = not flag("never-ready")
            api.state["restarts"] = api.state.get("restarts", []) + [[node, time.time()]]
        sys.exit(0)
    sys.exit(0)
if name == "k3s":
    if args[0] == "--version":
        # The binary the curl stub served says which release it is (FAKE_K3S_RELEASE, set before this code).
        version, asset = globals()["FAKE_K3S_RELEASE"]
        out(f"k3s version {version} (fake {asset})\ngo version go1.24\n")
    # `k3s server --cluster-reset ...` (restore.sh), checked against the K3s server flags it may carry:
    # the reset, the snapshot, and the S3 location (k3s-io/k3s pkg/cli/cmds/server.go, etcd-s3-*). The
    # keys must come in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), never as flags.
    if args[0] == "server":
        known = ("--cluster-reset", "--etcd-s3", "--cluster-reset-restore-path=", "--etcd-s3-endpoint=",
                 "--etcd-s3-bucket=", "--etcd-s3-region=", "--etcd-s3-folder=")
        for arg in args[1:]:
            if not any(arg == k if not k.endswith("=") else arg.startswith(k) for k in known):
                fail(f"fake k3s server: unexpected argument {arg!r}", 64)
        if bounded_by_timeout() is None:
            fail("fake k3s server: a cluster reset not bounded by timeout would wait for ever "
                 "on an S3 that does not answer", 64)
        if flag("active-k3s"):
            fail("etcd: a K3s server is already running on this machine")
        if flag("reset-fails"):
            fail("failed to download snapshot from S3: bucket does not exist")
        import json

        with open(fake / "resets.log", "a") as resets:
            resets.write(json.dumps(args) + "\n")
        out("Managed etcd cluster membership has been reset, restart without --cluster-reset flag now\n")
    if args[0] != "kubectl":
        fail(f"fake k3s: unexpected command {args[0]!r}", 64)
    words, opts = kubectl_args(args[1:])
    kubeconfig = opts.get("--kubeconfig")
    if not kubeconfig or not Path(kubeconfig).exists():
        fail(f"error: stat {kubeconfig}: no such file or directory")
    # The kubeconfig is root's (K3s writes it so; write-kubeconfig-mode): without sudo, unreadable.
    if not is_root() and not os.stat(kubeconfig).st_mode & 0o004:
        fail(f'error: error loading config file "{kubeconfig}": open {kubeconfig}: permission denied')
    output = opts.get("-o", "")
    jsonpath = output if output.startswith("jsonpath=") else ""
    rest = words
    with Api() as api:
        nodes, leases = api.state["nodes"], api.state["leases"]
        if words[:1] == ["get"] and "--raw" in opts:
            out("ok" if any(flag(f"active-{s}") for s in ("k3s", "k3s-agent")) else "")
        if words[:2] == ["get", "node"]:
            node = nodes.get(words[2])
            if node is None:
                out("")
            if output == "name":
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
            # --all-namespaces --field-selector spec.nodeName=<node> -o name: the pods left on a node.
            on = opts.get("--field-selector", "").removeprefix("spec.nodeName=")
            out("".join(f"pod/{p['name']}\n" for p in api.state.get("pods", []) if p["node"] == on))
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
            # kubectl drain as k8s.io/kubectl v1.35 does it (pkg/cmd/drain/drain.go RunDrain, pkg/drain):
            # cordon first; then each pod on the node is judged (pkg/drain/filters.go): a DaemonSet's pod is
            # fatal without --ignore-daemonsets (and stays with it), a pod with an emptyDir is fatal without
            # --delete-emptydir-data, a pod without a controller is fatal without --force; any fatal one
            # fails the drain before anything is evicted. The rest are evicted through the eviction API,
            # which refuses a pod whose PodDisruptionBudget allows no disruption (429): kubectl retries
            # until --timeout, which defaults to 0, for ever (drain.go evictPods). --disable-eviction
            # deletes them instead, past every budget.
            name = words[1]
            node = nodes[name]
            node["unschedulable"] = True
            timeout = duration(opts.get("--timeout", "0"))
            evict = opts.get("--disable-eviction", "false") != "true"
            api.state.setdefault("drains", []).append(
                {"node": name, "flags": {k: v for k, v in opts.items() if k not in GLOBAL_FLAGS},
                 "eviction": evict, "timeout": timeout})
            here = [p for p in api.state.get("pods", []) if p["node"] == name]
            fatal = {}
            for pod in here:
                ref = f"{pod['namespace']}/{pod['name']}"
                if pod["owner"] == "DaemonSet":
                    if opts.get("--ignore-daemonsets") != "true":
                        fatal.setdefault("DaemonSet-managed Pods (use --ignore-daemonsets to ignore)", []).append(ref)
                elif pod["owner"] is None and opts.get("--force") != "true":
                    fatal.setdefault("Pods that declare no controller (use --force to override)", []).append(ref)
                elif pod.get("emptyDir") and opts.get("--delete-emptydir-data") != "true":
                    fatal.setdefault("Pods with local storage (use --delete-emptydir-data to override)", []).append(ref)
            if fatal:
                errors = ", ".join(f"cannot delete {what}: {', '.join(pods)}" for what, pods in fatal.items())
                fail(f"node/{name} cordoned\nerror: unable to drain node \"{name}\" due to error: [{errors}], "
                     f"continuing command...\nThere are pending nodes to be drained:\n {name}\n{errors}")
            leaving = [p for p in here if p["owner"] != "DaemonSet"]
            blocked = [p for p in leaving if p.get("pdb") and evict]
            if blocked and not timeout:
                fail(f"fake kubectl: drain {name} would retry the eviction of {blocked[0]['namespace']}/"
                     f"{blocked[0]['name']} for ever: no --timeout (0 means infinite)", 64)
            if blocked:
                pod = blocked[0]
                fail(f"node/{name} cordoned\nerror when evicting pods/\"{pod['name']}\" -n \"{pod['namespace']}\" "
                     "(will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.\n"
                     f"error: unable to drain node \"{name}\" due to error: error when evicting pods/\"{pod['name']}\" "
                     f"-n \"{pod['namespace']}\": global timeout reached: {opts['--timeout']}")
            api.state["pods"] = [p for p in api.state.get("pods", []) if p not in leaving]
            api.state.setdefault("evicted" if evict else "deleted", []).extend(leaving)
            verb = "evicting" if evict else "deleting"
            out(f"node/{name} cordoned\n" + "".join(f"{verb} pod {p['namespace']}/{p['name']}\n" for p in leaving)
                + f"node/{name} drained\n")
        if words[:2] == ["delete", "node"]:
            nodes.pop(words[2], None)
            # The pod garbage collector removes the pods bound to a node that is gone.
            api.state["pods"] = [p for p in api.state.get("pods", []) if p["node"] != words[2]]
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


def _real(tool: str) -> str:
    """The host's own `tool`, which a checking stub hands a call on to (pgrep and ps see real processes)."""
    found = shutil.which(tool)
    assert found, f"{tool} is not installed on this machine"
    return found


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
# Strict: an argument this fake does not know is one the real tool rejects or does something with
# that no test has looked at. Either way the step must not pass quietly: exit 64 (EX_USAGE), loudly.
unknown() { fail "fake $name: unexpected argument(s) '$1' in: $name ${ALL_ARGS[*]}" 64; }
ALL_ARGS=("$@")
# Root is what sudo started (sudo(8), ENVIRONMENT: it sets SUDO_UID for the command it runs) or a
# machine whose SSH user is root.
is_root() { [[ -n ${SUDO_UID:-} ]] || flag root; }
# A start that can hang must run under coreutils `timeout`: then that is this process's parent.
parent_is_timeout() {
    local parent
    read -r parent < "/proc/$PPID/comm"
    [[ $parent == timeout ]] || return 1
    tr '\0' ' ' < "/proc/$PPID/cmdline" >> "$fake/bounded.log"
    printf '\n' >> "$fake/bounded.log"
}

case $name in
sudo)
    flag no-sudo && fail "sudo: a password is required"
    # -n (never prompt) and `--` only: -S would read a password from standard input, where the join
    # tokens arrive, and -E would hand the caller's environment on.
    while (($#)); do
        case $1 in
        -n) shift ;;
        --) shift; break ;;
        -*) unknown "$1" ;;
        *) break ;;
        esac
    done
    (($#)) || fail "usage: sudo -h | -K | -k | -V" 1
    export SUDO_USER=ubuntu SUDO_UID=1000 SUDO_GID=1000
    exec "$@"
    ;;
id)
    case $* in
    -u) if is_root; then echo 0; else echo 1000; fi ;;
    -un) if is_root; then echo root; else echo ubuntu; fi ;;
    *) unknown "$*" ;;
    esac
    ;;
uname) [[ $* == -m ]] || unknown "$*"; show machine ;;
ss)
    for arg; do [[ $arg =~ ^-[Hlntupa]+$ ]] || unknown "$arg"; done
    if flag listeners; then show listeners; fi
    ;;
ip)
    # Only the forms the scripts use (iproute2 ip(8)): the addresses (preflight), the links and the
    # network namespaces (uninstall, as k3s-killall.sh removes them).
    case $* in
    "-o link show")
        if flag links; then show links; fi
        exit 0
        ;;
    "link delete "*)
        (($# == 3)) || unknown "$*"
        is_root || fail "RTNETLINK answers: Operation not permitted" 2
        grep -q "^[0-9]*: $3[:@]" "$fake/links" 2>/dev/null || fail "Cannot find device \"$3\"" 1
        grep -v "^[0-9]*: $3[:@]" "$fake/links" > "$fake/links.new" || true
        mv "$fake/links.new" "$fake/links"
        exit 0
        ;;
    "netns list") exit 0 ;;
    "netns delete "*)
        (($# == 3)) || unknown "$*"
        is_root || fail "mount --make-rshared /run/netns failed: Operation not permitted" 1
        fail "Cannot remove namespace file \"/run/netns/$3\": No such file or directory" 1
        ;;
    "-o addr show") ;;
    *) unknown "$*" ;;
    esac
    addresses=()
    if flag addresses; then read -r -d '' -a addresses < "$fake/addresses"; fi
    for i in "${!addresses[@]}"; do
        printf '%d: eth%d    inet %s/24 scope global eth%d\n' $((i + 2)) "$i" "${addresses[i]}" "$i"
    done
    ;;
ufw)
    # ufw 0.36.2 (Ubuntu 22.04/24.04), src/backend.py: "You need to be root to run this script".
    is_root || fail "ERROR: You need to be root to run this script" 1
    case $* in
    status | "status verbose") ;;
    *) unknown "$*" ;; # anything else changes the firewall; the scripts only read it
    esac
    flag ufw-rules || { echo "Status: inactive"; exit 0; }
    # The table as ufw's get_status (src/backend_iptables.py) prints it: "%-26s %-12s%-26s" per rule,
    # the action "ACTION DIRECTION", where plain `status` leaves out the IN of incoming rules, and
    # incoming, outgoing (OUT) and routed (FWD) rules in groups, a blank line between groups.
    # fake/ufw-rules: one rule a line, `to|ACTION|IN, OUT or FWD|from`.
    echo "Status: active"
    if [[ $2 == verbose ]]; then
        printf 'Logging: on (low)\nDefault: deny (incoming), allow (outgoing), disabled (routed)\nNew profiles: skip\n'
    fi
    printf '\n'
    printf '%-26s %-12s%s\n' To Action From -- ------ ----
    first=true
    for group in IN OUT FWD; do
        lines=""
        while IFS='|' read -r to action direction from; do
            [[ $direction == "$group" ]] || continue
            shown=$direction
            [[ $direction == IN && $2 != verbose ]] && shown=""
            lines+=$(printf '%-26s %-12s%-26s' "$to" "$action $shown" "$from")$'\n'
        done < "$fake/ufw-rules"
        [[ -n $lines ]] || continue
        [[ $first == true ]] || printf '\n'
        first=false
        printf '%s' "$lines"
    done
    ;;
modinfo) [[ $# == 1 && $1 != -* ]] || unknown "$*"; if flag no-wireguard; then exit 1; fi ;;
journalctl)
    while (($#)); do
        case $1 in
        -u | -n) (($# >= 2)) || unknown "$1"; shift 2 ;;
        --no-pager) shift ;;
        *) unknown "$1" ;;
        esac
    done
    echo "fake journal: k3s said why"
    ;;
nvidia-smi)
    # The query fields nvidia-smi --help-query-gpu lists that a script could want; a misspelt one
    # fails as nvidia-smi fails it.
    for arg; do
        case $arg in
        --query-gpu=*)
            IFS=, read -r -a wanted <<<"${arg#*=}"
            for field in "${wanted[@]}"; do
                case $field in name | count | uuid | memory.total | driver_version | pci.bus_id) ;;
                *) fail "Field \"$field\" is not a valid field to query." 2 ;;
                esac
            done
            ;;
        --format=csv | --format=csv,noheader | --format=csv,noheader,nounits) ;;
        *) unknown "$arg" ;;
        esac
    done
    flag gpus || fail "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver" 9
    show gpus
    ;;
curl)
    flag curl-fails && fail "curl: (22) The requested URL returned error: 404" 22
    output="" url="" bounded=false
    while (($#)); do
        case $1 in
        -[sfLkS]*) [[ $1 =~ ^-[sfLkS]+$ ]] || unknown "$1"; shift ;;
        --connect-timeout | --retry | --retry-delay) [[ ${2:-} =~ ^[0-9]+$ ]] || unknown "$1 ${2:-}"; shift 2 ;;
        --max-time | -m) [[ ${2:-} =~ ^[0-9]+$ ]] || unknown "$1 ${2:-}"; bounded=true; shift 2 ;;
        -o) output=${2:?}; shift 2 ;;
        -*) unknown "$1" ;;
        *) [[ -z $url ]] || unknown "$1"; url=$1; shift ;;
        esac
    done
    # curl has no time limit of its own: a stalled connection would hold the step for ever.
    [[ $bounded == true ]] || fail "fake curl: no --max-time for $url: a stalled download would never end" 64
    if [[ -n $output ]]; then
        # A K3s release: <base>/<version, + as %2B>/<asset>.
        asset=${url##*/} version=${url%/*}
        version=${version##*/}
        [[ $version == v*%2Bk3s* ]] || fail "curl: (22) The requested URL returned error: 404" 22
        version=${version//%2B/+}
        case $asset in
        k3s | k3s-arm64)
            fake_k3s "$version" "$asset" > "$output"
            if flag tampered-binary; then echo "# tampered in transit" >> "$output"; fi
            ;;
        sha256sum-amd64.txt | sha256sum-arm64.txt)
            arch=${asset#sha256sum-} && arch=${arch%.txt}
            binary=k3s && [[ $arch == amd64 ]] || binary=k3s-$arch
            sum=$(fake_k3s "$version" "$binary" | sha256sum)
            # As the release's file: a line per asset of the architecture, the binary's among them.
            other=$(printf '%s' "$version images" | sha256sum)
            printf '%s  %s\n' "${other%% *}" "k3s-airgap-images-$arch.tar.zst" "${sum%% *}" "$binary" > "$output"
            ;;
        *) fail "curl: (22) The requested URL returned error: 404" 22 ;;
        esac
        exit 0
    fi
    [[ $url == */ping ]] && ! flag server-unreachable && { printf pong; exit 0; }
    fail "curl: (28) Connection timed out" 28
    ;;
iptables-save | ip6tables-save | iptables-restore | ip6tables-restore)
    # Without arguments (all tables; restore flushes each table it is given and loads it whole).
    (($# == 0)) || unknown "$*"
    is_root ||
        fail "$name v1.8.7 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)" 4
    case $name in
    *-save) if flag "$name"; then show "$name"; fi ;;
    *) cat > "$fake/${name%-restore}-save" ;;
    esac
    ;;
umount)
    # `umount -f PATH` or `umount -l PATH` (util-linux umount(8)): force, or lazy for a busy one.
    (($# == 2)) && [[ $1 == -f || $1 == -l ]] && [[ $2 != -* ]] || unknown "$*"
    is_root || fail "umount: $2: must be superuser to unmount." 32
    mounts=$SOPHIA_ROOT/proc/self/mounts
    path=$2
    grep -q " $path " "$mounts" 2>/dev/null || fail "umount: $path: not mounted." 32
    if flag busy-mount && [[ $path == "$(show busy-mount)" ]]; then fail "umount: $path: target is busy." 32; fi
    grep -v " $path " "$mounts" > "$mounts.new" || true
    mv "$mounts.new" "$mounts"
    ;;
pgrep)
    # `pgrep -f PATTERN` (procps pgrep(1)): the shims by their command line, as k3s-killall.sh finds them.
    (($# == 2)) && [[ $1 == -f && $2 != -* ]] || unknown "$*"
    exec @REAL_PGREP@ "$@"
    ;;
ps)
    # The process table as uninstall.sh reads it: every process, its parent's PID and its own.
    [[ $* == "-e -o ppid= -o pid=" ]] || unknown "$*"
    exec @REAL_PS@ "$@"
    ;;
systemctl)
    command=()
    for arg; do
        case $arg in
        --quiet | -q) ;;
        --signal=SIGKILL) [[ ${command[0]:-} == kill ]] || unknown "$arg" ;;
        -*) unknown "$arg" ;;
        *) command+=("$arg") ;;
        esac
    done
    # `systemctl VERB UNIT`, or daemon-reload alone.
    if [[ ${command[0]:-} == daemon-reload ]]; then ((${#command[@]} == 1)); else ((${#command[@]} == 2)); fi ||
        unknown "$*"
    verb=${command[0]} service=${command[1]:-}
    case $verb in
    is-active) flag "active-$service" || exit 3 ;;
    daemon-reload)
        is_root || fail "Failed to reload daemon: Interactive authentication required." 1
        # What systemd loaded: the unit files as they are now.
        rm -rf "$fake/loaded-units" && mkdir "$fake/loaded-units"
        for unit in "$SOPHIA_ROOT"/etc/systemd/system/*.service; do
            if [[ -e $unit ]]; then cp "$unit" "$fake/loaded-units/"; fi
        done
        ;;
    reset-failed)
        # After the unit file is gone (uninstall): systemd forgets the unit's failed state, if any.
        is_root || fail "Failed to reset failed state of unit $service.service: Interactive authentication required." 1
        ;;
    enable | disable | stop | start | restart | kill)
        # As systemctl answers a user without root and without a polkit agent to ask.
        is_root || fail "Failed to $verb $service.service: Interactive authentication required." 1
        [[ -e $SOPHIA_ROOT/etc/systemd/system/$service.service ]] ||
            fail "Failed to $verb $service.service: Unit $service.service not found." 5
        case $verb in
        enable) : > "$fake/enabled-$service" ;;
        disable) rm -f "$fake/enabled-$service" ;;
        stop | kill) rm -f "$fake/active-$service" ;;
        *)
            # The K3s units are Type=notify with TimeoutStartSec=0 (main.py's unit sets it so, as K3s's
            # installer does): a start that never reports ready (a join that cannot complete) is waited
            # for, for ever.
            parent_is_timeout ||
                fail "fake systemctl: '$verb $service' not bounded by timeout: TimeoutStartSec=0 waits for ever" 64
            exec @PYTHON_PROGRAM@ --logged "$name" "$@"
            ;;
        esac
        ;;
    *) unknown "$verb" ;;
    esac
    ;;
*) fail "no stub behaviour for $name $*" ;;
esac
exit 0
"""
SHELL_STUBS = ("sudo", "id", "uname", "ss", "ip", "ufw", "modinfo", "journalctl", "nvidia-smi", "curl", "systemctl")
# What the uninstall step runs besides: what it unmounts and the packet filter rules it rewrites.
UNINSTALL_STUBS = ("umount", "iptables-save", "iptables-restore", "ip6tables-save", "ip6tables-restore", "pgrep", "ps")
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
        shell.write_text(
            SHELL_STUB.replace("@PYTHON_PROGRAM@", shlex.quote(str(program)))
            .replace("@REAL_PGREP@", shlex.quote(_real("pgrep")))
            .replace("@REAL_PS@", shlex.quote(_real("ps")))
        )
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

    def bounded(self) -> list[list[str]]:
        """The `timeout ...` command line above each start that must be bounded (systemctl start and
        restart, K3s's cluster reset), in order."""
        path = self.fake / "bounded.log"
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []

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


def add_pod(
    cluster: Path,
    node: str,
    name: str,
    *,
    namespace: str = "sophia",
    owner: str | None = "ReplicaSet",
    empty_dir: bool = False,
    pdb: bool = False,
) -> None:
    """A pod on `node`: owned by `owner` (None: a bare pod), with an emptyDir, or under a
    PodDisruptionBudget that allows no disruption now (`pdb`: its eviction is refused)."""
    state = cluster_state(cluster)
    pod = {"namespace": namespace, "name": name, "node": node, "owner": owner, "emptyDir": empty_dir, "pdb": pdb}
    state.setdefault("pods", []).append(pod)
    set_cluster_state(cluster, state)
