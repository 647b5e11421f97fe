"""sophia-infra: settings → K3s cluster → Kubernetes provider → platform → Sophia workloads."""

import pulumi
import pulumi_kubernetes as k8s

from components.cluster import K3sCluster, K3sClusterArgs
from components.kubernetes_layer import kubernetes_layer
from components.kubernetes_provider import provider_args
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
layer = kubernetes_layer(settings, provider)

pulumi.export("loadBalancerAddress", layer.platform.load_balancer_address)
pulumi.export("argocdUrl", layer.platform.argocd_url)
pulumi.export("grafanaUrl", layer.platform.grafana_url)
pulumi.export("url", layer.apps.url)
pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("apiEndpoint", cluster.api_endpoint)
pulumi.export("nodes", cluster.node_names)
