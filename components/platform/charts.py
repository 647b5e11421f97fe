"""Every third-party chart the platform installs: exact version, official repository, and what we read of it.

The one place a chart version changes. Each chart also lists the values paths its `values.yaml` at
that version documents and that this program sets (`documented`), and the values path of every
container's `resources` (`containers`). Both lists were written by hand from reading the chart at the
recorded tag and commit; tests hold every value the program sets to `documented` (a misspelled
value silently does nothing in Helm) and every container to requests and limits. Bumping
`version` means reading the new `values.yaml` and templates again and updating `source` and both lists.

Path syntax: keys joined by `.`; a key that itself contains a dot is written in brackets
(`grafana.[grafana.ini].server.root_url`). Below a documented path the chart passes the value on
to Kubernetes or the application unchanged (a `resources` block, an `affinity`, `configs.params`),
so anything under it is the chart's documented content, not a chart key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

ValuesPath = tuple[str, ...]

_KEY = re.compile(r"\[([^\]]+)\]|([^.\[\]]+)")


def values_path(text: str) -> ValuesPath:
    """`a.[b.c].d` -> ('a', 'b.c', 'd')."""
    keys = tuple(bracketed or plain for bracketed, plain in _KEY.findall(text))
    if ".".join(f"[{k}]" if "." in k else k for k in keys) != text:
        raise ValueError(f"malformed values path {text!r}")
    return keys


def show_path(path: ValuesPath) -> str:
    return ".".join(f"[{k}]" if "." in k else k for k in path)


@dataclass(frozen=True)
class Chart:
    name: str
    version: str
    repository: str
    """The chart's official Helm repository."""
    source: str
    """Where the values and templates were read: `<GitHub repo>@<tag> (<commit>) <chart dir>`."""
    documented: frozenset[ValuesPath]
    containers: Mapping[str, ValuesPath]
    """Each container (or init container) the chart runs with our values, and its `resources` path."""
    limit_range_sized: tuple[str, ...] = ()
    """Containers the chart runs with our values but offers no `resources` value for: the LimitRange of
    the release's namespace sizes them."""

    def is_documented(self, path: ValuesPath) -> bool:
        return any(path[: len(known)] == known for known in self.documented)


def _chart(
    name: str,
    version: str,
    *,
    repository: str,
    source: str,
    documented: list[str],
    containers: dict[str, str],
    limit_range_sized: tuple[str, ...] = (),
) -> Chart:
    resources = {container: values_path(path) for container, path in containers.items()}
    paths = frozenset(values_path(p) for p in documented) | frozenset(resources.values())
    return Chart(name, version, repository, source, paths, MappingProxyType(resources), limit_range_sized)


METALLB: Final = _chart(
    "metallb",
    "0.16.1",
    repository="https://metallb.github.io/metallb",
    source="metallb/metallb@v0.16.1 (791dfcc63ced7a6b3e869131eae75e645150fff0) charts/metallb",
    documented=[
        # 0.16 turns on the bundled FRR-K8s by default; this cluster announces in layer 2 only.
        "frrk8s.enabled",
        "crds.enabled",
        "speaker.tolerations",
        # ServiceMonitors for controller and speaker; Prometheus needs a Role to scrape them (HTTPS,
        # bearer token), which the chart grants to this service account in that namespace.
        "prometheus.serviceMonitor.enabled",
        "prometheus.serviceAccount",
        "prometheus.namespace",
        # Both on the host network (the speaker's `hostNetwork: true`): components/host_ports.py.
        "prometheus.metricsPort",
        "speaker.memberlist.mlBindPort",
    ],
    # speaker.frr.enabled is false and frrk8s is off, so the speaker pod runs the speaker alone.
    containers={"controller": "controller.resources", "speaker": "speaker.resources"},
)

CERT_MANAGER: Final = _chart(
    "cert-manager",
    "v1.21.1",
    repository="https://charts.jetstack.io",
    source="cert-manager/cert-manager@v1.21.1 (24e33194fb39488eff2bbf10c6dc640f407cad44) deploy/charts/cert-manager",
    documented=[
        "crds.enabled",
        "crds.keep",
        "replicaCount",
        "webhook.replicaCount",
        "cainjector.replicaCount",
        "prometheus.servicemonitor.enabled",
    ],
    containers={
        "cert-manager-controller": "resources",
        "cert-manager-webhook": "webhook.resources",
        "cert-manager-cainjector": "cainjector.resources",
        "cert-manager-startupapicheck": "startupapicheck.resources",
    },
)

ARGO_CD: Final = _chart(
    "argo-cd",
    "10.1.1",
    repository="https://argoproj.github.io/argo-helm",
    source="argoproj/argo-helm@argo-cd-10.1.1 (af0a9310bacbaa4636018dfe22c801a6d33a5c43) charts/argo-cd",
    documented=[
        "fullnameOverride",
        "crds.install",
        "crds.keep",
        "global.domain",
        # Free-form: each key becomes an entry of argocd-cmd-params-cm (`server.insecure`: TLS ends at Traefik).
        "configs.params",
        # Off: the program creates argocd-secret itself, with the admin password hash from ESC.
        "configs.secret.createSecret",
        "dex.enabled",
        "notifications.enabled",
        "server.ingress.enabled",
        # Each component's metrics Service and ServiceMonitor (off by default).
        "controller.metrics.enabled",
        "controller.metrics.serviceMonitor.enabled",
        "server.metrics.enabled",
        "server.metrics.serviceMonitor.enabled",
        "repoServer.metrics.enabled",
        "repoServer.metrics.serviceMonitor.enabled",
        "applicationSet.metrics.enabled",
        "applicationSet.metrics.serviceMonitor.enabled",
    ],
    containers={
        "application-controller": "controller.resources",
        "repo-server": "repoServer.resources",
        "repo-server copyutil (init)": "repoServer.copyutil.resources",
        "server": "server.resources",
        "redis": "redis.resources",
        "applicationset-controller": "applicationSet.resources",
        "redis-secret-init (hook job)": "redisSecretInit.resources",
    },
)

NVIDIA_DEVICE_PLUGIN: Final = _chart(
    "nvidia-device-plugin",
    "0.20.0",
    repository="https://nvidia.github.io/k8s-device-plugin",
    source="NVIDIA/k8s-device-plugin@v0.20.0 (1b826acc6af3079d8923bac395c3124b8861a9a6)"
    " deployments/helm/nvidia-device-plugin",
    documented=[
        "runtimeClassName",
        "affinity",
        "tolerations",
        "gfd.enabled",
        # An embedded ConfigMap of named plugin config files, and the one every node runs (time-slicing).
        "config.map",
        "config.default",
    ],
    # gfd is off, and the MPS control daemon only runs on nodes labelled nvidia.com/mps.capable.
    containers={"nvidia-device-plugin-ctr": "resources"},
    # With a `config`, templates/daemonset-device-plugin.yml adds the config-manager as an init
    # container and a sidecar, with no resources value for either.
    limit_range_sized=("nvidia-device-plugin-init (init)", "nvidia-device-plugin-sidecar"),
)

DCGM_EXPORTER: Final = _chart(
    "dcgm-exporter",
    "4.8.2",
    repository="https://nvidia.github.io/dcgm-exporter/helm-charts",
    source="NVIDIA/dcgm-exporter@4.5.3-4.8.2 (691c92762eb551313c825f6efe4ceeee20982801) deployment",
    # The chart's own ServiceMonitor (on by default) would make the release wait for the Prometheus
    # Operator's CRD; the platform emits its own, depending on the monitoring release instead.
    documented=["runtimeClassName", "affinity", "tolerations", "serviceMonitor.enabled", "service.port"],
    containers={"exporter": "resources"},
)

KUBE_PROMETHEUS_STACK: Final = _chart(
    "kube-prometheus-stack",
    "88.5.3",
    repository="https://prometheus-community.github.io/helm-charts",
    source="prometheus-community/helm-charts@kube-prometheus-stack-88.5.3 (ea930baeebeba39f56d6b44e351f23b2a072a600)"
    " charts/kube-prometheus-stack; subcharts read at their pinned tags: grafana-community/helm-charts@grafana-12.11.1"
    " (864f7794683680e5100a38670e103c4fa6e37e29), kube-state-metrics-8.4.0 (1982f1c5828920f5d4ea5d04956169e81f8c5129),"
    " prometheus-node-exporter-4.56.1 (8b8e639cac80a3001412f187060068978f649a55)",
    documented=[
        "crds.enabled",
        # Helm installs CRDs only once; this pre-upgrade hook job applies the chart's CRDs on every
        # upgrade (charts/crds/templates/upgrade/job.yaml). Its busybox defaults to `latest`: pinned.
        "crds.upgradeJob.enabled",
        "crds.upgradeJob.image.busybox.tag",
        # K3s runs these inside its own process with metrics bound to localhost: nothing to scrape.
        "kubeControllerManager.enabled",
        "kubeScheduler.enabled",
        "kubeProxy.enabled",
        "kubeEtcd.enabled",
        # Select every ServiceMonitor/PodMonitor/rule in the cluster, not only this release's.
        "prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValues",
        "prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues",
        "prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues",
        "prometheus.prometheusSpec.retention",
        "prometheus.prometheusSpec.retentionSize",
        # The volumeClaimTemplate shape is the commented example under storageSpec in values.yaml.
        "prometheus.prometheusSpec.storageSpec",
        "alertmanager.alertmanagerSpec.storage",
        "grafana.admin.existingSecret",
        "grafana.admin.userKey",
        "grafana.admin.passwordKey",
        "grafana.persistence.enabled",
        "grafana.persistence.size",
        # Documented as a commented key in grafana's values.yaml (`# storageClassName: default`).
        "grafana.persistence.storageClassName",
        # `root_url` is documented (commented) under grafana.ini.server in grafana's values.yaml.
        "grafana.[grafana.ini].server.root_url",
        "grafana.testFramework.enabled",
        # `podAnnotations` is a commented key of grafana's values.yaml; `extraInitContainers` a
        # documented list of container specs the chart passes through `tpl`.
        "grafana.podAnnotations",
        "grafana.extraInitContainers",
        # node-exporter's listening port on the host network (components/host_ports.py).
        "prometheus-node-exporter.service.port",
    ],
    containers={
        "prometheus-operator": "prometheusOperator.resources",
        "CRD upgrade job: busybox (init) and kubectl (hook job)": "crds.upgradeJob.resources",
        "admission-webhook patch (hook jobs)": "prometheusOperator.admissionWebhooks.patch.resources",
        "config-reloader (Prometheus, Alertmanager sidecar)": "prometheusOperator.prometheusConfigReloader.resources",
        "prometheus": "prometheus.prometheusSpec.resources",
        "alertmanager": "alertmanager.alertmanagerSpec.resources",
        "grafana": "grafana.resources",
        "grafana dashboard and datasource sidecars": "grafana.sidecar.resources",
        "grafana init-chown-data (init)": "grafana.initChownData.resources",
        "kube-state-metrics": "kube-state-metrics.resources",
        "node-exporter": "prometheus-node-exporter.resources",
    },
)

CLOUDNATIVE_PG: Final = _chart(
    "cloudnative-pg",
    "0.29.0",
    repository="https://cloudnative-pg.github.io/charts",
    source="cloudnative-pg/charts@cloudnative-pg-v0.29.0 (d1b5ad60cee2d9432a9cc05627b42a8d8dc7bbae)"
    " charts/cloudnative-pg (operator 1.30.0)",
    # Everything else at the chart's defaults: CRDs on, cluster-wide, webhooks on.
    documented=[],
    containers={"manager": "resources"},
)

PLUGIN_BARMAN_CLOUD: Final = _chart(
    "plugin-barman-cloud",
    "0.7.0",
    repository="https://cloudnative-pg.github.io/charts",
    source="cloudnative-pg/charts@plugin-barman-cloud-v0.7.0 (83bd9c59514cb7ff3692049d85ba604dcb458700)"
    " charts/plugin-barman-cloud (plugin v0.13.0)",
    # Its certificates come from a cert-manager Issuer the chart creates (certificate.*, defaults).
    # The sidecar it adds to PostgreSQL pods is sized by the ObjectStore, not by this chart.
    documented=[],
    containers={"barman-cloud": "resources"},
)

CHARTS: Final[tuple[Chart, ...]] = (
    METALLB,
    CERT_MANAGER,
    ARGO_CD,
    NVIDIA_DEVICE_PLUGIN,
    DCGM_EXPORTER,
    KUBE_PROMETHEUS_STACK,
    CLOUDNATIVE_PG,
    PLUGIN_BARMAN_CLOUD,
)
CHARTS_BY_NAME: Final[Mapping[str, Chart]] = MappingProxyType({c.name: c for c in CHARTS})


# K3s's own packaged Traefik (the HelmChart `traefik` in kube-system), configured through a
# HelmChartConfig, not a release of ours: K3s picks its version. Every key set here was read at
# v41.3.0 and is the same at v39.0.0 (the K3s 1.35 line bundles the 39 series).
TRAEFIK: Final = _chart(
    "traefik",
    "41.3.0",
    repository="bundled with K3s (HelmChart kube-system/traefik)",
    source="traefik/traefik-helm-chart@v41.3.0 (a8a66d0098703627b2cf352c66b1725c196a734a) traefik",
    documented=[
        "service.annotations",
        # Plain HTTP answers with a redirect to the TLS entry point (`to`, `scheme`, `permanent`).
        "ports.web.http.redirections.entryPoint",
        # A metrics Service and a ServiceMonitor on it (the chart fails without the Operator's CRD).
        "metrics.prometheus.service.enabled",
        "metrics.prometheus.serviceMonitor.enabled",
    ],
    containers={},
)
TRAEFIK_HELM_CHART: Final = TRAEFIK.name
TRAEFIK_NAMESPACE: Final = "kube-system"
INGRESS_CLASS: Final = "traefik"


def leaf_paths(values: Mapping[str, object], prefix: ValuesPath = ()) -> list[ValuesPath]:
    """Every path that `values` sets a value at (a list or an empty mapping is one value)."""
    paths: list[ValuesPath] = []
    for key, value in values.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and value:
            paths.extend(leaf_paths(value, path))
        else:
            paths.append(path)
    return paths


def undocumented_values(chart: Chart, values: Mapping[str, object]) -> list[str]:
    """The values paths set that the chart version's values.yaml does not document (as far as we read it)."""
    return [show_path(p) for p in leaf_paths(values) if not chart.is_documented(p)]


def value_at(values: Mapping[str, object], path: ValuesPath) -> object:
    current: object = values
    for key in path:
        if not isinstance(current, Mapping) or key not in current:
            return None
        current = current[key]
    return current


def unsized_containers(chart: Chart, values: Mapping[str, object]) -> list[str]:
    """The chart's containers that `values` gives no CPU and memory requests and limits."""
    missing = []
    for container, path in chart.containers.items():
        sizes = value_at(values, path)
        complete = isinstance(sizes, Mapping) and all(
            isinstance(sizes.get(kind), Mapping) and {"cpu", "memory"} <= set(sizes[kind])
            for kind in ("requests", "limits")
        )
        if not complete:
            missing.append(f"{container} ({show_path(path)})")
    return missing
