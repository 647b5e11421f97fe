"""What every add-on builds the same way: its namespace, its Helm release, container sizes, GPU placement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.gpu import ARCH_LABEL, GPU_AGENT_TOLERATIONS, GPU_PRESENT_LABEL
from components.platform.charts import Chart
from components.pod_security import PodSecurity, pod_security_labels
from components.settings.cluster import Arch

JSON = dict[str, Any]


def namespace(name: str, enforce: PodSecurity, parent: pulumi.Resource) -> k8s.core.v1.Namespace:
    return k8s.core.v1.Namespace(
        name,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=name,
            labels={"app.kubernetes.io/managed-by": "pulumi", **pod_security_labels(enforce)},
        ),
        opts=pulumi.ResourceOptions(parent=parent),
    )


def release(
    resource_name: str,
    chart: Chart,
    *,
    ns: k8s.core.v1.Namespace,
    values: JSON,
    mirror: str | None,
    parent: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource] = (),
) -> k8s.helm.v3.Release:
    """A Helm release of `chart` at its pinned version, from `mirror` if set, else its official repository.

    The release name is fixed (Pulumi would otherwise add a random suffix), because the chart's
    object names, and so the Services other objects point at, are derived from it. The chart is
    fetched where `pulumi up` runs (the provider runs Helm), so the mirror must be reachable there.
    """
    return k8s.helm.v3.Release(
        resource_name,
        k8s.helm.v3.ReleaseArgs(
            name=resource_name,
            chart=chart.name,
            version=chart.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=chart.repository if mirror is None else mirror),
            namespace=ns.metadata.name,
            create_namespace=False,
            values=values,
            # A failed upgrade leaves nothing half-created behind for the next `pulumi up` to trip on.
            cleanup_on_fail=True,
            max_history=10,
        ),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[ns, *depends_on]),
    )


def resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> JSON:
    """A container's requests and limits, in the shape every chart passes through unchanged."""
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}}


def gpu_node_affinity() -> JSON:
    """Every GPU machine of either architecture: the label the cluster puts on GPU nodes at join time."""
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": GPU_PRESENT_LABEL, "operator": "In", "values": ["true"]},
                            {"key": ARCH_LABEL, "operator": "In", "values": [a.value for a in Arch]},
                        ]
                    }
                ]
            }
        }
    }


def gpu_tolerations() -> list[JSON]:
    """The agents on every GPU machine tolerate what the settings allowed its taints to be."""
    return [t.as_dict() for t in GPU_AGENT_TOLERATIONS]


def https_url(host: str) -> str:
    return f"https://{host}"
