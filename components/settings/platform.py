"""What an operator changes about the platform add-ons: monitoring's retention and disks, GPU sharing,
and the Helm repository the charts come from when the official ones are out of reach.

Chart versions, namespaces and container sizes of the add-ons are facts of `components.platform`;
the Argo CD Applications are the `gitops` section. This module also holds the one rule joining the
two: an Argo CD Application may only sync into a namespace nobody else manages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from components import namespaces as platform_namespaces
from components.settings.catalogue import NAMESPACES as APP_NAMESPACES
from components.settings.gitops import GitOpsSettings
from components.settings.reader import Problems, Value

# Prometheus' own duration syntax (`15d`, `12h`, `2w`), one unit: retention is a single number an
# operator reads at a glance.
DURATION = re.compile(r"^[1-9][0-9]{0,3}(h|d|w)$")
STORAGE = re.compile(r"^[1-9][0-9]{0,4}Gi$")

# Prometheus stops writing at `retentionSize`; keeping it below the volume leaves room for the WAL
# and compaction, which a full disk would otherwise break.
PROMETHEUS_DISK_SHARE = 0.8

# A Helm chart repository serving every chart at its pinned version under its official name: an
# internal mirror (Artifactory, Harbor, Nexus, ChartMuseum) for clusters whose network cannot reach
# the official repositories. Read as every mirror is (Value.mirror_url): https, plain http only on
# the loopback of the machine running `pulumi up`, where no network lies between (the e2e's local
# repository).
CHART_MIRROR_WHAT = "a Helm repository"

# What every Argo CD Application follows (seed 000: an Application on a branch that did not exist).
GITOPS_BRANCH = "main"


@dataclass(frozen=True)
class MonitoringSettings:
    retention: str
    """How long Prometheus keeps samples, e.g. `15d`."""
    prometheus_storage: str
    """Size of Prometheus' PVC, e.g. `50Gi`."""
    alertmanager_storage: str
    grafana_storage: str

    @property
    def prometheus_retention_size(self) -> str:
        """The most Prometheus may keep on its volume (Prometheus' `GB` are GiB)."""
        gib = int(self.prometheus_storage.removesuffix("Gi"))
        return f"{max(1, int(gib * PROMETHEUS_DISK_SHARE))}GB"


# More time-slices of one GPU than this is no longer sharing a GPU but starving every pod on it.
MAX_GPU_SHARING = 8


@dataclass(frozen=True)
class GpuSharing:
    """NVIDIA device plugin time-slicing: each physical GPU is advertised `replicas` times.

    1 is no sharing: one pod per GPU, as the hardware has. More lets that many pods run on one GPU,
    interleaved in time and sharing its memory with no isolation between them.
    """

    replicas: int = 1

    @property
    def shared(self) -> bool:
        return self.replicas > 1


NO_SHARING = GpuSharing()
"""One pod per GPU: the default when `platform.gpuSharing` is not set."""


@dataclass(frozen=True)
class PlatformSettings:
    monitoring: MonitoringSettings
    gpu_sharing: GpuSharing = NO_SHARING
    chart_mirror: str | None = None
    """`platform.chartMirror`: one Helm repository every release pulls its chart from instead of the
    chart's official one (same name, same pinned version); None pulls from the official ones."""


def _storage(value: Value) -> str:
    return value.string(pattern=STORAGE, what="a volume size in whole Gi such as 50Gi")


def _read_monitoring(value: Value) -> MonitoringSettings:
    section = value.section()
    monitoring = MonitoringSettings(
        retention=section.required("retention").string(
            pattern=DURATION, what="a duration in hours, days or weeks such as 15d"
        ),
        prometheus_storage=_storage(section.required("prometheusStorage")),
        alertmanager_storage=_storage(section.required("alertmanagerStorage")),
        grafana_storage=_storage(section.required("grafanaStorage")),
    )
    section.close()
    return monitoring


def _read_gpu_sharing(value: Value | None) -> GpuSharing:
    if value is None:
        return NO_SHARING
    section = value.section()
    sharing = GpuSharing(section.required("replicas").integer(minimum=1, maximum=MAX_GPU_SHARING))
    section.close()
    return sharing


def read_platform(value: Value) -> PlatformSettings:
    section = value.section()
    monitoring = _read_monitoring(section.required("monitoring"))
    gpu_sharing = _read_gpu_sharing(section.optional("gpuSharing"))
    mirror = section.optional("chartMirror")
    chart_mirror = None if mirror is None else mirror.mirror_url(CHART_MIRROR_WHAT)
    section.close()
    return PlatformSettings(monitoring, gpu_sharing, chart_mirror)


def pulumi_namespaces() -> frozenset[str]:
    """The namespaces whose objects this program creates, and Kubernetes' own."""
    return frozenset((*platform_namespaces.PLATFORM, *platform_namespaces.KUBERNETES, *APP_NAMESPACES.values()))


def check_gitops_ownership(
    namespace: str, gitops: GitOpsSettings, problems: Problems, managed_namespaces: Iterable[str] | None = None
) -> None:
    """Argo CD syncs only into namespaces Pulumi puts nothing in: no object is owned by both."""
    managed = frozenset(pulumi_namespaces() if managed_namespaces is None else managed_namespaces)
    if gitops.applications and gitops.branch != GITOPS_BRANCH:
        problems.add(
            f"{namespace}:gitops.branch",
            f"must be {GITOPS_BRANCH!r}: Argo CD Applications follow {GITOPS_BRANCH} (got {gitops.branch!r})",
        )
    for i, app in enumerate(gitops.applications):
        if app.namespace in managed:
            problems.add(
                f"{namespace}:gitops.applications[{i}].namespace",
                f"{app.namespace!r} is managed by Pulumi; an Argo CD Application needs a namespace of its own",
            )
