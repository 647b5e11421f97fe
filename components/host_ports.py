"""The ports the machines must accept from each other: the one list the preflight's ufw check, the
README's firewall table and the scrape test (tests/test_host_ports.py) all read. Imports nothing.

Pods on the host network (MetalLB's speaker, node-exporter) listen on the machine's own address, so
Prometheus, running on one machine, reaches their metrics on another only through the firewall.
Every such port is pinned here and set explicitly in the chart values that open it, so the chart
default changing cannot move a port out of this list unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

API_PORT: Final = 6443
KUBELET_PORT: Final = 10250
# MetalLB 0.16.1: the speaker runs with `hostNetwork: true` (charts/metallb/templates/speaker.yaml:172);
# its memberlist binds `speaker.memberlist.mlBindPort` (TCP and UDP, values.yaml default 7946) and
# it serves metrics on `prometheus.metricsPort` (values.yaml:42, default 9120, HTTPS), the port its
# ServiceMonitor scrapes.
METALLB_MEMBERLIST_PORT: Final = 7946
METALLB_METRICS_PORT: Final = 9120
# prometheus-node-exporter 4.56.1 (kube-prometheus-stack 88.5.3's subchart): `hostNetwork: true`
# (values.yaml:382) and it listens on `service.port` (values.yaml:131, default 9100).
NODE_EXPORTER_PORT: Final = 9100


@dataclass(frozen=True)
class Opening:
    """One row of the README's firewall table: what a node accepts from the other machines."""

    ports: tuple[str, ...]
    """`proto/port` or `proto/first:last`, as the preflight's ufw check takes them."""
    servers_only: bool
    flannel_backend: str | None
    """Only with this flannel backend (pod traffic); None: always."""
    what: str


OPENINGS: Final[tuple[Opening, ...]] = (
    Opening((f"tcp/{API_PORT}",), True, None, "Kubernetes API and K3s joins; K3s's own metrics"),
    Opening(("tcp/2379:2380",), True, None, "etcd"),
    Opening((f"tcp/{KUBELET_PORT}",), False, None, "kubelet (logs, exec, metrics)"),
    Opening(("udp/51820",), False, "wireguard-native", "pod traffic, WireGuard"),
    Opening(("udp/8472",), False, "vxlan", "pod traffic, VXLAN"),
    Opening(
        (f"tcp/{METALLB_MEMBERLIST_PORT}", f"udp/{METALLB_MEMBERLIST_PORT}"),
        False,
        None,
        "MetalLB's memberlist (the speakers elect who announces each address)",
    ),
    Opening((f"tcp/{NODE_EXPORTER_PORT}",), False, None, "node-exporter (Prometheus scrapes every node)"),
    Opening(
        (f"tcp/{METALLB_METRICS_PORT}",), False, None, "MetalLB speaker metrics (Prometheus scrapes every speaker)"
    ),
)


def peer_ports(*, server: bool, flannel_backend: str) -> tuple[str, ...]:
    """Every `proto/port` a node of this role must accept from the other machines, in table order."""
    return tuple(
        port
        for opening in OPENINGS
        if (server or not opening.servers_only) and opening.flannel_backend in (None, flannel_backend)
        for port in opening.ports
    )
