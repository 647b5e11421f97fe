"""Backups off the machines: the backup settings, K3s's etcd snapshots to S3, and the restore tool."""

from __future__ import annotations

import base64
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.cluster.node_config import RESTORE_PATH, NodeScripts, k3s_config, node_scripts
from components.k3s import ETCD_S3_SECRET
from components.platform.backups import K3S_READS, etcd_s3_config
from components.settings.cluster import ClusterSettings
from components.settings.stack import ConfigError, Settings, load_settings
from render.__main__ import main as render_main
from render.model import Rendered
from render.stack import load_stack
from tests.cluster_fakes import Machine, Result, add_snapshot, cluster_state
from tests.support import production_document, script_exports, settings_from, write_stack

Doc = dict[str, Any]
SERVER = "sophia-production-instance"
AGENT = "sophia-development"
TOKEN = "K10sophiatesttoken0123456789abcdefABCDEF"
AGENT_TOKEN = "sophiatestagenttoken0123456789abcdef"
ACCESS_KEY = "AKIASOPHIATESTKEY0001"
SECRET_KEY = "sophia-test-secret-access-key-0123456789"


def _problems(tmp_path: Path, document: Doc, drop: tuple[str, ...] = ()) -> list[str]:
    stack = load_stack("production", stack_file=write_stack(tmp_path, document))
    config = {k: v for k, v in stack.config.items() if k.split(":", 1)[1] not in drop}
    try:
        load_settings("production", config, stack.secret_keys)
    except ConfigError as error:
        return [str(p) for p in error.problems]
    return []


def _cluster_doc(document: Doc) -> Doc:
    cluster: Doc = document["config"]["sophia-infra:cluster"]
    return cluster


def _postgres_doc(document: Doc) -> Doc:
    postgres: Doc = document["config"]["sophia-infra:apps"]["services"]["postgres"]
    return postgres


# ---- settings -------------------------------------------------------------------------------


def test_a_bucket_without_an_endpoint_is_one_line_naming_the_key(tmp_path: Path) -> None:
    document = production_document()
    del _cluster_doc(document)["backups"]["endpoint"]
    assert _problems(tmp_path, document) == ["sophia-infra:cluster.backups.endpoint: is required"]


@pytest.mark.parametrize(
    ("key", "value", "line"),
    [
        (
            "endpoint",
            "http://minio.local",
            "sophia-infra:cluster.backups.endpoint: must be an https URL without a path,"
            " such as https://s3.us-east-1.amazonaws.com, got 'http://minio.local'",
        ),
        (
            "bucket",
            "Sophia_Backups",
            "sophia-infra:cluster.backups.bucket: must be an S3 bucket name, got 'Sophia_Backups'",
        ),
        ("colour", "blue", "sophia-infra:cluster.backups.colour: unknown key"),
    ],
)
def test_bad_backup_settings_name_their_key(tmp_path: Path, key: str, value: str, line: str) -> None:
    document = production_document()
    _cluster_doc(document)["backups"][key] = value
    assert _problems(tmp_path, document) == [line]


def test_backup_keys_missing_from_esc_fail_while_backups_are_set(tmp_path: Path) -> None:
    problems = _problems(tmp_path, production_document(), drop=("backupAccessKeyId", "backupSecretAccessKey"))
    assert problems == [
        f"sophia-infra:{key}: is required; it comes from the ESC environment (esc/), which the stack must import;"
        " sophia-infra:cluster.backups is set"
        for key in ("backupAccessKeyId", "backupSecretAccessKey")
    ]


def test_without_backups_the_keys_are_not_needed(tmp_path: Path) -> None:
    document = production_document()
    del _cluster_doc(document)["backups"]
    del _postgres_doc(document)["backups"]
    assert _problems(tmp_path, document, drop=("backupAccessKeyId", "backupSecretAccessKey")) == []


def test_allow_data_loss_must_be_true_or_false(tmp_path: Path) -> None:
    document = production_document()
    _cluster_doc(document)["nodes"][4]["allowDataLoss"] = "yes"
    assert _problems(tmp_path, document) == [
        "sophia-infra:cluster.nodes[4].allowDataLoss: must be true or false, got a string"
    ]


def test_postgres_backups_need_the_bucket(tmp_path: Path) -> None:
    document = production_document()
    del _cluster_doc(document)["backups"]
    _postgres_doc(document)["restoreFrom"] = {"cluster": "postgres-old"}
    assert _problems(tmp_path, document, drop=("backupAccessKeyId", "backupSecretAccessKey")) == [
        f"sophia-infra:apps.services.postgres.{key}: needs sophia-infra:cluster.backups, the bucket the backups are in"
        for key in ("backups", "restoreFrom")
    ]


@pytest.mark.parametrize(
    ("setting", "line"),
    [
        (
            {"restoreFrom": {"cluster": "postgres"}},
            "sophia-infra:apps.services.postgres.restoreFrom.cluster: must differ from the cluster's own name"
            " 'postgres': a restore bootstraps a new cluster, so give it a new name in cluster",
        ),
        (
            {"cluster": "postgres-2", "restoreFrom": {"cluster": "postgres", "targetTime": "yesterday"}},
            "sophia-infra:apps.services.postgres.restoreFrom.targetTime: must be an RFC 3339 time such as"
            " 2026-11-28T12:00:00Z, got 'yesterday'",
        ),
        (
            {"backups": {"schedule": "0 3 * * *"}},
            "sophia-infra:apps.services.postgres.backups.schedule: must be a cron expression with six numeric fields,"
            " seconds first, got '0 3 * * *'",
        ),
    ],
)
def test_bad_postgres_backup_settings_name_their_key(tmp_path: Path, setting: Doc, line: str) -> None:
    document = production_document()
    _postgres_doc(document).update(setting)
    assert _problems(tmp_path, document) == [line]


def test_incomplete_backup_settings_stop_the_render_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = production_document()
    del _cluster_doc(document)["backups"]["endpoint"]
    out = tmp_path / "out"
    code = render_main(["--stack-file", str(write_stack(tmp_path, document)), "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == ["error: sophia-infra:cluster.backups.endpoint: is required"]
    assert not out.exists()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return settings_from(tmp_path_factory.mktemp("stack"), production_document())


# ---- the render -----------------------------------------------------------------------------


def _exports(script: str) -> dict[str, str]:
    return script_exports(script)


def _install(production: Rendered, node: str) -> dict[str, str]:
    (step,) = [c for c in production.by_type("command:remote:Command") if c["name"] == f"{node}-install"]
    return _exports(step["inputs"]["create"])


def test_servers_send_etcd_snapshots_to_s3_through_k3s_config_secret(production: Rendered) -> None:
    server = yaml.safe_load(_install(production, SERVER)["K3S_CONFIG"])
    assert server["etcd-s3"] is True
    assert server["etcd-s3-config-secret"] == ETCD_S3_SECRET
    # Any other etcd-s3 option in config.yaml would make K3s ignore the Secret (s3.go GetClient).
    assert {k for k in server if k.startswith("etcd-s3")} == {"etcd-s3", "etcd-s3-config-secret"}
    agent = yaml.safe_load(_install(production, AGENT)["K3S_CONFIG"])
    assert not any(k.startswith("etcd") for k in agent)


def test_the_k3s_s3_config_secret_holds_the_settings_and_the_keys(production: Rendered, settings: Settings) -> None:
    (secret,) = [m for m in production.objects("Secret") if m["metadata"]["name"] == ETCD_S3_SECRET]
    assert secret["metadata"]["namespace"] == "kube-system"
    # The provider keeps every value of a Secret secret; the names are K3s's (config_secret.go).
    assert secret["stringData"] == dict.fromkeys(
        [
            "etcd-s3-access-key",
            "etcd-s3-bucket",
            "etcd-s3-endpoint",
            "etcd-s3-folder",
            "etcd-s3-region",
            "etcd-s3-secret-key",
        ],
        "[secret]",
    )
    # Every key is one K3s reads: a key it does not read promises what K3s never does.
    assert set(secret["stringData"]) <= K3S_READS
    assert settings.cluster.backups is not None
    assert etcd_s3_config(settings.cluster.backups, settings.cluster.etcd_snapshots) == {
        "etcd-s3-endpoint": "s3.us-east-1.amazonaws.com",
        "etcd-s3-bucket": "sophia-ai-production-backups",
        "etcd-s3-region": "us-east-1",
        "etcd-s3-folder": "etcd",
    }


def test_the_bucket_keeps_the_retention_through_the_servers_snapshot_retention(
    production: Rendered, settings: Settings
) -> None:
    # K3s's etcd-s3-retention, unset, takes etcd-snapshot-retention (k3s-io/k3s#13770); setting it, or
    # any etcd-s3 option besides the switch and the Secret's name, would make K3s ignore the Secret.
    for node in settings.cluster.servers:
        flags = k3s_config(settings.cluster, node).as_flags()
        assert flags["etcd-snapshot-retention"] == settings.cluster.etcd_snapshots.retention == 28
        assert {f for f in flags if f.startswith("etcd-s3")} == {"etcd-s3", "etcd-s3-config-secret"}


def test_every_server_gets_the_restore_tool_and_no_agent_does(production: Rendered) -> None:
    server = _install(production, SERVER)
    assert server["RESTORE_PATH"] == RESTORE_PATH
    tool = base64.b64decode(server["RESTORE_SCRIPT_B64"]).decode()
    assert "--cluster-reset-restore-path" in tool
    assert "export S3_BUCKET=sophia-ai-production-backups" in tool
    assert "RESTORE_PATH" not in _install(production, AGENT)


# ---- the restore tool, on fake machines ------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> ClusterSettings:
    directory = tmp_path / "stack"
    directory.mkdir()
    return settings_from(directory, production_document()).cluster


def _scripts(cluster: ClusterSettings, name: str) -> NodeScripts:
    return node_scripts(cluster, next(n for n in cluster.nodes if n.name == name))


def _running_server(tmp_path: Path, cluster: ClusterSettings) -> Machine:
    server = Machine(tmp_path / SERVER, tmp_path / "api")
    server.set("gpus", "Quadro RTX 6000\n")
    scripts = _scripts(cluster, SERVER)
    for script, stdin in (
        (scripts.preflight, ""),
        # The first server's prepare reads the generated server and agent tokens, one a line.
        (scripts.prepare, f"{TOKEN}\n{AGENT_TOKEN}\n"),
        (scripts.install, ""),
        (scripts.ready, ""),
    ):
        result = server.run(script, stdin)
        assert result.returncode == 0, result.output
    server.set("root")
    return server


def _tool(server: Machine) -> str:
    path = server.root / RESTORE_PATH.lstrip("/")
    assert path.stat().st_mode & 0o777 == 0o700
    return path.read_text()


def _run(server: Machine, *args: str, stdin: str = "") -> Result:
    """The installed tool, run as `sophia-etcd-restore ARGS` (as root, which it wants for `restore`)."""
    return server.run(f"set -- {shlex.join(args)}\n{_tool(server)}", stdin)


def test_restore_latest_resets_etcd_from_the_newest_ready_s3_snapshot(tmp_path: Path, cluster: ClusterSettings) -> None:
    server = _running_server(tmp_path, cluster)
    api = tmp_path / "api"
    add_snapshot(api, "etcd-snapshot-sophia-production-instance-1764300000", "2026-11-28T06:00:00Z")
    add_snapshot(api, "etcd-snapshot-sophia-production-instance-1764321600", "2026-11-28T12:00:00Z")
    add_snapshot(api, "etcd-snapshot-sophia-production-instance-1764343200", "2026-11-28T18:00:00Z", ready="false")

    result = _run(server, "restore", "latest", stdin=f"{ACCESS_KEY}\n{SECRET_KEY}\n")

    assert result.returncode == 0, result.output
    (reset,) = [json.loads(line) for line in (server.fake / "resets.log").read_text().splitlines()]
    assert "--cluster-reset" in reset
    assert "--cluster-reset-restore-path=etcd-snapshot-sophia-production-instance-1764321600" in reset
    assert {"--etcd-s3", "--etcd-s3-bucket=sophia-ai-production-backups", "--etcd-s3-folder=etcd"} <= set(reset)
    assert "--etcd-s3-endpoint=s3.us-east-1.amazonaws.com" in reset
    # The keys reached K3s in its environment only: never an argument of any process.
    calls = [json.loads(line) for line in server.call_log().splitlines()]
    assert all(SECRET_KEY not in " ".join(c["cmd"]) and ACCESS_KEY not in " ".join(c["cmd"]) for c in calls)
    (k3s_reset,) = [c for c in calls if c["cmd"][:2] == ["k3s", "server"]]
    assert k3s_reset["env"]["AWS_SECRET_ACCESS_KEY"] == SECRET_KEY
    assert "rejoin etcd-snapshot-sophia-production-instance-1764321600" in result.stdout
    assert cluster_state(api)["nodes"][SERVER]["ready"] is True
    assert (server.fake / "active-k3s").exists()

    again = _run(server, "restore", "etcd-snapshot-sophia-production-instance-1764321600")

    assert again.returncode == 0, again.output
    assert "nothing to do" in again.stdout
    assert len((server.fake / "resets.log").read_text().splitlines()) == 1


def test_restore_latest_without_an_api_asks_for_a_name(tmp_path: Path, cluster: ClusterSettings) -> None:
    server = _running_server(tmp_path, cluster)
    (tmp_path / "api" / "api-down").touch()

    result = _run(server, "restore", "latest", stdin=f"{ACCESS_KEY}\n{SECRET_KEY}\n")

    assert result.returncode != 0
    assert "name the snapshot" in result.stderr
    assert (server.fake / "active-k3s").exists()  # nothing was stopped


def test_restore_without_keys_on_stdin_stops_nothing(tmp_path: Path, cluster: ClusterSettings) -> None:
    server = _running_server(tmp_path, cluster)

    result = _run(server, "restore", "etcd-snapshot-sophia-production-instance-1764321600")

    assert result.returncode != 0
    assert "standard input" in result.stderr
    assert (server.fake / "active-k3s").exists()


def test_a_failed_restore_says_how_to_go_back(tmp_path: Path, cluster: ClusterSettings) -> None:
    server = _running_server(tmp_path, cluster)
    server.set("reset-fails")

    result = _run(server, "restore", "etcd-snapshot-x", stdin=f"{ACCESS_KEY}\n{SECRET_KEY}\n")

    assert result.returncode != 0
    assert "systemctl start k3s" in result.stderr


def test_rejoin_refuses_on_the_first_server(tmp_path: Path, cluster: ClusterSettings) -> None:
    server = _running_server(tmp_path, cluster)

    result = _run(server, "rejoin", "etcd-snapshot-x")

    assert result.returncode != 0
    assert "first server" in result.stderr
    assert (server.fake / "active-k3s").exists()


def test_rejoin_moves_the_old_etcd_data_aside_once(tmp_path: Path, cluster: ClusterSettings) -> None:
    server = _running_server(tmp_path, cluster)
    # The tool as composed for a server that is not the first (the fake machine is the same).
    tool = server.root / RESTORE_PATH.lstrip("/")
    tool.write_text(tool.read_text().replace("export FIRST_SERVER=true", "export FIRST_SERVER=false"))
    db = server.root / "var/lib/rancher/k3s/server/db/etcd"
    db.mkdir(parents=True)
    (db / "member").write_text("old")

    result = _run(server, "rejoin", "etcd-snapshot-x")

    assert result.returncode == 0, result.output
    aside = server.root / "var/lib/rancher/k3s/server/db.before-etcd-snapshot-x/etcd/member"
    assert aside.read_text() == "old"  # kept, never deleted
    assert (server.fake / "active-k3s").exists()
    again = _run(server, "rejoin", "etcd-snapshot-x")
    assert again.returncode == 0, again.output
    assert "nothing to do" in again.stdout
