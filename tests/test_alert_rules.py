"""Every alert of every rendered PrometheusRule, run by Prometheus's own rule unit tests (`promtool test rules`).

For each alert three histories: one that must fire it (with the labels and the summary an operator
reads), one that must not, and the metric absent altogether. Absence is where an alert over a
missing series silently never fires: the alerts that watch for something that should have happened
(a snapshot, a backup) must fire when their metric does not exist, and the others must stay quiet.

promtool is Prometheus v3.14.0's, the version kube-prometheus-stack 88.5.3 deploys, built from the Go
module proxy by tests/e2e/engine/build.sh (`make promtool`; `make test` builds it first). Without it
these tests fail, naming the binary: they never skip.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from render.model import Rendered
from render.stack import PROJECT_DIR
from tests import mutation

BUILD = PROJECT_DIR / "tests" / "e2e" / "engine" / "build.sh"

Labels = dict[str, str]


def _promtool() -> Path:
    """SOPHIA_PROMTOOL, or where build.sh puts promtool for the pinned version."""
    if os.environ.get("SOPHIA_PROMTOOL"):
        return Path(os.environ["SOPHIA_PROMTOOL"])
    found = subprocess.run([str(BUILD), "--promtool"], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        pytest.fail(f"{BUILD} --promtool failed: {found.stderr.strip()}")
    return Path(found.stdout.strip())


@pytest.fixture(scope="module")
def promtool() -> Path:
    path = _promtool()
    if not os.access(path, os.X_OK):
        pytest.fail(f"promtool is not built ({path} is missing): run `make promtool` (make test builds it)")
    return path


@dataclass(frozen=True)
class Series:
    name: str
    labels: Labels
    values: str
    """promtool's expanding notation: `a+bxn` (n more samples, each b more), `_` for no sample."""

    def text(self) -> str:
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()))
        return f"{self.name}{{{inner}}}"


@dataclass(frozen=True)
class Fired:
    labels: Labels
    """The alert's labels besides `alertname`: the series' own and the rule's `severity`."""
    summary: str | None = None
    """The expanded summary; None: the rendered rule's text as it is (it has no template)."""


@dataclass(frozen=True)
class History:
    series: tuple[Series, ...]
    eval_time: str
    fired: tuple[Fired, ...] = ()
    interval: str = "1m"


@dataclass(frozen=True)
class Case:
    fires: History
    quiet: History
    absent: History
    also: tuple[History, ...] = field(default=())
    """Further histories that pin down a behaviour (an alert that must clear, a series it must ignore)."""


def repeat(value: float, times: int) -> str:
    """`value`, then `times` more samples of it; plain digits (an exponent's `+` would read as a step)."""
    return f"{value:.0f}x{times}" if float(value).is_integer() else f"{value}x{times}"


# The labels each exporter's series carry as Prometheus stores them (target labels included).
CERTIFICATE = {
    "name": "grafana-tls",
    "exported_namespace": "monitoring",
    "namespace": "cert-manager",
    "issuer_name": "letsencrypt",
    "issuer_kind": "ClusterIssuer",
    "issuer_group": "cert-manager.io",
    "job": "cert-manager",
}
GPU = {"gpu": "0", "Hostname": "sophia-ai-core", "UUID": "GPU-1", "modelName": "NVIDIA GH200", "namespace": "nvidia"}
NODE = {"node": "sophia-ai-core", "condition": "Ready", "status": "true", "job": "kube-state-metrics"}
ROOT_FS = {"mountpoint": "/", "fstype": "ext4", "device": "/dev/vda1", "instance": "192.0.2.11:9100"}
RUN_FS = {"mountpoint": "/run", "fstype": "tmpfs", "device": "tmpfs", "instance": "192.0.2.11:9100"}
POSTGRES = {"namespace": "sophia-data", "pod": "sophia-postgres-1"}
SNAPSHOT = {"status": "success", "job": "apiserver", "instance": "192.0.2.10:6443"}

XID = "DCGM_FI_DEV_XID_ERRORS"
SNAPSHOTS = "k3s_etcd_snapshot_save_s3_duration_seconds_count"
BACKUP = "barman_cloud_cloudnative_pg_io_last_available_backup_timestamp"
DAY = 86400


def _xid(values: str) -> Series:
    return Series(XID, GPU, values)


CASES: dict[str, Case] = {
    # Production snapshots every 6 hours: the alert allows two periods (12h) without an upload.
    # Scraped every 5 minutes (an instant vector looks back 5 minutes: sparser samples would be gaps).
    "SophiaEtcdSnapshotTooOld": Case(
        fires=History((Series(SNAPSHOTS, SNAPSHOT, repeat(4, 160)),), "13h", (Fired({"severity": "critical"}),), "5m"),
        quiet=History((Series(SNAPSHOTS, SNAPSHOT, "0x72 1x72 2x20"),), "13h", (), "5m"),
        absent=History((), "1h", (Fired({"severity": "critical"}),), "5m"),
    ),
    "SophiaCertificateExpiresSoon": Case(
        fires=History(
            (Series("certmanager_certificate_expiration_timestamp_seconds", CERTIFICATE, repeat(10 * DAY, 180)),),
            "2h",
            (
                Fired(
                    CERTIFICATE | {"severity": "warning"},
                    "Certificate monitoring/grafana-tls expires in less than 14 days: cert-manager has not renewed"
                    " it (kubectl describe certificate)",
                ),
            ),
        ),
        quiet=History(
            (Series("certmanager_certificate_expiration_timestamp_seconds", CERTIFICATE, repeat(60 * DAY, 180)),), "2h"
        ),
        absent=History((), "2h"),
    ),
    "SophiaGpuXidError": Case(
        # XID 31 at minute 30.
        fires=History(
            (_xid(f"{repeat(0, 30)} {repeat(31, 30)}"),),
            "35m",
            (Fired(GPU | {"severity": "warning"}, "GPU 0 on sophia-ai-core reported XID 31 (NVIDIA XID catalogue)"),),
        ),
        # The gauge holds the last XID for ever (an old one, from before the exporter started): no new XID.
        quiet=History((_xid(repeat(43, 120)),), "60m"),
        absent=History((), "30m"),
        # The alert clears once the window has passed without another XID: it does not latch on.
        also=(History((_xid(f"{repeat(0, 30)} {repeat(31, 90)}"),), "60m"),),
    ),
    "SophiaGpuNeedsAttention": Case(
        fires=History(
            (_xid(f"{repeat(0, 30)} {repeat(79, 30)}"),),
            "32m",
            (
                Fired(
                    GPU | {"severity": "critical"},
                    "GPU 0 on sophia-ai-core reported XID 79, which means the GPU needs a reset, a reboot or"
                    " replacement (NVIDIA XID catalogue): drain the node and see nvidia-smi -q",
                ),
            ),
        ),
        # An application's XID is the warning's, not this alert's.
        quiet=History((_xid(f"{repeat(0, 30)} {repeat(31, 30)}"),), "32m"),
        absent=History((), "30m"),
        also=(History((_xid(f"{repeat(0, 30)} {repeat(79, 90)}"),), "60m"),),
    ),
    "SophiaGpuTooHot": Case(
        fires=History(
            (Series("DCGM_FI_DEV_GPU_TEMP", GPU, repeat(90, 30)),),
            "15m",
            (Fired(GPU | {"severity": "warning"}, "GPU 0 on sophia-ai-core has been above 85 C for 10 minutes"),),
        ),
        quiet=History((Series("DCGM_FI_DEV_GPU_TEMP", GPU, repeat(70, 30)),), "15m"),
        absent=History((), "15m"),
    ),
    "SophiaGpuMemoryNearlyFull": Case(
        fires=History(
            (Series("DCGM_FI_DEV_FB_USED", GPU, repeat(97, 30)), Series("DCGM_FI_DEV_FB_FREE", GPU, repeat(3, 30))),
            "20m",
            (
                Fired(
                    GPU | {"severity": "warning"},
                    "GPU 0 on sophia-ai-core has had over 95% of its memory in use for 15 minutes (time-sliced pods"
                    " share it)",
                ),
            ),
        ),
        quiet=History(
            (Series("DCGM_FI_DEV_FB_USED", GPU, repeat(50, 30)), Series("DCGM_FI_DEV_FB_FREE", GPU, repeat(50, 30))),
            "20m",
        ),
        absent=History((), "20m"),
    ),
    "SophiaNodeNotReady": Case(
        fires=History(
            (Series("kube_node_status_condition", NODE, repeat(0, 30)),),
            "10m",
            (Fired(NODE | {"severity": "critical"}, "Node sophia-ai-core has not been Ready for 5 minutes"),),
        ),
        quiet=History((Series("kube_node_status_condition", NODE, repeat(1, 30)),), "10m"),
        absent=History((), "10m"),
    ),
    "SophiaVolumeNearlyFull": Case(
        fires=History(
            (
                Series("node_filesystem_avail_bytes", ROOT_FS, repeat(5e9, 30)),
                Series("node_filesystem_size_bytes", ROOT_FS, repeat(100e9, 30)),
            ),
            "20m",
            (
                Fired(
                    ROOT_FS | {"severity": "warning"},
                    "Filesystem / on 192.0.2.11:9100, which holds K3s's local-path volumes"
                    " (/var/lib/rancher/k3s/storage), has less than 10% free",
                ),
            ),
        ),
        quiet=History(
            (
                Series("node_filesystem_avail_bytes", ROOT_FS, repeat(50e9, 30)),
                Series("node_filesystem_size_bytes", ROOT_FS, repeat(100e9, 30)),
            ),
            "20m",
        ),
        absent=History((), "20m"),
        # A full filesystem that holds no volume is not this alert's.
        also=(
            History(
                (
                    Series("node_filesystem_avail_bytes", RUN_FS, repeat(1e6, 30)),
                    Series("node_filesystem_size_bytes", RUN_FS, repeat(100e6, 30)),
                ),
                "20m",
            ),
        ),
    ),
    # A base backup every night: the alert allows two nights (48h).
    "SophiaPostgresBackupTooOld": Case(
        # The last backup at hour 1, none since.
        fires=History((Series(BACKUP, POSTGRES, repeat(3600, 600)),), "50h", (Fired({"severity": "critical"}),), "5m"),
        quiet=History((Series(BACKUP, POSTGRES, "0+300x600"),), "50h", (), "5m"),
        # Never a backup: the plugin publishes nothing, and the alert must say so once the window has passed.
        absent=History((), "50h", (Fired({"namespace": "sophia-data", "severity": "critical"}),), "5m"),
    ),
}


def _rule_groups(rendered: Rendered) -> list[dict[str, Any]]:
    return [group for m in rendered.objects("PrometheusRule") for group in m["spec"]["groups"]]


def _alerts(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for group in _rule_groups(rendered) for r in group["rules"] if "alert" in r}


def _test_group(alert: str, rule: dict[str, Any], history: History) -> dict[str, Any]:
    expected = []
    for fired in history.fired:
        summary = rule["annotations"]["summary"] if fired.summary is None else fired.summary
        expected.append({"exp_labels": fired.labels, "exp_annotations": {"summary": summary}})
    return {
        "interval": history.interval,
        "input_series": [{"series": s.text(), "values": s.values} for s in history.series],
        "alert_rule_test": [{"eval_time": history.eval_time, "alertname": alert, "exp_alerts": expected}],
    }


def test_every_rendered_alert_has_a_firing_a_quiet_and_an_absent_history(production: Rendered) -> None:
    assert set(_alerts(production)) == set(CASES)
    for name, case in CASES.items():
        assert case.fires.fired, f"{name}: the firing history fires nothing"
        assert case.fires.series and case.quiet.series, f"{name}: only the absent history may have no series"
        assert not case.quiet.fired, name
        assert not case.absent.series, name


def test_every_alert_behaves_under_promtool(production: Rendered, promtool: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": _rule_groups(production)}, sort_keys=False))
    alerts = _alerts(production)
    tests = [
        _test_group(name, alerts[name], history)
        for name, case in CASES.items()
        for history in (case.fires, case.quiet, case.absent, *case.also)
    ]
    spec = tmp_path / "tests.yaml"
    spec.write_text(yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1m", "tests": tests}))
    run = mutation.run_tool([str(promtool), "test", "rules", spec.name], tmp_path, [spec, rules])
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_rules_pass_promtools_own_checks(production: Rendered, promtool: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": _rule_groups(production)}, sort_keys=False))
    run = mutation.run_tool([str(promtool), "check", "rules", rules.name], tmp_path, [rules])
    assert run.returncode == 0, run.stdout + run.stderr
