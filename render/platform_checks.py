"""Render checks of the platform: one owner per object (Pulumi or Argo CD), LoadBalancer addresses via MetalLB."""

from __future__ import annotations

from typing import Any

import yaml

from render.context import Context

ARGO_API = "argoproj.io/v1alpha1"
LOAD_BALANCER_IPS = "metallb.io/loadBalancerIPs"


def _meta(manifest: dict[str, Any]) -> dict[str, Any]:
    return dict(manifest.get("metadata") or {})


def _spec(manifest: dict[str, Any]) -> dict[str, Any]:
    return dict(manifest.get("spec") or {})


def ownership_violations(manifests: list[dict[str, Any]]) -> list[str]:
    """Objects both Pulumi and Argo CD would own, or that Argo CD could reach outside its fence.

    Pulumi owns every object in the render. Argo CD owns what its Applications sync into their
    destination namespaces. So no rendered object may live in such a namespace; each Application's
    project must fence it (its repositories, its namespaces, no cluster-scoped kinds), and the
    destination Namespace itself is Pulumi's (Argo CD must not create it).
    """
    apps = [m for m in manifests if m.get("apiVersion") == ARGO_API and m.get("kind") == "Application"]
    projects = {
        _meta(m).get("name"): _spec(m)
        for m in manifests
        if m.get("apiVersion") == ARGO_API and m.get("kind") == "AppProject"
    }
    namespaces = {_meta(m).get("name") for m in manifests if m.get("kind") == "Namespace"}
    violations = []
    argo_namespaces: dict[str, str] = {}
    for app in apps:
        name, spec = _meta(app).get("name"), _spec(app)
        destination = dict(spec.get("destination") or {})
        target = str(destination.get("namespace") or "")
        argo_namespaces[target] = str(name)
        project = projects.get(spec.get("project"))
        if project is None:
            violations.append(f"Application {name}: project {spec.get('project')!r} is not an AppProject of the render")
            continue
        if project.get("clusterResourceWhitelist"):
            violations.append(f"AppProject {spec.get('project')}: allows cluster-scoped kinds, which are Pulumi's")
        allowed = {d.get("namespace") for d in project.get("destinations") or []}
        if target not in allowed:
            violations.append(f"Application {name}: namespace {target!r} is not a destination of its project")
        repo = (spec.get("source") or {}).get("repoURL")
        if repo not in (project.get("sourceRepos") or []):
            violations.append(f"Application {name}: repository {repo!r} is not a source of its project")
        if target not in namespaces:
            violations.append(f"Application {name}: namespace {target!r} is not created by Pulumi")
        options = (spec.get("syncPolicy") or {}).get("syncOptions") or []
        if "CreateNamespace=true" in options:
            violations.append(f"Application {name}: CreateNamespace=true would make Argo CD own a Namespace")
    for manifest in manifests:
        namespace = _meta(manifest).get("namespace")
        if namespace in argo_namespaces:
            violations.append(
                f"{manifest.get('kind')} {namespace}/{_meta(manifest).get('name')}: created by Pulumi in "
                f"namespace {namespace}, which Argo CD Application {argo_namespaces[namespace]} owns"
            )
    return violations


def _keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return list(value) + [k2 for v in value.values() for k2 in _keys(v)]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


def load_balancer_violations(manifests: list[dict[str, Any]], releases: dict[str, dict[str, Any]]) -> list[str]:
    """No object, chart value or Traefik override uses the deprecated `loadBalancerIP`; LoadBalancers ask MetalLB."""
    violations = []
    for manifest in manifests:
        label = f"{manifest.get('kind')} {_meta(manifest).get('namespace', '')}/{_meta(manifest).get('name')}"
        if "loadBalancerIP" in _keys(manifest):
            violations.append(f"{label}: sets the deprecated loadBalancerIP")
        if manifest.get("kind") == "HelmChartConfig":
            content = yaml.safe_load(str(_spec(manifest).get("valuesContent") or "")) or {}
            if "loadBalancerIP" in _keys(content):
                violations.append(f"{label}: valuesContent sets the deprecated loadBalancerIP")
        is_load_balancer = manifest.get("kind") == "Service" and _spec(manifest).get("type") == "LoadBalancer"
        if is_load_balancer and LOAD_BALANCER_IPS not in (_meta(manifest).get("annotations") or {}):
            violations.append(f"{label}: a LoadBalancer Service without the {LOAD_BALANCER_IPS} annotation")
    for name, release in releases.items():
        if "loadBalancerIP" in _keys(release.get("values") or {}):
            violations.append(f"release {name}: values set the deprecated loadBalancerIP")
    return violations


def argocd_and_pulumi_own_disjoint_objects(context: Context) -> list[str]:
    """No object is owned by both Pulumi and Argo CD."""
    return ownership_violations(context.rendered.manifests)


def load_balancers_only_through_metallb(context: Context) -> list[str]:
    """LoadBalancer addresses come from MetalLB's annotation, never the deprecated spec.loadBalancerIP."""
    return load_balancer_violations(context.rendered.manifests, context.rendered.releases)
