"""The alerts a platform engineer needs, as PrometheusRules: backups, certificates, GPUs, nodes, volumes.

Every metric an expression names is listed in `EXPORTED_METRICS` with the source file of the
exporter that publishes it, read at the version this cluster runs; a test holds every expression
to that list, so an alert cannot silently watch a metric that does not exist (a PromQL expression
over a missing metric is simply empty, and never fires).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_kubernetes as k8s

from components import namespaces
from components.k3s import LOCAL_STORAGE_PATH
from components.settings.cluster import ClusterSettings

NAMESPACE: Final = namespaces.MONITORING
RULE_NAME: Final = "sophia-platform"

EXPORTED_METRICS: Final[dict[str, str]] = {
    # K3s serves its own metrics on the supervisor port (6443) with `supervisor-metrics: true`, the
    # port the monitoring stack's apiserver job scrapes. A histogram: `_count` by status.
    "k3s_etcd_snapshot_save_s3_duration_seconds_count": "k3s-io/k3s pkg/etcd/snapshotmetrics/metrics.go (SaveS3Count)",
    # Labels `name`, `namespace` (the Certificate's) and `issuer_*`; scraped through the chart's
    # ServiceMonitor with honorLabels false, so the Certificate's namespace arrives as
    # `exported_namespace` and `namespace` is cert-manager's own (cert-manager v1.21.1 chart
    # templates/servicemonitor.yaml:65 `honorLabels`, values.yaml:687 `honorLabels: false`).
    "certmanager_certificate_expiration_timestamp_seconds": "cert-manager/cert-manager@v1.21.1 pkg/metrics/metrics.go",
    # A gauge holding the last XID the GPU reported, never reset (NVIDIA/dcgm-exporter#500).
    "DCGM_FI_DEV_XID_ERRORS": "NVIDIA/dcgm-exporter etc/default-counters.csv (also in dcp-metrics-included.csv)",
    "DCGM_FI_DEV_GPU_TEMP": "NVIDIA/dcgm-exporter etc/default-counters.csv (also in dcp-metrics-included.csv)",
    "DCGM_FI_DEV_FB_USED": "NVIDIA/dcgm-exporter etc/default-counters.csv (also in dcp-metrics-included.csv)",
    "DCGM_FI_DEV_FB_FREE": "NVIDIA/dcgm-exporter etc/default-counters.csv (also in dcp-metrics-included.csv)",
    # Served by each PostgreSQL instance's metrics port (9187) for the Barman Cloud plugin (CNPG-I metrics).
    "barman_cloud_cloudnative_pg_io_last_available_backup_timestamp": (
        "cloudnative-pg/plugin-barman-cloud internal/cnpgi/instance/metrics.go"
    ),
    "kube_node_status_condition": "kubernetes/kube-state-metrics internal/store/node.go",
    # Per mounted filesystem, labelled `mountpoint` (with the chart's --path.rootfs=/host/root, the
    # host's own paths) and `fstype`; node-exporter runs on every machine (kube-prometheus-stack).
    "node_filesystem_avail_bytes": "prometheus/node_exporter collector/filesystem_common.go",
    "node_filesystem_size_bytes": "prometheus/node_exporter collector/filesystem_common.go",
}

# Let's Encrypt certificates last 90 days and cert-manager renews them 30 days before the end; one
# with fewer than 14 days left has failed to renew for over two weeks.
CERTIFICATE_DAYS_LEFT: Final = 14
GPU_TEMPERATURE_CELSIUS: Final = 85
GPU_MEMORY_SHARE: Final = 0.95
VOLUME_FREE_SHARE: Final = 0.10

# XIDs that mean the GPU itself needs a reset, a reboot or replacement, not an application fix
# (NVIDIA "XID Errors" catalogue, docs.nvidia.com/deploy/xid-errors: 48 double-bit ECC error, 63/64
# ECC page retirement or row remapping event/failure, 74 NVLink error, 79 GPU has fallen off the bus,
# 92 high single-bit ECC rate, 94/95 contained/uncontained ECC error, 119/120 GSP RPC timeout/error).
# The rest (13, 31, 43, 45: an application's fault, page fault, stop or preemption) are the
# application's: they are still a new XID, a warning.
GPU_ATTENTION_XIDS: Final = (48, 63, 64, 74, 79, 92, 94, 95, 119, 120)
# How long a new XID is alerted on. dcgm-exporter 4.8.2 publishes DCGM_FI_DEV_XID_ERRORS as a gauge
# holding the last XID, never reset (NVIDIA/dcgm-exporter#500), so "an XID happened" is a change of
# that value: an XID equal to the previous one is not seen, and an exporter restart is not an XID.
XID_WINDOW: Final = "10m"


def _ancestors(path: str) -> tuple[str, ...]:
    """`/a/b` -> ('/', '/a', '/a/b'): every mount point that could hold `path`."""
    parts = path.strip("/").split("/")
    return ("/", *("/" + "/".join(parts[: i + 1]) for i in range(len(parts))))


STORAGE_MOUNTPOINTS: Final = _ancestors(LOCAL_STORAGE_PATH)
"""The mount points whose filesystem may hold K3s's local-path volumes (the innermost one that is
mounted does); node-exporter reports each mounted one."""


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    duration: str
    """How long the condition must hold (`for`)."""
    severity: str
    summary: str


def _field_matches(field: str, value: int, low: int, high: int) -> bool:
    for item in field.split(","):
        span, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (int(x) for x in span.split("-", 1))
        else:
            first = last = int(span)
        if first <= value <= last and (value - first) % step == 0:
            return True
    return False


def _on_day(field: str, day: int) -> bool:
    """Cron's day of week: 0 and 7 are both Sunday."""
    return _field_matches(field, day, 0, 7) or (day == 0 and _field_matches(field, 7, 0, 7))


def longest_gap_hours(cron: str) -> int:
    """The longest time between two runs of a five-field cron schedule, in whole hours (at least 1).

    Day-of-month and month other than `*` are not worth a calendar here: they are taken as a
    monthly schedule (31 days).
    """
    minute, hour, day_of_month, month, day_of_week = cron.split()
    if day_of_month != "*" or month != "*":
        return 31 * 24
    week = 7 * 24 * 60
    runs = [
        m
        for m in range(week)
        if _field_matches(minute, m % 60, 0, 59)
        and _field_matches(hour, m // 60 % 24, 0, 23)
        and _on_day(day_of_week, m // 1440)
    ]
    if not runs:
        return 31 * 24
    gaps = [b - a for a, b in zip(runs, [*runs[1:], runs[0] + week], strict=True)]
    return max(1, -(-max(gaps) // 60))


def _storage_filesystems() -> str:
    return 'mountpoint=~"' + "|".join(STORAGE_MOUNTPOINTS) + '"'


def alerts(cluster: ClusterSettings) -> tuple[Alert, ...]:
    rules = [
        Alert(
            "SophiaCertificateExpiresSoon",
            f"certmanager_certificate_expiration_timestamp_seconds - time() < {CERTIFICATE_DAYS_LEFT} * 86400",
            "1h",
            "warning",
            # `exported_namespace`: the Certificate's namespace (EXPORTED_METRICS above).
            "Certificate {{ $labels.exported_namespace }}/{{ $labels.name }} expires in less than "
            f"{CERTIFICATE_DAYS_LEFT} days: cert-manager has not renewed it (kubectl describe certificate)",
        ),
        Alert(
            "SophiaGpuXidError",
            # A new XID (the gauge changed) of any kind; the XID itself on the left, so it is the
            # alert's value. It clears once the window has passed without another.
            f"DCGM_FI_DEV_XID_ERRORS > 0 and changes(DCGM_FI_DEV_XID_ERRORS[{XID_WINDOW}]) > 0",
            "0m",
            "warning",
            "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reported XID {{ $value }} (NVIDIA XID catalogue)",
        ),
        Alert(
            "SophiaGpuNeedsAttention",
            "("
            + " or ".join(f"DCGM_FI_DEV_XID_ERRORS == {x}" for x in GPU_ATTENTION_XIDS)
            + f") and changes(DCGM_FI_DEV_XID_ERRORS[{XID_WINDOW}]) > 0",
            "0m",
            "critical",
            "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reported XID {{ $value }}, which means the GPU needs"
            " a reset, a reboot or replacement (NVIDIA XID catalogue): drain the node and see nvidia-smi -q",
        ),
        Alert(
            "SophiaGpuTooHot",
            f"DCGM_FI_DEV_GPU_TEMP > {GPU_TEMPERATURE_CELSIUS}",
            "10m",
            "warning",
            "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} has been above "
            f"{GPU_TEMPERATURE_CELSIUS} C for 10 minutes",
        ),
        Alert(
            "SophiaGpuMemoryNearlyFull",
            f"DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE) > {GPU_MEMORY_SHARE}",
            "15m",
            "warning",
            "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} has had over "
            f"{int(GPU_MEMORY_SHARE * 100)}% of its memory in use for 15 minutes (time-sliced pods share it)",
        ),
        Alert(
            "SophiaNodeNotReady",
            'kube_node_status_condition{condition="Ready",status="true"} == 0',
            "5m",
            "critical",
            "Node {{ $labels.node }} has not been Ready for 5 minutes",
        ),
        Alert(
            "SophiaVolumeNearlyFull",
            # Every volume is a local-path (hostPath) directory under LOCAL_STORAGE_PATH, which has no
            # volume stats of its own (components/k3s.py): the filesystem holding them is watched.
            f"node_filesystem_avail_bytes{{{_storage_filesystems()}}}"
            f" / node_filesystem_size_bytes{{{_storage_filesystems()}}} < {VOLUME_FREE_SHARE}",
            "15m",
            "warning",
            "Filesystem {{ $labels.mountpoint }} on {{ $labels.instance }}, which holds K3s's local-path volumes"
            f" ({LOCAL_STORAGE_PATH}), has less than {int(VOLUME_FREE_SHARE * 100)}% free",
        ),
    ]
    if cluster.backups is not None:
        # Two schedule periods without one successful upload: one missed run is tolerated (a server
        # restart), two are not. Summed over the servers: any server's upload counts.
        window = 2 * longest_gap_hours(cluster.etcd_snapshots.schedule)
        rules.insert(
            0,
            Alert(
                "SophiaEtcdSnapshotTooOld",
                "(sum(increase(k3s_etcd_snapshot_save_s3_duration_seconds_count"
                f'{{status="success"}}[{window}h])) or vector(0)) < 1',
                "15m",
                "critical",
                f"No etcd snapshot reached the backup bucket in {window}h (schedule "
                f"{cluster.etcd_snapshots.schedule!r}); the K3s log on the servers says why",
            ),
        )
    return tuple(rules)


_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_PROMQL_WORDS = frozenset(
    {"sum", "max", "min", "avg", "count", "by", "without", "on", "ignoring", "and", "or", "unless", "time",
     "vector", "increase", "rate", "max_over_time", "min_over_time", "absent", "bool", "offset", "changes",
     "absent_over_time"}
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (label matchers, strings and durations left out)."""
    plain = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    return {w for w in _IDENTIFIER.findall(plain) if w not in _PROMQL_WORDS}


class PlatformAlerts(pulumi.ComponentResource):
    """The PrometheusRule `monitoring/sophia-platform` (`sophia:platform:PlatformAlerts`).

    cert-manager's metrics, which the certificate alert reads, are scraped through the cert-manager
    chart's own ServiceMonitor (`prometheus.servicemonitor.enabled`, components/platform/cert_manager.py).
    """

    rule: k8s.apiextensions.CustomResource

    def __init__(
        self,
        name: str,
        cluster: ClusterSettings,
        monitoring: pulumi.Resource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sophia:platform:PlatformAlerts", name, None, opts)
        rules = alerts(cluster)
        self.rule = k8s.apiextensions.CustomResource(
            RULE_NAME,
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=RULE_NAME, namespace=NAMESPACE, labels={"app.kubernetes.io/managed-by": "pulumi"}
            ),
            spec={
                "groups": [
                    {
                        "name": "sophia-platform",
                        "rules": [
                            {
                                "alert": a.name,
                                "expr": a.expr,
                                "for": a.duration,
                                "labels": {"severity": a.severity},
                                "annotations": {"summary": a.summary},
                            }
                            for a in rules
                        ],
                    }
                ]
            },
            # The release installs the PrometheusRule CRD.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[monitoring]),
        )
        self.register_outputs({"alerts": [a.name for a in rules]})
