"""How GPUs are named on this cluster: the labels, taint, runtime and resource every layer shares.

K3s finds `/usr/bin/nvidia-container-runtime` at start and registers the `nvidia` containerd
runtime; K3s >= v1.29 ships the matching RuntimeClass. The NVIDIA device plugin's default affinity
only schedules on nodes labelled `nvidia.com/gpu.present=true`, so the cluster sets that label at
join time, and a GPU pod needs all four of: the resource limit, the runtime class, a toleration of
the GPU taint and node affinity on the GPU type label (a nodeSelector alone guarantees nothing).
"""

from dataclasses import dataclass
from typing import Final

GPU_RESOURCE: Final = "nvidia.com/gpu"
RUNTIME_CLASS: Final = "nvidia"
GPU_PRESENT_LABEL: Final = "nvidia.com/gpu.present"
GPU_TYPE_LABEL: Final = "gpu-type"
GPU_TAINT_KEY: Final = "nvidia.com/gpu"
ARCH_LABEL: Final = "kubernetes.io/arch"


@dataclass(frozen=True)
class Toleration:
    """A pod's toleration, matched against a node's taint as the Kubernetes scheduler matches it."""

    key: str
    operator: str = "Exists"
    """`Exists` matches any value of the key; `Equal` only `value`."""
    effect: str = ""
    """Empty matches every effect."""
    value: str = ""

    def tolerates(self, key: str, value: str, effect: str) -> bool:
        if self.effect and self.effect != effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == key
        return self.key == key and self.value == value

    def as_dict(self) -> dict[str, str]:
        fields = {"key": self.key, "operator": self.operator, "value": self.value, "effect": self.effect}
        return {k: v for k, v in fields.items() if v}

    def __str__(self) -> str:
        value = f"={self.value}" if self.operator == "Equal" else ""
        return f"{self.key}{value}:{self.effect or '(any effect)'}"


# Taint checks in the settings and the tolerations the pods get are these same objects, so an
# operator's taint that a GPU pod would not tolerate is refused before anything runs.
GPU_POD_TOLERATIONS: Final = (Toleration(GPU_TAINT_KEY, "Exists", "NoSchedule"),)
"""What a GPU workload's pods tolerate: the GPU taint, any value, as the GPU machines set it."""
GPU_AGENT_TOLERATIONS: Final = (Toleration(GPU_TAINT_KEY), Toleration("CriticalAddonsOnly"))
"""What the per-GPU-machine agents (device plugin, DCGM exporter) tolerate: the GPU taint with any value
and effect, and K3s's CriticalAddonsOnly taint of dedicated servers."""
GPU_AGENTS: Final = "the NVIDIA device plugin and dcgm-exporter"
