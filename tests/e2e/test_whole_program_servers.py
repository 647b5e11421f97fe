"""The whole program on three servers and two agents: servers join and upgrade differently from agents.

The production stack reshaped: its first three machines are servers (every machine then has a private
address, which more than one server needs), then two agents. A K3s upgrade (`k3sVersion`, with the
new release's sha256 pinned) restarts the servers one at a time, each holding the restart Lease
until its node is Ready again, and the agents only after every server: the order is read from the
machines' own K3s logs.
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime

import pytest

from tests.e2e.apiserver import ApiServer
from tests.e2e.whole_program import Cluster, Variant, cluster_fixture

pytestmark = pytest.mark.e2e

SERVERS = Variant("three servers and two agents", "production", servers=3, agents=2)
UPGRADE_TO = "v1.35.6+k3s1"
LOG_LINE = re.compile(r"^(?P<time>\S+Z) (?P<message>.*)$")


cluster = cluster_fixture(SERVERS)


def starts_and_stops(cluster: Cluster, name: str) -> list[tuple[datetime, str]]:
    """(time, "start" | "stop") of every K3s start and stop on the machine, from its unit's log."""
    machine = cluster.machine(name)
    events: list[tuple[datetime, str]] = []
    for log in machine.path("/var/log/k3s.log").parent.glob("k3s*.log"):
        for line in log.read_text(errors="replace").splitlines():
            match = LOG_LINE.match(line)
            if not match:
                continue
            when = datetime.strptime(match["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
            if "running as" in match["message"]:
                events.append((when, "start"))
            elif "shutting down" in match["message"]:
                events.append((when, "stop"))
    return sorted(events)


def test_three_servers_and_two_agents_join(cluster: Cluster, apiserver: ApiServer) -> None:
    run = cluster.engine.run("up")
    assert set(run.changes) == {"create"}, run.describe()
    for node in cluster.nodes:
        status = apiserver.get(f"/api/v1/nodes/{node['name']}")["status"]
        assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True", node["name"]
        internal = [a["address"] for a in status["addresses"] if a["type"] == "InternalIP"]
        assert internal == [cluster.machine(node["name"]).private_address], node["name"]


def test_an_upgrade_restarts_servers_one_at_a_time_then_the_agents(cluster: Cluster, apiserver: ApiServer) -> None:
    before = {n["name"]: len(starts_and_stops(cluster, n["name"])) for n in cluster.nodes}
    cluster.pins = cluster.mirror.publish(UPGRADE_TO)
    cluster.version = UPGRADE_TO
    cluster.write_settings()
    run = cluster.engine.run("up")
    assert run.warnings == [], "\n".join(run.warnings)
    windows: dict[str, tuple[datetime, datetime]] = {}
    for node in cluster.nodes:
        events = starts_and_stops(cluster, node["name"])[before[node["name"]] :]
        assert [kind for _, kind in events] == ["stop", "start"], (node["name"], events)
        windows[node["name"]] = (events[0][0], events[1][0])
        info = apiserver.get(f"/api/v1/nodes/{node['name']}")["status"]["nodeInfo"]
        assert info["kubeletVersion"] == UPGRADE_TO, node["name"]
    servers = sorted((windows[n["name"]] for n in cluster.nodes if n["role"] == "server"), key=lambda w: w[0])
    for (_, up), (down, _) in itertools.pairwise(servers):
        assert up <= down, f"two servers were down at once: {servers}"
    last_server_up = max(up for _, up in servers)
    for node in cluster.nodes:
        if node["role"] == "agent":
            assert windows[node["name"]][0] >= last_server_up, (node["name"], windows)
    cluster.engine.log.append(
        "    upgrade: servers restarted one at a time, "
        + ", ".join(f"{n['name']} {windows[n['name']][0]:%H:%M:%S.%f}"[:-3] for n in cluster.nodes)
    )
    again = cluster.engine.run("up")
    assert set(again.changes) == {"same"}, again.describe()


def test_destroy_removes_the_three_server_cluster(cluster: Cluster, apiserver: ApiServer) -> None:
    run = cluster.engine.run("destroy")
    assert set(run.changes) == {"delete"}, run.describe()
    for node in cluster.nodes[1:]:
        assert not apiserver.exists(f"/api/v1/nodes/{node['name']}"), node["name"]
