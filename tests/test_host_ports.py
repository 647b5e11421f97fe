"""One list of the ports the machines accept from each other (components/host_ports.py): the README's
firewall table says exactly those, every node's preflight enforces them, and every port that
Prometheus scrapes on a machine's own address (a pod on the host network) is among them.
"""

from __future__ import annotations

import re
from typing import Any

from components.cluster.node_config import firewall_ports
from components.host_ports import API_PORT, KUBELET_PORT, OPENINGS
from components.platform.charts import DCGM_EXPORTER, KUBE_PROMETHEUS_STACK, METALLB, Chart
from components.settings.cluster import Role
from components.settings.stack import load_settings
from render.model import HELM_RELEASE, Rendered
from render.stack import PROJECT_DIR, load_stack
from tests.chart_packages import chart_text, chart_yaml, merged

_ROW = re.compile(r"^\| (?P<port>[^|]+) \| (?P<source>[^|]+) \|")
_PORTS = re.compile(r"(?P<protos>TCP and UDP|TCP|UDP) (?P<numbers>\d+(?:-\d+)?(?:, \d+)*)")


def _readme_ports() -> set[str]:
    """The ports of the firewall table's rows (docs/operations.md, `### Firewall`, where the README's
    moved) that are opened to the other machines."""
    text = (PROJECT_DIR / "docs" / "operations.md").read_text()
    section = text.split("\n### Firewall\n", 1)[1].split("\n#", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert len(table) > 2, "no firewall table under ### Firewall in docs/operations.md"
    found: set[str] = set()
    for line in table[2:]:
        row = _ROW.match(line)
        assert row, line
        if not any(who in row["source"] for who in ("every machine", "the servers")):
            continue
        for match in _PORTS.finditer(row["port"]):
            protos = ("tcp", "udp") if match["protos"] == "TCP and UDP" else (match["protos"].lower(),)
            for number in match["numbers"].split(", "):
                found |= {f"{proto}/{number.replace('-', ':')}" for proto in protos}
    return found


def test_the_readme_firewall_table_lists_exactly_the_ports_of_the_list() -> None:
    assert _readme_ports() == {port for opening in OPENINGS for port in opening.ports}


def test_every_node_preflight_enforces_its_ports_of_the_list(production: Rendered) -> None:
    stack = load_stack("production")
    cluster = load_settings(stack.stack, stack.config, stack.secret_keys).cluster
    for node in cluster.nodes:
        assert production.out_dir is not None
        (path,) = (production.out_dir / "nodes" / node.name).glob("*-preflight.sh")
        script = path.read_text()
        (line,) = [line for line in script.splitlines() if line.startswith("export FIREWALL_PORTS=")]
        expected = firewall_ports(cluster, node)
        assert line == f"export FIREWALL_PORTS='{' '.join(expected)}'", node.name
        server_only = {p for o in OPENINGS if o.servers_only for p in o.ports}
        assert (node.role is Role.SERVER) == bool(server_only & set(expected)), node.name


def _values(production: Rendered, chart: Chart) -> Any:
    """The values a release really runs with: the chart's defaults, then ours."""
    (release,) = [r for r in production.by_type(HELM_RELEASE) if r["inputs"]["chart"] == chart.name]
    return merged(chart_yaml(chart, "values.yaml"), release["inputs"]["values"])


def scraped_host_ports(production: Rendered) -> dict[str, tuple[int, bool]]:
    """What Prometheus scrapes on the machines' own addresses: port and whether every machine runs it
    (False: the servers only), read from the real charts' defaults and templates under our values."""
    scraped: dict[str, tuple[int, bool]] = {}
    metallb = _values(production, METALLB)
    assert "hostNetwork: true" in chart_text(METALLB, "templates/speaker.yaml")
    if metallb["prometheus"]["serviceMonitor"]["enabled"] or metallb["prometheus"]["podMonitor"]["enabled"]:
        scraped["MetalLB speaker metrics"] = (metallb["prometheus"]["metricsPort"], True)
    stack = _values(production, KUBE_PROMETHEUS_STACK)
    exporter = merged(
        chart_yaml(KUBE_PROMETHEUS_STACK, "charts/prometheus-node-exporter/values.yaml"),
        stack["prometheus-node-exporter"],
    )
    if stack["nodeExporter"]["enabled"] and exporter["hostNetwork"] and exporter["prometheus"]["monitor"]["enabled"]:
        port = (
            exporter["kubeRBACProxy"]["port"] if exporter["kubeRBACProxy"]["enabled"] else exporter["service"]["port"]
        )
        scraped["node-exporter"] = (port, True)
    if stack["kubelet"]["enabled"]:
        scraped["kubelet"] = (KUBELET_PORT, True)
    if stack["kubeApiServer"]["enabled"]:
        # The API server's endpoints are the servers' addresses; K3s serves its own metrics there too.
        scraped["API server"] = (API_PORT, False)
    dcgm = _values(production, DCGM_EXPORTER)
    if dcgm["hostNetwork"]:
        scraped["dcgm-exporter"] = (dcgm["service"]["port"], True)
    return scraped


def test_every_host_network_port_prometheus_scrapes_is_open_between_the_machines(production: Rendered) -> None:
    scraped = scraped_host_ports(production)
    assert {"MetalLB speaker metrics", "node-exporter", "kubelet", "API server"} <= scraped.keys()
    everyone = {p for o in OPENINGS if not o.servers_only for p in o.ports}
    servers = {p for o in OPENINGS for p in o.ports}
    for what, (port, every_machine) in scraped.items():
        assert f"tcp/{port}" in (everyone if every_machine else servers), f"{what} on {port}"
