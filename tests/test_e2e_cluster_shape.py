"""The e2e's simulated cluster is shaped like the stacks' machines, and its CRD check can fail.

Offline (no binaries): the kwok Node of every machine (tests/e2e/kwok.py), and the comparison of
render/crds.py's schemas with real CRDs (tests/e2e/crd_schemas.py), run here on the CRDs that ship
as plain files (K3s's HelmChartConfig, the Prometheus Operator's in kube-prometheus-stack's crds/);
the e2e runs it on every CRD the charts install.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.cluster.node_config import node_labels
from components.gpu import ARCH_LABEL, GPU_RESOURCE
from components.platform.charts import KUBE_PROMETHEUS_STACK
from components.settings.cluster import GPU_MODELS
from components.settings.stack import Settings, load_settings
from render.crds import CUSTOM_RESOURCE_SCHEMAS
from render.stack import load_stack, stack_names
from tests.e2e.crd_schemas import looser, served_schema
from tests.e2e.instances import instance_type
from tests.e2e.kwok import machine_node
from tests.e2e.third_party import THIRD_PARTY, chart_member, verified
from tests.support import production_document, settings_from


def settings_of(stack: str) -> Settings:
    config = load_stack(stack)
    return load_settings(config.stack, config.config, config.secret_keys)


@pytest.mark.parametrize("stack", stack_names())
def test_every_machine_is_a_node_as_k3s_registers_it(stack: str) -> None:
    settings = settings_of(stack)
    replicas = settings.platform.gpu_sharing.replicas
    for node in settings.cluster.nodes:
        manifest = machine_node(settings.cluster, node, settings.platform.gpu_sharing)
        labels = manifest["metadata"]["labels"]
        assert manifest["metadata"]["name"] == node.name
        assert labels[ARCH_LABEL] == node.arch.value
        assert node_labels(node).items() <= labels.items()
        assert manifest["spec"].get("taints", []) == [
            {k: v for k, v in (("key", t.key), ("value", t.value), ("effect", t.effect)) if v} for t in node.taints
        ]
        assert node.gpu is not None
        shape = instance_type(node.gpu.model.label, node.gpu.count)
        capacity = manifest["status"]["capacity"]
        assert capacity[GPU_RESOURCE] == str(node.gpu.count * replicas)
        assert (capacity["cpu"], capacity["memory"]) == (str(shape.vcpus), f"{shape.memory_gib * 1024}Mi")


def test_the_gh200_is_an_arm64_node_tainted_for_gpu_pods_only(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, production_document())
    gh200 = next(n for n in settings.cluster.nodes if n.gpu is not None and n.gpu.model.label == "gh200")
    manifest = machine_node(settings.cluster, gh200, settings.platform.gpu_sharing)
    assert manifest["metadata"]["labels"][ARCH_LABEL] == "arm64"
    assert manifest["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]


def test_every_gpu_model_has_a_lambda_instance_type() -> None:
    for label in GPU_MODELS:
        assert instance_type(label, 1).vcpus > 0


needs_third_party = pytest.mark.skipif(
    not (THIRD_PARTY / "SHA256SUMS").is_file(), reason=f"{THIRD_PARTY} (the upstream charts and CRDs) is not here"
)
PROMETHEUS_OPERATOR_CRDS = {
    "ServiceMonitor": "crd-servicemonitors.yaml",
    "PodMonitor": "crd-podmonitors.yaml",
    "PrometheusRule": "crd-prometheusrules.yaml",
}


def plain_crd(key: tuple[str, str]) -> dict[str, Any]:
    """A real CRD that ships as a plain file: K3s's, or one in kube-prometheus-stack's crds/."""
    if key == ("helm.cattle.io/v1", "HelmChartConfig"):
        data = verified("crds/helm.cattle.io_helmchartconfigs.yaml")
    else:
        name = KUBE_PROMETHEUS_STACK.name
        package = f"{name}-{KUBE_PROMETHEUS_STACK.version}.tgz"
        data = chart_member(package, f"{name}/charts/crds/crds/{PROMETHEUS_OPERATOR_CRDS[key[1]]}")
    crd: dict[str, Any] = yaml.safe_load(data)
    return crd


PLAIN_CRDS = (
    ("helm.cattle.io/v1", "HelmChartConfig"),
    *(("monitoring.coreos.com/v1", kind) for kind in PROMETHEUS_OPERATOR_CRDS),
)


def spec_schema(api_version: str, crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = served_schema(crd, api_version.split("/")[1])["properties"]["spec"]
    return schema


@needs_third_party
@pytest.mark.parametrize("key", PLAIN_CRDS, ids=lambda k: k[1])
def test_the_render_allows_no_field_the_real_crd_does_not(key: tuple[str, str]) -> None:
    crd = plain_crd(key)
    assert looser(CUSTOM_RESOURCE_SCHEMAS[key]["properties"]["spec"], spec_schema(key[0], crd), ".spec") == []


@needs_third_party
def test_a_field_the_real_crd_does_not_declare_is_found() -> None:
    key = ("monitoring.coreos.com/v1", "ServiceMonitor")
    crd = plain_crd(key)
    render = copy.deepcopy(CUSTOM_RESOURCE_SCHEMAS[key]["properties"]["spec"])
    endpoint = render["properties"]["endpoints"]["items"]
    endpoint["properties"]["intervall"] = {"type": "string"}
    endpoint["properties"]["scheme"] = {"enum": ["http", "https", "gopher"]}
    problems = looser(render, spec_schema(key[0], crd), ".spec")
    assert ".spec.endpoints[].intervall: allowed by the render, not declared by the CRD" in problems
    assert any(p.startswith(".spec.endpoints[].scheme: the render allows ['gopher']") for p in problems), problems
