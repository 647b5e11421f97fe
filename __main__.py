"""sophia-infra: settings → K3s cluster → Kubernetes provider → platform → Sophia workloads."""

import pulumi
import pulumi_kubernetes as k8s

from components.apps.sophia import AppsArgs, SophiaApps
from components.cluster import K3sCluster, K3sClusterArgs
from components.kubernetes_provider import provider_args
from components.platform.backups import backup_target
from components.platform.platform import Platform, PlatformArgs
from components.settings.secrets import SecretKey
from components.settings.stack import load_settings, stack_config

settings = load_settings(pulumi.get_stack(), *stack_config())

cluster = K3sCluster(
    "sophia", K3sClusterArgs(cluster=settings.cluster, ssh_private_key=settings.secrets[SecretKey.SSH_PRIVATE_KEY])
)
provider = k8s.Provider(
    "sophia",
    provider_args(cluster.kubeconfig, cluster.identifier),
    opts=pulumi.ResourceOptions(depends_on=[cluster]),
)

backups = backup_target(settings.cluster, settings.secrets)
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
    opts=pulumi.ResourceOptions(provider=provider),
)
pulumi.export("loadBalancerAddress", platform.load_balancer_address)
pulumi.export("argocdUrl", platform.argocd_url)
pulumi.export("grafanaUrl", platform.grafana_url)

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
    opts=pulumi.ResourceOptions(provider=provider),
)
pulumi.export("url", apps.url)

pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("apiEndpoint", cluster.api_endpoint)
pulumi.export("nodes", cluster.node_names)
