"""PostgreSQL by CloudNativePG: the Cluster, its backups, its password, its metrics, and a restore."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from components.apps.postgres import BACKUP_METRIC, BARMAN_PLUGIN, CLUSTER_LABEL, RELOAD_LABEL
from components.platform.alerts import EXPORTED_METRICS
from components.platform.charts import CLOUDNATIVE_PG, PLUGIN_BARMAN_CLOUD, undocumented_values, unsized_containers
from render.__main__ import render
from render.model import Rendered
from tests.support import production_document, stack_from

NS = "sophia-data"


def _one(rendered: Rendered, kind: str, name: str) -> dict[str, Any]:
    (obj,) = [m for m in rendered.objects(kind) if m["metadata"]["name"] == name]
    return obj


def _backend_env(rendered: Rendered) -> dict[str, Any]:
    backend = _one(rendered, "Deployment", "sophia-backend")
    (container,) = [c for c in backend["spec"]["template"]["spec"]["containers"] if c["name"] == "sophia-backend"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_postgres_is_a_cloudnative_pg_cluster_not_a_statefulset(production: Rendered) -> None:
    assert not [m for m in production.objects("StatefulSet") if m["metadata"]["name"] == "postgres"]
    cluster = _one(production, "Cluster", "postgres")["spec"]
    assert cluster["instances"] == 1
    assert cluster["imageName"] == "docker.io/scoobyjava15/postgres:17.7"
    assert cluster["storage"] == {"size": "100Gi", "storageClass": "local-path"}
    assert cluster["bootstrap"] == {
        "initdb": {"database": "sophia", "owner": "sophia", "secret": {"name": "postgres-app"}}
    }
    assert cluster["enableSuperuserAccess"] is False


def test_the_app_password_is_a_managed_role_the_operator_applies_again(production: Rendered) -> None:
    cluster = _one(production, "Cluster", "postgres")["spec"]
    (role,) = cluster["managed"]["roles"]
    assert role == {"name": "sophia", "ensure": "present", "login": True, "passwordSecret": {"name": "postgres-app"}}
    secret = _one(production, "Secret", "postgres-app")
    assert secret["type"] == "kubernetes.io/basic-auth"
    assert secret["metadata"]["labels"][RELOAD_LABEL] == "true"
    assert secret["stringData"] == {"username": "[secret]", "password": "[secret]"}


def test_wal_is_archived_and_base_backups_are_scheduled_to_the_bucket(production: Rendered) -> None:
    cluster = _one(production, "Cluster", "postgres")["spec"]
    assert cluster["plugins"] == [
        {"name": BARMAN_PLUGIN, "isWALArchiver": True, "parameters": {"barmanObjectName": "postgres-backups"}}
    ]
    store = _one(production, "ObjectStore", "postgres-backups")["spec"]
    assert store["configuration"]["destinationPath"] == "s3://sophia-ai-production-backups/postgres"
    assert store["configuration"]["endpointURL"] == "https://s3.us-east-1.amazonaws.com"
    assert store["configuration"]["s3Credentials"]["secretAccessKey"] == {
        "name": "postgres-backups-s3",
        "key": "ACCESS_SECRET_KEY",
    }
    assert store["retentionPolicy"] == "30d"
    scheduled = _one(production, "ScheduledBackup", "postgres-scheduled")["spec"]
    assert scheduled["schedule"] == "0 0 3 * * *"
    assert scheduled["method"] == "plugin"
    assert scheduled["cluster"] == {"name": "postgres"}
    assert scheduled["backupOwnerReference"] == "none"  # deleting the Cluster keeps its backups


def test_the_cluster_outlives_a_rename_or_removal(production: Rendered) -> None:
    for name in ("postgres", "postgres-app"):
        (resource,) = [r for r in production.resources if r["name"] == name and r["type"].startswith("kubernetes:")]
        assert resource["options"].get("retainOnDelete") is True, name


def test_postgres_metrics_are_scraped_and_its_backups_watched(production: Rendered) -> None:
    monitor = _one(production, "PodMonitor", "postgres")
    assert monitor["spec"]["selector"] == {"matchLabels": {CLUSTER_LABEL: "postgres"}}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert BACKUP_METRIC in EXPORTED_METRICS


def test_the_backend_keeps_its_connection_settings(production: Rendered) -> None:
    env = _backend_env(production)
    assert env["POSTGRES_HOST"] == "postgres-rw.sophia-data.svc.cluster.local"
    assert env["POSTGRES_PORT"] == "5432"
    assert (env["POSTGRES_USER"], env["POSTGRES_DB"]) == ("sophia", "sophia")
    assert env["POSTGRES_PASSWORD"] == {"secretKeyRef": {"name": "sophia-backend-secrets", "key": "POSTGRES_PASSWORD"}}


def test_the_network_lets_the_backend_operator_and_prometheus_in(production: Rendered) -> None:
    policy = _one(production, "NetworkPolicy", "postgres")["spec"]
    assert policy["podSelector"] == {"matchLabels": {CLUSTER_LABEL: "postgres"}}
    sources = {
        (
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            tuple(sorted(peer["podSelector"].get("matchLabels", {}).items())),
            port["port"],
        )
        for rule in policy["ingress"]
        for peer in rule["from"]
        for port in rule["ports"]
    }
    assert ("sophia-apps", (("app.kubernetes.io/name", "sophia-backend"),), 5432) in sources
    assert ("cnpg-system", (), 8000) in sources
    assert ("monitoring", (("app.kubernetes.io/name", "prometheus"),), 9187) in sources


def test_the_operator_charts_are_pinned_documented_and_sized(production: Rendered) -> None:
    for chart in (CLOUDNATIVE_PG, PLUGIN_BARMAN_CLOUD):
        (release,) = [r for r in production.releases.values() if r["chart"] == chart.name]
        assert release["version"] == chart.version
        assert release["repository"] == "https://cloudnative-pg.github.io/charts"
        assert release["namespace"] == "cnpg-system"
        assert undocumented_values(chart, release["values"]) == []
        assert unsized_containers(chart, release["values"]) == []
    (plugin,) = [r for r in production.resources if r["name"] == "barman-cloud"]
    deps = " ".join(plugin["dependencies"])
    assert "cert-manager" in deps and "::cnpg" in deps


@pytest.fixture(scope="module")
def restored(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    document = production_document()
    postgres = document["config"]["sophia-infra:apps"]["services"]["postgres"]
    postgres["cluster"] = "postgres-2"
    postgres["restoreFrom"] = {"cluster": "postgres", "targetTime": "2026-11-28T12:00:00Z"}
    directory = Path(tmp_path_factory.mktemp("restore"))
    rendered, results = render(stack_from(directory, document), directory / "out")
    # Rendered and validated like production: schemas (the CRDs' included), policies, secrets.
    assert [v for r in results for v in r.violations] == []
    return rendered


def test_a_restore_is_a_new_cluster_bootstrapped_from_the_old_ones_backups(restored: Rendered) -> None:
    assert not [m for m in restored.objects("Cluster") if m["metadata"]["name"] == "postgres"]
    cluster = _one(restored, "Cluster", "postgres-2")["spec"]
    assert cluster["bootstrap"] == {
        "recovery": {
            "source": "postgres",
            "database": "sophia",
            "owner": "sophia",
            "secret": {"name": "postgres-2-app"},
            "recoveryTarget": {"targetTime": "2026-11-28T12:00:00Z"},
        }
    }
    assert cluster["externalClusters"] == [
        {
            "name": "postgres",
            "plugin": {
                "name": BARMAN_PLUGIN,
                "parameters": {"barmanObjectName": "postgres-backups", "serverName": "postgres"},
            },
        }
    ]
    # It archives under its own name from the start, beside the old cluster's backups.
    assert cluster["plugins"][0]["parameters"] == {"barmanObjectName": "postgres-backups"}
    assert _one(restored, "ScheduledBackup", "postgres-2-scheduled")["spec"]["cluster"] == {"name": "postgres-2"}
    assert _backend_env(restored)["POSTGRES_HOST"] == "postgres-2-rw.sophia-data.svc.cluster.local"
