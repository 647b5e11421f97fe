"""Each stack's Kubernetes layer (platform and Sophia) through the real engine and the real kubernetes
provider, against a real API server with a scheduler and one kwok node per machine of the stack, the
upstream charts from the e2e's chart mirror.

The cases run in order on one stack, production's and then development's: up, the charts and CRDs,
admission, placement (every pod scheduled and Ready, GPUs, taints, the per-GPU-machine DaemonSets),
a second up, refresh, a rotated secret, an Argo CD Application's life, a drain against the
disruption budgets, destroy. Each records what the engine did (printed at the end of `make e2e`).
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from components import namespaces
from components.gpu import GPU_RESOURCE, GPU_TYPE_LABEL
from components.platform.argocd import DEFAULT_PROJECT, RESOURCES_FINALIZER, default_project_spec
from components.platform.charts import CHARTS, CHARTS_BY_NAME
from components.pod_security import PodSecurity, pod_security_labels
from components.settings.catalogue import CATALOGUE, NAMESPACES
from components.settings.secrets import SecretKey
from components.settings.stack import Settings, load_settings
from render.crds import CUSTOM_RESOURCE_SCHEMAS
from render.stack import PROJECT_DIR, load_stack, stack_names
from tests.e2e.apiserver import CRDS, ApiServer, wait_until
from tests.e2e.charts import ChartRepository
from tests.e2e.crd_schemas import looser, served_schema
from tests.e2e.engine import PLUGIN_NOTE, Engine, Run, name_of, open_engine, versions
from tests.e2e.kwok import describe_node, node_names, nodes_of, register_nodes, remove_nodes
from tests.e2e.placement import (
    GPU_MACHINE_DAEMONSETS,
    OPERATOR_WORKLOADS,
    admits,
    gpu_request,
    node_taints,
    pod_tolerations,
    settled,
)
from tests.e2e.program import AWAITS_AN_INGRESS_CONTROLLER, SKIP_AWAIT, kubernetes_program

pytestmark = pytest.mark.e2e

APP_NAMESPACES = tuple(NAMESPACES.values())
APPS_COMPONENT = "sophia:apps:SophiaApps"
PLATFORM_COMPONENT = "sophia:platform:Platform"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
CHART_MIRROR = "sophia-infra:platform.chartMirror"
CONTROLLERS = ("Deployment", "StatefulSet")
SETTLE_TIMEOUT = 120.0
# Rotated by the secret case: read through secretKeyRef by its service and that service's exporter.
ROTATED = SecretKey.REDIS_PASSWORD
# Rotated with it: read by Grafana, a chart's pods, so the rotation reaches them through a Helm upgrade.
ROTATED_PLATFORM = SecretKey.GRAFANA_ADMIN_PASSWORD
GRAFANA_RELEASE = "monitoring"
KUBERNETES_SDK_VERSION = importlib.metadata.version("pulumi-kubernetes")
# What the provider reports, as a warning, while it awaits a Deployment whose pods are not ready yet
# (pulumi-kubernetes provider/pkg/await: the Deployment's Available condition, relayed as it changes).
AWAIT_PROGRESS = re.compile(
    r"kubernetes:apps/v1:Deployment::[^:]+: "
    r"\[MinimumReplicasUnavailable\] Deployment does not have minimum availability\.$"
)


# What Helm says when an uninstall keeps a CRD its chart marks `helm.sh/resource-policy: keep` (the
# Barman Cloud plugin's ObjectStore CRD): kept on purpose, as on a real cluster.
KEPT_CRDS = re.compile(
    r"Helm uninstall returned information: \"These resources were kept due to the resource policy:"
    r"(\\n\[CustomResourceDefinition\] [a-z0-9.-]+)+\\n\"$"
)


def warnings_of(run: Run) -> list[str]:
    """The run's warnings but for the provider's await progress reports and Helm's kept CRDs."""
    return [w for w in run.warnings if not AWAIT_PROGRESS.search(w) and not KEPT_CRDS.search(w)]


@dataclass(frozen=True)
class Object:
    """A Kubernetes object the stack manages, as its state records it."""

    urn: str
    api_version: str
    kind: str
    namespace: str | None
    name: str


@pytest.fixture(scope="module", params=stack_names())
def stack_name(request: pytest.FixtureRequest, report: list[str]) -> str:
    name = str(request.param)
    report.append(f"stack {name}:")
    return name


@pytest.fixture(scope="module")
def settings(stack_name: str) -> Settings:
    config = load_stack(stack_name)
    return load_settings(config.stack, config.config, config.secret_keys)


@pytest.fixture(scope="module")
def machines(settings: Settings, apiserver: ApiServer, report: list[str]) -> Iterator[list[dict[str, Any]]]:
    """One kwok Node per machine of the stack, for as long as the stack's cases run."""
    nodes = nodes_of(settings.cluster, settings.platform.gpu_sharing)
    register_nodes(apiserver, nodes)
    report.append(f"    {len(nodes)} kwok Nodes: " + ", ".join(describe_node(n) for n in nodes))
    try:
        yield nodes
    finally:
        remove_nodes(apiserver, node_names(nodes))


@pytest.fixture(scope="module")
def stack(
    *,
    stack_name: str,
    bins: Path,
    apiserver: ApiServer,
    machines: list[dict[str, Any]],
    charts: ChartRepository,
    tmp_path_factory: pytest.TempPathFactory,
    report: list[str],
) -> Engine:
    engine = open_engine(
        bins,
        tmp_path_factory.mktemp(f"{stack_name}-stack"),
        kubernetes_program(apiserver.kubeconfig),
        report,
        stack_name=stack_name,
    )
    # As an operator on a restricted network sets it: `pulumi config set --path platform.chartMirror <url>`.
    engine.stack.set_config(CHART_MIRROR, auto.ConfigValue(charts.url), path=True)
    return engine


def state_resources(engine: Engine) -> list[dict[str, Any]]:
    deployment = engine.stack.export_stack().deployment or {}
    resources: list[dict[str, Any]] = deployment.get("resources") or []
    return resources


def managed_objects(engine: Engine) -> list[Object]:
    objects = []
    for resource in state_resources(engine):
        outputs = resource.get("outputs") or {}
        if not resource["type"].startswith("kubernetes:") or "kind" not in outputs:
            continue
        metadata = outputs["metadata"]
        objects.append(
            Object(resource["urn"], outputs["apiVersion"], outputs["kind"], metadata.get("namespace"), metadata["name"])
        )
    return objects


_PLURALS: dict[tuple[str, str], tuple[str, bool]] = {}


def path_of(server: ApiServer, obj: Object) -> str:
    """The object's REST path, its resource name found through the server's discovery."""
    key = (obj.api_version, obj.kind)
    if key not in _PLURALS:
        base = "/api/v1" if obj.api_version == "v1" else f"/apis/{obj.api_version}"
        for resource in server.get(base)["resources"]:
            if resource["kind"] == obj.kind and "/" not in resource["name"]:
                _PLURALS[key] = (resource["name"], bool(resource["namespaced"]))
                break
        else:
            raise AssertionError(f"the API server does not serve {obj.api_version} {obj.kind}")
    plural, namespaced = _PLURALS[key]
    base = "/api/v1" if obj.api_version == "v1" else f"/apis/{obj.api_version}"
    scope = f"/namespaces/{obj.namespace}" if namespaced else ""
    return f"{base}{scope}/{plural}/{obj.name}"


def controllers(server: ApiServer) -> list[dict[str, Any]]:
    found = []
    for namespace in APP_NAMESPACES:
        for kind, plural in (("Deployment", "deployments"), ("StatefulSet", "statefulsets")):
            for item in server.items(f"/apis/apps/v1/namespaces/{namespace}/{plural}"):
                found.append({**item, "kind": kind})
    return found


def pod_from(controller: dict[str, Any], name: str) -> dict[str, Any]:
    """The Pod the controller would create from its template (a StatefulSet's claims as volumes)."""
    template = copy.deepcopy(controller["spec"]["template"])
    spec = template["spec"]
    for claim in controller["spec"].get("volumeClaimTemplates") or []:
        claim_name = f"{claim['metadata']['name']}-{controller['metadata']['name']}-0"
        volume = {"name": claim["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim_name}}
        spec["volumes"] = [*(spec.get("volumes") or []), volume]
    metadata = {"name": name, "namespace": controller["metadata"]["namespace"], **template.get("metadata", {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def dry_run_pod(server: ApiServer, pod: dict[str, Any]) -> tuple[int, str, tuple[str, ...]]:
    response = server.request(
        "POST",
        f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods",
        pod,
        {"dryRun": "All", "fieldValidation": "Strict"},
    )
    return response.status, str(response.body.get("message", "")), response.warnings


def templates(server: ApiServer) -> dict[str, Any]:
    return {f"{c['kind']}/{c['metadata']['name']}": c["spec"]["template"] for c in controllers(server)}


@pytest.fixture(scope="module")
def rendered(stack_name: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """`make render`'s resources.json (rendered in a process of its own: the mock engine's runtime
    settings are process-wide, and this process runs the real engine's inline program)."""
    out = tmp_path_factory.mktemp("render") / stack_name
    subprocess.run(
        [sys.executable, "-m", "render", "--stack", stack_name, "--out", str(out)],
        cwd=PROJECT_DIR, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    resources: list[dict[str, Any]] = json.loads((out / "resources.json").read_text())["resources"]
    return resources


def subtree(resources: list[dict[str, Any]], root_type: str) -> list[dict[str, Any]]:
    """The resources under the one component of `root_type`, by their `parent` links."""
    by_urn = {r["urn"]: r for r in resources}

    def under(resource: dict[str, Any]) -> bool:
        parent = by_urn.get(resource.get("parent") or "")
        return parent is not None and (parent["type"] == root_type or under(parent))

    return [r for r in resources if under(r)]


def short_urn(urn: str) -> str:
    """A URN with its type qualified by the parent's type only, as the SDK's mock engine writes every URN.

    The real engine qualifies a type with the whole chain of its ancestors' types
    (`SophiaApps$Workload$Deployment`); the mock monitor only with the parent's (`Workload$Deployment`).
    """
    head, qualified, name = urn.rsplit("::", 2)
    return "::".join((head, "$".join(qualified.split("$")[-2:]), name))


def test_up_creates_the_whole_kubernetes_layer(
    stack: Engine, apiserver: ApiServer, bins: Path, rendered: list[dict[str, Any]], report: list[str]
) -> None:
    run = stack.run("up")
    objects = managed_objects(stack)
    assert run.changes.get("create", 0) > 0
    assert set(run.changes) == {"create"}, run.describe()
    # No warning from the engine or the provider (an unknown or duplicate field in any object would be
    # one), but for the provider's own progress reports while it awaits a Deployment's pods: it relays
    # the Deployment's condition as a warning until the pods are ready, as it does in production.
    assert warnings_of(run) == [], "\n".join(warnings_of(run))

    # The engine ran the provider built from the module proxy, and says it is not the SDK's version.
    notes = [m.groupdict() for n in run.plugin_notes if (m := PLUGIN_NOTE.match(n))]
    plugin = {"plugin": "kubernetes", "path": str(bins / "pulumi-resource-kubernetes")}
    assert plugin | {"name": None, "wanted": None, "has": None} in notes
    built = versions()["KUBERNETES_PROVIDER_VERSION"].removeprefix("v")
    older = {"plugin": None, "path": None, "name": "kubernetes", "wanted": KUBERNETES_SDK_VERSION, "has": built}
    assert older in notes

    # The real engine registers exactly the component trees the mock engine renders, resource for
    # resource (type, name, parent), though the two spell the URNs of grandchildren differently.
    for component in (PLATFORM_COMPONENT, APPS_COMPONENT):
        expected = {r["urn"] for r in subtree(rendered, component)}
        applied = {r["urn"] for r in subtree(state_resources(stack), component)}
        assert len(applied) == len(expected), component
        assert {short_urn(u) for u in applied} == expected, component
        report.append(
            f"    {len(applied)} resources under {component.rsplit(':', 1)[-1]}, one for one those of the render; "
            f"{len(applied - expected)} of their URNs differ from the render's (the mock engine's short type chain)"
        )

    # Every object is on the server, with the labels the program gave it (Pod Security's among them).
    kinds = {o.kind for o in objects}
    assert {"Namespace", "Secret", "ConfigMap", "Service", "Deployment", "StatefulSet", "LimitRange"} <= kinds
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Ingress", "ServiceMonitor"} <= kinds
    assert {"ClusterIssuer", "AppProject", "IPAddressPool", "L2Advertisement", "HelmChartConfig"} <= kinds
    assert {"PrometheusRule", "Cluster"} <= kinds
    missing = [f"{o.kind} {o.namespace}/{o.name}" for o in objects if not apiserver.exists(path_of(apiserver, o))]
    assert missing == []
    inputs = {r["urn"]: r.get("inputs") or {} for r in state_resources(stack)}
    for o in objects:
        live = apiserver.get(path_of(apiserver, o))
        skipped = live["metadata"].get("annotations", {}).get(SKIP_AWAIT) == "true"
        assert skipped == (o.urn.split("::")[-2].rsplit("$", 1)[-1] in AWAITS_AN_INGRESS_CONTROLLER), o.urn
        wanted = (inputs[o.urn].get("metadata") or {}).get("labels") or {}
        assert {k: live["metadata"].get("labels", {}).get(k) for k in wanted} == wanted, o.urn
    report.append(f"    {len(objects)} Kubernetes objects applied, every one read back from the API server")

    # Nothing was downloaded: the engine used the plugin on PATH.
    assert not (stack.home / "plugins").exists() or not any((stack.home / "plugins").iterdir())


def test_every_release_installed_its_pinned_chart_from_the_mirror_and_its_crds_first(
    stack: Engine, apiserver: ApiServer, charts: ChartRepository, report: list[str]
) -> None:
    releases = [r for r in state_resources(stack) if r["type"] == HELM_RELEASE]
    assert sorted(r["outputs"]["chart"] for r in releases) == sorted(c.name for c in CHARTS)
    for release in releases:
        outputs = release["outputs"]
        chart = CHARTS_BY_NAME[outputs["chart"]]
        status = outputs["status"]
        assert (status["status"], status["chart"], status["version"]) == ("deployed", chart.name, chart.version)
        assert outputs["repositoryOpts"]["repo"] == charts.url
        # Helm, inside the provider, fetched this very chart from the mirror (and from nowhere else: the
        # machine reaches no chart repository).
        assert f"/{chart.name}-{chart.version}.tgz" in charts.fetched, chart.name

    # Every custom resource kind the program applies is served by a CRD the charts (or K3s) installed.
    served = {(crd["spec"]["group"], crd["spec"]["names"]["kind"]) for crd in apiserver.items(CRDS)}
    for api_version, kind in CUSTOM_RESOURCE_SCHEMAS:
        assert (api_version.split("/")[0], kind) in served, kind

    # Argo CD's `default` project, as its server creates it, is fenced by the program's forced patch.
    project = apiserver.get(f"/apis/argoproj.io/v1alpha1/namespaces/{namespaces.ARGOCD}/appprojects/{DEFAULT_PROJECT}")
    assert {k: project["spec"].get(k) for k in default_project_spec()} == default_project_spec()
    report.append(
        f"    {len(releases)} upstream Helm charts deployed from the mirror at their pinned versions, their CRDs "
        f"established before any custom resource; Argo CD's default project fenced"
    )


def test_restricted_namespaces_admit_every_pod_template(stack: Engine, apiserver: ApiServer, report: list[str]) -> None:
    """Of the stack the `up` above applied (the fixture ties this case to that stack, and so to its place)."""
    restricted = pod_security_labels(PodSecurity.RESTRICTED)
    for namespace in APP_NAMESPACES:
        labels = apiserver.get(f"/api/v1/namespaces/{namespace}")["metadata"]["labels"]
        assert {k: labels.get(k) for k in restricted} == dict(restricted)
        # Pods need the namespace's default ServiceAccount, which the controller manager creates.
        account = f"/api/v1/namespaces/{namespace}/serviceaccounts/default"
        wait_until(account, partial(apiserver.exists, account), SETTLE_TIMEOUT)

    found = controllers(apiserver)
    # PostgreSQL's pods come from the CloudNativePG operator, which is no part of this layer.
    assert {c["metadata"]["name"] for c in found} == {s.name for s in CATALOGUE if not s.managed_database}
    for controller in found:
        name = controller["metadata"]["name"]
        status, message, warnings = dry_run_pod(apiserver, pod_from(controller, f"{name}-e2e-dry-run"))
        assert (status, warnings) == (201, ()), f"{controller['kind']} {name}: {status} {message} {warnings}"

    # The same server refuses a template that breaks `restricted`: the admission above was real.
    broken = pod_from(found[0], "e2e-sys-admin")
    broken["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = ["SYS_ADMIN"]
    status, message, _ = dry_run_pod(apiserver, broken)
    assert status == 403 and "violates PodSecurity" in message, message

    # The controller manager turns every Deployment and StatefulSet into real Pods, each admitted.
    def pods_created() -> bool:
        for namespace in APP_NAMESPACES:
            for event in apiserver.items(f"/api/v1/namespaces/{namespace}/events"):
                if event.get("reason") == "FailedCreate":
                    raise AssertionError(f"{namespace}: {event.get('message')}")
        return all(
            apiserver.items(
                f"/api/v1/namespaces/{c['metadata']['namespace']}/pods"
                f"?labelSelector=app.kubernetes.io/name%3D{c['metadata']['name']}"
            )
            for c in found
        )

    wait_until("a Pod of every Deployment and StatefulSet", pods_created, SETTLE_TIMEOUT, interval=2)
    report.append(
        f"    {len(found)} pod templates admitted by Pod Security 'restricted' (dry run and real Pods); "
        "one adding SYS_ADMIN refused"
    )


STACK_NAMESPACES = (*APP_NAMESPACES, *namespaces.PLATFORM)


def stack_pods(server: ApiServer) -> list[dict[str, Any]]:
    return [pod for ns in STACK_NAMESPACES for pod in server.items(f"/api/v1/namespaces/{ns}/pods")]


def pod_name(pod: Mapping[str, Any]) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def test_custom_resources_are_no_looser_in_the_render_than_in_the_real_crds(
    stack: Engine, apiserver: ApiServer, report: list[str]
) -> None:
    """render/crds.py against the CRDs the upstream charts (and K3s) installed: a field the render's
    schema allows that the real CRD does not declare fails here."""
    crds = {(c["spec"]["group"], c["spec"]["names"]["kind"]): c for c in apiserver.items(CRDS)}
    problems = []
    for (api_version, kind), schema in CUSTOM_RESOURCE_SCHEMAS.items():
        group, version = api_version.split("/")
        real = served_schema(crds[(group, kind)], version)
        problems += [f"{kind}: {p}" for p in looser(schema["properties"]["spec"], real["properties"]["spec"], ".spec")]
    assert problems == [], "\n".join(problems)
    report.append(f"    {len(CUSTOM_RESOURCE_SCHEMAS)} render schemas no looser than the real CRDs")


def test_every_pod_of_every_release_and_workload_is_scheduled_and_ready(
    stack: Engine, apiserver: ApiServer, machines: list[dict[str, Any]], report: list[str]
) -> None:
    names = set(node_names(machines))

    def all_settled() -> bool:
        pods = stack_pods(apiserver)
        return bool(pods) and all(settled(p) for p in pods)

    try:
        wait_until("every pod of the stack Ready (or Succeeded)", all_settled, SETTLE_TIMEOUT, interval=2)
    finally:
        waiting = [f"{pod_name(p)} on {p['spec'].get('nodeName')}: {p.get('status', {}).get('conditions')}"
                   for p in stack_pods(apiserver) if not settled(p)]  # fmt: skip
        assert waiting == [], "\n".join(waiting)
    pods = stack_pods(apiserver)
    assert {p["spec"]["nodeName"] for p in pods} <= names
    # Every controller of every release and workload has all of its pods ready.
    for ns in STACK_NAMESPACES:
        for kind in ("deployments", "statefulsets"):
            for item in apiserver.items(f"/apis/apps/v1/namespaces/{ns}/{kind}"):
                want = item["spec"].get("replicas", 1)
                assert item["status"].get("readyReplicas", 0) == want, f"{kind} {ns}/{item['metadata']['name']}"
        for item in apiserver.items(f"/apis/apps/v1/namespaces/{ns}/daemonsets"):
            status = item["status"]
            assert status.get("numberReady") == status.get("desiredNumberScheduled"), f"{ns}/{item['metadata']['name']}"
    # The Sophia workloads PostgreSQL aside (the CloudNativePG operator's) each have a pod.
    owners = {p["metadata"].get("labels", {}).get("app.kubernetes.io/name") for p in pods}
    assert {s.name for s in CATALOGUE if not s.managed_database} <= owners
    report.append(
        f"    {len(pods)} pods of {len(STACK_NAMESPACES)} namespaces scheduled on {len(names)} kwok nodes and Ready "
        f"({sum(1 for p in pods if p['status'].get('phase') == 'Succeeded')} of them hook/Job pods Succeeded)"
    )


def test_the_pods_only_an_operator_creates_could_be_placed(
    stack: Engine, apiserver: ApiServer, machines: list[dict[str, Any]], report: list[str]
) -> None:
    """Prometheus, Alertmanager and PostgreSQL pods come from operators that do not run here: their
    custom resources' placement fields must admit at least one machine of the stack."""
    checked = []
    for path, kind, placement_of in OPERATOR_WORKLOADS:
        for item in apiserver.items(path):
            placement = placement_of(item["spec"])
            fits = [n["metadata"]["name"] for n in machines if admits(placement, n)]
            assert fits, f"{kind} {item['metadata']['name']}: no machine admits {placement}"
            checked.append(f"{kind} {item['metadata']['name']} ({len(fits)} machines)")
    assert {c.split(" ")[0] for c in checked} == {"Prometheus", "Alertmanager", "Cluster"}
    report.append("    not created here (operators do not run), placement checked: " + ", ".join(checked))


def test_gpu_pods_are_on_machines_whose_gpu_model_and_count_fit(
    stack: Engine, apiserver: ApiServer, machines: list[dict[str, Any]], report: list[str]
) -> None:
    nodes = {n["metadata"]["name"]: n for n in machines}
    pods = [p for p in stack_pods(apiserver) if gpu_request(p["spec"]) and p["status"].get("phase") != "Succeeded"]
    assert pods, "no pod asks for a GPU"
    used: dict[str, int] = {}
    for pod in pods:
        node = nodes[pod["spec"]["nodeName"]]
        assert admits(pod["spec"], node), pod_name(pod)
        wanted = {
            v
            for term in pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
                "nodeSelectorTerms"
            ]
            for e in term.get("matchExpressions", [])
            if e["key"] == GPU_TYPE_LABEL
            for v in e.get("values", [])
        }
        assert node["metadata"]["labels"][GPU_TYPE_LABEL] in wanted, pod_name(pod)
        used[node["metadata"]["name"]] = used.get(node["metadata"]["name"], 0) + gpu_request(pod["spec"])
    for name, count in used.items():
        assert count <= int(nodes[name]["status"]["allocatable"][GPU_RESOURCE]), name
    report.append("    GPU pods: " + ", ".join(f"{pod_name(p)} on {p['spec']['nodeName']}" for p in pods))


def test_nothing_without_the_toleration_lands_on_a_tainted_machine(
    stack: Engine, apiserver: ApiServer, machines: list[dict[str, Any]], report: list[str]
) -> None:
    tainted = {n["metadata"]["name"]: n for n in machines if n["spec"].get("taints")}
    on_tainted = [p for p in stack_pods(apiserver) if p["spec"].get("nodeName") in tainted]
    for pod in on_tainted:
        taints = node_taints(tainted[pod["spec"]["nodeName"]])
        tolerations = pod_tolerations(pod["spec"])
        assert not any(t.keeps_off(tolerations) for t in taints), pod_name(pod)
    if tainted:
        # Not vacuous: the tainted machines do carry pods, those that tolerate the taint.
        assert on_tainted
    report.append(
        f"    {len(on_tainted)} pods on {len(tainted)} tainted machines, each tolerating the taint"
        + (": " + ", ".join(sorted(pod_name(p) for p in on_tainted)) if on_tainted else "")
    )


def test_the_gpu_machine_daemonsets_have_a_ready_pod_on_every_gpu_machine(
    stack: Engine, apiserver: ApiServer, machines: list[dict[str, Any]], settings: Settings, report: list[str]
) -> None:
    gpu_machines = {n.name for n in settings.cluster.nodes if n.gpu is not None}
    for ns, name in GPU_MACHINE_DAEMONSETS:
        pods = apiserver.items(f"/api/v1/namespaces/{ns}/pods?labelSelector=app.kubernetes.io%2Fname%3D{name}")
        ready_on = {p["spec"]["nodeName"] for p in pods if settled(p)}
        assert gpu_machines <= ready_on, f"{name}: no Ready pod on {sorted(gpu_machines - ready_on)}"
    arches = {n.arch.value for n in settings.cluster.nodes if n.gpu is not None}
    daemonsets = ", ".join(n for _, n in GPU_MACHINE_DAEMONSETS)
    report.append(
        f"    {daemonsets}: a Ready pod on each of {len(gpu_machines)} GPU machines ({', '.join(sorted(arches))})"
    )


def test_second_up_changes_nothing(stack: Engine) -> None:
    preview = stack.run("preview")
    assert set(preview.changes) == {"same"}, preview.describe()
    up = stack.run("up")
    assert set(up.changes) == {"same"}, up.describe()


def test_refresh_finds_no_drift(stack: Engine) -> None:
    refresh = stack.run("refresh")
    assert warnings_of(refresh) == [], "\n".join(warnings_of(refresh))
    assert set(refresh.changes) == {"same"}, f"{refresh.describe()}\n{refresh.detailed}"
    preview = stack.run("preview")
    assert set(preview.changes) == {"same"}, preview.describe()


def readers(key: SecretKey) -> set[str]:
    return {
        s.name for s in CATALOGUE if key in s.secrets or (s.exporter is not None and key in s.exporter.secrets.values())
    }


@dataclass(frozen=True)
class Rotation:
    run: Run
    rolled: set[str]
    """The Deployments and StatefulSets whose pod template the `up` changed."""


@pytest.fixture(scope="module")
def rotation(stack: Engine, apiserver: ApiServer, report: list[str]) -> Rotation:
    """Two secrets get a new value in the stack, one of Sophia's and one of the platform's, then `up`."""
    before = templates(apiserver)
    for rotated in (ROTATED, ROTATED_PLATFORM):
        key = f"{stack.config.project}:{rotated.value}"
        stack.stack.set_config(key, auto.ConfigValue(stack.config.stand_ins[key] + "-rotated", secret=True))
    run = stack.run("up")
    after = templates(apiserver)
    rolled = {name.split("/", 1)[1] for name in before if before[name] != after[name]}
    report.append(
        f"    rotated {ROTATED.value} (read by {', '.join(sorted(readers(ROTATED)))}) and {ROTATED_PLATFORM.value}: "
        f"pod templates changed: {', '.join(sorted(rolled)) or 'none'}; releases upgraded: "
        + ", ".join(name_of(urn) for op, typ, urn in run.steps if typ == HELM_RELEASE and op == "update")
        + "; Secrets, step by step: "
        + ", ".join(f"{op} {name_of(urn)}" for op, typ, urn in run.steps if typ == "kubernetes:core/v1:Secret")
    )
    return Rotation(run, rolled)


def test_a_rotated_secret_is_patched_in_place_never_absent(rotation: Rotation) -> None:
    # Secrets with explicit names would otherwise be replaced delete-first (pulumi-kubernetes
    # 4.34.2 without enableSecretMutable): a pod starting in between would find no Secret.
    changed = [
        (op, name_of(urn)) for op, typ, urn in rotation.run.steps if typ == "kubernetes:core/v1:Secret" and op != "same"
    ]
    assert changed, "the rotation changed no Secret"
    assert {op for op, _ in changed} == {"update"}, changed


def test_a_rotated_secret_rolls_exactly_its_readers(rotation: Rotation) -> None:
    assert rotation.rolled == readers(ROTATED)


def test_a_rotated_platform_secret_upgrades_exactly_the_release_that_reads_it(
    stack: Engine, rotation: Rotation
) -> None:
    """Grafana's password checksum is in its pod annotations, so Helm upgrades that one release (which
    rolls Grafana on a real cluster), and no other release."""
    releases = [(op, name_of(urn)) for op, typ, urn in rotation.run.steps if typ == HELM_RELEASE and op != "same"]
    assert releases == [("update", GRAFANA_RELEASE)]
    revisions = {
        r["outputs"]["name"]: r["outputs"]["status"]["revision"]
        for r in state_resources(stack)
        if r["type"] == HELM_RELEASE
    }
    assert revisions == {name: 2 if name == GRAFANA_RELEASE else 1 for name in revisions}


GITOPS_APP = "sophia-e2e-gitops"
GITOPS_KEY = "sophia-infra:gitops.applications[0]"


def application(apiserver: ApiServer) -> dict[str, Any] | None:
    path = f"/apis/argoproj.io/v1alpha1/namespaces/{namespaces.ARGOCD}/applications/{GITOPS_APP}"
    return apiserver.get(path) if apiserver.exists(path) else None


def test_an_argo_cd_application_is_created_changed_and_deleted_through_the_engine(
    stack: Engine, apiserver: ApiServer, report: list[str]
) -> None:
    """An operator adds an Application to the stack's `gitops.applications`, changes its path, then
    removes it; each is one `up`. The delete waits for Argo CD's finalizer, which the stand-in
    (tests/e2e/argocd.py) clears as the application controller does once it has pruned."""
    destination = "sophia-e2e-gitops"
    for field, value in (("name", GITOPS_APP), ("path", "deploy/e2e"), ("namespace", destination)):
        stack.stack.set_config(f"{GITOPS_KEY}.{field}", auto.ConfigValue(value), path=True)
    created = stack.run("up")
    assert warnings_of(created) == [], "\n".join(warnings_of(created))
    app = application(apiserver)
    assert app is not None
    assert app["metadata"]["finalizers"] == [RESOURCES_FINALIZER]
    assert app["spec"]["source"]["path"] == "deploy/e2e"
    assert apiserver.exists(f"/api/v1/namespaces/{destination}")

    stack.stack.set_config(f"{GITOPS_KEY}.path", auto.ConfigValue("deploy/e2e-changed"), path=True)
    changed = stack.run("up")
    steps = [(op, name_of(urn)) for op, typ, urn in changed.steps if typ.endswith(":Application")]
    assert steps == [("update", f"argocd-app-{GITOPS_APP}")], changed.describe()
    app = application(apiserver)
    assert app is not None and app["spec"]["source"]["path"] == "deploy/e2e-changed"

    stack.stack.remove_config(GITOPS_KEY, path=True)
    deleted = stack.run("up")
    assert warnings_of(deleted) == [], "\n".join(warnings_of(deleted))
    assert ("delete", f"argocd-app-{GITOPS_APP}") in [(op, name_of(urn)) for op, _, urn in deleted.steps]
    assert application(apiserver) is None
    wait_until(
        f"namespace {destination} gone",
        lambda: not apiserver.exists(f"/api/v1/namespaces/{destination}"),
        SETTLE_TIMEOUT,
    )
    report.append(
        f"    Argo CD Application {GITOPS_APP}: created ({created.describe().splitlines()[0]}), its path changed in "
        f"place, removed through its finalizer (the stand-in's)"
    )


def evict(apiserver: ApiServer, pod: Mapping[str, Any]) -> tuple[int, str]:
    meta = pod["metadata"]
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
    }
    response = apiserver.request("POST", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/eviction", body)
    return response.status, str(response.body.get("message", ""))


def set_unschedulable(apiserver: ApiServer, name: str, unschedulable: bool) -> None:
    response = apiserver.request(
        "PATCH", f"/api/v1/nodes/{name}", {"spec": {"unschedulable": unschedulable}},
        content_type="application/merge-patch+json",
    )  # fmt: skip
    assert response.status == 200, response.body


def test_a_drain_evicts_through_the_eviction_api_and_stops_at_a_disruption_budget(
    stack: Engine, apiserver: ApiServer, machines: list[dict[str, Any]], report: list[str]
) -> None:
    """`kubectl drain` as the node removal runs it (drain.sh): cordon, then evict every pod but a
    DaemonSet's through the eviction API. With every machine cordoned, an evicted pod's replacement
    cannot start, so the budget of a service with two pods allows one eviction and refuses the next."""
    # The HPA controller is off here (no metrics API), so a Deployment it scales runs one pod; first
    # do what the HPA controller does before any metric: raise each target to its minReplicas.
    targets = []
    for ns in APP_NAMESPACES:
        for hpa in apiserver.items(f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers"):
            ref, minimum = hpa["spec"]["scaleTargetRef"], hpa["spec"].get("minReplicas", 1)
            path = f"/apis/apps/v1/namespaces/{ns}/{ref['kind'].lower()}s/{ref['name']}"
            scaled = apiserver.request(
                "PATCH", f"{path}/scale", {"spec": {"replicas": minimum}}, content_type="application/merge-patch+json"
            )
            assert scaled.status == 200, scaled.body
            targets.append((path, minimum))
    if not any(minimum >= 2 for _, minimum in targets):
        pytest.skip("no service of this stack runs two pods: a budget of maxUnavailable 1 allows evicting each")

    def scaled_up() -> bool:
        return all(apiserver.get(path)["status"].get("readyReplicas", 0) >= minimum for path, minimum in targets)

    wait_until("every HPA target Ready at its minReplicas", scaled_up, SETTLE_TIMEOUT, interval=2)

    def all_settled() -> bool:
        return all(settled(p) for p in stack_pods(apiserver))

    def healthy_budgets() -> list[dict[str, Any]]:
        return [
            b
            for ns in APP_NAMESPACES
            for b in apiserver.items(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets")
            if b["status"].get("currentHealthy", 0) >= 2 and b["status"].get("disruptionsAllowed", 0) >= 1
        ]

    # The disruption controller counts the new pods a moment after they are Ready.
    wait_until("a budget guarding two healthy pods", lambda: bool(healthy_budgets()), SETTLE_TIMEOUT, interval=2)
    budgets = healthy_budgets()
    budget = budgets[0]
    ns, selector = budget["metadata"]["namespace"], budget["spec"]["selector"]["matchLabels"]
    query = ",".join(f"{k}%3D{v}" for k, v in selector.items())
    guarded = apiserver.items(f"/api/v1/namespaces/{ns}/pods?labelSelector={query}")
    drained: list[str] = []
    evicted: list[str] = []
    refused: list[tuple[str, int, str]] = []
    names = node_names(machines)
    try:
        for name in names:
            set_unschedulable(apiserver, name, True)
        for target in [p["spec"]["nodeName"] for p in guarded]:
            if target in drained:
                continue
            drained.append(target)
            for pod in apiserver.items(f"/api/v1/pods?fieldSelector=spec.nodeName%3D{target}"):
                owners = pod["metadata"].get("ownerReferences") or []
                if any(o["kind"] == "DaemonSet" for o in owners):
                    continue
                status, message = evict(apiserver, pod)
                if status == 201:
                    evicted.append(pod_name(pod))
                else:
                    refused.append((pod_name(pod), status, message))
        guarded_names = {pod_name(p) for p in guarded}
        assert len(guarded_names & set(evicted)) == 1, (evicted, refused)
        assert [(n, s) for n, s, _ in refused if n in guarded_names] == [
            (n, 429) for n in sorted(guarded_names - set(evicted))
        ], refused
        assert all("disruption budget" in m for _, _, m in refused), refused
        for still, _, _ in refused:
            assert apiserver.exists(f"/api/v1/namespaces/{still.replace('/', '/pods/')}"), still
    finally:
        for name in names:
            set_unschedulable(apiserver, name, False)

    wait_until("every pod Ready again once the machines are uncordoned", all_settled, SETTLE_TIMEOUT, interval=2)
    report.append(
        f"    drain with every machine cordoned: evicted {', '.join(evicted)}; refused by the budget "
        f"{budget['metadata']['name']}: {', '.join(n for n, _, _ in refused)}"
    )


def test_destroy_removes_everything(stack: Engine, apiserver: ApiServer, report: list[str]) -> None:
    objects = managed_objects(stack)
    assert objects
    # Found before the destroy: it removes the CRD, and with it the discovery of ServiceMonitors.
    paths = [path_of(apiserver, o) for o in objects]
    run = stack.run("destroy")
    assert set(run.changes) == {"delete"}, run.describe()
    assert warnings_of(run) == [], "\n".join(warnings_of(run))

    def gone() -> bool:
        return not any(apiserver.exists(path) for path in paths)

    started = time.monotonic()
    wait_until("every object of the stack to be gone", gone, SETTLE_TIMEOUT, interval=2)
    report.append(
        f"    destroy: {len(objects)} objects gone from the API server {time.monotonic() - started:.0f} s later"
    )
    for namespace in (*APP_NAMESPACES, *namespaces.PLATFORM):
        assert not apiserver.exists(f"/api/v1/namespaces/{namespace}"), namespace
    assert state_resources(stack) == []
