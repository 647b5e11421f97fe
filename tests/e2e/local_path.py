"""A stand-in for K3s's local-path provisioner (rancher/local-path-provisioner), which K3s ships and
the e2e's control plane does not run: no container runs here, so its pod could not.

It does, through the API only, what the provisioner does to the API: K3s's `local-path`
StorageClass (K3s manifests/local-storage.yaml: provisioner `rancher.io/local-path`,
WaitForFirstConsumer, reclaim Delete, the default class), then for each claim of that class the
scheduler has picked a node for (`volume.kubernetes.io/selected-node`), a hostPath
PersistentVolume under K3s's storage directory, pinned to that node, with the claim as its
claimRef; the controller manager's PV controller binds the two, and the scheduler's volume binding
then lets the pod through. A released volume is deleted, as the Delete reclaim policy asks. No
directory is created anywhere: there is no node to create it on.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from tests.e2e.apiserver import ApiServer

from components.k3s import LOCAL_STORAGE_CLASS

PROVISIONER: Final = "rancher.io/local-path"
STORAGE_DIR: Final = "/var/lib/rancher/k3s/storage"  # K3s's default local-path storage directory
SELECTED_NODE: Final = "volume.kubernetes.io/selected-node"
PROVISIONED_BY: Final = "pv.kubernetes.io/provisioned-by"
STORAGE_CLASS: Final = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {
        "name": LOCAL_STORAGE_CLASS,
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
    },
    "provisioner": PROVISIONER,
    "volumeBindingMode": "WaitForFirstConsumer",
    "reclaimPolicy": "Delete",
}
INTERVAL: Final = 0.5


def volume_for(claim: dict[str, Any]) -> dict[str, Any]:
    """The PersistentVolume local-path-provisioner creates for a claim (provisioner.go, Provision)."""
    meta = claim["metadata"]
    node = meta["annotations"][SELECTED_NODE]
    name = f"pvc-{meta['uid']}"
    directory = f"{STORAGE_DIR}/{name}_{meta['namespace']}_{meta['name']}"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
            "accessModes": claim["spec"]["accessModes"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": LOCAL_STORAGE_CLASS,
            "volumeMode": claim["spec"].get("volumeMode", "Filesystem"),
            "hostPath": {
                "path": directory,
                "type": "DirectoryOrCreate",
            },
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
                    ]
                }
            },
        },
    }


class LocalPathProvisioner:
    """Polls the claims and volumes of the `local-path` class until stopped; errors are kept, not raised
    in the thread (`check` raises them in the test's)."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.provisioned: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-path-provisioner", daemon=True)

    def start(self) -> None:
        created = self.server.request("POST", "/apis/storage.k8s.io/v1/storageclasses", STORAGE_CLASS)
        if created.status != 201:
            raise RuntimeError(f"StorageClass {LOCAL_STORAGE_CLASS}: {created.status} {created.body.get('message')}")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def check(self) -> None:
        if self.errors:
            raise AssertionError(f"local-path stand-in: {self.errors[:5]}")

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            try:
                self._once()
            except Exception as exc:  # kept for check(): a thread's exception would be lost
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def _once(self) -> None:
        for claim in self.server.items("/api/v1/persistentvolumeclaims"):
            meta, spec = claim["metadata"], claim["spec"]
            if spec.get("storageClassName") != LOCAL_STORAGE_CLASS or spec.get("volumeName"):
                continue
            if SELECTED_NODE not in (meta.get("annotations") or {}) or meta.get("deletionTimestamp"):
                continue
            volume = volume_for(claim)
            created = self.server.request("POST", "/api/v1/persistentvolumes", volume)
            if created.status == 201:
                self.provisioned.append(f"{meta['namespace']}/{meta['name']}")
            elif created.status != 409:
                self.errors.append(f"PV for {meta['namespace']}/{meta['name']}: {created.status}")
        for volume in self.server.items("/api/v1/persistentvolumes"):
            ours = (volume["metadata"].get("annotations") or {}).get(PROVISIONED_BY) == PROVISIONER
            if ours and volume.get("status", {}).get("phase") == "Released":
                self.server.request("DELETE", f"/api/v1/persistentvolumes/{volume['metadata']['name']}")
