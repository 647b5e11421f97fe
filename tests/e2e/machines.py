"""Test machines for the whole-program e2e: hosts of their own on this one machine, reached over real SSH.

Each `Machine` is what a Lambda instance is to the program, as far as the program can tell:
- its own network namespace, with a veth into the test bridge `TestNetwork` creates and its own
  addresses there (a public one and, where the stack wants a private network, a private one); the
  only routes lead to that bridge, so nothing on a machine can send traffic anywhere else;
- its own view of the filesystem (a mount namespace: overlays on /etc, /usr/bin, /usr/local, /var,
  /opt and /root, an empty /usr/local/bin, tmpfs on /run and /home), so that what the steps install,
  write and delete stays on the machine and disappears with it (/tmp is this host's, shared: the
  harness's own files live there);
- Debian's real `sshd` on port 22 with the machine's own ed25519 host key, the machine's user
  (`ubuntu` unless the stack says otherwise) with the e2e's public key in `authorized_keys` and
  password-less `sudo` (Debian's real sudo), as on Lambda's images.

What is not the real thing, and why (each a file in the machine's /usr/bin overlay):
- `/etc/os-release` says Ubuntu 22.04 (Lambda Stack's): the userland is this host's Debian.
- `uname -m` says the configured architecture (`aarch64` on the GH200): the CPU is this host's.
- `nvidia-smi` lists the configured GPUs and `nvidia-container-runtime` exists on GPU machines: there
  is no GPU. `modinfo wireguard` succeeds: the kernel is this host's, its modules not installed here.
- `systemctl` and `journalctl` manage the units K3s's install writes under /etc/systemd/system: there
  is no systemd in a namespace. `systemctl start|restart` starts the unit's `ExecStart` in a session
  of its own and, as for K3s's `Type=notify` unit, returns once the process says READY=1 on
  `$NOTIFY_SOCKET` (or fails when it exits first); `stop` sends SIGTERM, then SIGKILL. Its log is
  what `journalctl -u` prints.
- K3s itself: see tests/e2e/k3s_standin.py (served by the e2e's K3s mirror, installed by the real
  install step). Its pre-issued credentials are under /opt/sophia-k3s-stand-in (module docstring there).

Every wait is bounded; `test_machines` stops every process in the namespaces and removes the
namespaces, links and bridge it made, also when starting fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# Two /24s of RFC 2544's 198.18.0.0/15 (reserved for benchmarking network devices, routed nowhere):
# public and private addresses; here they exist only on the e2e's bridge. Not RFC 5737's documentation
# ranges: sandboxes and CI runners use those for themselves (this development machine has its
# interface in 192.0.2.0/24 and reaches the Go module proxy, PyPI and Debian's mirror at 203.0.113.80,
# so a bridge on 203.0.113.0/24 cut it off from all three while an e2e ran). `TestNetwork.create`
# refuses ranges that meet the host's addresses, routes or name servers. (The bench's generated
# machines, render only, use 198.18.0.0/23: no overlap.)
PUBLIC_PREFIX: Final = "198.19.10"
PRIVATE_PREFIX: Final = "198.19.20"
BRIDGE: Final = "sophia-e2e0"
GATEWAY_HOST: Final = 1
FIRST_HOST: Final = 11
MAX_MACHINES: Final = 60
NAMESPACE_PREFIX: Final = "sophia-e2e-"
USER_ID: Final = 2000
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 10.0
STAND_IN_DIR: Final = "/opt/sophia-k3s-stand-in"
# One test network per host: the bridge, its addresses and the gateway's ports are fixed, and a run
# that starts clears what an earlier one left behind. A second run (another checkout, CI beside a
# developer) waits its turn on this lock instead of tearing down the first one's machines.
NETWORK_LOCK: Final = Path("/run/lock/sophia-e2e-network.lock")
CPU_ACCOUNTING: Final = Path("/sys/fs/cgroup/cpuacct")
"""cgroup v1's CPU accounting: each machine's processes in a group of their own (named after its
namespace), so `make bench` can tell the machines' CPU time from the runner's. Optional: without it
`Machine.cpu_seconds` is None and nothing else changes."""
NETWORK_LOCK_TIMEOUT: Final = 3600.0
# The directories a machine sees through an overlay: its writes land in its own upper layer.
OVERLAYS: Final = ("etc", "usr-bin", "usr-local", "var", "opt", "root")

GPU_NAMES: Final = {
    # What `nvidia-smi --query-gpu=name` prints on each Lambda GPU (components/gpu.py's products).
    "gh200": "NVIDIA GH200 480GB",
}


def gateway(prefix: str = PUBLIC_PREFIX) -> str:
    return f"{prefix}.{GATEWAY_HOST}"


def all_test_addresses() -> list[str]:
    """Every address a test machine or the bridge may have: the API server's certificate names them all."""
    return [f"{p}.{h}" for p in (PUBLIC_PREFIX, PRIVATE_PREFIX) for h in range(GATEWAY_HOST, FIRST_HOST + MAX_MACHINES)]


class MachineError(Exception):
    """A machine did not start, or a command on it failed."""


def run(argv: Sequence[str], *, timeout: float = 30.0, check: bool = True, input: str | None = None) -> str:
    done = subprocess.run(list(argv), check=False, capture_output=True, text=True, timeout=timeout, input=input)
    if check and done.returncode != 0:
        raise MachineError(f"{shlex.join(argv)}: exit {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


@dataclass(frozen=True)
class MachineSpec:
    """What the stack says a machine is: the harness makes one that matches."""

    name: str
    user: str
    arch: str
    """`amd64` or `arm64`."""
    gpu_product: str | None
    """nvidia-smi's name of one GPU (`NVIDIA A10`), None without GPUs."""
    gpu_count: int
    private: bool
    """Whether the machine also has an address on the private network."""


@dataclass
class Machine:
    spec: MachineSpec
    index: int
    root: Path
    host_key: str = ""
    """`ssh-ed25519 AAAA...`, as `ssh-keyscan` prints it without the host name."""
    sshd: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def namespace(self) -> str:
        return f"{NAMESPACE_PREFIX}{self.index}"

    @property
    def address(self) -> str:
        return f"{PUBLIC_PREFIX}.{FIRST_HOST + self.index}"

    @property
    def private_address(self) -> str | None:
        return f"{PRIVATE_PREFIX}.{FIRST_HOST + self.index}" if self.spec.private else None

    @property
    def sshd_log(self) -> Path:
        return self.root / "sshd.log"

    def path(self, machine_path: str) -> Path:
        """Where a file the machine wrote under /etc, /usr/local or /var lives on this host (its overlay)."""
        if machine_path.startswith("/usr/local/bin/"):
            return self.root / "local-bin" / machine_path[len("/usr/local/bin/") :]
        for top in ("etc", "usr/local", "var", "opt"):
            if machine_path.startswith(f"/{top}/"):
                return self.root / "upper" / top.replace("/", "-") / machine_path[len(top) + 2 :]
        raise ValueError(f"{machine_path} is not in one of the machine's overlays")

    def exec(self, command: str, *, timeout: float = 30.0, check: bool = True) -> str:
        """Runs a bash command inside the machine (its namespaces), as root: for checks, never for steps."""
        pid = self.sshd.pid if self.sshd else None
        if pid is None:
            raise MachineError(f"{self.name} is not running")
        argv = ["nsenter", f"--target={pid}", "--net", "--mount", "--", "bash", "-c", command]
        return run(argv, timeout=timeout, check=check)

    @property
    def cpu_group(self) -> Path:
        return CPU_ACCOUNTING / self.namespace

    def cpu_seconds(self) -> float | None:
        """CPU time every process of the machine has used since it booted (its sshd, the sessions, what
        they ran, K3s's stand-in), or None where the host has no cgroup v1 CPU accounting."""
        try:
            return int((self.cpu_group / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return None

    def sessions(self) -> int:
        """How many SSH sessions sshd accepted (its log): a refused host key leaves this unchanged."""
        text = self.sshd_log.read_text(errors="replace") if self.sshd_log.exists() else ""
        return text.count("Accepted publickey")


def _stand_in_tools(spec: MachineSpec, python: str) -> dict[str, str]:
    """The machine's /usr/bin stand-ins (module docstring), by file name."""
    machine = {"amd64": "x86_64", "arm64": "aarch64"}[spec.arch]
    tools = {
        "uname": (
            "#!/bin/bash\n# The machine's architecture, not this host's; everything else from the real uname.\n"
            f'if [[ "$*" == "-m" ]]; then echo {machine}; exit 0; fi\nexec /bin/uname "$@"\n'
        ),
        "modinfo": (
            "#!/bin/bash\n# Lambda's kernels ship wireguard; this host's modules are not installed.\n"
            '[[ "$1" == wireguard ]] && { echo "name:           wireguard"; exit 0; }\n'
            'echo "modinfo: ERROR: Module $1 not found." >&2; exit 1\n'
        ),
        "systemctl": f"#!{python}\n" + SYSTEMCTL,
        "journalctl": f"#!{python}\n" + JOURNALCTL,
    }
    if spec.gpu_product is not None and spec.gpu_count > 0:
        names = "\\n".join([spec.gpu_product] * spec.gpu_count)
        tools["nvidia-smi"] = (
            "#!/bin/bash\n# The configured GPUs, as `nvidia-smi --query-gpu=name --format=csv,noheader` lists them.\n"
            'if [[ "$*" == "--query-gpu=name --format=csv,noheader" ]]; then\n'
            f'  printf "{names}\\n"; exit 0\nfi\n'
            'echo "nvidia-smi stand-in: unsupported arguments: $*" >&2; exit 2\n'
        )
        tools["nvidia-container-runtime"] = "#!/bin/bash\necho 'nvidia-container-runtime stand-in' >&2\nexit 1\n"
    return tools


# The service manager of a machine (module docstring). Units are read from /etc/systemd/system; state
# lives in /run/sophia-units (gone when the machine stops, as a reboot loses it).
SYSTEMCTL = r"""
import os, signal, socket, sys, time

UNITS = "/etc/systemd/system"
STATE = "/run/sophia-units"
ENABLED = "/etc/sophia-units-enabled"
START_TIMEOUT = 900


def fail(message, code=1):
    print(message, file=sys.stderr)
    sys.exit(code)


def unit_name(arg):
    return arg[: -len(".service")] if arg.endswith(".service") else arg


def pid_of(unit):
    try:
        pid = int(open(f"{STATE}/{unit}.pid").read())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    try:  # a zombie is not running
        if open(f"/proc/{pid}/stat").read().split(") ", 1)[1].startswith("Z"):
            return None
    except OSError:
        return None
    return pid


def exec_start(unit):
    path = f"{UNITS}/{unit}.service"
    if not os.path.exists(path):
        fail(f"Failed to start {unit}.service: Unit {unit}.service not found.", 5)
    for line in open(path):
        line = line.strip()
        if line.startswith("ExecStart="):
            return line[len("ExecStart="):].split()
    fail(f"{unit}.service has no ExecStart=")


def stop(unit):
    pid = pid_of(unit)
    if pid is None:
        return
    os.killpg(pid, signal.SIGTERM)
    for _ in range(100):
        if pid_of(unit) is None:
            return
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)


def start(unit):
    argv = exec_start(unit)
    os.makedirs(STATE, exist_ok=True)
    os.makedirs("/var/log", exist_ok=True)
    notify = f"{STATE}/{unit}.notify"
    if os.path.exists(notify):
        os.unlink(notify)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify)
    log = open(f"/var/log/{unit}.log", "ab")
    env = dict(os.environ, NOTIFY_SOCKET=notify)
    pid = os.fork()
    if pid == 0:
        os.setsid()
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    open(f"{STATE}/{unit}.pid", "w").write(str(pid))
    sock.settimeout(0.5)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if b"READY=1" in sock.recv(4096):
                return
        except socket.timeout:
            pass
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            fail(f"Job for {unit}.service failed because the control process exited with error code"
                 f" (status {status >> 8}).\nSee \"journalctl -u {unit}\" for details.")
    fail(f"Job for {unit}.service timed out.")


args = [a for a in sys.argv[1:] if a not in ("--quiet", "-q", "--no-pager")]
quiet = len(args) != len(sys.argv) - 1
signal_name = next((a.split("=", 1)[1] for a in args if a.startswith("--signal=")), "SIGTERM")
args = [a for a in args if not a.startswith("--signal=")]
unknown = [a for a in args if a.startswith("-")]
if unknown:
    fail(f"systemctl stand-in: unsupported option {unknown[0]!r}", 2)
if not args:
    fail("systemctl stand-in: no verb", 2)
verb, units = args[0], [unit_name(a) for a in args[1:]]
if verb == "daemon-reload":
    sys.exit(0)
if not units:
    fail(f"systemctl stand-in: {verb} needs a unit", 2)
if verb == "is-active":
    # As systemctl: one line per unit; success when at least one of them is active.
    running = [pid_of(u) is not None for u in units]
    if not quiet:
        print("\n".join("active" if r else "inactive" for r in running))
    sys.exit(0 if any(running) else 3)
if verb == "is-enabled":
    enabled = all(os.path.exists(f"{ENABLED}/{u}") for u in units)
    if not quiet:
        print("enabled" if enabled else "disabled")
    sys.exit(0 if enabled else 1)
if verb in ("enable", "disable"):
    os.makedirs(ENABLED, exist_ok=True)
    for u in units:
        if verb == "enable":
            if not os.path.exists(f"{UNITS}/{u}.service"):
                fail(f"Failed to enable unit: Unit file {u}.service does not exist.")
            open(f"{ENABLED}/{u}", "w").close()
        elif os.path.exists(f"{ENABLED}/{u}"):
            os.unlink(f"{ENABLED}/{u}")
    sys.exit(0)
if verb == "reset-failed":
    sys.exit(0)
if verb == "kill":
    for u in units:
        pid = pid_of(u)
        if pid is not None:
            os.killpg(pid, getattr(signal, signal_name))
    sys.exit(0)
if verb in ("start", "restart", "stop"):
    for u in units:
        if verb != "start" or pid_of(u) is None:
            stop(u)
            if verb != "stop":
                start(u)
    sys.exit(0)
fail(f"systemctl stand-in: unsupported verb {verb!r}", 2)
"""

JOURNALCTL = r"""
import sys

args, unit, lines = sys.argv[1:], None, 10
while args:
    arg = args.pop(0)
    if arg == "-u":
        unit = args.pop(0)
    elif arg == "-n":
        lines = int(args.pop(0))
    elif arg != "--no-pager":
        print(f"journalctl stand-in: unsupported argument {arg!r}", file=sys.stderr)
        sys.exit(2)
if unit is None:
    print("journalctl stand-in: -u UNIT is required", file=sys.stderr)
    sys.exit(2)
unit = unit[: -len(".service")] if unit.endswith(".service") else unit
try:
    text = open(f"/var/log/{unit}.log", errors="replace").read().splitlines()
except OSError:
    text = ["-- No entries --"]
print("\n".join(text[-lines:]))
"""


def host_networks() -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]:
    """What the host already reaches without the default route, and its name servers: the test network
    must meet none of them (after clean_leftovers, so not an earlier run's bridge)."""
    found: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = []
    for line in run(["ip", "-4", "-o", "addr", "show"]).splitlines():
        # `2: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0`
        found.append((ipaddress.ip_interface(line.split()[3]).network, f"address on {line.split()[1]}"))
    for line in run(["ip", "-4", "route", "show"]).splitlines():
        words = line.split()
        if words and words[0] != "default":
            found.append((ipaddress.ip_network(words[0], strict=False), "route"))
        if "via" in words:
            found.append((ipaddress.ip_network(words[words.index("via") + 1]), "gateway"))
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            words = line.split()
            if len(words) > 1 and words[0] == "nameserver" and ":" not in words[1]:
                found.append((ipaddress.ip_network(words[1]), "name server"))
    return found


@dataclass
class TestNetwork:
    """The bridge every machine's veth joins, with the gateway addresses the harness listens on."""

    bridge: str = BRIDGE

    def create(self) -> None:
        for prefix in (PUBLIC_PREFIX, PRIVATE_PREFIX):
            ours = ipaddress.ip_network(f"{prefix}.0/24")
            for theirs, what in host_networks():
                if ours.overlaps(theirs):
                    raise MachineError(
                        f"the test network {ours} meets this host's {what} {theirs}: pick another prefix"
                    )
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        for prefix in (PUBLIC_PREFIX, PRIVATE_PREFIX):
            run(["ip", "addr", "add", f"{gateway(prefix)}/24", "dev", BRIDGE])
        run(["ip", "link", "set", BRIDGE, "up"])

    def destroy(self) -> None:
        run(["ip", "link", "del", BRIDGE], check=False)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _ed25519(path: Path, comment: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    kind, key, *_ = Path(f"{path}.pub").read_text().split()
    return f"{kind} {key}"


def _host_file(name: str) -> str:
    return Path(f"/etc/{name}").read_text()


def prepare_machine(machine: Machine, *, authorized_key: str, ca_bundle: str, python: str) -> None:
    """The machine's files, before it starts: overlays' upper layers, host key, user, sudo, tools."""
    spec, root = machine.spec, machine.root
    for top in OVERLAYS:
        (root / "upper" / top).mkdir(parents=True)
        (root / "work" / top).mkdir(parents=True)
    etc = root / "upper" / "etc"
    machine.host_key = _ed25519(etc / "ssh" / "ssh_host_ed25519_key", f"root@{spec.name}")
    _write(etc / "hostname", f"{spec.name}\n")
    # sudo looks its host name up: without this line, a DNS query with no network to answer it.
    _write(etc / "hosts", f"127.0.0.1 localhost\n127.0.1.1 {spec.name}\n::1 localhost ip6-localhost ip6-loopback\n")
    _write(
        etc / "os-release",
        'PRETTY_NAME="Ubuntu 22.04.5 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\nVERSION="22.04.5 LTS (Jammy Jellyfish)"\n'
        "ID=ubuntu\nID_LIKE=debian\n",
    )
    home = f"/home/{spec.user}"
    _write(etc / "passwd", _host_file("passwd") + f"{spec.user}:x:{USER_ID}:{USER_ID}::{home}:/bin/bash\n")
    _write(etc / "group", _host_file("group") + f"{spec.user}:x:{USER_ID}:\n")
    # `*`: no password (never a login by password), and not locked, so sshd accepts the key.
    _write(etc / "shadow", _host_file("shadow") + f"{spec.user}:*:20000:0:99999:7:::\n", 0o640)
    _write(etc / "sudoers.d" / "90-sophia-e2e", f"{spec.user} ALL=(ALL) NOPASSWD:ALL\n", 0o440)
    _write(etc / "ssl" / "certs" / "ca-certificates.crt", _host_file("ssl/certs/ca-certificates.crt") + ca_bundle)
    listen = [machine.address] + ([machine.private_address] if machine.private_address else [])
    _write(
        etc / "ssh" / "sophia-e2e-sshd.conf",
        "".join(f"ListenAddress {a}:22\n" for a in listen) + "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\nUsePAM no\n"
        f"AllowUsers {spec.user}\nAuthorizedKeysFile .ssh/authorized_keys\nPidFile none\n"
        "Subsystem sftp internal-sftp\nLogLevel VERBOSE\n",
    )
    (root / "home-ssh").mkdir()
    _write(root / "home-ssh" / "authorized_keys", authorized_key + "\n", 0o600)
    for name, text in _stand_in_tools(spec, python).items():
        _write(root / "upper" / "usr-bin" / name, text, 0o755)


def _boot_script(machine: Machine) -> str:
    """What runs in the machine's new mount namespace before sshd: its own view of the filesystem."""
    root, spec = machine.root, machine.spec
    home = f"/home/{spec.user}"

    def overlay(top: str, target: str) -> str:
        return (
            f"mount -t overlay overlay -o lowerdir={target},upperdir={root}/upper/{top},"
            f"workdir={root}/work/{top} {target}\n"
        )

    return (
        "set -euo pipefail\n"
        + overlay("etc", "/etc")
        + overlay("usr-bin", "/usr/bin")
        + overlay("usr-local", "/usr/local")
        + overlay("var", "/var")
        + overlay("opt", "/opt")
        + overlay("root", "/root")
        # An empty /usr/local/bin of its own, as on a fresh image (this host keeps tools there).
        + f"mkdir -p {root}/local-bin && mount --bind {root}/local-bin /usr/local/bin\n"
        + "".join(f"mount -t tmpfs -o mode=0755 tmpfs {d}\n" for d in ("/run", "/home"))
        + "mkdir -p /run/sshd /etc/rancher /etc/systemd/system\n"
        + f"install -d -m 0755 -o {USER_ID} -g {USER_ID} {home}\n"
        + f"install -d -m 0700 -o {USER_ID} -g {USER_ID} {home}/.ssh\n"
        + f"install -m 0600 -o {USER_ID} -g {USER_ID} {root}/home-ssh/authorized_keys {home}/.ssh/authorized_keys\n"
        + f"hostname {shlex.quote(spec.name)} 2>/dev/null || true\n"
        + f"exec /usr/sbin/sshd -D -E {root}/sshd.log -f /etc/ssh/sophia-e2e-sshd.conf\n"
    )


def start_machine(machine: Machine) -> None:
    """The namespace, its link to the bridge, then sshd in a mount namespace of its own; awaited."""
    ns, index = machine.namespace, machine.index
    host_side, machine_side = f"se2e{index}h", f"se2e{index}m"
    run(["ip", "netns", "add", ns])
    run(["ip", "link", "add", host_side, "type", "veth", "peer", "name", machine_side])
    run(["ip", "link", "set", host_side, "master", BRIDGE, "up"])
    run(["ip", "link", "set", machine_side, "netns", ns])
    inside = ["ip", "netns", "exec", ns]
    run([*inside, "ip", "link", "set", "lo", "up"])
    run([*inside, "ip", "link", "set", machine_side, "name", "eth0"])
    run([*inside, "ip", "addr", "add", f"{machine.address}/24", "dev", "eth0"])
    if machine.private_address:
        run([*inside, "ip", "addr", "add", f"{machine.private_address}/24", "dev", "eth0"])
    run([*inside, "ip", "link", "set", "eth0", "up"])
    # The only route out leads to the bridge, where the harness listens.
    run([*inside, "ip", "route", "add", "default", "via", gateway()])
    boot_machine(machine)


def boot_machine(machine: Machine) -> None:
    """The machine's boot in its namespace: its own view of the filesystem, then sshd; awaited."""
    ns = machine.namespace
    inside = ["ip", "netns", "exec", ns]
    boot = machine.root / "boot.sh"
    boot.write_text(_boot_script(machine))
    log = (machine.root / "boot.log").open("wb")
    # unshare: the mount namespace (and a UTS namespace for the host name) of the machine's own.
    machine.sshd = subprocess.Popen(
        [*inside, "unshare", "--mount", "--uts", "--propagation", "private", "bash", str(boot)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    # `ip netns exec`, unshare and bash each exec the next, so this pid becomes sshd's: in its group
    # before it accepts a session, every process of the machine is counted.
    if CPU_ACCOUNTING.is_dir():
        with contextlib.suppress(OSError):
            machine.cpu_group.mkdir(exist_ok=True)
            (machine.cpu_group / "cgroup.procs").write_text(str(machine.sshd.pid))
    deadline = time.monotonic() + START_TIMEOUT
    while not _answers(machine.address, 22):
        if machine.sshd.poll() is not None:
            raise MachineError(f"{machine.name}: sshd exited: {(machine.root / 'boot.log').read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise MachineError(f"{machine.name}: sshd did not listen on {machine.address}:22 in {START_TIMEOUT:.0f} s")
        time.sleep(0.2)
    # The sshd process itself (bash exec'd it inside unshare, inside `ip netns exec`).
    for _ in range(50):
        pids = run(["ip", "netns", "pids", ns], check=False).split()
        if any(Path(f"/proc/{p}/comm").read_text().strip() == "sshd" for p in pids if Path(f"/proc/{p}").exists()):
            break
        time.sleep(0.1)


def halt_machine(machine: Machine) -> None:
    """The machine goes down as in a reboot or a power cut: every process in it (sshd, each SSH
    session and what it runs, K3s) is killed at once, so every connection to it ends. Its network
    namespace, link and addresses and its disk (the overlays' upper layers) stay; what lived in /run
    and /home (tmpfs, in its mount namespace) is gone. `boot_machine` brings it back."""
    ns = machine.namespace
    deadline = time.monotonic() + STOP_TIMEOUT
    while pids := [int(p) for p in run(["ip", "netns", "pids", ns], check=False).split()]:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise MachineError(f"{machine.name}: processes {pids} outlived SIGKILL for {STOP_TIMEOUT:.0f} s")
        time.sleep(0.1)
    if machine.sshd is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            machine.sshd.wait(STOP_TIMEOUT)
    machine.sshd = None


def _answers(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def stop_machine(machine: Machine) -> None:
    """Every process in the machine's namespace (sshd, what the steps started), then the namespace."""
    ns = machine.namespace
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in run(["ip", "netns", "pids", ns], check=False).split()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and run(["ip", "netns", "pids", ns], check=False).split():
            time.sleep(0.1)
    if machine.sshd is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            machine.sshd.wait(STOP_TIMEOUT)
    run(["ip", "netns", "del", ns], check=False)
    run(["ip", "link", "del", f"se2e{machine.index}h"], check=False)
    with contextlib.suppress(OSError):
        machine.cpu_group.rmdir()


def clean_leftovers() -> None:
    """Namespaces and the bridge an earlier run left behind (killed before its teardown ran)."""
    for line in run(["ip", "netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(NAMESPACE_PREFIX):
            for pid in run(["ip", "netns", "pids", name], check=False).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            run(["ip", "netns", "del", name], check=False)
    for group in CPU_ACCOUNTING.glob(f"{NAMESPACE_PREFIX}*") if CPU_ACCOUNTING.is_dir() else []:
        with contextlib.suppress(OSError):
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            group.rmdir()
    run(["ip", "link", "del", BRIDGE], check=False)


@dataclass
class Fleet:
    """The running machines, their network, and the SSH key that opens them."""

    machines: dict[str, Machine]
    private_key: str
    public_key: str
    network: TestNetwork
    root: Path
    python: str
    ca_bundle: str
    next_index: int = 0

    def add(self, spec: MachineSpec) -> Machine:
        """Starts one more machine (a new index, so a new address) and returns it."""
        if self.next_index >= MAX_MACHINES:
            raise MachineError(f"at most {MAX_MACHINES} test machines")
        machine = Machine(spec, self.next_index, self.root / f"{self.next_index:02d}-{spec.name}")
        self.next_index += 1
        machine.root.mkdir(parents=True)
        prepare_machine(machine, authorized_key=self.public_key, ca_bundle=self.ca_bundle, python=self.python)
        self.machines[spec.name] = machine
        start_machine(machine)
        return machine

    def remove(self, name: str) -> None:
        machine = self.machines.pop(name)
        stop_machine(machine)


@contextlib.contextmanager
def test_network(root: Path, *, python: str, ca_bundle: str) -> Iterator[Fleet]:
    """The test network, and an SSH key for its machines; every machine added to it is torn down after."""
    with _network_lock():
        yield from _test_network(root, python=python, ca_bundle=ca_bundle)


@contextlib.contextmanager
def _network_lock() -> Iterator[None]:
    NETWORK_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with NETWORK_LOCK.open("a+") as lock:
        deadline = time.monotonic() + NETWORK_LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    lock.seek(0)
                    raise MachineError(
                        f"the test network is held by another e2e run (pid {lock.read().strip() or '?'}) "
                        f"for over {NETWORK_LOCK_TIMEOUT:.0f} s; see {NETWORK_LOCK}"
                    ) from None
                time.sleep(2.0)
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _test_network(root: Path, *, python: str, ca_bundle: str) -> Iterator[Fleet]:
    clean_leftovers()
    root.mkdir(parents=True, exist_ok=True)
    key_path = root / "id_ed25519"
    public_key = _ed25519(key_path, "sophia-e2e")
    network = TestNetwork()
    fleet = Fleet({}, key_path.read_text(), public_key, network, root, python, ca_bundle)
    try:
        network.create()
        yield fleet
    finally:
        for machine in list(fleet.machines.values()):
            stop_machine(machine)
        fleet.machines.clear()
        network.destroy()
