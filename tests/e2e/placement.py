"""Where pods may go: the scheduler's rules for what the e2e checks by hand (taints, node selectors,
required node affinity), and which workloads' pods only a running operator would create.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from components import namespaces
from components.gpu import GPU_RESOURCE, Toleration
from components.settings.cluster import Taint

JSON = Mapping[str, Any]


def settled(pod: JSON) -> bool:
    """Running and Ready, or (a Job's) Succeeded."""
    status = pod.get("status") or {}
    if status.get("phase") == "Succeeded":
        return True
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return status.get("phase") == "Running" and ready


def gpu_request(pod_spec: JSON) -> int:
    """The GPUs a pod takes: what its containers' limits (the device plugin's resource) ask for."""
    return sum(
        int((c.get("resources") or {}).get("limits", {}).get(GPU_RESOURCE, 0)) for c in pod_spec.get("containers") or []
    )


def pod_tolerations(pod_spec: JSON) -> tuple[Toleration, ...]:
    return tuple(
        Toleration(t.get("key", ""), t.get("operator", "Equal"), t.get("effect", ""), t.get("value", ""))
        for t in pod_spec.get("tolerations") or []
    )


def node_taints(node: JSON) -> tuple[Taint, ...]:
    return tuple(Taint(t["key"], t.get("value", ""), t["effect"]) for t in node.get("spec", {}).get("taints") or [])


def _matches(expression: JSON, labels: Mapping[str, str]) -> bool:
    key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if operator in ("Gt", "Lt") and key in labels:
        number, bound = int(labels[key]), int(values[0])
        return number > bound if operator == "Gt" else number < bound
    return False


def admits(placement: JSON, node: JSON) -> bool:
    """Whether a pod with this placement (nodeSelector, affinity, tolerations) may be scheduled on `node`,
    by the scheduler's NodeAffinity and TaintToleration filters."""
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (placement.get("nodeSelector") or {}).items()):
        return False
    required = ((placement.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if terms and not any(all(_matches(e, labels) for e in t.get("matchExpressions") or []) for t in terms):
        return False
    tolerations = pod_tolerations(placement)
    return not any(taint.keeps_off(tolerations) for taint in node_taints(node))


def _pod_spec_placement(spec: JSON) -> JSON:
    return {k: spec[k] for k in ("nodeSelector", "affinity", "tolerations") if k in spec}


def _cnpg_placement(spec: JSON) -> JSON:
    """CloudNativePG's `spec.affinity` (AffinityConfiguration) as the pod spec it writes."""
    affinity = spec.get("affinity") or {}
    placement: dict[str, Any] = {
        "nodeSelector": affinity.get("nodeSelector") or {},
        "tolerations": affinity.get("tolerations") or [],
    }
    if affinity.get("nodeAffinity"):
        placement["affinity"] = {"nodeAffinity": affinity["nodeAffinity"]}
    return placement


# Pods only a running operator creates, so they do not exist here: (API path of the kind, kind, what
# the operator copies into its pods' placement).
OPERATOR_WORKLOADS: Final[tuple[tuple[str, str, Callable[[JSON], JSON]], ...]] = (
    ("/apis/monitoring.coreos.com/v1/prometheuses", "Prometheus", _pod_spec_placement),
    ("/apis/monitoring.coreos.com/v1/alertmanagers", "Alertmanager", _pod_spec_placement),
    ("/apis/postgresql.cnpg.io/v1/clusters", "Cluster", _cnpg_placement),
)

# The DaemonSets that must have a Ready pod on every GPU machine, by namespace and the chart's
# `app.kubernetes.io/name`.
GPU_MACHINE_DAEMONSETS: Final = (
    (namespaces.NVIDIA, "nvidia-device-plugin"),
    (namespaces.NVIDIA, "dcgm-exporter"),
    (namespaces.MONITORING, "prometheus-node-exporter"),
)
