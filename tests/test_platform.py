"""The platform add-ons over the rendered production stack (and a variant with Argo CD Applications)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import namespaces
from components.cluster.node_config import node_labels
from components.gpu import ARCH_LABEL, GPU_RESOURCE, GPU_TYPE_LABEL, RUNTIME_CLASS
from components.platform.charts import (
    CHARTS,
    CHARTS_BY_NAME,
    KUBE_PROMETHEUS_STACK,
    NVIDIA_DEVICE_PLUGIN,
    TRAEFIK,
    undocumented_values,
    unsized_containers,
    value_at,
    values_path,
)
from components.platform.nvidia import DEVICE_PLUGIN_CONFIG, device_plugin_values
from components.rollout import MAX_SURGE
from components.settings.apps import cpu_millis, memory_bytes
from components.settings.cluster import Arch, Taint
from components.settings.platform import NO_SHARING, GpuSharing
from components.settings.stack import Settings
from render import gitops_paths
from render.__main__ import render
from render.context import CheckResult
from render.gitops_paths import RepositoryError, missing_paths
from render.model import HELM_RELEASE, Rendered
from render.platform_checks import load_balancer_violations, ownership_violations
from tests.support import problems_of, production_document, settings_from, stack_from, write_stack

EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")
# `Chart.source`: `<GitHub repo>@<tag> (<commit>) <chart dir>`.
CHART_SOURCE = re.compile(r"^[\w.-]+/[\w.-]+@(?P<tag>\S+) \([0-9a-f]{40}\) \S")
# The version a chart's tag names: its last x.y.z, after a `v` (`v0.16.1`), the chart's name and a dash
# (`argo-cd-10.1.1`) or the DCGM version and a dash (dcgm-exporter's `4.5.3-4.8.2` is chart 4.8.2).
TAG_VERSION = re.compile(r"(?:^|[-v])(\d+\.\d+\.\d+)$")
APPLICATIONS = [
    {"name": "sophia-agents", "path": "infrastructure/kubernetes/manifests", "namespace": "sophia-agents"},
    {"name": "sophia-labs", "path": "deploy/labs", "namespace": "sophia-labs"},
]
CRD_RELEASE = {
    # API group -> chart whose release installs the CRD; helm.cattle.io ships with K3s itself.
    "metallb.io": "metallb",
    "cert-manager.io": "cert-manager",
    "argoproj.io": "argo-cd",
    "monitoring.coreos.com": "kube-prometheus-stack",
    "postgresql.cnpg.io": "cloudnative-pg",
    "barmancloud.cnpg.io": "plugin-barman-cloud",
}
K3S_CRD_GROUPS = {"helm.cattle.io"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return settings_from(tmp_path_factory.mktemp("settings"), production_document())


@pytest.fixture(scope="module")
def with_apps_render(tmp_path_factory: pytest.TempPathFactory) -> tuple[Rendered, list[CheckResult]]:
    """Production plus two Argo CD Applications (production declares none yet)."""
    directory = tmp_path_factory.mktemp("with-apps")
    document = production_document()
    document["config"]["sophia-infra:gitops"]["applications"] = APPLICATIONS
    return render(stack_from(directory, document), directory / "out")


@pytest.fixture(scope="module")
def with_apps(with_apps_render: tuple[Rendered, list[CheckResult]]) -> Rendered:
    return with_apps_render[0]


def _platform_urns(rendered: Rendered) -> set[str]:
    """URNs of every resource below the Platform component."""
    by_urn = {r.urn: r for r in rendered.registrations}
    platform = {r.urn for r in rendered.registrations if r.type == "sophia:platform:Platform"}
    found = set()
    for r in rendered.registrations:
        parent = r.parent
        while parent is not None:
            if parent in platform:
                found.add(r.urn)
                break
            parent = by_urn[parent].parent if parent in by_urn else None
    return found


def _release(rendered: Rendered, chart: str) -> dict[str, Any]:
    matches = [r for r in rendered.by_type(HELM_RELEASE) if r["inputs"].get("chart") == chart]
    assert len(matches) == 1, f"expected one release of {chart}, got {len(matches)}"
    return matches[0]


def _values(rendered: Rendered, chart: str) -> dict[str, Any]:
    return dict(_release(rendered, chart)["inputs"].get("values") or {})


def _one(rendered: Rendered, kind: str, name: str) -> dict[str, Any]:
    matches = [m for m in rendered.objects(kind) if m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, got {len(matches)}"
    return matches[0]


def _resource(rendered: Rendered, kind: str, name: str) -> dict[str, Any]:
    matches = [
        r
        for r in rendered.resources
        if r["inputs"].get("kind") == kind and (r["inputs"].get("metadata") or {}).get("name") == name
    ]
    assert len(matches) == 1
    return matches[0]


# --- Helm releases -----------------------------------------------------------------------------


def test_every_platform_release_pins_an_exact_chart_version_from_its_official_repository(production: Rendered) -> None:
    releases = {r["inputs"]["chart"]: r["inputs"] for r in production.by_type(HELM_RELEASE)}
    assert set(releases) >= {c.name for c in CHARTS}
    for chart in CHARTS:
        inputs = releases[chart.name]
        assert EXACT_VERSION.fullmatch(inputs["version"]), inputs["version"]
        assert inputs["version"] == chart.version
        assert inputs["repositoryOpts"] == {"repo": chart.repository}
        assert chart.repository.startswith("https://")


def test_a_chart_mirror_serves_every_release_the_same_chart_at_the_same_version(
    production: Rendered, tmp_path: Path
) -> None:
    """A restricted network's internal repository replaces every official one, and nothing else changes."""
    mirror = "https://charts.internal.example/helm"
    document = production_document()
    document["config"]["sophia-infra:platform"]["chartMirror"] = mirror
    mirrored, results = render(stack_from(tmp_path, document), tmp_path / "out")
    assert [(r.name, r.violations) for r in results if r.violations] == []
    for chart in CHARTS:
        inputs = _release(mirrored, chart.name)["inputs"]
        assert inputs["repositoryOpts"] == {"repo": mirror}
        assert (inputs["chart"], inputs["version"]) == (chart.name, chart.version)
        assert inputs["values"] == _values(production, chart.name)


def test_every_release_installs_the_version_of_the_chart_tag_its_values_were_read_at(production: Rendered) -> None:
    releases = production.by_type(HELM_RELEASE)
    assert {r["inputs"]["chart"] for r in releases} == set(CHARTS_BY_NAME)
    for release in releases:
        chart = CHARTS_BY_NAME[release["inputs"]["chart"]]
        source = CHART_SOURCE.match(chart.source)
        assert source, f"{chart.name}: source {chart.source!r} names no tag and commit"
        tagged = TAG_VERSION.search(source["tag"])
        assert tagged, f"{chart.name}: tag {source['tag']!r} names no version"
        version = release["inputs"]["version"]
        assert version.removeprefix("v") == tagged[1], f"{chart.name} {version} was read at tag {source['tag']}"


def test_every_release_has_a_fixed_name_in_its_own_namespace(production: Rendered) -> None:
    for chart in CHARTS:
        inputs = _release(production, chart.name)["inputs"]
        assert inputs["name"], f"{chart.name}: Pulumi would add a random suffix to the release name"
        assert inputs["namespace"] in namespaces.PLATFORM
        assert inputs.get("createNamespace") is False


def test_every_value_a_release_sets_is_documented_in_that_chart_version(production: Rendered) -> None:
    for chart in CHARTS:
        assert undocumented_values(chart, _values(production, chart.name)) == [], chart.name


def test_a_misspelled_chart_value_is_caught() -> None:
    values = {"grafana": {"admin": {"existingSecret": "x"}, "adminPasword": "y"}, "prometheus": {"retension": "1d"}}
    assert undocumented_values(KUBE_PROMETHEUS_STACK, values) == ["grafana.adminPasword", "prometheus.retension"]
    assert values_path("grafana.[grafana.ini].server.root_url") == ("grafana", "grafana.ini", "server", "root_url")


def test_every_add_on_container_has_requests_and_limits(production: Rendered) -> None:
    for chart in CHARTS:
        assert chart.containers, f"{chart.name}: no container listed"
        values = _values(production, chart.name)
        assert unsized_containers(chart, values) == [], chart.name
        for container, path in chart.containers.items():
            sizes = value_at(values, path)
            assert isinstance(sizes, dict)
            requests, limits = sizes["requests"], sizes["limits"]
            assert cpu_millis(requests["cpu"]) <= cpu_millis(limits["cpu"]), container
            assert memory_bytes(requests["memory"]) <= memory_bytes(limits["memory"]), container


def _limit_range_defaults(rendered: Rendered, namespace: str) -> tuple[dict[str, str], dict[str, str]] | None:
    """The default requests and limits a LimitRange of `namespace` gives containers that set none."""
    for limit_range in rendered.objects("LimitRange"):
        if limit_range["metadata"].get("namespace") != namespace:
            continue
        for item in limit_range["spec"]["limits"]:
            sized = all({"cpu", "memory"} <= set(item.get(kind, {})) for kind in ("defaultRequest", "default"))
            if item["type"] == "Container" and sized:
                return item["defaultRequest"], item["default"]
    return None


def test_add_on_containers_the_chart_cannot_size_get_their_namespaces_defaults(production: Rendered) -> None:
    charts = [c for c in CHARTS if c.limit_range_sized]
    assert charts, "the device plugin's config-manager has no resources value"
    for chart in charts:
        release = _release(production, chart.name)
        namespace = release["inputs"]["namespace"]
        defaults = _limit_range_defaults(production, namespace)
        assert defaults is not None, f"{chart.name}: {chart.limit_range_sized} run unsized in {namespace}"
        requests, limits = defaults
        assert cpu_millis(requests["cpu"]) <= cpu_millis(limits["cpu"])
        assert memory_bytes(requests["memory"]) <= memory_bytes(limits["memory"])
        (limit_range,) = [
            r
            for r in production.resources
            if r["inputs"].get("kind") == "LimitRange" and r["inputs"]["metadata"]["namespace"] == namespace
        ]
        assert limit_range["urn"] in release["dependencies"], f"{chart.name} may start pods before the defaults exist"


def test_a_container_without_limits_is_caught() -> None:
    chart = CHARTS_BY_NAME["metallb"]
    values = {"controller": {"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}}
    assert unsized_containers(chart, values) == ["controller (controller.resources)", "speaker (speaker.resources)"]


def test_independent_add_ons_do_not_wait_for_each_other(production: Rendered) -> None:
    """A release waits for objects of its own add-on (its namespace, its Secret) and for no other add-on
    but the monitoring release, when its chart's values create ServiceMonitors (they need its CRD)."""
    by_urn = {r["urn"]: r for r in production.resources}
    # The one exception: the Barman Cloud plugin's chart creates cert-manager Issuers and Certificates.
    needs = {"plugin-barman-cloud": {_release(production, "cert-manager")["urn"]}}
    monitoring = _release(production, "kube-prometheus-stack")
    for chart in CHARTS:
        release = _release(production, chart.name)
        for dependency in release["dependencies"]:
            if by_urn[dependency]["type"].startswith("pulumi:providers:") or dependency in needs.get(chart.name, ()):
                continue
            if dependency == monitoring["urn"] and chart.name in SCRAPED_BY_THEIR_OWN_SERVICE_MONITORS:
                continue
            assert by_urn[dependency]["parent"] == release["parent"], f"{chart.name} waits for {dependency}"


# Each chart's values that create its own ServiceMonitor(s).
SCRAPED_BY_THEIR_OWN_SERVICE_MONITORS = {
    "metallb": [("prometheus", "serviceMonitor", "enabled")],
    "cert-manager": [("prometheus", "servicemonitor", "enabled")],
    "argo-cd": [
        (component, "metrics", key)
        for component in ("controller", "server", "repoServer", "applicationSet")
        for key in ("enabled", "serviceMonitor")
    ],
}


def test_the_platform_itself_is_scraped_through_its_charts_service_monitors(production: Rendered) -> None:
    monitoring = _release(production, "kube-prometheus-stack")
    for chart, paths in SCRAPED_BY_THEIR_OWN_SERVICE_MONITORS.items():
        values = _values(production, chart)
        for path in paths:
            value = value_at(values, path)
            assert value is True or value == {"enabled": True}, (chart, path)
        # Their templates need (or skip without) the Prometheus Operator's CRD.
        assert monitoring["urn"] in _release(production, chart)["dependencies"], chart
    # MetalLB's metrics are HTTPS with a bearer token: the chart grants Prometheus's account a Role.
    metallb = _values(production, "metallb")["prometheus"]
    assert metallb["serviceAccount"] == "monitoring-kube-prometheus-prometheus"
    assert metallb["namespace"] == namespaces.MONITORING
    traefik = _one(production, "HelmChartConfig", "traefik")
    prometheus = yaml.safe_load(traefik["spec"]["valuesContent"])["metrics"]["prometheus"]
    assert prometheus == {"service": {"enabled": True}, "serviceMonitor": {"enabled": True}}
    assert monitoring["urn"] in _resource(production, "HelmChartConfig", "traefik")["dependencies"]


def test_the_prometheus_operator_crds_are_upgraded_with_the_chart(production: Rendered) -> None:
    crds = _values(production, "kube-prometheus-stack")["crds"]
    assert crds["enabled"] is True
    assert crds["upgradeJob"]["enabled"] is True
    assert crds["upgradeJob"]["image"]["busybox"]["tag"] != "latest"


def test_every_platform_resource_is_on_the_cluster_provider(production: Rendered) -> None:
    providers = {r["urn"] for r in production.resources if r["type"] == "pulumi:providers:kubernetes"}
    assert len(providers) == 1
    platform = _platform_urns(production)
    kubernetes = [r for r in production.resources if r["urn"] in platform and r["type"].startswith("kubernetes:")]
    assert kubernetes
    for resource in kubernetes:
        assert resource["provider"] in providers, resource["urn"]


# --- Custom resources --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["production", "with_apps"])
def test_every_custom_resource_depends_on_the_release_that_installs_its_crd(
    variant: str, request: pytest.FixtureRequest
) -> None:
    rendered: Rendered = request.getfixturevalue(variant)
    seen = set()
    for resource in rendered.resources:
        api_version = str(resource["inputs"].get("apiVersion", ""))
        group = api_version.split("/", maxsplit=1)[0] if "/" in api_version else ""
        if "." not in group or group.endswith(".k8s.io") or not resource["type"].startswith("kubernetes:"):
            continue
        seen.add(group)
        if group in K3S_CRD_GROUPS:
            continue
        assert group in CRD_RELEASE, f"{resource['urn']}: no known release installs {group}"
        release = _release(rendered, CRD_RELEASE[group])
        assert release["urn"] in resource["dependencies"], f"{resource['urn']} does not wait for {release['name']}"
    assert seen >= set(CRD_RELEASE) | K3S_CRD_GROUPS


def test_the_crds_come_with_their_charts(production: Rendered) -> None:
    assert value_at(_values(production, "metallb"), ("crds", "enabled")) is True
    assert value_at(_values(production, "cert-manager"), ("crds", "enabled")) is True
    assert value_at(_values(production, "argo-cd"), ("crds", "install")) is True
    assert value_at(_values(production, "kube-prometheus-stack"), ("crds", "enabled")) is True


# --- MetalLB -----------------------------------------------------------------------------------


def test_metallb_runs_in_a_privileged_namespace_with_the_configured_pool(
    production: Rendered, settings: Settings
) -> None:
    ns = _one(production, "Namespace", namespaces.METALLB)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert _release(production, "metallb")["inputs"]["namespace"] == namespaces.METALLB
    pool = _one(production, "IPAddressPool", "default")
    assert pool["apiVersion"] == "metallb.io/v1beta1"
    assert pool["spec"]["addresses"] == [b.text for b in settings.network.load_balancer_pool]
    advertisement = _one(production, "L2Advertisement", "default")
    assert advertisement["spec"]["ipAddressPools"] == [pool["metadata"]["name"]]
    assert advertisement["metadata"]["namespace"] == pool["metadata"]["namespace"] == namespaces.METALLB


def test_traefik_gets_its_address_from_metallb_through_a_helm_chart_config(
    production: Rendered, settings: Settings
) -> None:
    config = _one(production, "HelmChartConfig", "traefik")
    assert config["apiVersion"] == "helm.cattle.io/v1"
    assert config["metadata"]["namespace"] == "kube-system"
    values = yaml.safe_load(config["spec"]["valuesContent"])
    address = values["service"]["annotations"]["metallb.io/loadBalancerIPs"]
    assert address == settings.network.ingress_address == production.outputs["loadBalancerAddress"]
    assert any(address in block for block in settings.network.load_balancer_pool)


def test_plain_http_to_the_public_hosts_is_redirected_to_https(production: Rendered) -> None:
    values = yaml.safe_load(_one(production, "HelmChartConfig", "traefik")["spec"]["valuesContent"])
    redirect = values["ports"]["web"]["http"]["redirections"]["entryPoint"]
    assert redirect == {"to": "websecure", "scheme": "https", "permanent": True}
    assert undocumented_values(TRAEFIK, values) == []


@pytest.mark.parametrize("variant", ["production", "with_apps"])
def test_nothing_sets_spec_load_balancer_ip(variant: str, request: pytest.FixtureRequest) -> None:
    rendered: Rendered = request.getfixturevalue(variant)
    assert load_balancer_violations(rendered.manifests, rendered.releases) == []


def test_a_load_balancer_ip_anywhere_is_caught() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "x"},
        "spec": {"type": "LoadBalancer", "loadBalancerIP": "192.0.2.1"},
    }
    config = {
        "kind": "HelmChartConfig",
        "metadata": {"name": "traefik", "namespace": "kube-system"},
        "spec": {"valuesContent": "service:\n  spec:\n    loadBalancerIP: 192.0.2.1\n"},
    }
    violations = load_balancer_violations([service, config], {"r": {"values": {"svc": {"loadBalancerIP": "1"}}}})
    assert len(violations) == 4


# --- NVIDIA ------------------------------------------------------------------------------------


def _matches(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise AssertionError(f"operator {operator} not understood by this test")


def _schedulable(values: Mapping[str, Any], labels: Mapping[str, str], taints: tuple[Taint, ...]) -> bool:
    """Whether the pod of a chart with these values may run on a node with these labels and taints."""
    terms = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    if not any(all(_matches(e, labels) for e in term["matchExpressions"]) for term in terms):
        return False

    def tolerated(taint: Taint) -> bool:
        return any(
            t.get("key") in (None, taint.key)
            and (t["operator"] == "Exists" or t.get("value") == taint.value)
            and t.get("effect") in (None, taint.effect)
            for t in values["tolerations"]
        )

    return all(tolerated(t) for t in taints if t.effect != "PreferNoSchedule")


@pytest.mark.parametrize("chart", ["nvidia-device-plugin", "dcgm-exporter"])
def test_the_device_plugin_runs_on_both_architectures_and_tolerates_the_gpu_taint(
    chart: str, production: Rendered, settings: Settings
) -> None:
    values = _values(production, chart)
    assert values["runtimeClassName"] == RUNTIME_CLASS
    gpu_nodes = [n for n in settings.cluster.nodes if n.gpu is not None]
    assert {n.arch for n in gpu_nodes} == set(Arch), "production has GPU machines of both architectures"
    assert any(n.taints for n in gpu_nodes), "production has a tainted GPU machine"
    for node in gpu_nodes:
        labels = {**node_labels(node), ARCH_LABEL: node.arch.value}
        assert _schedulable(values, labels, node.taints), f"{chart} cannot run on {node.name}"
    for node in settings.cluster.nodes:
        if node.gpu is None:
            assert not _schedulable(values, {**node_labels(node), ARCH_LABEL: node.arch.value}, node.taints)


def _time_slicing(values: Mapping[str, Any]) -> dict[str, Any]:
    config = values["config"]
    assert config["default"] == DEVICE_PLUGIN_CONFIG and list(config["map"]) == [DEVICE_PLUGIN_CONFIG]
    document = yaml.safe_load(config["map"][DEVICE_PLUGIN_CONFIG])
    assert document["version"] == "v1"
    return dict(document["sharing"]["timeSlicing"])


def test_the_device_plugin_time_slices_each_gpu_as_configured(production: Rendered, settings: Settings) -> None:
    sharing = _time_slicing(_values(production, "nvidia-device-plugin"))
    assert sharing["resources"] == [{"name": GPU_RESOURCE, "replicas": settings.platform.gpu_sharing.replicas}]
    # Pods keep asking for `nvidia.com/gpu`, and one asking for two slices of a shared GPU is refused.
    assert sharing["renameByDefault"] is False
    assert sharing["failRequestsGreaterThanOne"] is True


def test_without_sharing_the_device_plugin_gets_no_config() -> None:
    """The plugin refuses a time-slicing config with fewer than 2 replicas: 1 means no config at all."""
    assert "config" not in device_plugin_values(NO_SHARING)
    assert "config" in device_plugin_values(GpuSharing(3))
    assert _time_slicing(device_plugin_values(GpuSharing(3)))["resources"][0]["replicas"] == 3
    for sharing in (NO_SHARING, GpuSharing(3)):
        assert undocumented_values(NVIDIA_DEVICE_PLUGIN, device_plugin_values(sharing)) == []


def test_every_gpu_rollout_fits_the_gpus_the_cluster_advertises(production: Rendered, settings: Settings) -> None:
    """From the render alone: surge pods of every GPU Deployment, all at once, fit the time-sliced GPUs."""
    replicas = _time_slicing(_values(production, "nvidia-device-plugin"))["resources"][0]["replicas"]
    hpas = {
        (h["metadata"]["namespace"], h["metadata"]["name"]): h for h in production.objects("HorizontalPodAutoscaler")
    }
    needed: dict[str, int] = {}
    for controller in production.objects("Deployment") + production.objects("StatefulSet"):
        spec = controller["spec"]
        pod = spec["template"]["spec"]
        gpus = sum(int(c["resources"].get("limits", {}).get(GPU_RESOURCE, 0)) for c in pod["containers"])
        if not gpus:
            continue
        hpa = hpas.get((controller["metadata"]["namespace"], controller["metadata"]["name"]))
        count = hpa["spec"]["maxReplicas"] if hpa else spec["replicas"]
        surge = spec["strategy"]["rollingUpdate"]["maxSurge"] if controller["kind"] == "Deployment" else 0
        assert surge in (0, MAX_SURGE)
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        (model,) = {v for t in terms for e in t["matchExpressions"] if e["key"] == GPU_TYPE_LABEL for v in e["values"]}
        needed[model] = needed.get(model, 0) + (count + surge) * gpus
    assert needed, "production has GPU workloads"
    for model, gpus in needed.items():
        physical = sum(n.gpu.count for n in settings.cluster.nodes if n.gpu is not None and n.gpu.model.label == model)
        assert gpus <= physical * replicas, (
            f"{model}: rollouts need {gpus}, the cluster advertises {physical * replicas}"
        )


def test_gpu_utilisation_is_scraped_from_the_dcgm_exporter(production: Rendered) -> None:
    monitor = _one(production, "ServiceMonitor", "dcgm-exporter")
    assert monitor["metadata"]["namespace"] == namespaces.NVIDIA
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "dcgm-exporter"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert value_at(_values(production, "dcgm-exporter"), ("serviceMonitor", "enabled")) is False
    resource = _resource(production, "ServiceMonitor", "dcgm-exporter")
    assert _release(production, "kube-prometheus-stack")["urn"] in resource["dependencies"]
    assert _release(production, "dcgm-exporter")["urn"] in resource["dependencies"]
    ns = _one(production, "Namespace", namespaces.NVIDIA)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


# --- cert-manager ------------------------------------------------------------------------------


def test_cluster_issuers_for_lets_encrypt_staging_and_production_solve_http01_through_traefik(
    production: Rendered, settings: Settings
) -> None:
    servers = {}
    for name in ("letsencrypt-staging", "letsencrypt-production"):
        issuer = _one(production, "ClusterIssuer", name)
        acme = issuer["spec"]["acme"]
        assert acme["email"] == settings.network.acme_email
        assert acme["solvers"] == [{"http01": {"ingress": {"ingressClassName": "traefik"}}}]
        servers[name] = acme["server"]
    assert servers == {
        "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
        "letsencrypt-production": "https://acme-v02.api.letsencrypt.org/directory",
    }


@pytest.mark.parametrize(("name", "host"), [("argocd", "argocd"), ("grafana", "grafana")])
def test_argocd_and_grafana_are_served_by_traefik_with_tls_from_the_production_issuer(
    name: str, host: str, production: Rendered, settings: Settings
) -> None:
    ingress = _one(production, "Ingress", name)
    fqdn = f"{host}.{settings.network.domain}"
    assert ingress["spec"]["ingressClassName"] == "traefik"
    annotations = ingress["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt-production"
    assert annotations["traefik.ingress.kubernetes.io/router.entrypoints"] == "websecure"
    assert ingress["spec"]["tls"] == [{"hosts": [fqdn], "secretName": f"{name}-tls"}]
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == [fqdn]
    issuer = _resource(production, "ClusterIssuer", "letsencrypt-production")
    assert issuer["urn"] in _resource(production, "Ingress", name)["dependencies"]
    output = {"argocd": "argocdUrl", "grafana": "grafanaUrl"}[name]
    assert production.outputs[output] == f"https://{fqdn}"


# --- Argo CD -----------------------------------------------------------------------------------


def test_the_argocd_ingress_points_at_the_service_the_chart_creates(production: Rendered) -> None:
    values = _values(production, "argo-cd")
    backend = _one(production, "Ingress", "argocd")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{values['fullnameOverride']}-server", "port": {"number": 80}}
    # TLS ends at Traefik; the server must then speak plain HTTP on its http port.
    assert values["configs"]["params"]["server.insecure"] is True


def test_the_app_project_admits_only_the_sophia_repository_and_application_namespaces(
    with_apps: Rendered, production: Rendered, settings: Settings
) -> None:
    for rendered, expected in ((production, []), (with_apps, sorted(a["namespace"] for a in APPLICATIONS))):
        project = _one(rendered, "AppProject", "sophia")["spec"]
        assert project["sourceRepos"] == [settings.gitops.repo_url] == ["https://github.com/ai-cherry/sophia-main"]
        assert project["clusterResourceWhitelist"] == []
        assert [d["namespace"] for d in project["destinations"]] == expected


@pytest.mark.parametrize("variant", ["production", "with_apps"])
def test_the_default_project_allows_nothing(variant: str, request: pytest.FixtureRequest) -> None:
    rendered: Rendered = request.getfixturevalue(variant)
    default = _one(rendered, "AppProject", "default")
    assert default["metadata"]["namespace"] == namespaces.ARGOCD
    spec = default["spec"]
    assert spec["sourceRepos"] == spec["destinations"] == spec["clusterResourceWhitelist"] == []
    assert spec["namespaceResourceBlacklist"] == [{"group": "*", "kind": "*"}]
    assert default["metadata"]["annotations"]["pulumi.com/patchForce"] == "true"
    # Argo CD's server creates `default` at start: the patch waits for the release.
    patch = _resource(rendered, "AppProject", "default")
    assert _release(rendered, "argo-cd")["urn"] in patch["dependencies"]
    # Removing the patch must not re-open `default`, and the real provider refuses to delete a patch
    # that owns the required `spec` anyway: it is retained, fenced.
    assert patch["options"].get("retainOnDelete") is True
    for app in rendered.objects("Application"):
        assert app["spec"]["project"] == "sophia"


def test_the_argocd_admin_password_hash_comes_from_esc_through_a_secret(production: Rendered) -> None:
    secret = _one(production, "Secret", "argocd-secret")
    assert secret["metadata"]["namespace"] == namespaces.ARGOCD
    assert secret["metadata"]["labels"]["app.kubernetes.io/part-of"] == "argocd"
    assert secret["stringData"]["admin.password"] == "[secret]"
    values = _values(production, "argo-cd")
    assert values["configs"]["secret"] == {"createSecret": False}
    assert "argocdServerAdminPassword" not in str(values)
    assert value_at(values, ("configs", "cm", "admin.enabled")) in (None, True)
    release = _release(production, "argo-cd")
    assert _resource(production, "Secret", "argocd-secret")["urn"] in release["dependencies"]


def test_applications_follow_main_with_automated_prune_and_self_heal(with_apps: Rendered) -> None:
    applications = with_apps.objects("Application")
    assert {a["metadata"]["name"] for a in applications} == {a["name"] for a in APPLICATIONS}
    for app in applications:
        spec = app["spec"]
        assert app["metadata"]["namespace"] == namespaces.ARGOCD
        assert spec["project"] == "sophia"
        assert spec["source"]["targetRevision"] == "main"
        assert spec["source"]["repoURL"] == "https://github.com/ai-cherry/sophia-main"
        assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
        declared = {(a["name"], a["path"]) for a in APPLICATIONS}
        assert (app["metadata"]["name"], spec["source"]["path"]) in declared


def test_the_production_stack_follows_main(settings: Settings) -> None:
    assert settings.gitops.branch == "main"


def test_applications_on_another_branch_are_refused(tmp_path: Path) -> None:
    document = production_document()
    document["config"]["sophia-infra:gitops"] |= {"branch": "feature/full-prod-beast", "applications": APPLICATIONS}
    assert problems_of(tmp_path, document) == [
        "sophia-infra:gitops.branch: must be 'main': Argo CD Applications follow main (got 'feature/full-prod-beast')"
    ]


@pytest.mark.parametrize("variant", ["production", "with_apps"])
def test_no_object_is_owned_by_both_pulumi_and_argocd(variant: str, request: pytest.FixtureRequest) -> None:
    rendered: Rendered = request.getfixturevalue(variant)
    assert ownership_violations(rendered.manifests) == []


def test_every_application_namespace_is_created_by_pulumi_and_left_to_argocd(with_apps: Rendered) -> None:
    for app in APPLICATIONS:
        ns = _one(with_apps, "Namespace", app["namespace"])
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        assert not [m for m in with_apps.manifests if m["metadata"].get("namespace") == app["namespace"]]


def test_an_object_in_an_argocd_namespace_is_caught(with_apps: Rendered) -> None:
    intruder = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": APPLICATIONS[0]["namespace"]},
    }
    project = _one(with_apps, "AppProject", "sophia")
    loose = {**project, "spec": {**project["spec"], "clusterResourceWhitelist": [{"group": "*", "kind": "*"}]}}
    manifests = [m for m in with_apps.manifests if m is not project] + [intruder, loose]
    violations = ownership_violations(manifests)
    assert any("ConfigMap" in v for v in violations)
    assert any("cluster-scoped" in v for v in violations)


@pytest.mark.parametrize("namespace", ["sophia-apps", "monitoring", "kube-system", "argocd"])
def test_an_application_in_a_namespace_pulumi_manages_is_refused(namespace: str, tmp_path: Path) -> None:
    document = production_document()
    document["config"]["sophia-infra:gitops"]["applications"] = [{"name": "x", "path": "k8s", "namespace": namespace}]
    assert problems_of(tmp_path, document) == [
        f"sophia-infra:gitops.applications[0].namespace: {namespace!r} is managed by Pulumi; "
        "an Argo CD Application needs a namespace of its own"
    ]


# --- Monitoring --------------------------------------------------------------------------------


def test_service_monitors_exist_once_the_monitoring_release_is_ready(production: Rendered) -> None:
    release = _release(production, "kube-prometheus-stack")
    assert release["inputs"]["namespace"] == namespaces.MONITORING
    monitors = [r for r in production.resources if r["inputs"].get("kind") == "ServiceMonitor"]
    assert monitors
    for monitor in monitors:
        assert release["urn"] in monitor["dependencies"], monitor["urn"]
    prometheus = _values(production, "kube-prometheus-stack")["prometheus"]["prometheusSpec"]
    assert prometheus["serviceMonitorSelectorNilUsesHelmValues"] is False


def _gib(quantity: str) -> int:
    number = re.fullmatch(r"(\d+)(Gi|GB)", quantity)
    assert number, quantity
    return int(number.group(1))


def test_prometheus_alertmanager_and_grafana_keep_their_data_on_pvcs(production: Rendered, settings: Settings) -> None:
    values = _values(production, "kube-prometheus-stack")
    monitoring = settings.platform.monitoring
    prometheus = values["prometheus"]["prometheusSpec"]
    claim = prometheus["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["resources"]["requests"]["storage"] == monitoring.prometheus_storage
    assert claim["storageClassName"] == "local-path"
    assert prometheus["retention"] == monitoring.retention
    assert _gib(prometheus["retentionSize"]) < _gib(monitoring.prometheus_storage)
    alertmanager = values["alertmanager"]["alertmanagerSpec"]["storage"]["volumeClaimTemplate"]["spec"]
    assert alertmanager["resources"]["requests"]["storage"] == monitoring.alertmanager_storage
    grafana = values["grafana"]["persistence"]
    assert grafana == {"enabled": True, "size": monitoring.grafana_storage, "storageClassName": "local-path"}


def test_the_grafana_admin_password_comes_from_a_secret_not_from_values(production: Rendered) -> None:
    grafana = _values(production, "kube-prometheus-stack")["grafana"]
    admin = grafana["admin"]
    secret = _one(production, "Secret", admin["existingSecret"])
    assert secret["metadata"]["namespace"] == namespaces.MONITORING
    assert set(secret["stringData"]) == {admin["userKey"], admin["passwordKey"]}
    assert all(v == "[secret]" for v in secret["stringData"].values())
    assert "adminPassword" not in grafana
    release = _release(production, "kube-prometheus-stack")
    assert _resource(production, "Secret", admin["existingSecret"])["urn"] in release["dependencies"]


def test_k3s_components_without_metrics_endpoints_are_not_scraped(production: Rendered) -> None:
    values = _values(production, "kube-prometheus-stack")
    for component in ("kubeControllerManager", "kubeScheduler", "kubeProxy", "kubeEtcd"):
        assert values[component] == {"enabled": False}


# --- Settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("retention", "15 days", "must be a duration in hours, days or weeks such as 15d, got '15 days'"),
        ("prometheusStorage", "50GB", "must be a volume size in whole Gi such as 50Gi, got '50GB'"),
        ("grafanaStorage", None, "is required"),
        ("retentionSize", "40GB", "unknown key"),
    ],
)
def test_a_bad_monitoring_setting_is_one_line_naming_its_key(
    key: str, value: str | None, problem: str, tmp_path: Path
) -> None:
    document = production_document()
    monitoring = document["config"]["sophia-infra:platform"]["monitoring"]
    if value is None:
        del monitoring[key]
    else:
        monitoring[key] = value
    assert problems_of(tmp_path, document) == [f"sophia-infra:platform.monitoring.{key}: {problem}"]


def test_prometheus_never_fills_its_volume(settings: Settings) -> None:
    monitoring = settings.platform.monitoring
    assert _gib(monitoring.prometheus_retention_size) == int(_gib(monitoring.prometheus_storage) * 0.8)


# --- GitOps paths (invariant 9, checked against a local repository instead of the network) --------


def _git(directory: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=directory, check=True, capture_output=True)


@pytest.fixture
def gitops_repo(tmp_path: Path) -> str:
    repo = tmp_path / "sophia-main"
    (repo / "k8s" / "labs").mkdir(parents=True)
    (repo / "k8s" / "labs" / "deployment.yaml").write_text("kind: Deployment\n")
    (repo / "docs").mkdir()
    (repo / "docs" / "x.md").write_text("x\n")
    _git(repo, "init", "--quiet", "--initial-branch=main")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet", "-m", "x")
    return f"file://{repo}"


def test_an_application_path_missing_on_main_is_reported(gitops_repo: str) -> None:
    assert missing_paths(gitops_repo, "main", ["k8s/labs", "k8s/labs/", "k8s/overlays/production", "k8s/labs/x"]) == [
        "k8s/overlays/production",
        "k8s/labs/x",
    ]


def test_a_branch_that_does_not_exist_is_an_error(gitops_repo: str) -> None:
    with pytest.raises(RepositoryError):
        missing_paths(gitops_repo, "feature/full-prod-beast", ["k8s/labs"])


def test_the_path_check_reports_each_missing_application_by_key(
    gitops_repo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = production_document()
    gitops = document["config"]["sophia-infra:gitops"]
    gitops["applications"] = [
        {"name": "labs", "path": "k8s/labs", "namespace": "sophia-labs"},
        {"name": "data", "path": "k8s/data-services", "namespace": "sophia-pipelines"},
    ]
    stack_file = write_stack(tmp_path, document)

    def local(url: str, branch: str, paths: list[str]) -> list[str]:
        assert url == "https://github.com/ai-cherry/sophia-main"
        return missing_paths(gitops_repo, branch, paths)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gitops_paths, "missing_paths", local)
        assert gitops_paths.main(["--stack-file", str(stack_file)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "sophia-infra:gitops.applications[1].path: 'k8s/data-services' is not a directory on main"
    ]
