"""Each stack's Kubernetes layer (platform and Sophia) through the real engine and the real kubernetes
provider, against a real API server, its charts from the stand-in chart mirror.

The cases run in order on one stack, production's and then development's: up, admission, a second
up, refresh, a rotated secret, destroy. Each records what the engine did (printed at the end of
`make e2e`).
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from components import namespaces
from components.platform.argocd import DEFAULT_PROJECT, default_project_spec
from components.platform.charts import CHARTS, CHARTS_BY_NAME
from components.pod_security import PodSecurity, pod_security_labels
from components.settings.catalogue import CATALOGUE, NAMESPACES
from components.settings.secrets import SecretKey
from render.stack import PROJECT_DIR, stack_names
from tests.e2e.apiserver import ApiServer, wait_until
from tests.e2e.charts import CRDS_OF, ChartRepository
from tests.e2e.engine import PLUGIN_NOTE, Engine, Run, name_of, open_engine, versions
from tests.e2e.program import AWAITS_A_NODE, SKIP_AWAIT, kubernetes_program

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
def stack(
    *,
    stack_name: str,
    bins: Path,
    apiserver: ApiServer,
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
    # No warning from the engine or the provider: an unknown or duplicate field in any object would be one.
    assert run.warnings == [], "\n".join(run.warnings)

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
        assert skipped == (o.urn.split("::")[-2].rsplit("$", 1)[-1] in AWAITS_A_NODE), o.urn
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
        for kind in CRDS_OF[chart.name]:
            assert apiserver.exists(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{kind.crd_name}")

    # Argo CD's `default` project, as its server creates it, is fenced by the program's forced patch.
    project = apiserver.get(f"/apis/argoproj.io/v1alpha1/namespaces/{namespaces.ARGOCD}/appprojects/{DEFAULT_PROJECT}")
    assert {k: project["spec"].get(k) for k in default_project_spec()} == default_project_spec()
    report.append(
        f"    {len(releases)} Helm releases deployed from the mirror at their pinned versions, their CRDs "
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


def test_second_up_changes_nothing(stack: Engine) -> None:
    preview = stack.run("preview")
    assert set(preview.changes) == {"same"}, preview.describe()
    up = stack.run("up")
    assert set(up.changes) == {"same"}, up.describe()


def test_refresh_finds_no_drift(stack: Engine) -> None:
    refresh = stack.run("refresh")
    assert refresh.warnings == [], "\n".join(refresh.warnings)
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


def test_destroy_removes_everything(stack: Engine, apiserver: ApiServer, report: list[str]) -> None:
    objects = managed_objects(stack)
    assert objects
    # Found before the destroy: it removes the CRD, and with it the discovery of ServiceMonitors.
    paths = [path_of(apiserver, o) for o in objects]
    run = stack.run("destroy")
    assert set(run.changes) == {"delete"}, run.describe()
    assert run.warnings == [], "\n".join(run.warnings)

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
