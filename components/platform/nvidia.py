"""The NVIDIA device plugin (the `nvidia.com/gpu` resource) and the DCGM exporter (GPU metrics) on every GPU machine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components import namespaces
from components.gpu import GPU_RESOURCE, RUNTIME_CLASS
from components.platform.charts import DCGM_EXPORTER, NVIDIA_DEVICE_PLUGIN
from components.platform.common import (
    JSON,
    gpu_node_affinity,
    gpu_tolerations,
    namespace,
    release,
    resources,
)
from components.pod_security import PodSecurity
from components.settings.platform import NO_SHARING, GpuSharing

NAMESPACE = namespaces.NVIDIA
DCGM_RELEASE = "dcgm-exporter"
DCGM_PORT = 9400
DCGM_PORT_NAME = "metrics"
"""The chart's Service port name (templates/service.yaml)."""
DCGM_SELECTOR = {"app.kubernetes.io/name": DCGM_RELEASE, "app.kubernetes.io/instance": DCGM_RELEASE}
"""dcgm-exporter.selectorLabels for release `dcgm-exporter` (name = chart name, instance = release)."""
SCRAPE_INTERVAL = "15s"

DEVICE_PLUGIN_CONFIG: Final = "time-slicing"
"""The one entry of the chart's `config.map` (its ConfigMap key) and `config.default`: every GPU node runs it."""
DEVICE_PLUGIN_CONFIG_VERSION: Final = "v1"
"""The device plugin's config file format (api/config/v1 of k8s-device-plugin v0.20.0)."""
DEVICE_PLUGIN_RESOURCES = resources("10m", "32Mi", "100m", "128Mi")
# With a `config`, the chart adds its config-manager (an init container and a sidecar watching the
# node's `nvidia.com/device-plugin.config` label) and offers no value to size them: the namespace's
# LimitRange gives them these, the same as the plugin itself.
CONTAINER_DEFAULTS = DEVICE_PLUGIN_RESOURCES
LIMIT_RANGE = "container-defaults"


@dataclass(frozen=True)
class NvidiaArgs:
    monitoring: pulumi.Resource
    """The release installing the ServiceMonitor CRD."""
    chart_mirror: str | None
    """`platform.chartMirror`: the Helm repository to pull the charts from instead of their official ones."""
    gpu_sharing: GpuSharing = NO_SHARING
    """How many pods may share one GPU (time-slicing); 1 is no sharing."""


def device_plugin_config(sharing: GpuSharing) -> str:
    """The plugin's config file: each GPU advertised `replicas` times under its usual resource name.

    The name stays `nvidia.com/gpu` (renameByDefault false), so workloads ask for GPUs as before;
    failRequestsGreaterThanOne refuses a pod that asks for two time-slices as if they were two GPUs
    (the settings refuse such a service first). The trade-off: pods on one GPU share its memory and
    its faults, with no isolation (k8s-device-plugin README, "With CUDA Time-Slicing").
    """
    document = {
        "version": DEVICE_PLUGIN_CONFIG_VERSION,
        "sharing": {
            "timeSlicing": {
                "renameByDefault": False,
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": GPU_RESOURCE, "replicas": sharing.replicas}],
            }
        },
    }
    return yaml.safe_dump(document, sort_keys=False)


def device_plugin_values(sharing: GpuSharing = NO_SHARING) -> JSON:
    values: JSON = {
        # K3s registers the `nvidia` containerd runtime and RuntimeClass; without it the plugin sees no GPU.
        "runtimeClassName": RUNTIME_CLASS,
        "affinity": gpu_node_affinity(),
        "tolerations": gpu_tolerations(),
        "gfd": {"enabled": False},
        "resources": DEVICE_PLUGIN_RESOURCES,
    }
    if sharing.shared:
        # The plugin refuses time-slicing with fewer than 2 replicas: without sharing, no config at all.
        values["config"] = {
            "map": {DEVICE_PLUGIN_CONFIG: device_plugin_config(sharing)},
            "default": DEVICE_PLUGIN_CONFIG,
        }
    return values


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

    limit_range: k8s.core.v1.LimitRange
    device_plugin: k8s.helm.v3.Release
    dcgm_exporter: k8s.helm.v3.Release

    def __init__(self, name: str, args: NvidiaArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sophia:platform:NvidiaGpu", name, None, opts)
        # Both mount host paths (device-plugin socket, pod-resources) and DCGM needs SYS_ADMIN.
        ns = namespace(NAMESPACE, PodSecurity.PRIVILEGED, self)
        self.limit_range = k8s.core.v1.LimitRange(
            f"{NAMESPACE}-{LIMIT_RANGE}",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=LIMIT_RANGE, namespace=NAMESPACE),
            spec=k8s.core.v1.LimitRangeSpecArgs(
                limits=[
                    k8s.core.v1.LimitRangeItemArgs(
                        type="Container",
                        default_request=CONTAINER_DEFAULTS["requests"],
                        default=CONTAINER_DEFAULTS["limits"],
                    )
                ]
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ns]),
        )
        self.device_plugin = release(
            "nvidia-device-plugin",
            NVIDIA_DEVICE_PLUGIN,
            ns=ns,
            values=device_plugin_values(args.gpu_sharing),
            mirror=args.chart_mirror,
            parent=self,
            # Pods created before the LimitRange would run unsized.
            depends_on=[self.limit_range],
        )
        self.dcgm_exporter = release(
            DCGM_RELEASE, DCGM_EXPORTER, ns=ns, values=dcgm_exporter_values(), mirror=args.chart_mirror, parent=self
        )
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
