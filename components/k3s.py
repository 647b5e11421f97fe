"""Facts of K3s itself that the cluster, the platform and the apps all rely on. Imports nothing."""

from __future__ import annotations

from typing import Final

# The kube-system Secret K3s reads its etcd S3 settings and keys from (`etcd-s3-config-secret`);
# the cluster points K3s at it and components.platform.backups writes it from the settings and ESC.
ETCD_S3_SECRET: Final = "k3s-etcd-s3"

# K3s's bundled local-path provisioner keeps each volume in the node's data directory, which the
# uninstall deletes: a removal that would take such a volume with it needs the operator's word.
LOCAL_STORAGE_CLASS: Final = "local-path"

# K3s's data directory (`data-dir`, default /var/lib/rancher/k3s for root: k3s-io/k3s
# pkg/cli/cmds/server.go DataDir) and, below it, where the bundled local-path provisioner puts every
# volume (`default-local-storage-path`, default `<data-dir>/storage`: k3s-io/k3s pkg/cli/server/server.go
# sets DefaultLocalStoragePath, pkg/server/server.go writes it into manifests/local-storage.yaml's
# `nodePathMap` as %{DEFAULT_LOCAL_STORAGE_PATH}%). Its volumes are hostPath volumes
# (local-path-provisioner provisioner.go `defaultVolumeType = "hostPath"`), for which the kubelet
# publishes no `kubelet_volume_stats_*` (kubernetes pkg/volume/hostpath: `volume.MetricsNil`), so
# their free space is watched as the free space of the filesystem that holds this directory.
DATA_DIR: Final = "/var/lib/rancher/k3s"
LOCAL_STORAGE_PATH: Final = f"{DATA_DIR}/storage"
