"""What a Lambda Cloud machine of each GPU model has besides its GPUs: the vCPUs and memory its node advertises.

One fact per instance type, used by the e2e's simulated nodes (tests/e2e/kwok.py) so that the
scheduler places pods against what the real machine would offer. Source: Lambda's instance page
(https://lambda.ai/instances) as transcribed on 2026-09-20 in api-evangelist/lambda-labs,
plans/lambda-labs-plans-pricing.yml ("1x NVIDIA A10: 30 vCPUs, 226 GiB RAM", "1x NVIDIA Quadro RTX
6000: 14 vCPUs, 46 GiB RAM", "1x NVIDIA GH200: 64 vCPUs, 432 GiB RAM", "1x NVIDIA H100 PCIe: 26
vCPUs, 225 GiB RAM", "1x NVIDIA B200 SXM6: 26 vCPUs, 360 GiB RAM"). That page no longer lists the
1x A100 (PCIe, 40 GB) and 1x A6000 types; their figures are Lambda's earlier listing of
gpu_1x_a100 (30 vCPUs, 200 GiB) and gpu_1x_a6000 (14 vCPUs, 46 GiB), for which no stored source
was found.

A real node's allocatable is its capacity less what the kubelet reserves; K3s reserves nothing by
default (no `--kube-reserved`/`--system-reserved`), so allocatable = capacity but for the kubelet's
default hard eviction threshold of 100Mi of memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final


@dataclass(frozen=True)
class InstanceType:
    name: str
    """Lambda's instance type name (its API's `instance_type_name`)."""
    vcpus: int
    memory_gib: int


# Keyed by (gpu-type label, GPU count): every machine of the stacks the e2e runs has one of these.
INSTANCE_TYPES: Final[Mapping[tuple[str, int], InstanceType]] = MappingProxyType(
    {
        ("a10", 1): InstanceType("gpu_1x_a10", 30, 226),
        ("a100", 1): InstanceType("gpu_1x_a100", 30, 200),
        ("a6000", 1): InstanceType("gpu_1x_a6000", 14, 46),
        ("rtx6000", 1): InstanceType("gpu_1x_rtx6000", 14, 46),
        ("h100", 1): InstanceType("gpu_1x_h100_pcie", 26, 225),
        ("b200", 1): InstanceType("gpu_1x_b200_sxm6", 26, 360),
        ("gh200", 1): InstanceType("gpu_1x_gh200", 64, 432),
    }
)
# The kubelet's default `--eviction-hard` memory.available threshold, withheld from allocatable.
EVICTION_HARD_MEMORY_MI: Final = 100


def instance_type(gpu_label: str, count: int) -> InstanceType:
    try:
        return INSTANCE_TYPES[(gpu_label, count)]
    except KeyError:
        raise KeyError(
            f"no Lambda instance type with {count} x {gpu_label} in tests/e2e/instances.py: add its vCPUs and memory"
        ) from None
