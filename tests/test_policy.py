"""The CrossGuard pack: every policy passes on the production render, and each one fires when broken.

Each broken resource starts from a real resource of the rendered production stack, with exactly one
thing broken, so a rule that stopped looking at the field it guards (or at the kind of resource
the program emits) fails here.
"""

from __future__ import annotations

import copy
import runpy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi_policy
import pytest
import yaml
from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from components.gpu import GPU_RESOURCE
from policy import rules
from policy.pack import PACK_NAME, config_from, plain, policies
from policy.rules import DEFAULT_CONFIG, RULES, SECRET, STACK_RULES, PolicyConfig
from render.context import Context
from render.model import Rendered, build
from render.policy_check import policies_pass, stack_policy_config
from render.stack import PROJECT_DIR, load_stack
from tests import mutation
from tests.support import production_document, stack_from

Resource = dict[str, Any]
BY_NAME = {rule.name: rule for rule in RULES}


def _judge(rule: str, resource: Resource, config: PolicyConfig = DEFAULT_CONFIG) -> list[str]:
    return BY_NAME[rule].judge(resource["type"], resource["inputs"], config)


def _real(production: Rendered, kind: str, where: Callable[[Resource], bool] = lambda r: True) -> Resource:
    """A deep copy of the first rendered resource creating a `kind` object that satisfies `where`."""
    for resource in production.resources:
        if resource["inputs"].get("kind") == kind and resource["type"].startswith("kubernetes:") and where(resource):
            return copy.deepcopy(resource)
    pytest.fail(f"the production render has no {kind} to break")


def _pod(resource: Resource) -> dict[str, Any]:
    inputs = resource["inputs"]
    spec: dict[str, Any] = inputs["spec"] if inputs["kind"] == "Pod" else inputs["spec"]["template"]["spec"]
    return spec


def _uses_gpu(resource: Resource) -> bool:
    return any(GPU_RESOURCE in (c.get("resources") or {}).get("limits", {}) for c in _pod(resource)["containers"])


def _in_app_namespace(resource: Resource) -> bool:
    return resource["inputs"].get("metadata", {}).get("namespace") in DEFAULT_CONFIG.app_namespaces


@pytest.fixture(scope="session")
def with_application(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """Production with one Argo CD Application configured (production itself has none yet)."""
    document = production_document()
    document["config"]["sophia-infra:gitops"]["applications"] = [
        {"name": "sophia-main", "path": "k8s/base", "namespace": "sophia-gitops"}
    ]
    stack = stack_from(tmp_path_factory.mktemp("gitops"), document)
    with mutation.render_fixture("with_application"):
        return build(stack.stack, mutation.program(stack))


# -- the production stack complies ------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["production", "with_application"])
def test_every_policy_passes_on_every_resource_of_production(variant: str, request: pytest.FixtureRequest) -> None:
    rendered: Rendered = request.getfixturevalue(variant)
    config = stack_policy_config(Context(rendered, load_stack("production"), Path()))
    failed = [
        f"{r['name']}: {rule.name}: {message}"
        for r in rendered.resources
        for rule in RULES
        for message in rule.judge(r["type"], r["inputs"], config)
    ]
    whole = [(r["type"], r["inputs"]) for r in rendered.resources]
    failed += [f"{rule.name}: {message}" for rule in STACK_RULES for message in rule.judge(whole, config)]
    assert failed == []


def test_every_policy_concerns_some_resource_of_production(production: Rendered, with_application: Rendered) -> None:
    """A policy that judges no resource the program emits guards nothing: each rule's kinds exist."""
    resources = production.resources + with_application.resources
    kinds = {r["inputs"].get("kind") for r in resources if r["type"].startswith("kubernetes:")}
    types = {r["type"] for r in resources}
    concerned = {
        "images-from-the-configured-registry": "Deployment",
        "containers-have-requests-and-limits": "Deployment",
        "probes-on-a-declared-port": "Deployment",
        "services-name-their-target-port": "Service",
        "gpu-pods-land-on-gpu-nodes": "Deployment",
        "secrets-are-never-empty": "Secret",
        "app-namespaces-enforce-restricted": "Namespace",
        "app-pods-are-restricted": "Deployment",
        "rollouts-keep-capacity-and-spread": "Deployment",
        "disruption-budgets-allow-drains": "PodDisruptionBudget",
        "stateful-data-on-local-path": "StatefulSet",
        "ingress-only-with-cert-manager-tls": "Ingress",
        "load-balancers-only-through-metallb": "Service",
        "argocd-applications-follow-main": "Application",
        "argocd-applications-in-the-sophia-project": "Application",
    }
    assert set(concerned) | {"helm-releases-are-pinned"} == set(BY_NAME)
    assert {k for k in concerned.values() if k not in kinds} == set()
    assert "kubernetes:helm.sh/v3:Release" in types


def test_the_render_runs_every_policy(production: Rendered, production_checks: list[Any]) -> None:
    assert "every policy of the CrossGuard pack passes" in [c.name for c in production_checks]
    broken = Rendered(production.stack, production.registrations, production.component_outputs)
    deployment = _real(production, "Deployment")
    _pod(deployment)["containers"][0]["image"] = "nginx:latest"
    broken.resources = [deployment]
    violations = policies_pass(Context(broken, load_stack("production"), Path()))
    assert any("images-from-the-configured-registry" in v and "nginx:latest" in v for v in violations)


def test_the_default_registry_is_the_production_registry() -> None:
    document = yaml.safe_load((PROJECT_DIR / "Pulumi.production.yaml").read_text())
    assert document["config"]["sophia-infra:images"]["registry"] == rules.DEFAULT_REGISTRY


def test_a_policy_configuration_without_app_namespaces_judges_every_sophia_tier(production: Rendered) -> None:
    """The pack's default (no policy config given): the namespaces the apps layer puts the tiers in.

    Built here, not only read from DEFAULT_CONFIG, which is built once when the module is imported.
    """
    tiers = {n["metadata"]["name"] for n in production.objects("Namespace") if rules._is_sophia(n)}
    assert tiers
    assert PolicyConfig().app_namespaces == tiers


# -- each policy fires on a broken resource --------------------------------------------------------


def _image_latest(p: Rendered) -> Resource:
    r = _real(p, "Deployment")
    c = _pod(r)["containers"][0]
    c["image"] = c["image"].rsplit(":", 1)[0] + ":latest"
    return r


def _image_foreign_registry(p: Rendered) -> Resource:
    r = _real(p, "StatefulSet")
    _pod(r)["containers"][0]["image"] = "docker.io/library/postgres:17.7"
    return r


def _no_memory_limit(p: Rendered) -> Resource:
    r = _real(p, "Deployment")
    del _pod(r)["containers"][0]["resources"]["limits"]["memory"]
    return r


def _probe_on_undeclared_port(p: Rendered) -> Resource:
    r = _real(p, "Deployment")
    c = _pod(r)["containers"][0]
    handler = next(h for h in ("httpGet", "tcpSocket", "grpc") if h in c["readinessProbe"])
    c["readinessProbe"][handler]["port"] = 65000
    return r


def _port_env_differs(p: Rendered) -> Resource:
    r = _real(p, "Deployment")
    c = _pod(r)["containers"][0]
    (port_env,) = [e for e in c["env"] if e["name"] == "PORT"]
    port_env["value"] = str(int(port_env["value"]) + 1)
    return r


def _sophia_container_without_port_env(p: Rendered) -> Resource:
    r = _real(p, "StatefulSet", _in_app_namespace)
    c = _pod(r)["containers"][0]
    c["env"] = [e for e in c["env"] if e["name"] != "PORT"]
    return r


def _no_liveness_probe(p: Rendered) -> Resource:
    r = _real(p, "StatefulSet")
    del _pod(r)["containers"][0]["livenessProbe"]
    return r


def _service_without_target_port(p: Rendered) -> Resource:
    r = _real(p, "Service", lambda s: bool(s["inputs"]["spec"].get("selector")))
    del r["inputs"]["spec"]["ports"][0]["targetPort"]
    return r


def _gpu_pod_without_runtime_class(p: Rendered) -> Resource:
    r = _real(p, "Deployment", _uses_gpu)
    del _pod(r)["runtimeClassName"]
    return r


def _gpu_pod_without_toleration(p: Rendered) -> Resource:
    r = _real(p, "Deployment", _uses_gpu)
    _pod(r)["tolerations"] = []
    return r


def _gpu_by_node_selector_only(p: Rendered) -> Resource:
    # The seed report's GPU "scheduling": a node selector and no GPU limit.
    r = _real(p, "Deployment", _uses_gpu)
    spec = _pod(r)
    for c in spec["containers"]:
        c["resources"]["limits"].pop(GPU_RESOURCE, None)
    spec.pop("affinity", None)
    spec["nodeSelector"] = {"nvidia.com/gpu": "true"}
    return r


def _gpu_pod_without_type_affinity(p: Rendered) -> Resource:
    r = _real(p, "Deployment", _uses_gpu)
    del _pod(r)["affinity"]
    return r


def _empty_secret_value(p: Rendered) -> Resource:
    r = _real(p, "Secret")
    values = r["inputs"].get("stringData") or r["inputs"]["data"]
    values[sorted(values)[0]] = ""
    return r


def _placeholder_secret_value(p: Rendered) -> Resource:
    r = _real(p, "Secret")
    values = r["inputs"].get("stringData") or r["inputs"]["data"]
    values[sorted(values)[0]] = "changeme"
    return r


def _app_namespace_baseline(p: Rendered) -> Resource:
    r = _real(p, "Namespace", lambda n: n["inputs"]["metadata"]["name"] in DEFAULT_CONFIG.app_namespaces)
    r["inputs"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "baseline"
    return r


def _app_pod_as_root(p: Rendered) -> Resource:
    r = _real(p, "Deployment", _in_app_namespace)
    spec = _pod(r)
    spec.setdefault("securityContext", {})["runAsNonRoot"] = False
    for c in spec["containers"]:
        c.get("securityContext", {}).pop("runAsNonRoot", None)
    return r


def _app_pod_escalates(p: Rendered) -> Resource:
    r = _real(p, "StatefulSet", _in_app_namespace)
    _pod(r)["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    return r


def _app_pod_keeps_capabilities(p: Rendered) -> Resource:
    r = _real(p, "Deployment", _in_app_namespace)
    _pod(r)["containers"][0]["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
    return r


def _app_pod_mounts_the_host(p: Rendered) -> Resource:
    r = _real(p, "StatefulSet", _in_app_namespace)
    _pod(r)["volumes"].append({"name": "host", "hostPath": {"path": "/var/lib"}})
    return r


def _app_pod_binds_a_host_port(p: Rendered) -> Resource:
    r = _real(p, "Deployment", _in_app_namespace)
    _pod(r)["containers"][0]["ports"][0]["hostPort"] = 8080
    return r


def _rollout_drops_capacity(p: Rendered) -> Resource:
    r = _real(p, "Deployment")
    r["inputs"]["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%"}}
    return r


def _deployment_not_spread(p: Rendered) -> Resource:
    r = _real(p, "Deployment")
    _pod(r).pop("topologySpreadConstraints", None)
    return r


# Kubernetes reads maxUnavailable 0, "0" and "0%" alike: no eviction allowed, so no drain finishes.
def _pdb_max_unavailable(p: Rendered, value: int | str) -> Resource:
    r = _real(p, "PodDisruptionBudget")
    r["inputs"]["spec"].pop("minAvailable", None)
    r["inputs"]["spec"]["maxUnavailable"] = value
    return r


def _pdb_blocks_drains(p: Rendered) -> Resource:
    return _pdb_max_unavailable(p, 0)


def _pdb_blocks_drains_with_zero_percent(p: Rendered) -> Resource:
    return _pdb_max_unavailable(p, "0%")


def _pdb_blocks_drains_with_zero_as_a_string(p: Rendered) -> Resource:
    return _pdb_max_unavailable(p, "0")


def _pdb_min_available_all(p: Rendered) -> Resource:
    r = _real(p, "PodDisruptionBudget")
    r["inputs"]["spec"].pop("maxUnavailable", None)
    r["inputs"]["spec"]["minAvailable"] = "100%"
    return r


def _statefulset_other_storage_class(p: Rendered) -> Resource:
    r = _real(p, "StatefulSet")
    r["inputs"]["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] = "standard"
    return r


def _statefulset_deletes_claims(p: Rendered) -> Resource:
    r = _real(p, "StatefulSet")
    r["inputs"]["spec"]["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Delete", "whenScaled": "Retain"}
    return r


def _statefulset_without_claims(p: Rendered) -> Resource:
    r = _real(p, "StatefulSet")
    del r["inputs"]["spec"]["volumeClaimTemplates"]
    return r


def _ingress_without_tls(p: Rendered) -> Resource:
    r = _real(p, "Ingress")
    del r["inputs"]["spec"]["tls"]
    return r


def _ingress_without_issuer(p: Rendered) -> Resource:
    r = _real(p, "Ingress")
    annotations = r["inputs"]["metadata"]["annotations"]
    for key in rules.CERT_MANAGER_ANNOTATIONS:
        annotations.pop(key, None)
    return r


def _ingress_host_not_covered(p: Rendered) -> Resource:
    r = _real(p, "Ingress")
    r["inputs"]["spec"]["rules"][0]["host"] = "elsewhere.example.com"
    return r


def _load_balancer_ip_field(p: Rendered) -> Resource:
    # The seed report's `loadBalancerIP: 192.222.58.232`, on a real Service of the stack.
    r = _real(p, "Service", lambda s: bool(s["inputs"]["spec"].get("selector")))
    r["inputs"]["spec"]["type"] = "LoadBalancer"
    r["inputs"]["spec"]["loadBalancerIP"] = "192.222.58.232"
    return r


def _application_on_a_feature_branch(p: Rendered) -> Resource:
    r = _real(p, "Application")
    r["inputs"]["spec"]["source"]["targetRevision"] = "feature/full-prod-beast"
    return r


def _application_in_the_default_project(p: Rendered) -> Resource:
    r = _real(p, "Application")
    r["inputs"]["spec"]["project"] = "default"
    return r


def _release_with_a_version_range(p: Rendered) -> Resource:
    r = copy.deepcopy(p.by_type("kubernetes:helm.sh/v3:Release")[0])
    r["inputs"]["version"] = "0.16.x"
    return r


BREAKERS: dict[str, list[Callable[[Rendered], Resource]]] = {
    "images-from-the-configured-registry": [_image_latest, _image_foreign_registry],
    "containers-have-requests-and-limits": [_no_memory_limit],
    "probes-on-a-declared-port": [
        _probe_on_undeclared_port,
        _port_env_differs,
        _sophia_container_without_port_env,
        _no_liveness_probe,
    ],
    "services-name-their-target-port": [_service_without_target_port],
    "gpu-pods-land-on-gpu-nodes": [
        _gpu_pod_without_runtime_class,
        _gpu_pod_without_toleration,
        _gpu_by_node_selector_only,
        _gpu_pod_without_type_affinity,
    ],
    "secrets-are-never-empty": [_empty_secret_value, _placeholder_secret_value],
    "app-namespaces-enforce-restricted": [_app_namespace_baseline],
    "app-pods-are-restricted": [
        _app_pod_as_root,
        _app_pod_escalates,
        _app_pod_keeps_capabilities,
        _app_pod_mounts_the_host,
        _app_pod_binds_a_host_port,
    ],
    "rollouts-keep-capacity-and-spread": [_rollout_drops_capacity, _deployment_not_spread],
    "disruption-budgets-allow-drains": [
        _pdb_blocks_drains,
        _pdb_blocks_drains_with_zero_percent,
        _pdb_blocks_drains_with_zero_as_a_string,
        _pdb_min_available_all,
    ],
    "stateful-data-on-local-path": [
        _statefulset_other_storage_class,
        _statefulset_deletes_claims,
        _statefulset_without_claims,
    ],
    "ingress-only-with-cert-manager-tls": [_ingress_without_tls, _ingress_without_issuer, _ingress_host_not_covered],
    "load-balancers-only-through-metallb": [_load_balancer_ip_field],
    "argocd-applications-follow-main": [_application_on_a_feature_branch],
    "argocd-applications-in-the-sophia-project": [_application_in_the_default_project],
    "helm-releases-are-pinned": [_release_with_a_version_range],
}

CASES = [(rule, breaker) for rule, breakers in BREAKERS.items() for breaker in breakers]


def test_every_policy_has_a_broken_resource_that_makes_it_fire() -> None:
    assert set(BREAKERS) == set(BY_NAME)


@pytest.mark.parametrize(("rule", "breaker"), CASES, ids=[f"{r}:{b.__name__.strip('_')}" for r, b in CASES])
def test_each_policy_fires_on_a_real_resource_broken_in_one_place(
    production: Rendered, with_application: Rendered, rule: str, breaker: Callable[[Rendered], Resource]
) -> None:
    source = with_application if rule.startswith("argocd-applications-") else production
    broken = breaker(source)
    original = next(r for r in source.resources if r["urn"] == broken["urn"])
    assert _judge(rule, original) == []
    assert _judge(rule, broken) != []


# -- each condition a policy checks, broken alone ----------------------------------------------------
#
# A rule that checks several fields fires on each of them by itself: one case per condition, read off
# each rule in policy/rules.py, and the message names the field (so the case fires for its own reason,
# not for another condition it happens to break too). The cases above cover some conditions; these
# are the others.


def _container(r: Resource) -> dict[str, Any]:
    container: dict[str, Any] = _pod(r)["containers"][0]
    return container


def _set(
    path: list[str], value: Any, kind: str = "Deployment", where: Callable[[Resource], bool] = _in_app_namespace
) -> Callable[[Rendered], Resource]:
    """A breaker that sets one field of the first container (`[]`: the pod spec) of a real `kind`."""

    def breaker(p: Rendered) -> Resource:
        r = _real(p, kind, where)
        target = _container(r) if path and path[0] != "pod" else _pod(r)
        keys = path[1:] if path and path[0] == "pod" else path
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
        return r

    breaker.__name__ = f"_{kind.lower()}_{'_'.join(path)}_{value}".replace(".", "_").replace("/", "_")
    return breaker


def _drop_amount(kind: str, amount: str) -> Callable[[Rendered], Resource]:
    def breaker(p: Rendered) -> Resource:
        r = _real(p, "Deployment")
        del _container(r)["resources"][kind][amount]
        return r

    breaker.__name__ = f"_no_{amount}_{kind}"
    return breaker


def _untagged_image(p: Rendered) -> Resource:
    r = _real(p, "Deployment")
    _container(r)["image"] = _container(r)["image"].rsplit(":", 1)[0]
    return r


def _init_container_from_elsewhere(p: Rendered) -> Resource:
    r = _real(p, "Deployment")
    init = copy.deepcopy(_container(r))
    init.update(name="migrate", image="docker.io/library/alpine:3.20")
    _pod(r)["initContainers"] = [init]
    return r


def _init_container_without_resources(p: Rendered) -> Resource:
    r = _real(p, "Deployment")
    init = copy.deepcopy(_container(r))
    init["name"] = "migrate"
    del init["resources"]
    _pod(r)["initContainers"] = [init]
    return r


def _no_readiness_probe(p: Rendered) -> Resource:
    r = _real(p, "Deployment")
    del _container(r)["readinessProbe"]
    return r


def _liveness_probe_runs_a_command(p: Rendered) -> Resource:
    r = _real(p, "Deployment")
    _container(r)["livenessProbe"] = {"exec": {"command": ["true"]}, "periodSeconds": 10}
    return r


def _liveness_probe_on_undeclared_port(p: Rendered) -> Resource:
    r = _real(p, "StatefulSet")
    probe = _container(r)["livenessProbe"]
    handler = next(h for h in ("httpGet", "tcpSocket", "grpc") if h in probe)
    probe[handler]["port"] = 65001
    return r


def _startup_probe_on_undeclared_port(p: Rendered) -> Resource:
    r = _real(p, "Deployment")
    _container(r)["startupProbe"] = {"tcpSocket": {"port": 65002}}
    return r


def _service_target_port_zero(p: Rendered) -> Resource:
    r = _real(p, "Service", lambda s: bool(s["inputs"]["spec"].get("selector")))
    r["inputs"]["spec"]["ports"][0]["targetPort"] = 0
    return r


def _gpu_requested_not_limited(p: Rendered) -> Resource:
    r = _real(p, "Deployment", _uses_gpu)
    resources = _container(r)["resources"]
    resources["requests"][GPU_RESOURCE] = resources["limits"].pop(GPU_RESOURCE)
    # Still a GPU pod by another container's limit, so that only the limit is missing.
    other = copy.deepcopy(_container(r))
    other["name"] = "gpu-sidecar"
    other["resources"]["limits"][GPU_RESOURCE] = 1
    _pod(r)["containers"].append(other)
    return r


def _gpu_node_selector_beside_a_limit(p: Rendered) -> Resource:
    r = _real(p, "Deployment", _uses_gpu)
    _pod(r)["nodeSelector"] = {GPU_RESOURCE: "true"}
    return r


def _gpu_tolerates_another_taint(p: Rendered) -> Resource:
    r = _real(p, "Deployment", _uses_gpu)
    _pod(r)["tolerations"] = [{"key": "sophia.ai/dedicated", "operator": "Exists", "effect": "NoSchedule"}]
    return r


def _secret_without_values(p: Rendered) -> Resource:
    r = _real(p, "Secret")
    r["inputs"].pop("stringData", None)
    r["inputs"].pop("data", None)
    return r


def _secret_data_not_a_mapping(p: Rendered) -> Resource:
    r = _real(p, "Secret")
    r["inputs"]["data"] = {"kept": SECRET}
    r["inputs"]["stringData"] = ["not", "a", "mapping"]
    return r


def _sophia_container_elsewhere_without_port_env(p: Rendered) -> Resource:
    """A Sophia workload (by its label) outside the app namespaces is still held to PORT."""
    r = _real(p, "Deployment", lambda d: _in_app_namespace(d) and rules._is_sophia(d["inputs"]))
    r["inputs"]["metadata"]["namespace"] = "default"
    _container(r)["env"] = [e for e in _container(r).get("env", []) if e.get("name") != "PORT"]
    return r


def _probe_on_a_port_by_its_name(p: Rendered) -> Resource:
    """Kubernetes lets a probe name the containerPort it probes."""
    r = _real(p, "Deployment", lambda d: any("name" in port for port in _container(d).get("ports", [])))
    named = next(port["name"] for port in _container(r)["ports"] if "name" in port)
    _container(r)["readinessProbe"] = {"tcpSocket": {"port": named}}
    return r


def _deployment_without_startup_probe(p: Rendered) -> Resource:
    """A startup probe is for slow starters only: a container without one is not held to it."""
    r = _real(p, "Deployment")
    _container(r).pop("startupProbe", None)
    return r


def _service_target_port_empty(p: Rendered) -> Resource:
    r = _real(p, "Service", lambda s: bool(s["inputs"]["spec"].get("selector")))
    r["inputs"]["spec"]["ports"][0]["targetPort"] = ""
    return r


def _app_namespace_unlabelled_baseline(p: Rendered) -> Resource:
    """An app namespace (by the policy's configuration) that lost the Sophia label is still one."""
    r = _app_namespace_baseline(p)
    del r["inputs"]["metadata"]["labels"][rules.PART_OF[0]]
    return r


def _app_namespace_without_enforce(p: Rendered) -> Resource:
    r = _real(p, "Namespace", lambda n: n["inputs"]["metadata"]["name"] in DEFAULT_CONFIG.app_namespaces)
    del r["inputs"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
    return r


def _app_pod_keeps_capabilities_added(p: Rendered) -> Resource:
    r = _real(p, "Deployment", _in_app_namespace)
    _container(r)["securityContext"]["capabilities"] = {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    return r


def _rollout_recreates(p: Rendered) -> Resource:
    r = _real(p, "Deployment")
    r["inputs"]["spec"]["strategy"] = {"type": "Recreate"}
    return r


def _deployment_spread_across_zones_only(p: Rendered) -> Resource:
    r = _real(p, "Deployment")
    for constraint in _pod(r)["topologySpreadConstraints"]:
        constraint["topologyKey"] = "topology.kubernetes.io/zone"
    return r


def _pdb_without_a_bound(p: Rendered) -> Resource:
    r = _real(p, "PodDisruptionBudget")
    r["inputs"]["spec"].pop("maxUnavailable", None)
    r["inputs"]["spec"].pop("minAvailable", None)
    return r


def _pdb_absolute_min_available(p: Rendered) -> Resource:
    r = _real(p, "PodDisruptionBudget")
    r["inputs"]["spec"].pop("maxUnavailable", None)
    r["inputs"]["spec"]["minAvailable"] = 1
    return r


def _claim_on_another_storage_class(p: Rendered) -> Resource:
    # A standalone claim, as a workload with its own PVC would make it (production's live in templates).
    r = _real(p, "StatefulSet")
    template = r["inputs"]["spec"]["volumeClaimTemplates"][0]
    metadata = {"name": "data-extra", "namespace": r["inputs"]["metadata"]["namespace"]}
    spec = {**template["spec"], "storageClassName": "standard"}
    r["type"] = "kubernetes:core/v1:PersistentVolumeClaim"
    r["inputs"] = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}
    return r


def _statefulset_deletes_claims_on_scale_down(p: Rendered) -> Resource:
    r = _real(p, "StatefulSet")
    r["inputs"]["spec"]["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Retain", "whenScaled": "Delete"}
    return r


def _statefulset_updates_on_delete(p: Rendered) -> Resource:
    r = _real(p, "StatefulSet")
    r["inputs"]["spec"]["updateStrategy"] = {"type": "OnDelete"}
    return r


def _ingress_tls_without_secret(p: Rendered) -> Resource:
    r = _real(p, "Ingress")
    del r["inputs"]["spec"]["tls"][0]["secretName"]
    return r


def _ingress_rule_without_host(p: Rendered) -> Resource:
    r = _real(p, "Ingress")
    del r["inputs"]["spec"]["rules"][0]["host"]
    return r


def _load_balancer_ip_beside_the_annotation(p: Rendered) -> Resource:
    r = _load_balancer_without_annotation(p)
    r["inputs"]["metadata"].setdefault("annotations", {})[rules.METALLB_IPS] = "192.0.2.50"
    r["inputs"]["spec"]["loadBalancerIP"] = "192.0.2.50"
    return r


def _load_balancer_without_annotation(p: Rendered) -> Resource:
    r = _real(p, "Service", lambda s: bool(s["inputs"]["spec"].get("selector")))
    r["inputs"]["spec"]["type"] = "LoadBalancer"
    return r


def _application_without_path(p: Rendered) -> Resource:
    r = _real(p, "Application")
    del r["inputs"]["spec"]["source"]["path"]
    return r


def _application_without_source(p: Rendered) -> Resource:
    r = _real(p, "Application")
    del r["inputs"]["spec"]["source"]
    return r


def _application_source_of_several_on_a_branch(p: Rendered) -> Resource:
    r = _real(p, "Application")
    source = r["inputs"]["spec"].pop("source")
    r["inputs"]["spec"]["sources"] = [source, {**source, "targetRevision": "develop"}]
    return r


def _release_from_plain_http(p: Rendered) -> Resource:
    r = copy.deepcopy(p.by_type("kubernetes:helm.sh/v3:Release")[0])
    r["inputs"]["repositoryOpts"]["repo"] = "http://charts.example.com"
    return r


CONDITIONS: list[tuple[str, Callable[[Rendered], Resource], str]] = [
    ("images-from-the-configured-registry", _untagged_image, "is not <docker.io/scoobyjava15>/<name>:<tag>"),
    ("images-from-the-configured-registry", _init_container_from_elsewhere, "initContainers[0].image"),
    ("containers-have-requests-and-limits", _drop_amount("requests", "cpu"), "resources.requests: no cpu"),
    ("containers-have-requests-and-limits", _drop_amount("requests", "memory"), "resources.requests: no memory"),
    ("containers-have-requests-and-limits", _drop_amount("limits", "cpu"), "resources.limits: no cpu"),
    ("containers-have-requests-and-limits", _set(["resources", "requests", "cpu"], 0), "resources.requests: no cpu"),
    ("containers-have-requests-and-limits", _init_container_without_resources, "initContainers[0].resources"),
    ("probes-on-a-declared-port", _no_readiness_probe, "readinessProbe: missing"),
    ("probes-on-a-declared-port", _liveness_probe_runs_a_command, "livenessProbe: probes a command"),
    ("probes-on-a-declared-port", _liveness_probe_on_undeclared_port, "livenessProbe: port 65001"),
    ("probes-on-a-declared-port", _startup_probe_on_undeclared_port, "startupProbe: port 65002"),
    ("probes-on-a-declared-port", _sophia_container_elsewhere_without_port_env, "env: no PORT"),
    ("services-name-their-target-port", _service_target_port_zero, "targetPort: not set"),
    ("services-name-their-target-port", _service_target_port_empty, "targetPort: not set"),
    ("gpu-pods-land-on-gpu-nodes", _gpu_requested_not_limited, "is requested but not limited"),
    ("gpu-pods-land-on-gpu-nodes", _gpu_node_selector_beside_a_limit, "nodeSelector"),
    ("gpu-pods-land-on-gpu-nodes", _gpu_tolerates_another_taint, "tolerations"),
    ("secrets-are-never-empty", _secret_without_values, "the Secret holds no value"),
    ("secrets-are-never-empty", _secret_data_not_a_mapping, "stringData: must be a mapping"),
    ("app-namespaces-enforce-restricted", _app_namespace_without_enforce, "None, must be 'restricted'"),
    ("app-namespaces-enforce-restricted", _app_namespace_baseline, "'baseline', must be 'restricted'"),
    ("app-namespaces-enforce-restricted", _app_namespace_unlabelled_baseline, "'baseline', must be 'restricted'"),
    ("app-pods-are-restricted", _set(["pod", "hostNetwork"], True), "hostNetwork: must not be true"),
    ("app-pods-are-restricted", _set(["pod", "hostPID"], True), "hostPID: must not be true"),
    ("app-pods-are-restricted", _set(["pod", "hostIPC"], True), "hostIPC: must not be true"),
    ("app-pods-are-restricted", _set(["securityContext", "runAsUser"], 0), "runAsUser: must not be 0"),
    (
        "app-pods-are-restricted",
        _set(["securityContext", "seccompProfile"], {"type": "Unconfined"}),
        "seccompProfile.type: 'Unconfined'",
    ),
    ("app-pods-are-restricted", _set(["securityContext", "privileged"], True), "privileged: must not be true"),
    ("app-pods-are-restricted", _app_pod_keeps_capabilities_added, "capabilities.add: ['SYS_ADMIN']"),
    ("rollouts-keep-capacity-and-spread", _rollout_recreates, "spec.strategy.type: 'Recreate'"),
    ("rollouts-keep-capacity-and-spread", _deployment_spread_across_zones_only, "topologySpreadConstraints"),
    ("disruption-budgets-allow-drains", _pdb_without_a_bound, "sets neither maxUnavailable nor minAvailable"),
    ("disruption-budgets-allow-drains", _pdb_absolute_min_available, "spec.minAvailable: 1 blocks drains"),
    ("stateful-data-on-local-path", _claim_on_another_storage_class, "spec.storageClassName: 'standard'"),
    ("stateful-data-on-local-path", _statefulset_deletes_claims_on_scale_down, "whenScaled: Delete"),
    ("stateful-data-on-local-path", _statefulset_updates_on_delete, "updateStrategy.type: 'OnDelete'"),
    ("ingress-only-with-cert-manager-tls", _ingress_tls_without_secret, "spec.tls[0].secretName: missing"),
    ("ingress-only-with-cert-manager-tls", _ingress_rule_without_host, "spec.rules[0].host: a rule without a host"),
    ("load-balancers-only-through-metallb", _load_balancer_ip_beside_the_annotation, "spec.loadBalancerIP"),
    ("load-balancers-only-through-metallb", _load_balancer_without_annotation, f"annotations.{rules.METALLB_IPS}"),
    ("argocd-applications-follow-main", _application_without_path, "spec.source.path: missing"),
    ("argocd-applications-follow-main", _application_without_source, "spec.source: missing"),
    (
        "argocd-applications-follow-main",
        _application_source_of_several_on_a_branch,
        "spec.sources[1].targetRevision: 'develop'",
    ),
    ("ingress-only-with-cert-manager-tls", _ingress_without_issuer, f"no {rules.CERT_MANAGER_ANNOTATIONS[0]}"),
    ("helm-releases-are-pinned", _release_from_plain_http, "repositoryOpts.repo: 'http://charts.example.com'"),
    ("helm-releases-are-pinned", _release_with_a_version_range, "version: '0.16.x' is not an exact chart version"),
]


@pytest.mark.parametrize(
    ("rule", "breaker", "says"), CONDITIONS, ids=[f"{r}:{b.__name__.strip('_')}" for r, b, _ in CONDITIONS]
)
def test_each_condition_of_each_policy_fires_alone_and_names_its_field(
    production: Rendered, with_application: Rendered, rule: str, breaker: Callable[[Rendered], Resource], says: str
) -> None:
    source = with_application if rule.startswith("argocd-applications-") else production
    broken = breaker(source)
    original = next(r for r in source.resources if r["urn"] == broken["urn"])
    assert _judge(rule, original) == []
    fired = _judge(rule, broken)
    assert fired
    assert all(says in message for message in fired), fired


def _service_without_selector(p: Rendered) -> Resource:
    """A Service whose endpoints something else manages: no pods, so no target port to name."""
    r = _service_without_target_port(p)
    del r["inputs"]["spec"]["selector"]
    return r


def _external_name_service(p: Rendered) -> Resource:
    """An ExternalName Service is a DNS alias: Kubernetes ignores a selector and ports left on it."""
    r = _service_without_target_port(p)
    r["inputs"]["spec"].update(type="ExternalName", externalName="db.example.com")
    return r


def _release_from(repository: str) -> Callable[[Rendered], Resource]:
    def release(p: Rendered) -> Resource:
        r = copy.deepcopy(p.by_type("kubernetes:helm.sh/v3:Release")[0])
        r["inputs"]["repositoryOpts"] = {"repo": repository}
        return r

    release.__name__ = f"release_from_{repository.split(':', maxsplit=1)[0]}"
    return release


ALLOWED: list[tuple[str, Callable[[Rendered], Resource]]] = [
    ("probes-on-a-declared-port", _deployment_without_startup_probe),
    ("probes-on-a-declared-port", _probe_on_a_port_by_its_name),
    ("services-name-their-target-port", _service_without_selector),
    ("services-name-their-target-port", _external_name_service),
    ("helm-releases-are-pinned", _release_from("https://charts.example.com")),
    ("helm-releases-are-pinned", _release_from("oci://registry.example.com/charts")),
    ("helm-releases-are-pinned", _release_from("http://127.0.0.1:8879/charts")),
]


@pytest.mark.parametrize(("rule", "change"), ALLOWED, ids=[f"{r}:{c.__name__.strip('_')}" for r, c in ALLOWED])
def test_a_policy_lets_through_what_it_does_not_forbid(
    production: Rendered, rule: str, change: Callable[[Rendered], Resource]
) -> None:
    """A policy that fires on a sound object blocks a deploy for nothing: each one it must allow passes."""
    assert _judge(rule, change(production)) == []


# -- the pack as the Pulumi CLI runs it ------------------------------------------------------------


def test_the_pack_has_one_mandatory_policy_per_rule() -> None:
    built = policies()
    assert [p.name for p in built] == [r.name for r in RULES] + [r.name for r in STACK_RULES]
    assert len({p.name for p in built}) == len(built)
    assert all(isinstance(p, ResourceValidationPolicy) for p in built[: len(RULES)])
    assert all(isinstance(p, StackValidationPolicy) for p in built[len(RULES) :])
    assert all(p.enforcement_level is EnforcementLevel.MANDATORY for p in built)


def test_the_pack_entry_point_serves_exactly_those_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    served: dict[str, Any] = {}

    def record(name: str, policies: list[Any], **options: Any) -> None:
        served.update(name=name, policies=policies, **options)

    monkeypatch.setattr(pulumi_policy, "PolicyPack", record)
    runpy.run_path(str(PROJECT_DIR / "policy"), run_name="__main__")
    assert served["name"] == PACK_NAME
    assert served["enforcement_level"] is EnforcementLevel.MANDATORY
    assert [p.name for p in served["policies"]] == [p.name for p in policies()]
    manifest = yaml.safe_load((PROJECT_DIR / "policy" / "PulumiPolicy.yaml").read_text())
    # The keys Pulumi's PolicyPackProject reads; the pack's name comes from PolicyPack(name=...).
    assert manifest["runtime"] == "python"
    assert set(manifest) <= {"runtime", "version", "main", "description", "author", "website", "license"}


def _validate(policy_name: str, resource: Resource, config: dict[str, Any] | None = None) -> list[str]:
    """What the policy reports when the engine hands it `resource` (inputs proxied as pulumi_policy does)."""
    (policy,) = [p for p in policies() if p.name == policy_name]
    assert isinstance(policy, ResourceValidationPolicy)
    reported: list[str] = []
    args = ResourceValidationArgs(
        resource["type"],
        unknown_checking_proxy(copy.deepcopy(resource["inputs"])),
        resource["urn"],
        resource["name"],
        None,  # type: ignore[arg-type]  # the rules read no resource options
        None,
        config or {},
    )
    policy.validate(args, lambda message, urn: reported.append(message))
    return reported


def test_a_policy_reports_through_the_engine_with_unknown_values_left_unjudged(production: Rendered) -> None:
    deployment = _real(production, "Deployment")
    assert _validate("images-from-the-configured-registry", deployment) == []
    _pod(deployment)["containers"][0]["image"] = "sophia-backend:latest"
    assert len(_validate("images-from-the-configured-registry", deployment)) == 1
    # During preview an image computed from another resource's output is unknown: not a violation.
    _pod(deployment)["containers"][0]["image"] = UNKNOWN_STRING_VALUE
    assert _validate("images-from-the-configured-registry", deployment) == []


def test_the_registry_comes_from_policy_config(production: Rendered) -> None:
    deployment = _real(production, "Deployment")
    assert _validate("images-from-the-configured-registry", deployment, {"registry": "ghcr.io/sophia"}) != []
    assert config_from({"registry": "ghcr.io/sophia"}).registry == "ghcr.io/sophia"
    assert config_from({}).registry == rules.DEFAULT_REGISTRY


def test_secrets_are_judged_by_their_real_values_under_preview(production: Rendered) -> None:
    secret = _real(production, "Secret")
    values = secret["inputs"].get("stringData") or secret["inputs"]["data"]
    assert all(v == SECRET for v in values.values()), "the render redacts every value"
    for key in values:
        values[key] = "a-real-value-of-enough-length"
    assert _validate("secrets-are-never-empty", secret) == []
    values[sorted(values)[0]] = "   "
    assert len(_validate("secrets-are-never-empty", secret)) == 1


def test_plain_unwraps_the_engine_proxies_keeping_unknowns() -> None:
    proxied = unknown_checking_proxy({"a": [{"b": UNKNOWN_STRING_VALUE}], "c": 1})
    assert plain(proxied) == {"a": [{"b": UNKNOWN_STRING_VALUE}], "c": 1}


# -- the stack policies ----------------------------------------------------------------------------

Stack = list[tuple[str, dict[str, Any]]]
STACK_BY_NAME = {rule.name: rule for rule in STACK_RULES}


def _stack(production: Rendered) -> Stack:
    return [(r["type"], copy.deepcopy(r["inputs"])) for r in production.resources]


def _find(stack: Stack, kind: str, name: str, namespace: str) -> dict[str, Any]:
    for _, inputs in stack:
        metadata = inputs.get("metadata") or {}
        if inputs.get("kind") == kind and metadata.get("name") == name and metadata.get("namespace") == namespace:
            return inputs
    pytest.fail(f"the production render has no {kind} {namespace}/{name}")


def _without(stack: Stack, kind: str, name: str, namespace: str) -> Stack:
    doomed = _find(stack, kind, name, namespace)
    return [(t, i) for t, i in stack if i is not doomed]


def _service_targets_another_port(stack: Stack) -> Stack:
    _find(stack, "Service", "sophia-backend", "sophia-apps")["spec"]["ports"][0]["targetPort"] = 8081
    return stack


def _service_targets_its_exporters_port(stack: Stack) -> Stack:
    # A port the pod does declare, but the exporter's: the Service's redis port would reach the exporter.
    pod = _find(stack, "StatefulSet", "redis", "sophia-data")["spec"]["template"]["spec"]
    main, exporter = (container["ports"][0] for container in pod["containers"])
    service = _find(stack, "Service", "redis", "sophia-data")
    next(p for p in service["spec"]["ports"] if p["name"] == main["name"])["targetPort"] = exporter["containerPort"]
    return stack


def _service_port_without_a_name(stack: Stack) -> Stack:
    del _find(stack, "Service", "sophia-backend", "sophia-apps")["spec"]["ports"][0]["name"]
    return stack


def _service_port_named_after_no_port(stack: Stack) -> Stack:
    _find(stack, "Service", "sophia-backend", "sophia-apps")["spec"]["ports"][0]["name"] = "web"
    return stack


def _service_selects_nothing(stack: Stack) -> Stack:
    _find(stack, "Service", "redis", "sophia-data")["spec"]["selector"] = {"app.kubernetes.io/name": "redis-old"}
    return stack


def _no_default_deny(stack: Stack) -> Stack:
    return _without(stack, "NetworkPolicy", "default-deny", "sophia-mcp")


def _default_deny_that_allows(stack: Stack) -> Stack:
    _find(stack, "NetworkPolicy", "default-deny", "sophia-data")["spec"]["ingress"] = [{}]
    return stack


def _no_autoscaler(stack: Stack) -> Stack:
    return _without(stack, "HorizontalPodAutoscaler", "sophia-frontend", "sophia-apps")


def _no_budget(stack: Stack) -> Stack:
    return _without(stack, "PodDisruptionBudget", "sophia-backend", "sophia-apps")


def _budget_demands_every_replica(stack: Stack) -> Stack:
    spec = _find(stack, "PodDisruptionBudget", "sophia-backend", "sophia-apps")["spec"]
    spec.pop("maxUnavailable", None)
    spec["minAvailable"] = 2
    return stack


STACK_BREAKERS: dict[str, list[Callable[[Stack], Stack]]] = {
    "services-reach-the-port-they-name": [
        _service_targets_another_port,
        _service_targets_its_exporters_port,
        _service_port_without_a_name,
        _service_port_named_after_no_port,
        _service_selects_nothing,
    ],
    "app-namespaces-deny-by-default": [_no_default_deny, _default_deny_that_allows],
    "replicated-services-have-budgets-and-autoscalers": [_no_autoscaler, _no_budget, _budget_demands_every_replica],
}
STACK_CASES = [(rule, breaker) for rule, breakers in STACK_BREAKERS.items() for breaker in breakers]


def test_every_stack_policy_has_a_broken_stack_that_makes_it_fire() -> None:
    assert set(STACK_BREAKERS) == set(STACK_BY_NAME)


@pytest.mark.parametrize(("rule", "breaker"), STACK_CASES, ids=[f"{r}:{b.__name__.strip('_')}" for r, b in STACK_CASES])
def test_each_stack_policy_fires_on_the_production_stack_broken_in_one_place(
    production: Rendered, rule: str, breaker: Callable[[Stack], Stack]
) -> None:
    judge = STACK_BY_NAME[rule].judge
    assert judge(_stack(production), DEFAULT_CONFIG) == []
    assert judge(breaker(_stack(production)), DEFAULT_CONFIG) != []


def _default_deny_that_allows_egress(stack: Stack) -> Stack:
    _find(stack, "NetworkPolicy", "default-deny", "sophia-data")["spec"]["egress"] = [{}]
    return stack


def _default_deny_of_ingress_only(stack: Stack) -> Stack:
    _find(stack, "NetworkPolicy", "default-deny", "sophia-apps")["spec"]["policyTypes"] = ["Ingress"]
    return stack


def _default_deny_of_some_pods(stack: Stack) -> Stack:
    selector = {"matchLabels": {"app.kubernetes.io/name": "redis"}}
    _find(stack, "NetworkPolicy", "default-deny", "sophia-data")["spec"]["podSelector"] = selector
    return stack


def _two_replica_statefulset_without_budget(stack: Stack) -> Stack:
    """Two replicas are already replicated: a drain may take both unless a budget says otherwise."""
    stack = _without(stack, "PodDisruptionBudget", "redis", "sophia-data")
    _find(stack, "StatefulSet", "redis", "sophia-data")["spec"]["replicas"] = 2
    return stack


def _replicas_without_autoscaler(stack: Stack) -> Stack:
    stack = _without(stack, "HorizontalPodAutoscaler", "sophia-frontend", "sophia-apps")
    _find(stack, "Deployment", "sophia-frontend", "sophia-apps")["spec"]["replicas"] = 2
    return stack


STACK_CONDITIONS: list[tuple[str, Callable[[Stack], Stack], str]] = [
    ("app-namespaces-deny-by-default", _default_deny_that_allows_egress, "Namespace sophia-data: no default-deny"),
    ("app-namespaces-deny-by-default", _default_deny_of_ingress_only, "Namespace sophia-apps: no default-deny"),
    ("app-namespaces-deny-by-default", _default_deny_of_some_pods, "Namespace sophia-data: no default-deny"),
    ("replicated-services-have-budgets-and-autoscalers", _replicas_without_autoscaler, "2 replicas and no HPA"),
    ("replicated-services-have-budgets-and-autoscalers", _no_autoscaler, "leaves spec.replicas to an autoscaler"),
    ("replicated-services-have-budgets-and-autoscalers", _no_budget, "no PodDisruptionBudget selects its pods"),
    (
        "replicated-services-have-budgets-and-autoscalers",
        _two_replica_statefulset_without_budget,
        "redis: replicated, but no PodDisruptionBudget selects its pods",
    ),
    ("replicated-services-have-budgets-and-autoscalers", _budget_demands_every_replica, "blocks every drain"),
    ("services-reach-the-port-they-name", _service_selects_nothing, "matches no workload of the stack"),
    ("services-reach-the-port-they-name", _service_port_without_a_name, "no name; name it after the port"),
    ("services-reach-the-port-they-name", _service_port_named_after_no_port, "'web' is no port"),
    ("services-reach-the-port-they-name", _service_targets_another_port, "targetPort 8081 is not"),
]


@pytest.mark.parametrize(
    ("rule", "breaker", "says"), STACK_CONDITIONS, ids=[f"{r}:{b.__name__.strip('_')}" for r, b, _ in STACK_CONDITIONS]
)
def test_each_condition_of_each_stack_policy_fires_alone_and_names_it(
    production: Rendered, rule: str, breaker: Callable[[Stack], Stack], says: str
) -> None:
    fired = STACK_BY_NAME[rule].judge(breaker(_stack(production)), DEFAULT_CONFIG)
    assert fired
    assert all(says in message for message in fired), fired


def test_the_render_fails_a_service_that_targets_another_port_of_its_pod(production: Rendered) -> None:
    broken = Rendered(production.stack, production.registrations, production.component_outputs)
    broken.resources = copy.deepcopy(production.resources)
    _service_targets_its_exporters_port([(r["type"], r["inputs"]) for r in broken.resources])
    assert policies_pass(Context(production, load_stack("production"), Path())) == []
    violations = policies_pass(Context(broken, load_stack("production"), Path()))
    assert violations
    assert all("Service sophia-data/redis" in v for v in violations), violations


def test_a_stack_policy_reports_through_the_engine(production: Rendered) -> None:
    (policy,) = [p for p in policies() if p.name == "app-namespaces-deny-by-default"]
    assert isinstance(policy, StackValidationPolicy)

    def engine_view(stack: Stack) -> list[str]:
        resources = [
            PolicyResource(t, unknown_checking_proxy(i), f"urn:{n}", str(n), None, None, None, [], {})  # type: ignore[arg-type]
            for n, (t, i) in enumerate(stack)
        ]
        reported: list[str] = []
        policy.validate(StackValidationArgs(resources, {}), lambda message, urn: reported.append(message))
        return reported

    assert engine_view(_stack(production)) == []
    assert engine_view(_no_default_deny(_stack(production))) == [
        "Namespace sophia-mcp: no default-deny NetworkPolicy (all pods, Ingress and Egress, no rule)"
    ]


# -- through pulumi_policy's analyzer, as the engine calls the pack -------------------------------

_SECRET_SIG = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270"}


def _analyzer() -> Any:
    # The servicer `PolicyPack` serves: the exact code path of `pulumi preview --policy-pack`.
    from pulumi_policy.policy import _PolicyAnalyzerServicer

    return _PolicyAnalyzerServicer(PACK_NAME, "1.0.0", policies(), EnforcementLevel.MANDATORY)


def _analyze(analyzer: Any, resource: Resource) -> list[tuple[str, str]]:
    from pulumi.runtime.proto import analyzer_pb2

    request = analyzer_pb2.AnalyzeRequest(type=resource["type"], urn=resource["urn"], name=resource["name"])
    request.properties.update(resource["inputs"])  # numbers travel as doubles, as from the engine
    response = analyzer.Analyze(request, None)
    assert all(d.enforcementLevel == analyzer_pb2.MANDATORY for d in response.diagnostics)
    return [(d.policyName, d.message) for d in response.diagnostics]


def _analyze_stack(analyzer: Any, resources: list[Resource]) -> list[tuple[str, str]]:
    from pulumi.runtime.proto import analyzer_pb2

    request = analyzer_pb2.AnalyzeStackRequest()
    for resource in resources:
        added = request.resources.add(type=resource["type"], urn=resource["urn"], name=resource["name"])
        added.properties.update(resource["inputs"])
    return [(d.policyName, d.message) for d in analyzer.AnalyzeStack(request, None).diagnostics]


def test_the_engine_path_passes_production_and_stops_a_broken_resource(production: Rendered) -> None:
    analyzer = _analyzer()
    assert [d for r in production.resources for d in _analyze(analyzer, r)] == []
    broken = _probe_on_undeclared_port(production)
    assert [name for name, _ in _analyze(analyzer, broken)] == ["probes-on-a-declared-port"]


def test_the_engine_path_judges_the_whole_stack(production: Rendered) -> None:
    analyzer = _analyzer()
    assert _analyze_stack(analyzer, production.resources) == []
    without_deny = [
        r
        for r in production.resources
        if not (r["inputs"].get("kind") == "NetworkPolicy" and r["inputs"]["metadata"]["name"] == "default-deny")
    ]
    assert {name for name, _ in _analyze_stack(analyzer, without_deny)} == {"app-namespaces-deny-by-default"}


def test_the_engine_path_reads_real_secret_values(production: Rendered) -> None:
    analyzer = _analyzer()
    secret = _real(production, "Secret")
    field = "stringData" if "stringData" in secret["inputs"] else "data"
    keys = sorted(secret["inputs"][field])
    secret["inputs"][field] = {k: {**_SECRET_SIG, "value": "a-real-value-of-enough-length"} for k in keys}
    assert _analyze(analyzer, secret) == []
    secret["inputs"][field][keys[0]] = {**_SECRET_SIG, "value": ""}
    assert [name for name, _ in _analyze(analyzer, secret)] == ["secrets-are-never-empty"]


# -- stack policies judge outputs: what the engine sends to AnalyzeStack ------------------------


def _hidden(stack: Stack, *kinds: str) -> Stack:
    """The stack as the engine shows it while these objects' outputs are still empty (unknown)."""
    return [(t, {} if i.get("kind") in kinds else i) for t, i in stack]


def _as_outputs(stack: Stack) -> Stack:
    """Each object as the API server hands it back: what it was given, plus the fields the server sets."""
    served = copy.deepcopy(stack)
    for n, (_, props) in enumerate(served):
        if "kind" in props and "apiVersion" in props:
            props["metadata"] = {
                **props.get("metadata", {}),
                "uid": f"00000000-0000-0000-0000-{n:012d}",
                "resourceVersion": str(1000 + n),
                "creationTimestamp": "2026-11-29T00:00:00Z",
            }
            props["status"] = {}
    return served


def test_at_a_first_preview_stack_policies_see_nothing_and_report_nothing(production: Rendered) -> None:
    # The engine runs stack policies on outputs, and the objects behind a provider whose kubeconfig
    # is still unknown have none: a rule must not call an object missing because it is hidden.
    every_kind = {str(i["kind"]) for _, i in _stack(production) if "kind" in i}
    analyzer = _analyzer()
    for rule, breaker in STACK_CASES:
        hidden = _hidden(breaker(_stack(production)), *every_kind)
        assert STACK_BY_NAME[rule].judge(hidden, DEFAULT_CONFIG) == [], rule
        as_sent = [{"type": t, "urn": f"urn:{n}", "name": str(n), "inputs": i} for n, (t, i) in enumerate(hidden)]
        assert _analyze_stack(analyzer, as_sent) == [], rule


def test_a_stack_policy_judges_what_it_sees_while_some_objects_are_hidden(production: Rendered) -> None:
    # A Service whose workload is not yet known is not "selecting nothing"...
    hidden = _hidden(_stack(production), "Deployment", "StatefulSet", "HorizontalPodAutoscaler")
    for rule in STACK_RULES:
        assert rule.judge(hidden, DEFAULT_CONFIG) == [], rule.name
    # ...but a visible fault is still one.
    wrong_port = _service_targets_another_port(_stack(production))
    budget = _budget_demands_every_replica(_hidden(wrong_port, "HorizontalPodAutoscaler"))
    assert STACK_BY_NAME["services-reach-the-port-they-name"].judge(budget, DEFAULT_CONFIG) != []
    assert STACK_BY_NAME["replicated-services-have-budgets-and-autoscalers"].judge(budget, DEFAULT_CONFIG) != []


@pytest.mark.parametrize(("rule", "breaker"), STACK_CASES, ids=[f"{r}:{b.__name__.strip('_')}" for r, b in STACK_CASES])
def test_stack_policies_judge_objects_as_the_api_server_returns_them(
    production: Rendered, rule: str, breaker: Callable[[Stack], Stack]
) -> None:
    judge = STACK_BY_NAME[rule].judge
    assert judge(_as_outputs(_stack(production)), DEFAULT_CONFIG) == []
    assert judge(_as_outputs(breaker(_stack(production))), DEFAULT_CONFIG) != []


@pytest.mark.parametrize(
    "values",
    [
        {"data": rules.UNKNOWN},  # computed from another resource: unknown at preview, not empty
        {"data": {"password": SECRET}},  # data alone
        {"data": rules.UNKNOWN, "stringData": {"password": SECRET}},
        {"stringData": rules.UNKNOWN, "data": {"password": SECRET}},
    ],
)
def test_a_secret_whose_values_are_unknown_or_only_in_data_is_not_empty(
    production: Rendered, values: dict[str, Any]
) -> None:
    """mutmut: a whole data field unknown at preview, or data without stringData, passed only by chance."""
    secret = _real(production, "Secret")
    secret["inputs"].pop("stringData", None)
    secret["inputs"].pop("data", None)
    secret["inputs"].update(values)
    assert _judge("secrets-are-never-empty", secret) == []


def test_a_placeholder_after_a_secret_value_is_still_found(production: Rendered) -> None:
    """mutmut: a redacted or unknown value ended the look at the rest of the Secret's keys."""
    secret = _real(production, "Secret")
    secret["inputs"].pop("data", None)
    secret["inputs"]["stringData"] = {"a-token": SECRET, "b-unknown": rules.UNKNOWN, "c-password": "changeme"}
    assert _judge("secrets-are-never-empty", secret) == ["stringData.c-password: is empty or a placeholder"]


def test_a_service_port_not_known_at_preview_leaves_its_other_ports_judged(production: Rendered) -> None:
    """At a preview one port's name may be unknown; the ports after it are still held to their names."""
    stack = _stack(production)
    ports = _find(stack, "Service", "redis", "sophia-data")["spec"]["ports"]
    ports.insert(0, {"name": rules.UNKNOWN, "port": 1, "targetPort": 1})
    assert STACK_BY_NAME["services-reach-the-port-they-name"].judge(stack, DEFAULT_CONFIG) == []
    ports[-1]["targetPort"] = 1
    fired = STACK_BY_NAME["services-reach-the-port-they-name"].judge(stack, DEFAULT_CONFIG)
    assert [m for m in fired if f"spec.ports[{len(ports) - 1}].targetPort 1 is not" in m], fired
