"""Facts of K3s itself that the cluster, the platform and the apps all rely on. Imports nothing."""

from __future__ import annotations

from typing import Final

# The kube-system Secret K3s reads its etcd S3 settings and keys from (`etcd-s3-config-secret`);
# the cluster points K3s at it and components.platform.backups writes it from the settings and ESC.
ETCD_S3_SECRET: Final = "k3s-etcd-s3"

# K3s's bundled local-path provisioner keeps each volume in the node's data directory, which the
# uninstall deletes: a removal that would take such a volume with it needs the operator's word.
LOCAL_STORAGE_CLASS: Final = "local-path"
