"""The platform alerts: rendered as a PrometheusRule, each reading metrics its exporter really publishes."""

from __future__ import annotations

from typing import Any

import pytest

from components.platform.alerts import (
    EXPORTED_METRICS,
    RULE_NAME,
    longest_gap_hours,
    metric_names,
)
from render.model import HELM_RELEASE, Rendered

EXPECTED = {
    "SophiaEtcdSnapshotTooOld",
    "SophiaCertificateExpiresSoon",
    "SophiaGpuXidError",
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
    [("0 */6 * * *", 6), ("30 3 * * *", 24), ("*/15 * * * *", 1), ("0 2 * * 0", 168), ("0 1,13 * * *", 12)],
)
def test_the_longest_gap_of_a_schedule(cron: str, hours: int) -> None:
    assert longest_gap_hours(cron) == hours


def test_the_postgres_backup_alert_allows_two_schedule_periods(production: Rendered) -> None:
    (rule,) = [r for r in _rules(production) if r["alert"] == "SophiaPostgresBackupTooOld"]
    assert rule["expr"].endswith("> 48 * 3600")  # a base backup every night at 03:00


def test_cert_manager_and_k3s_are_scraped_for_the_alerts(production: Rendered) -> None:
    # cert-manager's through its chart's own ServiceMonitor, and nothing else claims that object's name.
    (release,) = [r for r in production.by_type(HELM_RELEASE) if r["inputs"]["chart"] == "cert-manager"]
    assert release["inputs"]["values"]["prometheus"]["servicemonitor"]["enabled"] is True
    assert not [m for m in production.objects("ServiceMonitor") if m["metadata"]["namespace"] == "cert-manager"]
    servers = [
        c for c in production.by_type("command:remote:Command") if c["name"] == "sophia-production-instance-install"
    ]
    assert "supervisor-metrics: true" in servers[0]["inputs"]["create"]
