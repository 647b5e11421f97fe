"""Who may talk to whom: the peers and rules the Sophia NetworkPolicies are made of.

Every app namespace denies all ingress and egress by default; each Workload then allows exactly
its callers, its dependencies, DNS, Traefik (public services), Prometheus (services with metrics)
and, where the catalogue says so, HTTPS to the public internet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import pulumi_kubernetes as k8s

from components.namespaces import MONITORING
from components.platform.charts import TRAEFIK_NAMESPACE

NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"

MONITORING_NAMESPACE: Final = MONITORING
# kube-prometheus-stack's Prometheus pods carry this label (prometheus-operator sets it).
PROMETHEUS_POD_LABELS: Final[Mapping[str, str]] = {"app.kubernetes.io/name": "prometheus"}

# K3s runs Traefik (the one public entry point) and CoreDNS in kube-system.
SYSTEM_NAMESPACE: Final = TRAEFIK_NAMESPACE
TRAEFIK_POD_LABELS: Final[Mapping[str, str]] = {"app.kubernetes.io/name": "traefik"}
DNS_POD_LABELS: Final[Mapping[str, str]] = {"k8s-app": "kube-dns"}
DNS_PORT: Final = 53

# cert-manager's HTTP-01 solver pods, which it starts in the Ingress's namespace for every ACME
# challenge; Traefik must reach them or no certificate is ever issued or renewed.
ACME_SOLVER_LABELS: Final[Mapping[str, str]] = {"acme.cert-manager.io/http01-solver": "true"}
ACME_SOLVER_PORT: Final = 8089

HTTPS_PORT: Final = 443
# The LLM APIs and Qdrant Cloud have no fixed addresses and a NetworkPolicy matches addresses, not
# names: HTTPS egress goes to any public address. Excluding the private, shared and link-local
# ranges keeps the rule from reaching the cluster, the machines' LAN or the cloud metadata service.
NOT_PUBLIC: Final = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "127.0.0.0/8",
)


@dataclass(frozen=True)
class Peer:
    """Pods of one namespace, selected by labels (all of its pods when `labels` is empty)."""

    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def args(self) -> k8s.networking.v1.NetworkPolicyPeerArgs:
        return k8s.networking.v1.NetworkPolicyPeerArgs(
            namespace_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={NAMESPACE_NAME_LABEL: self.namespace}),
            pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=dict(self.labels)),
        )


@dataclass(frozen=True)
class Connection:
    """Traffic to `peer` on TCP `port`."""

    peer: Peer
    port: int


PROMETHEUS: Final = Peer(MONITORING_NAMESPACE, PROMETHEUS_POD_LABELS)
TRAEFIK: Final = Peer(SYSTEM_NAMESPACE, TRAEFIK_POD_LABELS)
DNS: Final = Peer(SYSTEM_NAMESPACE, DNS_POD_LABELS)


def tcp(port: int) -> k8s.networking.v1.NetworkPolicyPortArgs:
    return k8s.networking.v1.NetworkPolicyPortArgs(port=port, protocol="TCP")


def public_https_rule() -> k8s.networking.v1.NetworkPolicyEgressRuleArgs:
    return k8s.networking.v1.NetworkPolicyEgressRuleArgs(
        to=[
            k8s.networking.v1.NetworkPolicyPeerArgs(
                ip_block=k8s.networking.v1.IPBlockArgs(cidr="0.0.0.0/0", except_=list(NOT_PUBLIC))
            )
        ],
        ports=[tcp(HTTPS_PORT)],
    )


def dns_rule() -> k8s.networking.v1.NetworkPolicyEgressRuleArgs:
    return k8s.networking.v1.NetworkPolicyEgressRuleArgs(
        to=[DNS.args()],
        ports=[
            k8s.networking.v1.NetworkPolicyPortArgs(port=DNS_PORT, protocol="UDP"),
            k8s.networking.v1.NetworkPolicyPortArgs(port=DNS_PORT, protocol="TCP"),
        ],
    )
