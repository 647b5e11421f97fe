"""How GPUs are named on this cluster: the labels, taint, runtime and resource every layer shares.

K3s finds `/usr/bin/nvidia-container-runtime` at start and registers the `nvidia` containerd
runtime; K3s >= v1.29 ships the matching RuntimeClass. The NVIDIA device plugin's default affinity
only schedules on nodes labelled `nvidia.com/gpu.present=true`, so the cluster sets that label at
join time, and a GPU pod needs all four of: the resource limit, the runtime class, a toleration of
the GPU taint and node affinity on the GPU type label (a nodeSelector alone guarantees nothing).
"""

from typing import Final

GPU_RESOURCE: Final = "nvidia.com/gpu"
RUNTIME_CLASS: Final = "nvidia"
GPU_PRESENT_LABEL: Final = "nvidia.com/gpu.present"
GPU_TYPE_LABEL: Final = "gpu-type"
GPU_TAINT_KEY: Final = "nvidia.com/gpu"
ARCH_LABEL: Final = "kubernetes.io/arch"
