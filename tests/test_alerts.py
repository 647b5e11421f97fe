"""The platform alerts: rendered as a PrometheusRule, each reading metrics its exporter really publishes."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from components.k3s import LOCAL_STORAGE_CLASS
from components.platform.alerts import (
    EXPORTED_METRICS,
    RULE_NAME,
    STORAGE_MOUNTPOINTS,
    _ancestors,
    longest_gap_hours,
    metric_names,
)
from components.platform.charts import KUBE_PROMETHEUS_STACK
from render.model import HELM_RELEASE, Rendered
from tests.chart_packages import chart_yaml, merged

EXPECTED = {
    "SophiaEtcdSnapshotTooOld",
    "SophiaCertificateExpiresSoon",
    "SophiaGpuXidError",
    "SophiaGpuNeedsAttention",
    "SophiaGpuTooHot",
    "SophiaGpuMemoryNearlyFull",
    "SophiaNodeNotReady",
    "SophiaVolumeNearlyFull",
    "SophiaPostgresBackupTooOld",
}


def _rules(production: Rendered) -> list[dict[str, Any]]:
    """Every alert of every PrometheusRule: the platform's and the database's own."""
    (platform,) = [m for m in production.objects("PrometheusRule") if m["metadata"]["name"] == RULE_NAME]
    assert platform["metadata"]["namespace"] == "monitoring"
    return [r for m in production.objects("PrometheusRule") for group in m["spec"]["groups"] for r in group["rules"]]


def test_the_production_render_has_every_platform_alert(production: Rendered) -> None:
    assert {r["alert"] for r in _rules(production)} == EXPECTED


def test_every_alert_reads_only_metrics_its_exporter_publishes(production: Rendered) -> None:
    for rule in _rules(production):
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= EXPORTED_METRICS.keys(), (rule["alert"], names - EXPORTED_METRICS.keys())
    # Each metric names the exporter source it was read in.
    assert all(" " in source and "/" in source for source in EXPORTED_METRICS.values())


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('kube_node_status_condition{condition="Ready",status="true"} == 0', {"kube_node_status_condition"}),
        (
            '(sum(increase(k3s_etcd_snapshot_save_s3_duration_seconds_count{status="success"}[12h])) or vector(0)) < 1',
            {"k3s_etcd_snapshot_save_s3_duration_seconds_count"},
        ),
        (
            "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE) > 0.95",
            {"DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"},
        ),
        ("node_filesystem_avail_bytes < 1", {"node_filesystem_avail_bytes"}),
    ],
)
def test_metric_names_are_what_an_expression_reads(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_snapshot_alert_allows_two_schedule_periods(production: Rendered) -> None:
    (rule,) = [r for r in _rules(production) if r["alert"] == "SophiaEtcdSnapshotTooOld"]
    assert "[12h]" in rule["expr"]  # production snapshots every 6 hours
    assert rule["labels"] == {"severity": "critical"}


@pytest.mark.parametrize(
    ("cron", "hours"),
    [
        ("0 */6 * * *", 6),
        ("30 3 * * *", 24),
        ("*/15 * * * *", 1),
        ("0 2 * * 0", 168),
        ("0 2 * * 7", 168),  # 7 is Sunday too
        ("0 1,13 * * *", 12),
        ("0 3 1 * *", 31 * 24),  # a day of the month: taken as monthly
    ],
)
def test_the_longest_gap_of_a_schedule(cron: str, hours: int) -> None:
    assert longest_gap_hours(cron) == hours


def test_the_postgres_backup_alert_allows_two_schedule_periods(production: Rendered) -> None:
    (rule,) = [r for r in _rules(production) if r["alert"] == "SophiaPostgresBackupTooOld"]
    assert "> 48 * 3600" in rule["expr"]  # a base backup every night at 03:00
    assert rule["expr"].endswith("[48h])")  # and none at all for as long


def test_cert_manager_and_k3s_are_scraped_for_the_alerts(production: Rendered) -> None:
    # cert-manager's through its chart's own ServiceMonitor, and nothing else claims that object's name.
    (release,) = [r for r in production.by_type(HELM_RELEASE) if r["inputs"]["chart"] == "cert-manager"]
    assert release["inputs"]["values"]["prometheus"]["servicemonitor"]["enabled"] is True
    assert not [m for m in production.objects("ServiceMonitor") if m["metadata"]["namespace"] == "cert-manager"]
    servers = [
        c for c in production.by_type("command:remote:Command") if c["name"] == "sophia-production-instance-install"
    ]
    assert "supervisor-metrics: true" in servers[0]["inputs"]["create"]


def _walk(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def _storage_classes(production: Rendered) -> set[str]:
    """Every storage class a volume of the render asks for: in manifests and in chart values."""
    documents = [*production.manifests, *(r["inputs"]["values"] for r in production.by_type(HELM_RELEASE))]
    return {item for d in documents for key, item in _walk(d) if key == "storageClassName"}


def _release_values(production: Rendered, chart: str) -> dict[str, Any]:
    (release,) = [r for r in production.by_type(HELM_RELEASE) if r["inputs"]["chart"] == chart]
    values: dict[str, Any] = release["inputs"]["values"]
    return values


def _node_exporter_sees_the_storage(production: Rendered) -> bool:
    """node-exporter runs (the chart's default) and its filesystem collector keeps every mount point
    that can hold the volumes (the chart's own --collector.filesystem.mount-points-exclude)."""
    stack = merged(
        chart_yaml(KUBE_PROMETHEUS_STACK, "values.yaml"), _release_values(production, "kube-prometheus-stack")
    )
    if not stack["nodeExporter"]["enabled"]:
        return False
    flag = "--collector.filesystem.mount-points-exclude="
    (exclude,) = [a.removeprefix(flag) for a in stack["prometheus-node-exporter"]["extraArgs"] if a.startswith(flag)]
    return not any(re.search(exclude, mountpoint) for mountpoint in STORAGE_MOUNTPOINTS)


def _only_hostpath_volumes(production: Rendered) -> bool:
    return _storage_classes(production) == {LOCAL_STORAGE_CLASS}


# Per metric family, what in the render makes the exporter publish it for the objects this cluster
# has. `kubelet_volume_stats_*` is published for no local-path volume (hostPath: volume.MetricsNil).
PUBLISHED: dict[str, Callable[[Rendered], bool]] = {
    "node_filesystem_": _node_exporter_sees_the_storage,
    "kubelet_volume_stats_": lambda production: not _only_hostpath_volumes(production),
    "DCGM_FI_DEV_": lambda production: any(
        m["metadata"]["name"] == "dcgm-exporter" for m in production.objects("ServiceMonitor")
    ),
    "certmanager_": lambda production: _release_values(production, "cert-manager")["prometheus"]["servicemonitor"][
        "enabled"
    ],
    "kube_node_": lambda production: merged(
        chart_yaml(KUBE_PROMETHEUS_STACK, "values.yaml"), _release_values(production, "kube-prometheus-stack")
    )["kubeStateMetrics"]["enabled"],
    "k3s_etcd_snapshot_": lambda production: all(
        "supervisor-metrics: true" in c["inputs"]["create"]
        for c in production.by_type("command:remote:Command")
        if c["name"] == "sophia-production-instance-install"
    ),
    "barman_cloud_": lambda production: bool(production.objects("PodMonitor")),
}


@pytest.mark.parametrize(
    ("path", "mount_points"),
    [
        (
            "/var/lib/rancher/k3s/storage",
            ("/", "/var", "/var/lib", "/var/lib/rancher", "/var/lib/rancher/k3s", "/var/lib/rancher/k3s/storage"),
        ),
        ("/data/", ("/", "/data")),
    ],
)
def test_the_volume_alert_watches_every_mount_point_that_could_hold_the_volumes(
    path: str, mount_points: tuple[str, ...]
) -> None:
    """The volumes' filesystem is the innermost mounted one of these: the alert must read each of them.

    Called here, not only read from STORAGE_MOUNTPOINTS: that is computed once, when the module is
    imported, before a mutation run makes any change to the function (tests/mutation.py).
    """
    assert _ancestors(path) == mount_points


def test_every_alert_metric_is_published_for_the_objects_the_render_creates(production: Rendered) -> None:
    assert _only_hostpath_volumes(production), _storage_classes(production)
    for rule in _rules(production):
        for name in metric_names(rule["expr"]):
            (family,) = [prefix for prefix in PUBLISHED if name.startswith(prefix)]
            assert PUBLISHED[family](production), (rule["alert"], name)
