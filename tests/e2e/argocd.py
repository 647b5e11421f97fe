"""A stand-in for the two things the program relies on Argo CD's own pods for, which do not run here.

1. Argo CD's API server creates the `default` AppProject when it starts (argo-cd server/server.go,
   initializeDefaultProject: sourceRepos `*`, destinations `*`/`*`, every cluster-scoped kind), and
   the program then fences it with a forced server-side-apply patch. This stand-in creates it, with
   that spec, as soon as a pod of the server has been scheduled (the server's start).
2. Argo CD's application controller, once it has pruned what an Application synced, removes the
   Application's `resources-finalizer.argocd.argoproj.io` (controller/appcontroller.go,
   finalizeApplicationDeletion); until then the Application's delete waits. Nothing is ever synced
   here (no repo server fetches the repository), so there is nothing to prune: the stand-in removes
   the finalizer of every Application being deleted.

Without the second, a stack with an Application cannot be destroyed: the provider waits for the
finalizer and fails `timed out waiting for the condition`, as it would on a real cluster whose Argo
CD is down (README, "Who owns what: Pulumi and Argo CD").
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final

from components import namespaces
from components.platform.argocd import DEFAULT_PROJECT, RESOURCES_FINALIZER

if TYPE_CHECKING:
    from tests.e2e.apiserver import ApiServer

GROUP_VERSION: Final = "argoproj.io/v1alpha1"
PROJECTS: Final = f"/apis/{GROUP_VERSION}/namespaces/{namespaces.ARGOCD}/appprojects"
APPLICATIONS: Final = f"/apis/{GROUP_VERSION}/applications"
# The chart's label of the API server's pods (argo-cd templates/argocd-server/deployment.yaml).
SERVER_PODS: Final = f"/api/v1/namespaces/{namespaces.ARGOCD}/pods?labelSelector=app.kubernetes.io%2Fcomponent%3Dserver"
INTERVAL: Final = 0.5


def default_project() -> dict[str, Any]:
    """`default` as initializeDefaultProject writes it."""
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "AppProject",
        "metadata": {"name": DEFAULT_PROJECT, "namespace": namespaces.ARGOCD},
        "spec": {
            "sourceRepos": ["*"],
            "destinations": [{"server": "*", "namespace": "*"}],
            "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
        },
    }


class ArgoCdStandIn:
    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.projects_created = 0
        self.finalized: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="argocd-stand-in", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def check(self) -> None:
        if self.errors:
            raise AssertionError(f"Argo CD stand-in: {self.errors[:5]}")

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            try:
                self._once()
            except Exception as exc:  # kept for check(): a thread's exception would be lost
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def _served(self) -> bool:
        return self.server.request("GET", f"/apis/{GROUP_VERSION}").status == 200

    def _once(self) -> None:
        if not self._served():
            return
        started = self.server.request("GET", SERVER_PODS)
        server_started = started.status == 200 and any(p["spec"].get("nodeName") for p in started.body["items"])
        if server_started and not self.server.exists(f"{PROJECTS}/{DEFAULT_PROJECT}"):
            created = self.server.request("POST", PROJECTS, default_project())
            if created.status == 201:
                self.projects_created += 1
            elif created.status not in (404, 409):  # 404: the namespace is going away
                self.errors.append(f"AppProject {DEFAULT_PROJECT}: {created.status}")
        listed = self.server.request("GET", APPLICATIONS)
        # 404 or 429 while the CRD is being established (or removed): nothing to finalize yet.
        for app in listed.body.get("items", []) if listed.status == 200 else []:
            meta = app["metadata"]
            finalizers = meta.get("finalizers") or []
            if not meta.get("deletionTimestamp") or RESOURCES_FINALIZER not in finalizers:
                continue
            kept = [f for f in finalizers if f != RESOURCES_FINALIZER]
            path = f"/apis/{GROUP_VERSION}/namespaces/{meta['namespace']}/applications/{meta['name']}"
            # The resourceVersion makes it a compare-and-swap, as the controller's update is.
            patch = {"metadata": {"finalizers": kept, "resourceVersion": meta["resourceVersion"]}}
            done = self.server.request("PATCH", path, patch, content_type="application/merge-patch+json")
            if done.status == 200:
                self.finalized.append(f"{meta['namespace']}/{meta['name']}")
            elif done.status not in (404, 409):
                self.errors.append(f"Application {meta['name']}: finalizer: {done.status}")
