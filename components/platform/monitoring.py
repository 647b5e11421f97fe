"""Monitoring: the Prometheus Operator stack (Prometheus, Alertmanager, Grafana) on persistent volumes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import namespaces
from components.host_ports import NODE_EXPORTER_PORT
from components.ingress import Route, tls_ingress
from components.k3s import LOCAL_STORAGE_CLASS
from components.platform.charts import INGRESS_CLASS, KUBE_PROMETHEUS_STACK
from components.platform.common import JSON, https_url, namespace, release, resources
from components.pod_security import PodSecurity
from components.settings.platform import MonitoringSettings

NAMESPACE = namespaces.MONITORING
RELEASE = "monitoring"
STORAGE_CLASS = LOCAL_STORAGE_CLASS
"""K3s's bundled provisioner: volumes on the node's disk, which is where the data should stay."""
GRAFANA_SERVICE = f"{RELEASE}-grafana"
"""The grafana subchart names its Service `<release>-grafana` (grafana.fullname, release name without `grafana`)."""
GRAFANA_PORT = 80
GRAFANA_ADMIN_SECRET = "grafana-admin"
GRAFANA_USER_KEY = "admin-user"
GRAFANA_PASSWORD_KEY = "admin-password"
GRAFANA_ADMIN_USER = "admin"
SECRET_CHECKSUM = "sophia.ai/secret-checksum"
"""The pod annotation that rolls Grafana when its admin password changes (as Workload's does for Sophia)."""

# Grafana applies GF_SECURITY_ADMIN_PASSWORD only when it creates its database; afterwards the
# password lives in the database (/var/lib/grafana/grafana.db, on the PVC) and the variable is
# ignored. So before Grafana starts, this init container sets the admin password in an existing
# database to the one in the Secret: a rotated ESC value reaches Grafana on the rollout the checksum
# annotation starts. The chart's image is distroless (no shell, so no way to pass the password on
# stdin); the init container runs the same release's full image, `grafana cli` included. The chart
# evaluates extraInitContainers as a template, so the tag is the subchart's own appVersion.
# The password goes through the shell's printf builtin into stdin: never an argument of any process.
GRAFANA_RESET_SCRIPT = (
    'if [ -s /var/lib/grafana/grafana.db ]; then printf %s "$GF_SECURITY_ADMIN_PASSWORD" | '
    "grafana cli --homepath /usr/share/grafana --config /etc/grafana/grafana.ini "
    "admin reset-admin-password --password-from-stdin; fi"
)
PROMETHEUS_SERVICE_ACCOUNT = "monitoring-kube-prometheus-prometheus"
"""kube-prometheus-stack.prometheus.serviceAccountName: `<fullname>-prometheus`, where fullname is
`<release>-kube-prometheus-stack` cut to 26 characters."""
BUSYBOX_TAG = "1.37.0"


@dataclass(frozen=True)
class MonitoringArgs:
    settings: MonitoringSettings
    grafana_host: str
    grafana_admin_password: pulumi.Output[str]
    """A secret Output (from ESC); it only ever reaches the cluster inside a Kubernetes Secret."""
    chart_mirror: str | None
    """`platform.chartMirror`: the Helm repository to pull the chart from instead of its official one."""


def _volume(size: str) -> JSON:
    return {
        "volumeClaimTemplate": {
            "spec": {
                "storageClassName": STORAGE_CLASS,
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": size}},
            }
        }
    }


def grafana_password_init() -> JSON:
    """The init container that makes Grafana's stored admin password the one in the Secret."""
    return {
        "name": "admin-password",
        "image": "docker.io/grafana/grafana:{{ .Chart.AppVersion }}",
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", GRAFANA_RESET_SCRIPT],
        "env": [
            {
                "name": "GF_SECURITY_ADMIN_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": GRAFANA_ADMIN_SECRET, "key": GRAFANA_PASSWORD_KEY}},
            }
        ],
        # The chart's own volumes: `storage` is the PVC, `config` the rendered grafana.ini.
        "volumeMounts": [
            {"name": "storage", "mountPath": "/var/lib/grafana"},
            {"name": "config", "mountPath": "/etc/grafana/grafana.ini", "subPath": "grafana.ini"},
        ],
        "resources": resources("50m", "64Mi", "500m", "256Mi"),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def password_checksum(password: pulumi.Output[str]) -> pulumi.Output[str]:
    """A secret digest of the password: in the pod template it rolls the pods, and stays secret in state."""
    return pulumi.Output.secret(password.apply(lambda p: hashlib.sha256(p.encode()).hexdigest()))


def monitoring_values(
    settings: MonitoringSettings, grafana_url: str, grafana_password_checksum: pulumi.Input[str] | None = None
) -> JSON:
    return {
        "crds": {
            "enabled": True,
            "upgradeJob": {
                "enabled": True,
                "image": {"busybox": {"tag": BUSYBOX_TAG}},
                "resources": resources("50m", "64Mi", "500m", "256Mi"),
            },
        },
        "kubeControllerManager": {"enabled": False},
        "kubeScheduler": {"enabled": False},
        "kubeProxy": {"enabled": False},
        "kubeEtcd": {"enabled": False},
        "prometheusOperator": {
            "resources": resources("100m", "128Mi", "500m", "512Mi"),
            "admissionWebhooks": {"patch": {"resources": resources("10m", "32Mi", "100m", "64Mi")}},
            "prometheusConfigReloader": {"resources": resources("10m", "32Mi", "100m", "64Mi")},
        },
        "prometheus": {
            "prometheusSpec": {
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "retention": settings.retention,
                "retentionSize": settings.prometheus_retention_size,
                "resources": resources("500m", "2Gi", "2", "8Gi"),
                "storageSpec": _volume(settings.prometheus_storage),
            }
        },
        "alertmanager": {
            "alertmanagerSpec": {
                "resources": resources("20m", "64Mi", "200m", "256Mi"),
                "storage": _volume(settings.alertmanager_storage),
            }
        },
        "grafana": {
            "admin": {
                "existingSecret": GRAFANA_ADMIN_SECRET,
                "userKey": GRAFANA_USER_KEY,
                "passwordKey": GRAFANA_PASSWORD_KEY,
            },
            "persistence": {"enabled": True, "size": settings.grafana_storage, "storageClassName": STORAGE_CLASS},
            "grafana.ini": {"server": {"root_url": grafana_url}},
            "resources": resources("100m", "256Mi", "500m", "1Gi"),
            "sidecar": {"resources": resources("20m", "64Mi", "200m", "256Mi")},
            "initChownData": {"resources": resources("10m", "16Mi", "100m", "64Mi")},
            "extraInitContainers": [grafana_password_init()],
            "podAnnotations": {} if grafana_password_checksum is None else {SECRET_CHECKSUM: grafana_password_checksum},
            # The chart's `helm test` pod is never run by Pulumi; it would only be an unsized pod.
            "testFramework": {"enabled": False},
        },
        "kube-state-metrics": {"resources": resources("20m", "64Mi", "200m", "256Mi")},
        "prometheus-node-exporter": {
            "resources": resources("20m", "32Mi", "200m", "128Mi"),
            # Explicit, from the firewall's list: node-exporter listens on the host network.
            "service": {"port": NODE_EXPORTER_PORT},
        },
    }


class Monitoring(pulumi.ComponentResource):
    """kube-prometheus-stack: ServiceMonitor and friends exist once `release` is ready; Grafana behind TLS."""

    release: k8s.helm.v3.Release
    """Installs the monitoring.coreos.com CRDs: every ServiceMonitor depends on it."""
    grafana_url: str

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sophia:platform:Monitoring", name, None, opts)
        # node-exporter reads the host (hostNetwork, hostPID, hostPath): privileged by nature.
        ns = namespace(NAMESPACE, PodSecurity.PRIVILEGED, self)
        admin = k8s.core.v1.Secret(
            GRAFANA_ADMIN_SECRET,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=GRAFANA_ADMIN_SECRET, namespace=ns.metadata.name),
            type="Opaque",
            string_data={
                GRAFANA_USER_KEY: pulumi.Output.secret(GRAFANA_ADMIN_USER),
                GRAFANA_PASSWORD_KEY: args.grafana_admin_password.apply(pulumi.Output.secret),
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.grafana_url = https_url(args.grafana_host)
        self.release = release(
            RELEASE,
            KUBE_PROMETHEUS_STACK,
            ns=ns,
            values=monitoring_values(args.settings, self.grafana_url, password_checksum(args.grafana_admin_password)),
            mirror=args.chart_mirror,
            parent=self,
            depends_on=[admin],
        )
        self._namespace = ns
        self._grafana_host = args.grafana_host
        self.register_outputs({"grafanaUrl": self.grafana_url})

    def publish_grafana(self, cluster_issuer: k8s.apiextensions.CustomResource, cluster_issuer_name: str) -> None:
        """Grafana's Ingress. A method, not part of the constructor: cert-manager, whose issuer it needs,
        itself waits for this release (its ServiceMonitor needs the Prometheus Operator's CRD)."""
        tls_ingress(
            "grafana",
            namespace=self._namespace.metadata.name,
            host=self._grafana_host,
            routes=[Route("/", GRAFANA_SERVICE, GRAFANA_PORT)],
            cluster_issuer_name=cluster_issuer_name,
            ingress_class=INGRESS_CLASS,
            # The first certificate request would fail against an issuer that does not exist yet.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster_issuer, self.release]),
        )
