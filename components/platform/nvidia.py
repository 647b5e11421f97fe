"""The NVIDIA device plugin (the `nvidia.com/gpu` resource) and the DCGM exporter (GPU metrics) on every GPU machine."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.gpu import RUNTIME_CLASS
from components.platform import namespaces
from components.platform.charts import DCGM_EXPORTER, NVIDIA_DEVICE_PLUGIN
from components.platform.common import (
    JSON,
    PodSecurity,
    gpu_node_affinity,
    gpu_tolerations,
    namespace,
    release,
    resources,
)

NAMESPACE = namespaces.NVIDIA
DCGM_RELEASE = "dcgm-exporter"
DCGM_PORT = 9400
DCGM_PORT_NAME = "metrics"
"""The chart's Service port name (templates/service.yaml)."""
DCGM_SELECTOR = {"app.kubernetes.io/name": DCGM_RELEASE, "app.kubernetes.io/instance": DCGM_RELEASE}
"""dcgm-exporter.selectorLabels for release `dcgm-exporter` (name = chart name, instance = release)."""
SCRAPE_INTERVAL = "15s"


@dataclass(frozen=True)
class NvidiaArgs:
    monitoring: pulumi.Resource
    """The release installing the ServiceMonitor CRD."""


def device_plugin_values() -> JSON:
    return {
        # K3s registers the `nvidia` containerd runtime and RuntimeClass; without it the plugin sees no GPU.
        "runtimeClassName": RUNTIME_CLASS,
        "affinity": gpu_node_affinity(),
        "tolerations": gpu_tolerations(),
        "gfd": {"enabled": False},
        "resources": resources("10m", "32Mi", "100m", "128Mi"),
    }


def dcgm_exporter_values() -> JSON:
    return {
        "runtimeClassName": RUNTIME_CLASS,
        "affinity": gpu_node_affinity(),
        "tolerations": gpu_tolerations(),
        "service": {"port": DCGM_PORT},
        "serviceMonitor": {"enabled": False},
        "resources": resources("100m", "128Mi", "500m", "512Mi"),
    }


# Both images are multi-arch (linux/amd64 and linux/arm64: k8s-device-plugin v0.20.0
# deployments/container/multi-arch.mk, dcgm-exporter 4.5.3-4.8.2 Makefile PLATFORMS), so one
# DaemonSet each covers the x86 machines and the GH200s.


class NvidiaGpu(pulumi.ComponentResource):
    """Device plugin and DCGM exporter on every GPU machine of both architectures, scraped by Prometheus."""

    device_plugin: k8s.helm.v3.Release
    dcgm_exporter: k8s.helm.v3.Release

    def __init__(self, name: str, args: NvidiaArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sophia:platform:NvidiaGpu", name, None, opts)
        # Both mount host paths (device-plugin socket, pod-resources) and DCGM needs SYS_ADMIN.
        ns = namespace(NAMESPACE, PodSecurity.PRIVILEGED, self)
        self.device_plugin = release(
            "nvidia-device-plugin", NVIDIA_DEVICE_PLUGIN, ns=ns, values=device_plugin_values(), parent=self
        )
        self.dcgm_exporter = release(DCGM_RELEASE, DCGM_EXPORTER, ns=ns, values=dcgm_exporter_values(), parent=self)
        k8s.apiextensions.CustomResource(
            "dcgm-exporter-metrics",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=DCGM_RELEASE, namespace=NAMESPACE),
            spec={
                "selector": {"matchLabels": DCGM_SELECTOR},
                "namespaceSelector": {"matchNames": [NAMESPACE]},
                "endpoints": [{"port": DCGM_PORT_NAME, "path": "/metrics", "interval": SCRAPE_INTERVAL}],
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.monitoring, self.dcgm_exporter]),
        )
        self.register_outputs({})
