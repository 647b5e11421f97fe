"""Backups off the machines: what K3s needs to send its etcd snapshots to the backup bucket.

K3s takes the snapshots itself (`etcd-snapshot-schedule-cron`, config.yaml) and, with `etcd-s3`
and `etcd-s3-config-secret` there, uploads each to S3 with the settings of a kube-system Secret.
The keys of that Secret are K3s's own (k3s-io/k3s pkg/etcd/s3/config_secret.go): the credentials
never enter config.yaml, a systemd unit or a process list. K3s reads the Secret at every snapshot,
so a rotated key in ESC is used from the next snapshot on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_kubernetes as k8s

from components.k3s import ETCD_S3_SECRET
from components.settings.cluster import BackupStorage, ClusterSettings, EtcdSnapshots
from components.settings.secrets import SecretKey, Secrets

KUBE_SYSTEM = "kube-system"


@dataclass(frozen=True)
class BackupKeys:
    """The backup bucket's credentials, from ESC: secret Outputs."""

    access_key_id: pulumi.Output[str]
    secret_access_key: pulumi.Output[str]


@dataclass(frozen=True)
class BackupTarget:
    """The backup bucket and its keys: where etcd's snapshots and PostgreSQL's backups and WAL go."""

    storage: BackupStorage
    keys: BackupKeys


def backup_target(cluster: ClusterSettings, secrets: Secrets) -> BackupTarget | None:
    """The bucket of `cluster.backups` with its keys from ESC (the settings require both or neither)."""
    if cluster.backups is None:
        return None
    keys = BackupKeys(secrets[SecretKey.BACKUP_ACCESS_KEY_ID], secrets[SecretKey.BACKUP_SECRET_ACCESS_KEY])
    return BackupTarget(cluster.backups, keys)


@dataclass(frozen=True)
class EtcdBackupsArgs:
    storage: BackupStorage
    snapshots: EtcdSnapshots
    keys: BackupKeys


# Every key K3s reads from the Secret (k3s-io/k3s pkg/etcd/s3/config_secret.go getConfigFromSecret,
# the revisions 4755269 and 5a0e48a that could be read): access-key, bucket, bucket-lookup-type,
# folder, proxy, secret-key, session-token, endpoint, region, timeout, skip-ssl-verify, insecure,
# endpoint-ca, endpoint-ca-name. Retention is not among them: K3s prunes the bucket by its
# `etcd-s3-retention` setting, which, left unset, takes `etcd-snapshot-retention` (k3s-io/k3s#13770,
# docs.k3s.io cli/etcd-snapshot "S3 Retention"); config.yaml sets that one (node_config.k3s_config).
K3S_READS: Final = frozenset(
    {
        "etcd-s3-access-key",
        "etcd-s3-bucket",
        "etcd-s3-bucket-lookup-type",
        "etcd-s3-folder",
        "etcd-s3-proxy",
        "etcd-s3-secret-key",
        "etcd-s3-session-token",
        "etcd-s3-endpoint",
        "etcd-s3-region",
        "etcd-s3-timeout",
        "etcd-s3-skip-ssl-verify",
        "etcd-s3-insecure",
        "etcd-s3-endpoint-ca",
        "etcd-s3-endpoint-ca-name",
    }
)


def etcd_s3_config(storage: BackupStorage, snapshots: EtcdSnapshots) -> dict[str, str]:
    """The plain entries of K3s's S3 config Secret (its keys are added as secret Outputs)."""
    return {
        "etcd-s3-endpoint": storage.endpoint_host,
        "etcd-s3-bucket": storage.bucket,
        "etcd-s3-region": storage.region,
        "etcd-s3-folder": snapshots.folder,
    }


class EtcdBackups(pulumi.ComponentResource):
    """The Secret `kube-system/k3s-etcd-s3` (type token `sophia:platform:EtcdBackups`)."""

    secret: k8s.core.v1.Secret

    def __init__(self, name: str, args: EtcdBackupsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sophia:platform:EtcdBackups", name, None, opts)
        self.secret = k8s.core.v1.Secret(
            ETCD_S3_SECRET,
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=ETCD_S3_SECRET, namespace=KUBE_SYSTEM, labels={"app.kubernetes.io/managed-by": "pulumi"}
            ),
            type="Opaque",
            string_data={
                **etcd_s3_config(args.storage, args.snapshots),
                "etcd-s3-access-key": args.keys.access_key_id.apply(pulumi.Output.secret),
                "etcd-s3-secret-key": args.keys.secret_access_key.apply(pulumi.Output.secret),
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"secret": f"{KUBE_SYSTEM}/{ETCD_S3_SECRET}", "bucket": args.storage.bucket})
