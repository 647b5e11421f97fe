"""MetalLB: the cluster's LoadBalancer addresses, announced in layer 2, and Traefik's address among them."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components import namespaces
from components.gpu import GPU_TAINT_KEY
from components.host_ports import METALLB_MEMBERLIST_PORT, METALLB_METRICS_PORT
from components.ingress import TLS_ENTRY_POINT
from components.platform.charts import METALLB, TRAEFIK_HELM_CHART, TRAEFIK_NAMESPACE
from components.platform.common import JSON, namespace, release, resources
from components.platform.monitoring import PROMETHEUS_SERVICE_ACCOUNT
from components.pod_security import PodSecurity
from components.settings.network import NetworkSettings

NAMESPACE = namespaces.METALLB
API_VERSION = "metallb.io/v1beta1"
POOL_NAME = "default"
LOAD_BALANCER_IPS_ANNOTATION = "metallb.io/loadBalancerIPs"
"""How a Service asks MetalLB for an address (`spec.loadBalancerIP` is deprecated)."""


@dataclass(frozen=True)
class MetalLBArgs:
    network: NetworkSettings
    monitoring: pulumi.Resource
    """The monitoring release: the chart's and Traefik's ServiceMonitors need its CRD."""
    chart_mirror: str | None
    """`platform.chartMirror`: the Helm repository to pull the chart from instead of its official one."""


def metallb_values() -> JSON:
    return {
        "crds": {"enabled": True},
        "frrk8s": {"enabled": False},
        "prometheus": {
            # Explicit, from the firewall's list: the speaker serves them on the host network.
            "metricsPort": METALLB_METRICS_PORT,
            "serviceMonitor": {"enabled": True},
            "serviceAccount": PROMETHEUS_SERVICE_ACCOUNT,
            "namespace": namespaces.MONITORING,
        },
        "controller": {"resources": resources("50m", "64Mi", "200m", "128Mi")},
        "speaker": {
            "resources": resources("50m", "64Mi", "200m", "128Mi"),
            "memberlist": {"mlBindPort": METALLB_MEMBERLIST_PORT},
            # A node only announces addresses when a speaker runs on it: the GPU machines too.
            "tolerations": [{"key": GPU_TAINT_KEY, "operator": "Exists"}],
        },
    }


def traefik_values(address: str) -> JSON:
    """Values for K3s's packaged Traefik chart: its Service takes `address` from MetalLB's pool.

    Plain HTTP on every host is redirected to HTTPS (308) instead of answering 404, since every
    route is on the TLS entry point only. Let's Encrypt's HTTP-01 check follows that redirect and
    accepts any certificate on it, so cert-manager's challenges still pass.
    """
    return {
        "service": {"annotations": {LOAD_BALANCER_IPS_ANNOTATION: address}},
        "metrics": {"prometheus": {"service": {"enabled": True}, "serviceMonitor": {"enabled": True}}},
        "ports": {
            "web": {
                "http": {"redirections": {"entryPoint": {"to": TLS_ENTRY_POINT, "scheme": "https", "permanent": True}}}
            }
        },
    }


class MetalLB(pulumi.ComponentResource):
    """MetalLB in layer-2 mode with one address pool, and K3s's Traefik pinned to the pool's first address."""

    load_balancer_address: str
    """The address Traefik, the cluster's one public entry point, answers on."""
    release: k8s.helm.v3.Release

    def __init__(self, name: str, args: MetalLBArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sophia:platform:MetalLB", name, None, opts)
        ns = namespace(NAMESPACE, PodSecurity.PRIVILEGED, self)  # the speaker needs host networking
        self.release = release(
            "metallb",
            METALLB,
            ns=ns,
            values=metallb_values(),
            mirror=args.chart_mirror,
            parent=self,
            depends_on=[args.monitoring],
        )
        child = pulumi.ResourceOptions(parent=self, depends_on=[self.release])
        pool = k8s.apiextensions.CustomResource(
            "metallb-pool",
            api_version=API_VERSION,
            kind="IPAddressPool",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=POOL_NAME, namespace=NAMESPACE),
            spec={"addresses": [block.text for block in args.network.load_balancer_pool], "autoAssign": True},
            opts=child,
        )
        k8s.apiextensions.CustomResource(
            "metallb-l2",
            api_version=API_VERSION,
            kind="L2Advertisement",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=POOL_NAME, namespace=NAMESPACE),
            spec={"ipAddressPools": [POOL_NAME]},
            opts=child,
        )
        self.load_balancer_address = args.network.ingress_address
        # K3s installs Traefik from its own HelmChart; a HelmChartConfig of the same name is K3s's
        # documented way to override its values. The CRD ships with K3s, so only the pool is waited for.
        k8s.apiextensions.CustomResource(
            "traefik-config",
            api_version="helm.cattle.io/v1",
            kind="HelmChartConfig",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=TRAEFIK_HELM_CHART, namespace=TRAEFIK_NAMESPACE),
            spec={"valuesContent": yaml.safe_dump(traefik_values(self.load_balancer_address), sort_keys=True)},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[pool, args.monitoring]),
        )
        self.register_outputs({"loadBalancerAddress": self.load_balancer_address})
