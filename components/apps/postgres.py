"""PostgreSQL for Sophia, run by CloudNativePG: the Cluster, its backups to the bucket, metrics, network.

- The application role `sophia` owns the database and is a managed role whose password is the
  Secret `<cluster>-app` (from ESC `postgresPassword`). The operator's instance manager compares
  that Secret's resourceVersion with the one it last applied
  (`status.managedRolesStatus.passwordStatus`) and sets the password again when they differ
  (cloudnative-pg/cloudnative-pg internal/management/controller/roles/reconciler.go); the
  `cnpg.io/reload` label makes the operator notice the Secret's change at once. `bootstrap.initdb`
  alone would apply the password only when the database is created.
- With backups, WAL is archived continuously and base backups are taken on a schedule through the
  Barman Cloud plugin into `s3://<bucket>/postgres/<cluster>/` (one ObjectStore; each Cluster
  writes under its own name).
- A restore is a settings change: a Cluster under a new name bootstraps from another cluster's
  backups (`recovery`, point in time optional) and archives under its own name from then on. The
  old cluster and its backups are left alone; the backend follows the new Service name.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.apps.network import PROMETHEUS, Peer, public_https_rule, tcp
from components.apps.workload import NAME_LABEL, PART_OF, STORAGE_CLASS
from components.namespaces import CNPG
from components.platform.alerts import longest_gap_hours
from components.platform.backups import BackupTarget
from components.settings.apps import DatabaseSettings, ServiceSettings
from components.settings.catalogue import POSTGRES_DATABASE, POSTGRES_USER, Service

BARMAN_PLUGIN = "barman-cloud.cloudnative-pg.io"
BACKUP_METRIC = "barman_cloud_cloudnative_pg_io_last_available_backup_timestamp"
"""The plugin's gauge (its name is the plugin's, sanitised), served on each instance's metrics port."""
OBJECT_STORE = "postgres-backups"
BACKUP_FOLDER = "postgres"
CLUSTER_LABEL = "cnpg.io/cluster"
RELOAD_LABEL = "cnpg.io/reload"
METRICS_PORT = 9187
METRICS_PORT_NAME = "metrics"
STATUS_PORT = 8000
"""The instance manager's status port, which the operator calls."""
API_SERVER_PORT = 6443
"""K3s's API (supervisor) port on the servers: the instance manager talks to the API server."""


def service_host(cluster: str, namespace: str) -> str:
    """The read-write Service CloudNativePG makes for a Cluster: always the primary."""
    return f"{cluster}-rw.{namespace}.svc.cluster.local"


@dataclass(frozen=True)
class PostgresArgs:
    service: Service
    settings: ServiceSettings
    image: str
    pull_secret: str
    password: pulumi.Output[str]
    callers: tuple[Peer, ...]
    backups: BackupTarget | None
    operator: tuple[pulumi.Resource, ...]
    """The operator and plugin releases: they install the CRDs and must run first."""
    monitoring: pulumi.Resource | None
    depends_on: tuple[pulumi.Resource, ...] = ()


class PostgresCluster(pulumi.ComponentResource):
    """Type token `sophia:apps:PostgresCluster`."""

    cluster: k8s.apiextensions.CustomResource
    host: str

    def __init__(self, name: str, args: PostgresArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sophia:apps:PostgresCluster", name, None, opts)
        database = args.settings.database
        assert database is not None, "a managed database has database settings"
        namespace = args.service.namespace
        cluster_name = database.cluster
        self._namespace = namespace
        self._labels = {NAME_LABEL: args.service.name, **PART_OF}
        metadata = self._metadata
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))

        app_secret = k8s.core.v1.Secret(
            f"{cluster_name}-app",
            metadata=metadata(f"{cluster_name}-app", {RELOAD_LABEL: "true"}),
            type="kubernetes.io/basic-auth",
            string_data={"username": POSTGRES_USER, "password": args.password.apply(pulumi.Output.secret)},
            # The retained Cluster still names it (its managed role).
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(retain_on_delete=True)),
        )
        crd_opts = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[*args.operator]))
        store = None
        if args.backups is not None:
            store = self._object_store(args, crd_opts)
        spec = self._cluster_spec(args, database, f"{cluster_name}-app", store is not None)
        self.cluster = k8s.apiextensions.CustomResource(
            cluster_name,
            api_version="postgresql.cnpg.io/v1",
            kind="Cluster",
            metadata=metadata(cluster_name),
            spec=spec,
            # Renamed (a restore) or removed, the Cluster leaves Pulumi's state but keeps running with
            # its volume: CloudNativePG would delete its PVCs with it, and local-path their data. The
            # operator deletes it with kubectl once the data is no longer needed.
            opts=pulumi.ResourceOptions.merge(
                crd_opts,
                pulumi.ResourceOptions(depends_on=[app_secret, *([store] if store else [])], retain_on_delete=True),
            ),
        )
        if store is not None and database.backup_schedule is not None:
            k8s.apiextensions.CustomResource(
                f"{cluster_name}-scheduled",
                api_version="postgresql.cnpg.io/v1",
                kind="ScheduledBackup",
                metadata=metadata(f"{cluster_name}-scheduled"),
                spec={
                    "schedule": database.backup_schedule,
                    "cluster": {"name": cluster_name},
                    "method": "plugin",
                    "pluginConfiguration": {"name": BARMAN_PLUGIN},
                    # The first base backup at once: WAL alone cannot be restored without one.
                    "immediate": True,
                    # Backups outlive their Cluster: deleting it must not delete them.
                    "backupOwnerReference": "none",
                },
                opts=pulumi.ResourceOptions.merge(crd_opts, pulumi.ResourceOptions(depends_on=[self.cluster])),
            )
        if args.monitoring is not None:
            k8s.apiextensions.CustomResource(
                f"{cluster_name}-metrics",
                api_version="monitoring.coreos.com/v1",
                kind="PodMonitor",
                metadata=metadata(cluster_name),
                spec={
                    "selector": {"matchLabels": {CLUSTER_LABEL: cluster_name}},
                    "podMetricsEndpoints": [{"port": METRICS_PORT_NAME, "interval": "30s"}],
                },
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[args.monitoring])),
            )
        if args.monitoring is not None and store is not None and database.backup_schedule is not None:
            # Two schedule periods without a new base backup: one failed run is tolerated, two are not.
            window = 2 * longest_gap_hours(database.backup_schedule.split(None, 1)[1])
            k8s.apiextensions.CustomResource(
                f"{cluster_name}-alerts",
                api_version="monitoring.coreos.com/v1",
                kind="PrometheusRule",
                metadata=metadata(f"{cluster_name}-backups"),
                spec={
                    "groups": [
                        {
                            "name": f"{cluster_name}-backups",
                            "rules": [
                                {
                                    "alert": "SophiaPostgresBackupTooOld",
                                    # Also when the metric is missing for the whole window: a
                                    # cluster that never backed up (or whose plugin never said so)
                                    # has no series at all, and `max` of nothing never fires.
                                    "expr": f"(time() - max({BACKUP_METRIC}"
                                    f'{{namespace="{namespace}"}}) > {window} * 3600)'
                                    f' or absent_over_time({BACKUP_METRIC}{{namespace="{namespace}"}}[{window}h])',
                                    "for": "15m",
                                    "labels": {"severity": "critical"},
                                    "annotations": {
                                        "summary": f"The last base backup of PostgreSQL {cluster_name} is older than "
                                        f"{window}h (schedule {database.backup_schedule!r}); "
                                        f"kubectl -n {namespace} get backups says why"
                                    },
                                }
                            ],
                        }
                    ]
                },
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[args.monitoring])),
            )
        k8s.networking.v1.NetworkPolicy(
            f"{cluster_name}-network",
            metadata=metadata(cluster_name),
            spec=self._network_policy(args, cluster_name),
            opts=child,
        )
        self.host = service_host(cluster_name, namespace)
        self.register_outputs({"cluster": cluster_name, "host": self.host, "backups": store is not None})

    def _metadata(self, name: str, extra: dict[str, str] | None = None) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(
            name=name, namespace=self._namespace, labels={**self._labels, **(extra or {})}
        )

    def _object_store(self, args: PostgresArgs, opts: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
        assert args.backups is not None
        meta = self._metadata
        secret_name = f"{OBJECT_STORE}-s3"
        credentials = k8s.core.v1.Secret(
            secret_name,
            metadata=meta(secret_name),
            type="Opaque",
            string_data={
                "ACCESS_KEY_ID": args.backups.keys.access_key_id.apply(pulumi.Output.secret),
                "ACCESS_SECRET_KEY": args.backups.keys.secret_access_key.apply(pulumi.Output.secret),
                "REGION": args.backups.storage.region,
            },
            opts=opts,
        )
        storage = args.backups.storage
        database = args.settings.database
        assert database is not None
        return k8s.apiextensions.CustomResource(
            OBJECT_STORE,
            api_version="barmancloud.cnpg.io/v1",
            kind="ObjectStore",
            metadata=meta(OBJECT_STORE),
            spec={
                "configuration": {
                    "destinationPath": f"s3://{storage.bucket}/{BACKUP_FOLDER}",
                    "endpointURL": storage.endpoint,
                    "s3Credentials": {
                        "accessKeyId": {"name": secret_name, "key": "ACCESS_KEY_ID"},
                        "secretAccessKey": {"name": secret_name, "key": "ACCESS_SECRET_KEY"},
                        "region": {"name": secret_name, "key": "REGION"},
                    },
                    "wal": {"compression": "gzip"},
                    "data": {"compression": "gzip"},
                },
                "retentionPolicy": database.backup_retention,
                # The plugin's sidecar in every PostgreSQL pod.
                "instanceSidecarConfiguration": {
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"cpu": "500m", "memory": "256Mi"},
                    }
                },
            },
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[credentials])),
        )

    @staticmethod
    def _cluster_spec(
        args: PostgresArgs, database: DatabaseSettings, app_secret: str, backups: bool
    ) -> dict[str, object]:
        resources = args.settings.resources
        spec: dict[str, object] = {
            # One instance: one machine's disk (local-path). A second would be a replica on another node.
            "instances": 1,
            "imageName": args.image,
            "imagePullSecrets": [{"name": args.pull_secret}],
            # Nobody logs in as postgres: the operator manages the server through its own channel.
            "enableSuperuserAccess": False,
            # With one instance a budget could only forbid evicting it, and a drain would never end.
            "enablePDB": False,
            "storage": {"size": args.settings.storage, "storageClass": STORAGE_CLASS},
            "resources": {
                "requests": {"cpu": resources.requests.cpu, "memory": resources.requests.memory},
                "limits": {"cpu": resources.limits.cpu, "memory": resources.limits.memory},
            },
            "ephemeralVolumesSizeLimit": {"shm": args.service.shared_memory},
            # So the NetworkPolicies that name `postgres` (the backend's egress) select its pods.
            "inheritedMetadata": {"labels": {NAME_LABEL: args.service.name, **PART_OF}},
            "managed": {
                "roles": [
                    {
                        "name": POSTGRES_USER,
                        "ensure": "present",
                        "login": True,
                        "passwordSecret": {"name": app_secret},
                    }
                ]
            },
        }
        if backups:
            spec["plugins"] = [
                {"name": BARMAN_PLUGIN, "isWALArchiver": True, "parameters": {"barmanObjectName": OBJECT_STORE}}
            ]
        if database.restore is None:
            spec["bootstrap"] = {
                "initdb": {"database": POSTGRES_DATABASE, "owner": POSTGRES_USER, "secret": {"name": app_secret}}
            }
        else:
            source = database.restore.cluster
            recovery: dict[str, object] = {
                "source": source,
                "database": POSTGRES_DATABASE,
                "owner": POSTGRES_USER,
                "secret": {"name": app_secret},
            }
            if database.restore.target_time is not None:
                recovery["recoveryTarget"] = {"targetTime": database.restore.target_time}
            spec["bootstrap"] = {"recovery": recovery}
            spec["externalClusters"] = [
                {
                    "name": source,
                    "plugin": {
                        "name": BARMAN_PLUGIN,
                        "parameters": {"barmanObjectName": OBJECT_STORE, "serverName": source},
                    },
                }
            ]
        return spec

    @staticmethod
    def _network_policy(args: PostgresArgs, cluster_name: str) -> k8s.networking.v1.NetworkPolicySpecArgs:
        own = Peer(args.service.namespace, {CLUSTER_LABEL: cluster_name})
        operator = Peer(CNPG)
        ingress = [
            k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                from_=[p.args() for p in args.callers], ports=[tcp(args.service.port)]
            ),
            # The operator calls each instance's status port; instances replicate from each other.
            k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                from_=[operator.args(), own.args()], ports=[tcp(STATUS_PORT), tcp(args.service.port)]
            ),
        ]
        if args.monitoring is not None:
            ingress.append(
                k8s.networking.v1.NetworkPolicyIngressRuleArgs(from_=[PROMETHEUS.args()], ports=[tcp(METRICS_PORT)])
            )
        egress = [
            k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                to=[own.args()], ports=[tcp(STATUS_PORT), tcp(args.service.port)]
            ),
            # The instance manager watches its Cluster through the API server. The policy sees the
            # servers' addresses after the Service's translation, and they are not known here as
            # pod selectors: the port alone narrows it.
            k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                to=[k8s.networking.v1.NetworkPolicyPeerArgs(ip_block=k8s.networking.v1.IPBlockArgs(cidr="0.0.0.0/0"))],
                ports=[tcp(API_SERVER_PORT)],
            ),
        ]
        if args.backups is not None:
            # The plugin's sidecar uploads WAL and base backups to the bucket over HTTPS.
            egress.append(public_https_rule())
        return k8s.networking.v1.NetworkPolicySpecArgs(
            pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={CLUSTER_LABEL: cluster_name}),
            policy_types=["Ingress", "Egress"],
            ingress=ingress,
            egress=egress,
        )
