"""Argo CD: the GitOps controller, its project fenced to the Sophia repository, and the Applications from settings.

Who owns what (docs/architecture.md, "Who owns what: Pulumi and Argo CD"): Pulumi owns every cluster-scoped
object and every namespace, including each Application's destination namespace, and everything
inside the namespaces it deploys to. Argo CD owns exactly the namespaced objects its Applications
sync from the repository into their destination namespaces, in which Pulumi creates nothing else.
The AppProject enforces Argo CD's side: only the Sophia repository, only those namespaces, no
cluster-scoped kinds at all; settings (`check_gitops_ownership`) and a render check enforce Pulumi's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_command as command
import pulumi_kubernetes as k8s
from pulumi_command import local

from components import namespaces
from components.ingress import Route, tls_ingress
from components.platform.charts import ARGO_CD, INGRESS_CLASS
from components.platform.common import JSON, https_url, namespace, release, resources
from components.pod_security import PodSecurity
from components.settings.gitops import ARGOCD_PROJECT, GitOpsApplication, GitOpsSettings

NAMESPACE = namespaces.ARGOCD
RELEASE = "argocd"
API_VERSION = "argoproj.io/v1alpha1"
PROJECT = ARGOCD_PROJECT
IN_CLUSTER = "https://kubernetes.default.svc"
SERVER_SERVICE = f"{RELEASE}-server"
"""argo-cd.server.fullname with `fullnameOverride: argocd`."""
SERVER_HTTP_PORT = 80
"""server.service.servicePortHttp; plain HTTP because TLS ends at Traefik (`server.insecure`)."""
RESOURCES_FINALIZER = "resources-finalizer.argocd.argoproj.io"
DEFAULT_PROJECT = "default"
"""The project Argo CD's server creates at start, allowing every repository, destination and kind."""
ARGOCD_SECRET = "argocd-secret"
"""The Secret Argo CD reads its admin password from (the chart's own is off: `configs.secret.createSecret`)."""
PASSWORD_MTIME_COMMAND = "date -u +%Y-%m-%dT%H:%M:%SZ"
"""Prints the time of day as Argo CD parses `admin.passwordMtime` (RFC 3339, util/settings/accounts.go)."""


def admin_password_mtime(bcrypt_hash: pulumi.Output[str], parent: pulumi.Resource) -> pulumi.Output[str]:
    """`admin.passwordMtime`: the time the admin password's hash last changed, the same on every run until then.

    Argo CD v3.4.4 rejects a session token issued before this time ("account password has changed
    since token issued": argoproj/argo-cd util/session/sessionmanager.go, Parse, `issuedAt.Before(
    *account.PasswordMtime)`). So it must move exactly when the hash moves, to the real time of the
    change: later and every new login is refused until then; earlier and the old sessions survive.
    A `local.Command` (pulumi-command, already this program's provider) printing the time when it is
    created does that: its stdout is its state, kept unchanged by every `pulumi up` that does not
    replace it, and `triggers` replace it (running `create` again, at that `pulumi up`) exactly when
    the hash's digest changes. The digest is a secret Output, so the hash never shows in the state.
    pulumi_random has no time, and the time provider is not one this project builds.
    """
    digest: pulumi.Output[str] = pulumi.Output.secret(
        bcrypt_hash.apply(lambda value: hashlib.sha256(value.encode()).hexdigest())
    )
    # An explicit provider, as for every resource of the program: nothing depends on a default one.
    runner = command.Provider("argocd-local", opts=pulumi.ResourceOptions(parent=parent))
    stamp = local.Command(
        "argocd-admin-password-mtime",
        create=PASSWORD_MTIME_COMMAND,
        triggers=[digest],
        opts=pulumi.ResourceOptions(parent=parent, provider=runner),
    )
    return stamp.stdout.apply(lambda out: out.strip())


@dataclass(frozen=True)
class ArgoCDArgs:
    gitops: GitOpsSettings
    host: str
    cluster_issuer: k8s.apiextensions.CustomResource
    cluster_issuer_name: str
    admin_password_bcrypt: pulumi.Output[str]
    """The bcrypt hash of the admin password, from ESC; a secret Output that only reaches a Secret."""
    monitoring: pulumi.Resource
    """The monitoring release: the chart's ServiceMonitors need its CRD (the chart skips them without it)."""
    chart_mirror: str | None
    """`platform.chartMirror`: the Helm repository to pull the chart from instead of its official one."""


METRICS: JSON = {"metrics": {"enabled": True, "serviceMonitor": {"enabled": True}}}


def argocd_values(host: str) -> JSON:
    return {
        "fullnameOverride": RELEASE,
        "crds": {"install": True, "keep": True},
        "global": {"domain": host},
        # The admin password is in a Secret of this program's own (ArgoCD below), never in values.
        "configs": {"params": {"server.insecure": True}, "secret": {"createSecret": False}},
        # No SSO and no notification channels are configured; neither controller would do anything.
        "dex": {"enabled": False},
        "notifications": {"enabled": False},
        # The Ingress is this program's own (see ArgoCD), so it is validated and held to the TLS rule.
        "server": {"ingress": {"enabled": False}, "resources": resources("50m", "128Mi", "500m", "512Mi"), **METRICS},
        "controller": {"resources": resources("250m", "512Mi", "1", "2Gi"), **METRICS},
        "repoServer": {
            **METRICS,
            "resources": resources("100m", "256Mi", "1", "1Gi"),
            "copyutil": {"resources": resources("10m", "32Mi", "100m", "64Mi")},
        },
        "redis": {"resources": resources("50m", "64Mi", "200m", "256Mi")},
        "applicationSet": {"resources": resources("20m", "64Mi", "200m", "256Mi"), **METRICS},
        "redisSecretInit": {"resources": resources("10m", "32Mi", "100m", "64Mi")},
    }


def app_project_spec(gitops: GitOpsSettings) -> JSON:
    return {
        "description": "The Sophia AI manifests of the GitOps repository; namespaced objects only.",
        "sourceRepos": [gitops.repo_url],
        "destinations": [
            {"server": IN_CLUSTER, "namespace": ns} for ns in sorted({a.namespace for a in gitops.applications})
        ],
        # Nothing cluster-scoped (Namespaces, CRDs, RBAC, webhooks): those are Pulumi's.
        "clusterResourceWhitelist": [],
    }


def default_project_spec() -> JSON:
    """`default` fenced so that it allows nothing (Argo CD docs, "projects": the default project).

    An Application may name any project, and `default` would let it sync any repository anywhere,
    cluster-scoped kinds included; the `sophia` project's limits bind only Applications that choose it.
    """
    return {
        "sourceRepos": [],
        "sourceNamespaces": [],
        "destinations": [],
        "clusterResourceWhitelist": [],
        "namespaceResourceBlacklist": [{"group": "*", "kind": "*"}],
    }


def application_spec(app: GitOpsApplication, gitops: GitOpsSettings) -> JSON:
    return {
        "project": PROJECT,
        "source": {"repoURL": gitops.repo_url, "path": app.path, "targetRevision": gitops.branch},
        "destination": {"server": IN_CLUSTER, "namespace": app.namespace},
        "syncPolicy": {
            "automated": {"prune": True, "selfHeal": True},
            "retry": {"limit": 5, "backoff": {"duration": "10s", "factor": 2, "maxDuration": "5m"}},
        },
    }


class ArgoCD(pulumi.ComponentResource):
    """Argo CD at https://argocd.<domain>, with one AppProject and the configured Applications."""

    release: k8s.helm.v3.Release
    argocd_url: str
    application_namespaces: tuple[str, ...]
    """The namespaces Argo CD syncs into (Pulumi creates them and nothing in them)."""

    def __init__(self, name: str, args: ArgoCDArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sophia:platform:ArgoCD", name, None, opts)
        # The chart's pods meet `baseline`; `restricted` is warned and audited (common.pod_security_labels).
        ns = namespace(NAMESPACE, PodSecurity.BASELINE, self)
        # The local admin account logs in with the password whose bcrypt hash is in ESC; Argo CD adds
        # its own `server.secretkey` to this Secret, a field Pulumi (server-side apply) does not own.
        admin = k8s.core.v1.Secret(
            ARGOCD_SECRET,
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=ARGOCD_SECRET,
                namespace=ns.metadata.name,
                # Argo CD watches only Secrets labelled as its own.
                labels={"app.kubernetes.io/name": ARGOCD_SECRET, "app.kubernetes.io/part-of": "argocd"},
            ),
            type="Opaque",
            string_data={
                "admin.password": args.admin_password_bcrypt.apply(pulumi.Output.secret),
                "admin.passwordMtime": admin_password_mtime(args.admin_password_bcrypt, self),
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.release = release(
            RELEASE,
            ARGO_CD,
            ns=ns,
            values=argocd_values(args.host),
            mirror=args.chart_mirror,
            parent=self,
            depends_on=[admin, args.monitoring],
        )
        self.argocd_url = https_url(args.host)
        tls_ingress(
            "argocd",
            namespace=ns.metadata.name,
            host=args.host,
            routes=[Route("/", SERVER_SERVICE, SERVER_HTTP_PORT)],
            cluster_issuer_name=args.cluster_issuer_name,
            ingress_class=INGRESS_CLASS,
            # The first certificate request would fail against an issuer that does not exist yet.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.cluster_issuer, self.release]),
        )
        project = k8s.apiextensions.CustomResource(
            "argocd-project",
            api_version=API_VERSION,
            kind="AppProject",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=PROJECT, namespace=NAMESPACE),
            spec=app_project_spec(args.gitops),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.release]),
        )
        # Argo CD's server creates `default` when it starts, so it exists once the release is ready;
        # a patch (server-side apply, forced) takes its fields over instead of failing on AlreadyExists.
        # Removing the patch leaves `default` fenced: the provider could only hand `spec` (a required
        # field) back to nobody, and refuses (seen under the real engine); re-opening it is never wanted.
        k8s.apiextensions.CustomResourcePatch(
            "argocd-default-project",
            api_version=API_VERSION,
            kind="AppProject",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=DEFAULT_PROJECT, namespace=NAMESPACE, annotations={"pulumi.com/patchForce": "true"}
            ),
            spec=default_project_spec(),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.release], retain_on_delete=True),
        )
        self.application_namespaces = tuple(sorted({a.namespace for a in args.gitops.applications}))
        destinations = {
            ns_name: namespace(ns_name, PodSecurity.RESTRICTED, self) for ns_name in self.application_namespaces
        }
        for app in args.gitops.applications:
            k8s.apiextensions.CustomResource(
                f"argocd-app-{app.name}",
                api_version=API_VERSION,
                kind="Application",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=app.name,
                    namespace=NAMESPACE,
                    # Deleting the Application (a Pulumi change) deletes what Argo CD synced for it.
                    finalizers=[RESOURCES_FINALIZER],
                ),
                spec=application_spec(app, args.gitops),
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=[self.release, project, destinations[app.namespace]]
                ),
            )
        self.register_outputs({"argocdUrl": self.argocd_url})
