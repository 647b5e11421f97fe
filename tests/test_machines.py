"""Every node of every rendered stack through its whole life, on fake machines that check what they are told.

The scripts are the rendered ones (`Rendered.node_steps`: the exact text each remote.Command runs), run
in the order `pulumi up` runs them: the first server, then every other node (claimed and admitted from
the first server), then on `pulumi destroy` of a node its drain, uninstall and removal. The stubs
behind them (tests/cluster_fakes.py) are strict: a flag the real tool would refuse, a service start
not bounded by `timeout`, a kubectl without a request timeout, a privileged call without sudo fail
the step; and they record what they did (files and their modes, drains and how, starts and their
bounds), so these tests hold the effect on every machine, not only the exit code.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from render.model import NodeStep, Rendered
from tests.cluster_fakes import ADMIN_CLIENT_KEY, Machine, Result, add_pod, cluster_state, set_cluster_state

SERVER_PASSWORD = "wholelifeserverpassword0123456789"
AGENT_PASSWORD = "wholelifeagentpassword0123456789"
SECRETS = {"the server token": SERVER_PASSWORD, "the agent token": AGENT_PASSWORD, "the admin key": ADMIN_CLIENT_KEY}


def exports(script: str) -> dict[str, str]:
    """The one-line settings a composed script starts with (its `export NAME=value` prelude)."""
    values: dict[str, str] = {}
    for line in script.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            try:
                values[key] = "".join(shlex.split(value))
            except ValueError:  # the first line of a value of several lines (K3S_CONFIG, NODE_LABELS)
                continue
    return values


@dataclass
class Life:
    """What happened to every machine of one stack, and what they looked like once all were up."""

    rendered: Rendered
    api: Path
    first: str
    machines: dict[str, Machine] = field(default_factory=dict)
    files_when_up: dict[str, dict[str, tuple[bytes, int, int]]] = field(default_factory=dict)
    blocked_drains: dict[str, Result] = field(default_factory=dict)
    after_blocked: dict[str, dict[str, Any]] = field(default_factory=dict)
    drains: dict[str, Result] = field(default_factory=dict)
    state_end: dict[str, Any] = field(default_factory=dict)

    def steps(self, node: str) -> dict[str, NodeStep]:
        return {s.step: s for s in self.rendered.node_steps[node]}


def _run(m: Machine, script: str | None, stdin: str = "") -> Result:
    assert script is not None
    result = m.run(script, stdin)
    assert result.returncode == 0, result.output
    return result


def _machine(root: Path, api: Path, steps: dict[str, NodeStep]) -> Machine:
    """A machine as the node's preflight expects it: its architecture, GPUs and address."""
    wanted = exports(steps["preflight"].create)
    m = Machine(root, api)
    m.set("machine", wanted["EXPECTED_MACHINE"] + "\n")
    if int(wanted["GPU_COUNT"]):
        m.set("gpus", (wanted["GPU_PRODUCT"] + "\n") * int(wanted["GPU_COUNT"]))
    m.set("addresses", wanted.get("NODE_IP") or wanted["PUBLIC_IP"])
    return m


def live(rendered: Rendered, base: Path) -> Life:
    api = base / "api"
    first = next(node for node, steps in rendered.node_steps.items() if any(s.step == "server-token" for s in steps))
    life = Life(rendered, api, first)
    order = [first, *(node for node in rendered.node_steps if node != first)]
    tokens: dict[str, str] = {}
    for node in order:
        steps = life.steps(node)
        m = life.machines[node] = _machine(base / node, api, steps)
        server = life.machines[first]
        if "claim" in steps:
            _run(server, steps["claim"].create)
        _run(m, steps["preflight"].create)
        if node == first:
            stdin = f"{SERVER_PASSWORD}\n{AGENT_PASSWORD}\n"
        elif exports(steps["install"].create)["NODE_ROLE"] == "server":
            stdin = f"{tokens['server-token']}{AGENT_PASSWORD}\n"
        else:
            stdin = tokens["agent-token"]
        _run(m, steps["prepare"].create, stdin)
        _run(m, steps["install"].create)
        _run(m, steps["ready"].create)
        _run(server, steps["admit"].create)
        if node == first:
            tokens = {step: _run(m, steps[step].create).stdout for step in ("server-token", "agent-token")}
            _run(m, steps["kubeconfig"].create)
    life.files_when_up = {node: m.files() for node, m in life.machines.items()}
    server = life.machines[first]
    for node in order[1:]:
        steps = life.steps(node)
        # A pod whose PodDisruptionBudget allows no eviction now: the drain must give up, not go past it.
        add_pod(api, node, f"guarded-{node}", pdb=True)
        life.blocked_drains[node] = server.run(steps["admit"].delete or "")
        state = cluster_state(api)
        life.after_blocked[node] = {
            "node": state["nodes"][node],
            "pods": [p["name"] for p in state["pods"] if p["node"] == node],
            "deleted": [p["name"] for p in state.get("deleted", [])],
        }
        state["pods"] = [p for p in state["pods"] if p["name"] != f"guarded-{node}"]
        set_cluster_state(api, state)
        life.drains[node] = _run(server, steps["admit"].delete)
        _run(life.machines[node], steps["prepare"].delete)
        _run(server, steps["claim"].delete)
    life.state_end = cluster_state(api)
    return life


@pytest.fixture(scope="module")
def lives(production: Rendered, development: Rendered, tmp_path_factory: pytest.TempPathFactory) -> list[Life]:
    return [live(rendered, tmp_path_factory.mktemp(rendered.stack)) for rendered in (production, development)]


def test_every_node_of_every_stack_lived_its_whole_life(lives: list[Life]) -> None:
    assert {life.rendered.stack: len(life.machines) for life in lives} == {"production": 5, "development": 1}
    production = lives[0]
    assert set(production.drains) == set(production.machines) - {production.first}
    assert set(production.state_end["nodes"]) == {production.first}


def test_every_file_that_holds_a_token_or_key_is_root_only(lives: list[Life]) -> None:
    held: dict[str, set[str]] = {}
    loose: list[str] = []
    for life in lives:
        for node, files in life.files_when_up.items():
            for path, (content, mode, _) in files.items():
                if any(secret.encode() in content for secret in SECRETS.values()):
                    held.setdefault(node, set()).add(path)
                    if mode & 0o077:
                        loose.append(f"{node}:{path} {oct(mode & 0o777)}")
    assert loose == []
    # The scan found what is there: every machine its join token, each first server all of K3s's.
    first_server = {
        "etc/rancher/k3s/sophia-join-token",
        "etc/rancher/k3s/sophia-agent-token",
        "etc/rancher/k3s/k3s.yaml",
        "var/lib/rancher/k3s/server/token",
        "var/lib/rancher/k3s/server/agent-token",
    }
    for life in lives:
        for node in life.machines:
            assert held[node] == (first_server if node == life.first else {"etc/rancher/k3s/sophia-join-token"})


def test_every_file_the_scripts_write_has_its_mode(lives: list[Life]) -> None:
    """Root's configuration and records 0600, the restore tool 0700 (root runs it), the node marker 0644."""
    assert any(exports(life.steps(life.first)["install"].create).get("RESTORE_SCRIPT_B64") for life in lives)
    modes = {
        "etc/rancher/k3s/config.yaml": 0o600,
        "var/lib/rancher/k3s/sophia-applied": 0o600,
        "etc/rancher/k3s/sophia-node": 0o644,
        "usr/local/sbin/sophia-etcd-restore": 0o700,
    }
    for life in lives:
        for node, files in life.files_when_up.items():
            found = {path: files[path][1] & 0o777 for path in modes if path in files}
            # The restore tool is on the servers of a stack with backups (its script is in the install step's).
            restore = bool(exports(life.steps(node)["install"].create).get("RESTORE_SCRIPT_B64"))
            expected = {p: m for p, m in modes.items() if restore or "sbin" not in p}
            assert found == expected, node


def test_every_service_start_is_bounded_by_the_ready_timeout(lives: list[Life]) -> None:
    for life in lives:
        for node, m in life.machines.items():
            install = exports(life.steps(node)["install"].create)
            service = install["K3S_SERVICE"]
            assert m.bounded() == [["timeout", install["READY_TIMEOUT"], "systemctl", "restart", service]], node
            assert m.restarts(service) == 1


def test_every_drain_evicts_within_its_timeout_and_leaves_daemonsets_to_their_controller(lives: list[Life]) -> None:
    production = lives[0]
    drains = [d for d in production.state_end["drains"] if d["node"] in production.drains]
    # Each node twice: once held up by a budget, once through.
    assert sorted(d["node"] for d in drains) == sorted([*production.drains, *production.drains])
    for drain in drains:
        timeout = exports(production.steps(drain["node"])["admit"].delete or "")["DRAIN_TIMEOUT"]
        assert drain["eviction"] is True
        assert drain["timeout"] == int(timeout)
        assert drain["flags"] == {
            "--ignore-daemonsets": "true",
            "--delete-emptydir-data": "true",
            "--timeout": f"{timeout}s",
        }
    evicted = {p["name"] for p in production.state_end["evicted"]}
    assert evicted == {f"scratch-{node}" for node in production.drains}
    assert "deleted" not in production.state_end
    for node, result in production.drains.items():
        assert f"evicting pod sophia/scratch-{node}" in result.stdout


def test_a_drain_a_disruption_budget_holds_up_fails_and_gives_the_node_back(lives: list[Life]) -> None:
    production = lives[0]
    for node, result in production.blocked_drains.items():
        assert result.returncode != 0, node
        assert "PodDisruptionBudget" in result.stderr
        assert f"guarded-{node}" in result.stderr  # the pods left, named
        after = production.after_blocked[node]
        assert after["node"]["unschedulable"] is False
        assert "sophia.ai/drained" not in after["node"]["annotations"]
        assert f"guarded-{node}" in after["pods"]
        assert after["deleted"] == []


# ufw's actions and directions (ufw(8): allow|deny|reject|limit [in|out], and `route` rules), and
# which of them let a peer's connection to the port in.
UFW_RULES = [("ALLOW", "IN", True), ("DENY", "IN", False), ("REJECT", "IN", False), ("LIMIT", "IN", False)]
UFW_RULES += [("ALLOW", "OUT", False), ("ALLOW", "FWD", False)]


@pytest.mark.parametrize("rule", UFW_RULES, ids=lambda rule: " ".join(map(str, rule[:2])))
def test_preflight_of_every_node_counts_only_incoming_allow_rules(
    tmp_path: Path, production: Rendered, development: Rendered, rule: tuple[str, str, bool]
) -> None:
    action, direction, lets_in = rule
    for rendered in (production, development):
        for node, steps in rendered.node_steps.items():
            by_step = {s.step: s for s in steps}
            preflight = by_step["preflight"].create
            ports = exports(preflight)["FIREWALL_PORTS"].split()
            m = _machine(tmp_path / rendered.stack / node, tmp_path / "api", by_step)
            rules = ["22/tcp|ALLOW|IN|Anywhere"]
            rules += [f"{p.split('/')[1]}/{p.split('/')[0]}|{action}|{direction}|192.0.2.0/24" for p in ports]
            m.set("ufw-rules", "".join(r + "\n" for r in rules))

            result = m.run(preflight)

            assert (result.returncode == 0) is lets_in, (node, result.output)
            if not lets_in:
                line = next(x for x in result.stderr.splitlines() if "ufw is active" in x)
                assert line.split("allows none of: ")[1].split(";")[0] == " ".join(p.replace("/", " ") for p in ports)


KUBECTL = '"$FAKE_K3S_PROGRAM" kubectl --kubeconfig "$SOPHIA_ROOT/etc/rancher/k3s/k3s.yaml"'
UNIT = 'mkdir -p "$SOPHIA_ROOT/etc/systemd/system" && : > "$SOPHIA_ROOT/etc/systemd/system/k3s.service" && '


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("sudo -S -- true", "unexpected argument(s) '-S'"),
        (f"{KUBECTL} --request-timeout=30s drain n1 --delete-local-data", "error: unknown flag: --delete-local-data"),
        (f"{KUBECTL} --request-timeout=30s drain n1 --timeout=600", 'invalid argument "600" for "--timeout"'),
        (f"{KUBECTL} --request-timeout=30s drain n1 --ignore-daemonsets=yes", "strconv.ParseBool"),
        (f"{KUBECTL} --request-timeout=30s get node n1 --watch", "error: unknown flag: --watch"),
        (f"{KUBECTL} get node n1", "no --request-timeout"),
        (f"{KUBECTL} --request-timeout=30s get node n1", "permission denied"),  # the kubeconfig is root's
        ("sudo -n -- systemctl restart k3s", "Unit k3s.service not found."),
        (UNIT + "systemctl restart k3s", "Interactive authentication required."),
        (UNIT + "sudo -n -- systemctl restart k3s", "not bounded by timeout"),
        (UNIT + "sudo -n -- systemctl restart --now k3s", "unexpected argument(s) '--now'"),
        ("ufw status", "ERROR: You need to be root to run this script"),
        ("sudo -n -- ufw allow 6443/tcp", "unexpected argument(s) 'allow 6443/tcp'"),
        ('curl -sfL -o "$SOPHIA_ROOT/x" https://example.invalid/install.sh', "no --max-time"),
        ("nvidia-smi --query-gpu=nme --format=csv,noheader", 'Field "nme" is not a valid field to query.'),
        ('sudo -n -- "$FAKE_K3S_PROGRAM" server --cluster-reset --token=x', "unexpected argument '--token=x'"),
        ('sudo -n -- "$FAKE_K3S_PROGRAM" server --cluster-reset', "not bounded by timeout"),
        # What the install step downloads with, and the tools the uninstall step runs (main's install.sh
        # and uninstall.sh): exactly their forms, as root where the real tool needs it.
        ("curl -fsSL --max-time 5 --insecure https://example.invalid/ping", "unexpected argument(s) '--insecure'"),
        ("sudo -n -- systemctl daemon-reload k3s", "unexpected argument(s) 'daemon-reload k3s'"),
        ("systemctl daemon-reload", "Interactive authentication required."),
        (UNIT + "sudo -n -- systemctl stop --signal=SIGKILL k3s", "unexpected argument(s) '--signal=SIGKILL'"),
        ('sudo -n -- umount "$SOPHIA_ROOT/run/k3s"', "unexpected argument(s)"),
        ('umount -l "$SOPHIA_ROOT/run/k3s"', "must be superuser to unmount"),
        ("sudo -n -- iptables-save -t nat", "unexpected argument(s) '-t nat'"),
        ("iptables-save", "Permission denied (you must be root)"),
        ("sudo -n -- ip link del cni0", "unexpected argument(s) 'link del cni0'"),
        ("ip link delete cni0", "Operation not permitted"),
        ("pgrep containerd-shim", "unexpected argument(s) 'containerd-shim'"),
        ("ps aux", "unexpected argument(s) 'aux'"),
    ],
)
def test_a_fake_refuses_what_its_real_tool_refuses_loudly(tmp_path: Path, command: str, says: str) -> None:
    m = Machine(tmp_path / "m", tmp_path / "api")
    (m.root / "etc/rancher/k3s").mkdir(parents=True)
    (m.root / "etc/rancher/k3s/k3s.yaml").write_text("clusters: []\n")
    (m.root / "etc/rancher/k3s/k3s.yaml").chmod(0o600)

    result = m.run(command)

    assert result.returncode != 0
    assert says in result.stderr
