"""cert-manager and the Let's Encrypt ClusterIssuers every Ingress gets its certificate from."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import pulumi
import pulumi_kubernetes as k8s

from components import namespaces
from components.platform.charts import CERT_MANAGER, INGRESS_CLASS
from components.platform.common import JSON, namespace, release, resources
from components.pod_security import PodSecurity
from components.settings.network import NetworkSettings

NAMESPACE = namespaces.CERT_MANAGER
API_VERSION = "cert-manager.io/v1"


class Environment(StrEnum):
    """Let's Encrypt's two ACME directories: staging to try things out, production for real certificates."""

    STAGING = "staging"
    PRODUCTION = "production"


ACME_SERVERS = {
    Environment.STAGING: "https://acme-staging-v02.api.letsencrypt.org/directory",
    Environment.PRODUCTION: "https://acme-v02.api.letsencrypt.org/directory",
}


def issuer_name(environment: Environment) -> str:
    return f"letsencrypt-{environment.value}"


@dataclass(frozen=True)
class CertManagerArgs:
    network: NetworkSettings
    monitoring: pulumi.Resource
    """The monitoring release: the chart's ServiceMonitor needs its CRD."""
    chart_mirror: str | None
    """`platform.chartMirror`: the Helm repository to pull the chart from instead of its official one."""


def cert_manager_values() -> JSON:
    return {
        # The chart installs and upgrades the CRDs with itself; `keep` leaves them (and so every
        # Certificate) in place if the release is ever uninstalled.
        "crds": {"enabled": True, "keep": True},
        "replicaCount": 1,
        "resources": resources("50m", "128Mi", "200m", "256Mi"),
        "webhook": {"replicaCount": 1, "resources": resources("20m", "64Mi", "100m", "128Mi")},
        "cainjector": {"replicaCount": 1, "resources": resources("20m", "128Mi", "200m", "256Mi")},
        "startupapicheck": {"resources": resources("10m", "32Mi", "100m", "64Mi")},
        "prometheus": {"servicemonitor": {"enabled": True}},
    }


def cluster_issuer_spec(environment: Environment, email: str) -> JSON:
    return {
        "acme": {
            "server": ACME_SERVERS[environment],
            "email": email,
            "privateKeySecretRef": {"name": f"{issuer_name(environment)}-account-key"},
            "solvers": [{"http01": {"ingress": {"ingressClassName": INGRESS_CLASS}}}],
        }
    }


class CertManager(pulumi.ComponentResource):
    """cert-manager with its CRDs, and a ClusterIssuer for each Let's Encrypt environment (HTTP-01 via Traefik)."""

    release: k8s.helm.v3.Release
    issuers: dict[Environment, k8s.apiextensions.CustomResource]
    cluster_issuer_name: str
    """The production issuer: the one Ingresses name in `cert-manager.io/cluster-issuer`."""

    def __init__(self, name: str, args: CertManagerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sophia:platform:CertManager", name, None, opts)
        ns = namespace(NAMESPACE, PodSecurity.RESTRICTED, self)
        self.release = release(
            "cert-manager",
            CERT_MANAGER,
            ns=ns,
            values=cert_manager_values(),
            mirror=args.chart_mirror,
            parent=self,
            depends_on=[args.monitoring],
        )
        self.issuers = {
            environment: k8s.apiextensions.CustomResource(
                issuer_name(environment),
                api_version=API_VERSION,
                kind="ClusterIssuer",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=issuer_name(environment)),
                spec=cluster_issuer_spec(environment, args.network.acme_email),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.release]),
            )
            for environment in Environment
        }
        self.cluster_issuer_name = issuer_name(Environment.PRODUCTION)
        self.register_outputs({"clusterIssuerName": self.cluster_issuer_name})

    @property
    def production_issuer(self) -> k8s.apiextensions.CustomResource:
        return self.issuers[Environment.PRODUCTION]
