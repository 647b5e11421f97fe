"""Facts of K3s itself that the cluster, the platform and the apps all rely on. Imports nothing."""

from __future__ import annotations

from typing import Final

# The kube-system Secret K3s reads its etcd S3 settings and keys from (`etcd-s3-config-secret`);
# the cluster points K3s at it and components.platform.backups writes it from the settings and ESC.
ETCD_S3_SECRET: Final = "k3s-etcd-s3"

# K3s's bundled local-path provisioner keeps each volume in the node's data directory, which the
# uninstall deletes: a removal that would take such a volume with it needs the operator's word.
LOCAL_STORAGE_CLASS: Final = "local-path"

# Where K3s releases are published, and the names of a release's assets: the binary of each
# architecture and the file of their sha256 sums (`<sha256>  <asset>` lines). K3s's own installer
# downloads `${GITHUB_URL}/download/${VERSION_K3S}/k3s${SUFFIX}` with SUFFIX empty on amd64 and
# `-arm64` on arm64, and checks it against the line for that asset in `sha256sum-${ARCH}.txt`
# (k3s-io/k3s install.sh: setup_verify_arch, download_hash, download_binary, verify_binary).
RELEASE_DOWNLOADS: Final = "https://github.com/k3s-io/k3s/releases/download"
RELEASE_BINARIES: Final = {"amd64": "k3s", "arm64": "k3s-arm64"}


def checksum_file(arch: str) -> str:
    """The release asset listing the sha256 of every asset of one architecture."""
    return f"sha256sum-{arch}.txt"


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
