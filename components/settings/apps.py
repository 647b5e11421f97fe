"""What an operator changes about the Sophia services: replicas, resources, GPU, storage, external URLs.

The services themselves (ports, secrets, who calls whom) are facts of `components.settings.catalogue`;
this section must name every service of the catalogue and no other, and give each what it needs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from components.gpu import GPU_POD_TOLERATIONS
from components.rollout import pods_during_rollout, surge
from components.settings.catalogue import CATALOGUE, Service
from components.settings.cluster import GPU_MODELS, ClusterSettings, GpuModel, tolerations_text
from components.settings.images import ImageSettings
from components.settings.reader import Problems, Section, Value

CPU = re.compile(r"^([0-9]+m|[0-9]+(\.[0-9]{1,3})?)$")
MEMORY = re.compile(r"^[0-9]+(Ki|Mi|Gi|Ti)$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
HTTPS_URL = re.compile(r"^https://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[-A-Za-z0-9._~/]*)?$")
# CloudNativePG's ScheduledBackup takes six cron fields, seconds first (robfig/cron with seconds).
_CRON_FIELD = r"(\*|[0-9]{1,2}(-[0-9]{1,2})?)(/[1-9][0-9]?)?(,(\*|[0-9]{1,2}(-[0-9]{1,2})?)(/[1-9][0-9]?)?)*"
BACKUP_SCHEDULE = re.compile(rf"^{_CRON_FIELD}(\s+{_CRON_FIELD}){{5}}$")
# The Barman Cloud ObjectStore's retentionPolicy (its CRD's pattern).
BACKUP_RETENTION = re.compile(r"^[1-9][0-9]*[dwm]$")
RFC3339 = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:?[0-9]{2})$")
CLUSTER_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,48}[a-z0-9])?$")


def cpu_millis(text: str) -> Decimal:
    return Decimal(text[:-1]) if text.endswith("m") else Decimal(text) * 1000


def memory_bytes(text: str) -> int:
    return int(text[:-2]) * _BINARY[text[-2:]]


@dataclass(frozen=True)
class Amounts:
    cpu: str
    memory: str


@dataclass(frozen=True)
class Resources:
    requests: Amounts
    limits: Amounts


@dataclass(frozen=True)
class GpuRequest:
    model: GpuModel
    count: int


@dataclass(frozen=True)
class Replicas:
    min: int
    max: int

    @property
    def autoscaled(self) -> bool:
        """Every replicated service gets an HPA (invariant 6), even one whose min equals its max:
        the HPA then holds the count, and raising max is all it takes to let it scale."""
        return self.max > 1


@dataclass(frozen=True)
class Restore:
    """Bootstrap the database from another cluster's backups in the bucket (point in time optional)."""

    cluster: str
    target_time: str | None = None


@dataclass(frozen=True)
class DatabaseSettings:
    """A database run by CloudNativePG: the Cluster's name, its backups, where it starts from."""

    cluster: str
    backup_schedule: str | None
    """Six-field cron (seconds first); None: no base backups (and no WAL archive)."""
    backup_retention: str
    restore: Restore | None = None


@dataclass(frozen=True)
class ServiceSettings:
    resources: Resources
    replicas: Replicas
    gpu: GpuRequest | None
    storage: str | None
    """PVC size of a stateful service."""
    database: DatabaseSettings | None = None


@dataclass(frozen=True)
class Autoscaling:
    cpu_utilization: int
    memory_utilization: int


@dataclass(frozen=True)
class AppsSettings:
    autoscaling: Autoscaling
    qdrant_url: str
    services: Mapping[str, ServiceSettings]


def _cpu(value: Value) -> str:
    raw = value.raw
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = Value(value.path, str(raw), value.problems)
    text = value.string(pattern=CPU, what="a CPU quantity such as 500m or 2")
    if text and cpu_millis(text) <= 0:
        value.fail("must be more than 0")
        return ""
    return text


def _memory(value: Value) -> str:
    text = value.string(pattern=MEMORY, what="a memory quantity such as 512Mi or 4Gi")
    if text and memory_bytes(text) <= 0:
        value.fail("must be more than 0")
        return ""
    return text


def _amounts(value: Value) -> Amounts:
    section = value.section()
    amounts = Amounts(_cpu(section.required("cpu")), _memory(section.required("memory")))
    section.close()
    return amounts


def _resources(value: Value) -> Resources:
    section = value.section()
    requests = _amounts(section.required("requests"))
    limits_value = section.required("limits")
    limits = _amounts(limits_value)
    section.close()
    try:
        if requests.cpu and limits.cpu and cpu_millis(limits.cpu) < cpu_millis(requests.cpu):
            limits_value.problems.add(f"{limits_value.path}.cpu", f"{limits.cpu} is below the request {requests.cpu}")
    except InvalidOperation:
        pass
    if requests.memory and limits.memory and memory_bytes(limits.memory) < memory_bytes(requests.memory):
        limits_value.problems.add(
            f"{limits_value.path}.memory", f"{limits.memory} is below the request {requests.memory}"
        )
    return Resources(requests, limits)


def _replicas(value: Value) -> Replicas:
    section = value.section()
    low = section.required("min").integer(minimum=1, maximum=100)
    high_value = section.required("max")
    high = high_value.integer(minimum=1, maximum=100)
    section.close()
    if high < low:
        high_value.fail(f"must be at least min ({low}), got {high}")
        high = low
    return Replicas(low, high)


def _gpu(value: Value) -> GpuRequest | None:
    section = value.section()
    label = section.required("type").choice(sorted(GPU_MODELS))
    count = section.required("count").integer(minimum=1, maximum=16)
    section.close()
    return GpuRequest(GPU_MODELS[label], count) if label else None


def _service(value: Value, service: Service) -> ServiceSettings:
    section = value.section()
    resources = _resources(section.required("resources"))
    if service.stateful:
        # One instance with its own volume: more replicas would be more databases, not a bigger one.
        replicas = Replicas(1, 1)
        storage: str | None = _memory(section.required("storage"))
    else:
        replicas = _replicas(section.required("replicas"))
        storage = None
    gpu = _gpu(section.required("gpu")) if service.gpu else None
    database = _database(section, service) if service.managed_database else None
    section.close()
    return ServiceSettings(resources, replicas, gpu, storage, database)


def _database(section: Section, service: Service) -> DatabaseSettings:
    cluster_value = section.optional("cluster")
    cluster = cluster_value.string(pattern=CLUSTER_NAME, what="a Cluster name") if cluster_value else service.name
    schedule: str | None = None
    retention = "30d"
    backups_value = section.optional("backups")
    if backups_value:
        backups = backups_value.section()
        schedule = backups.required("schedule").string(
            pattern=BACKUP_SCHEDULE, what="a cron expression with six numeric fields, seconds first"
        )
        retention_value = backups.optional("retention")
        if retention_value:
            retention = retention_value.string(pattern=BACKUP_RETENTION, what="a retention such as 30d, 8w or 6m")
        backups.close()
    restore: Restore | None = None
    restore_value = section.optional("restoreFrom")
    if restore_value:
        restore_section = restore_value.section()
        source_value = restore_section.required("cluster")
        source = source_value.string(pattern=CLUSTER_NAME, what="a Cluster name")
        time_value = restore_section.optional("targetTime")
        target_time = (
            time_value.string(pattern=RFC3339, what="an RFC 3339 time such as 2026-11-28T12:00:00Z")
            if time_value
            else None
        )
        restore_section.close()
        if source and source == cluster:
            source_value.fail(
                f"must differ from the cluster's own name {cluster!r}: a restore bootstraps a new cluster,"
                " so give it a new name in cluster"
            )
        restore = Restore(source, target_time)
    return DatabaseSettings(cluster, schedule, retention, restore)


def https_url(value: Value) -> str:
    text = value.string(pattern=HTTPS_URL, what="an https URL on the default port (the egress policy allows 443)")
    return text.rstrip("/")


def read_apps(value: Value) -> AppsSettings:
    section = value.section()
    scaling = section.required("autoscaling").section()
    autoscaling = Autoscaling(
        scaling.required("cpuUtilization").integer(minimum=10, maximum=100),
        scaling.required("memoryUtilization").integer(minimum=10, maximum=100),
    )
    scaling.close()
    qdrant_url = https_url(section.required("qdrantUrl"))
    services_section = section.required("services").section()
    services = {s.name: _service(services_section.required(s.name), s) for s in CATALOGUE}
    services_section.close()
    section.close()
    return AppsSettings(autoscaling, qdrant_url, services)


def https_host(url: str) -> str:
    return urlsplit(url).hostname or ""


def check_apps(
    namespace: str,
    apps: AppsSettings,
    cluster: ClusterSettings,
    images: ImageSettings,
    problems: Problems,
    *,
    gpu_sharing: int = 1,
) -> None:
    """What the apps section asks of the rest of the configuration: image tags, GPU nodes, architectures.

    `gpu_sharing` is how many pods the device plugin lets share one GPU (`platform.gpuSharing.replicas`).
    """
    path = f"{namespace}:apps"
    sharing_key = f"{namespace}:platform.gpuSharing.replicas"
    # GPUs asked for so far on each model, by whom; a model is reported once, at the service that overflows it.
    placed: dict[str, list[tuple[str, int]]] = {}
    overflowing: set[str] = set()
    for service in CATALOGUE:
        for image in service.images:
            if image not in images.tags:
                problems.add(f"{namespace}:images.tags.{image}", f"is required (an image of {service.name})")
        wanted = apps.services.get(service.name)
        database = wanted.database if wanted is not None else None
        if database is not None and cluster.backups is None:
            for key, used in (("backups", database.backup_schedule), ("restoreFrom", database.restore)):
                if used is not None:
                    problems.add(
                        f"{path}.services.{service.name}.{key}",
                        f"needs {namespace}:cluster.backups, the bucket the backups are in",
                    )
        # A memory-backed /dev/shm counts against the container's memory limit. An empty limit was
        # invalid and is reported already.
        shm = service.shared_memory
        limit = wanted.resources.limits.memory if wanted is not None else ""
        if shm is not None and limit and memory_bytes(limit) <= memory_bytes(shm):
            problems.add(
                f"{path}.services.{service.name}.resources.limits.memory",
                f"must be above the {shm} of /dev/shm that {service.name} keeps in memory",
            )
        if wanted is None or wanted.gpu is None:
            continue
        key = f"{path}.services.{service.name}.gpu"
        model = wanted.gpu.model
        carriers = [n for n in cluster.nodes if n.gpu is not None and n.gpu.model == model]
        if not carriers:
            present = sorted({n.gpu.model.label for n in cluster.nodes if n.gpu is not None})
            problems.add(
                f"{key}.type",
                f"no node of the cluster has a {model.label} GPU (present: {', '.join(present) or 'none'})",
            )
            continue
        for i, node in enumerate(cluster.nodes):
            if node not in carriers:
                continue
            for j, taint in enumerate(node.taints):
                if taint.keeps_off(GPU_POD_TOLERATIONS):
                    problems.add(
                        f"{namespace}:cluster.nodes[{i}].taints[{j}]",
                        f"{taint} is not tolerated by {key}, which places {service.name} on {model.label} machine "
                        f"{node.name} (GPU pods tolerate {tolerations_text(GPU_POD_TOLERATIONS)})",
                    )
        if model.arch not in service.pod_arches:
            problems.add(
                f"{key}.type",
                f"{model.product} machines are {model.arch.value}, but the images of {service.name} are built for "
                f"{', '.join(sorted(a.value for a in service.pod_arches))}",
            )
        if gpu_sharing > 1 and wanted.gpu.count > 1:
            # A time-sliced GPU is handed out by reference: two of them may be the same GPU twice.
            problems.add(
                f"{key}.count",
                f"must be 1 while {sharing_key} is {gpu_sharing}: a time-sliced GPU is shared, "
                f"{wanted.gpu.count} of them are not {wanted.gpu.count} GPUs",
            )
            continue
        physical = sum(n.gpu.count for n in carriers if n.gpu is not None)
        advertised = physical * gpu_sharing
        extra = surge(service.stateful)
        needed = pods_during_rollout(wanted.replicas.max, service.stateful) * wanted.gpu.count
        before = placed.setdefault(model.label, [])
        total = needed + sum(n for _, n in before)
        before.append((service.name, needed))
        if total > advertised and model.label not in overflowing:
            overflowing.add(model.label)
            others = f", {total} with {', '.join(name for name, _ in before[:-1])}" if len(before) > 1 else ""
            problems.add(
                f"{key}.count",
                f"{service.name} needs ({wanted.replicas.max} replica(s) + {extra} surge) x {wanted.gpu.count} GPU(s)"
                f" = {needed} {model.label} GPU(s) during a rollout{others}; the cluster advertises {advertised}"
                f" ({physical} physical x {gpu_sharing} from {sharing_key})",
            )
