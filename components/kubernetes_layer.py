"""Everything the program puts on the cluster through its Kubernetes provider: the platform, then Sophia.

One construction for `__main__.py`, which first builds the K3s cluster over SSH and hands over its
provider, and for the e2e, which applies exactly this through the real engine against a real API
server (tests/e2e/program.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.apps.sophia import AppsArgs, SophiaApps
from components.platform.backups import backup_target
from components.platform.platform import Platform, PlatformArgs
from components.settings.secrets import SecretKey
from components.settings.stack import Settings


@dataclass(frozen=True)
class KubernetesLayer:
    platform: Platform
    apps: SophiaApps


def kubernetes_layer(settings: Settings, provider: k8s.Provider) -> KubernetesLayer:
    """The platform add-ons and the Sophia workloads, every object on `provider`'s cluster."""
    backups = backup_target(settings.cluster, settings.secrets)
    on_cluster = pulumi.ResourceOptions(provider=provider)
    platform = Platform(
        "platform",
        PlatformArgs(
            cluster=settings.cluster,
            network=settings.network,
            gitops=settings.gitops,
            platform=settings.platform,
            grafana_admin_password=settings.secrets[SecretKey.GRAFANA_ADMIN_PASSWORD],
            backup_keys=backups.keys if backups is not None else None,
            argocd_admin_password_bcrypt=settings.secrets[SecretKey.ARGOCD_ADMIN_PASSWORD_BCRYPT],
        ),
        opts=on_cluster,
    )
    apps = SophiaApps(
        "sophia",
        AppsArgs(
            apps=settings.apps,
            llm_gateway=settings.llm_gateway,
            images=settings.images,
            secrets=settings.secrets,
            domain=settings.network.domain,
            cluster_issuer=platform.cluster_issuer_name,
            ingress_class=platform.ingress_class,
            monitoring=platform.monitoring,
            ingress_depends_on=(platform.cert_manager.production_issuer,),
            database_operator=(platform.postgres_operator.operator, platform.postgres_operator.plugin),
            backups=backups,
        ),
        opts=on_cluster,
    )
    return KubernetesLayer(platform, apps)
