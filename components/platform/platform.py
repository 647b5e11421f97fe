"""The platform: every add-on on the cluster's Kubernetes provider, independent ones side by side."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.platform.alerts import PlatformAlerts
from components.platform.argocd import ArgoCD, ArgoCDArgs
from components.platform.backups import BackupKeys, EtcdBackups, EtcdBackupsArgs
from components.platform.cert_manager import CertManager, CertManagerArgs
from components.platform.charts import INGRESS_CLASS
from components.platform.metallb import MetalLB, MetalLBArgs
from components.platform.monitoring import Monitoring, MonitoringArgs
from components.platform.nvidia import NvidiaArgs, NvidiaGpu
from components.platform.postgres_operator import CloudNativePG
from components.settings.cluster import ClusterSettings
from components.settings.gitops import GitOpsSettings
from components.settings.network import NetworkSettings
from components.settings.platform import PlatformSettings


@dataclass(frozen=True)
class PlatformArgs:
    cluster: ClusterSettings
    network: NetworkSettings
    gitops: GitOpsSettings
    platform: PlatformSettings
    grafana_admin_password: pulumi.Output[str]
    """`settings.secrets[SecretKey.GRAFANA_ADMIN_PASSWORD]`: a secret Output from ESC."""
    argocd_admin_password_bcrypt: pulumi.Output[str]
    """`settings.secrets[SecretKey.ARGOCD_ADMIN_PASSWORD_BCRYPT]`: a secret Output from ESC."""
    backup_keys: BackupKeys | None = None
    """The backup bucket's keys from ESC; present exactly when `cluster.backups` is set."""


def argocd_host(network: NetworkSettings) -> str:
    return f"argocd.{network.domain}"


def grafana_host(network: NetworkSettings) -> str:
    return f"grafana.{network.domain}"


class Platform(pulumi.ComponentResource):
    """MetalLB, cert-manager, monitoring, NVIDIA GPU support and Argo CD.

    Pass the cluster's provider in `opts` (`provider=` or `providers=`); every child inherits it.
    A Helm release waits on its namespace and what lives in it (the device plugin on its LimitRange,
    monitoring on the Grafana admin Secret, Argo CD on argocd-secret) and on no other add-on but the
    monitoring release, whose CRDs the ServiceMonitors of MetalLB's, cert-manager's and Argo CD's charts
    need. Only what needs another add-on's CRD or issuer waits for it: the ClusterIssuers for
    cert-manager, the Ingresses for the production issuer, the DCGM ServiceMonitor and Traefik's
    HelmChartConfig (its chart's ServiceMonitor) for the monitoring release.
    """

    cluster_issuer_name: str
    """The production Let's Encrypt ClusterIssuer, for `cert-manager.io/cluster-issuer` annotations."""
    cluster_issuer: k8s.apiextensions.CustomResource
    """That ClusterIssuer; an Ingress naming it should wait for it."""
    ingress_class: str
    monitoring: pulumi.Resource
    """The kube-prometheus-stack release; every ServiceMonitor must depend on it."""
    load_balancer_address: str
    argocd_url: str
    grafana_url: str
    metallb: MetalLB
    cert_manager: CertManager
    argocd: ArgoCD
    nvidia: NvidiaGpu | None
    etcd_backups: EtcdBackups | None
    alerts: PlatformAlerts
    postgres_operator: CloudNativePG

    def __init__(self, name: str, args: PlatformArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sophia:platform:Platform", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        mirror = args.platform.chart_mirror
        monitoring = Monitoring(
            "monitoring",
            MonitoringArgs(
                settings=args.platform.monitoring,
                grafana_host=grafana_host(args.network),
                grafana_admin_password=args.grafana_admin_password,
                chart_mirror=mirror,
            ),
            child,
        )
        # Their charts' ServiceMonitors need the Prometheus Operator's CRD, which the monitoring release installs.
        self.metallb = MetalLB("metallb", MetalLBArgs(args.network, monitoring.release, mirror), child)
        self.cert_manager = CertManager(
            "cert-manager", CertManagerArgs(args.network, monitoring.release, mirror), child
        )
        issuer = self.cert_manager.production_issuer
        monitoring.publish_grafana(issuer, self.cert_manager.cluster_issuer_name)
        # A cluster without GPU machines has nothing for the device plugin to advertise.
        has_gpus = any(node.gpu is not None for node in args.cluster.nodes)
        self.nvidia = (
            NvidiaGpu(
                "nvidia",
                NvidiaArgs(monitoring=monitoring.release, chart_mirror=mirror, gpu_sharing=args.platform.gpu_sharing),
                child,
            )
            if has_gpus
            else None
        )
        self.argocd = ArgoCD(
            "argocd",
            ArgoCDArgs(
                gitops=args.gitops,
                host=argocd_host(args.network),
                cluster_issuer=issuer,
                cluster_issuer_name=self.cert_manager.cluster_issuer_name,
                admin_password_bcrypt=args.argocd_admin_password_bcrypt,
                monitoring=monitoring.release,
                chart_mirror=mirror,
            ),
            child,
        )
        self.etcd_backups = None
        if args.cluster.backups is not None:
            assert args.backup_keys is not None, "the settings require the backup keys with cluster.backups"
            self.etcd_backups = EtcdBackups(
                "etcd-backups",
                EtcdBackupsArgs(args.cluster.backups, args.cluster.etcd_snapshots, args.backup_keys),
                child,
            )
        self.postgres_operator = CloudNativePG("cloudnative-pg", self.cert_manager.release, mirror, child)
        self.alerts = PlatformAlerts("alerts", args.cluster, monitoring.release, child)
        self.cluster_issuer_name = self.cert_manager.cluster_issuer_name
        self.cluster_issuer = issuer
        self.ingress_class = INGRESS_CLASS
        self.monitoring = monitoring.release
        self.load_balancer_address = self.metallb.load_balancer_address
        self.argocd_url = self.argocd.argocd_url
        self.grafana_url = monitoring.grafana_url
        self.register_outputs(
            {
                "loadBalancerAddress": self.load_balancer_address,
                "argocdUrl": self.argocd_url,
                "grafanaUrl": self.grafana_url,
                "clusterIssuerName": self.cluster_issuer_name,
            }
        )
