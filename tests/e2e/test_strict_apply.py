"""Server-side apply through the real provider refuses what the API server's schema does not declare."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml
from pulumi import automation as auto

from components.platform.charts import KUBE_PROMETHEUS_STACK
from tests.e2e.apiserver import ApiServer
from tests.e2e.engine import open_engine
from tests.e2e.third_party import chart_member

pytestmark = pytest.mark.e2e

GROUP = "strict.e2e.sophia.ai"
# The real ServiceMonitor CRD, as kube-prometheus-stack ships it in its crds/, under a group of its
# own: the chart's, which Helm keeps after an uninstall as it keeps every chart's `crds/`, may
# already be on the session's API server.
SERVICE_MONITOR_CRD = (
    f"{KUBE_PROMETHEUS_STACK.name}-{KUBE_PROMETHEUS_STACK.version}.tgz",
    f"{KUBE_PROMETHEUS_STACK.name}/charts/crds/crds/crd-servicemonitors.yaml",
)


def strict_crd() -> dict[str, Any]:
    crd: dict[str, Any] = copy.deepcopy(yaml.safe_load(chart_member(*SERVICE_MONITOR_CRD)))
    crd["spec"]["group"] = GROUP
    crd["metadata"] = {"name": f"{crd['spec']['names']['plural']}.{GROUP}"}
    return crd


def test_an_undeclared_field_fails_the_up(
    bins: Path, apiserver: ApiServer, tmp_path_factory: pytest.TempPathFactory, report: list[str]
) -> None:
    """A misspelled field is an error, not a field the server silently prunes (the render's schemas
    catch it offline; this is the API server's own word, through the provider the program uses)."""

    manifest = strict_crd()
    version = next(v["name"] for v in manifest["spec"]["versions"] if v.get("storage"))

    def program() -> None:
        provider = k8s.Provider(
            "strict", k8s.ProviderArgs(kubeconfig=apiserver.kubeconfig, enable_server_side_apply=True)
        )
        crd = k8s.apiextensions.CustomResource(
            "crd",
            api_version=manifest["apiVersion"],
            kind=manifest["kind"],
            metadata=k8s.meta.v1.ObjectMetaArgs(name=manifest["metadata"]["name"]),
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(provider=provider),
        )
        namespace = k8s.core.v1.Namespace(
            "strict",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="e2e-strict"),
            opts=pulumi.ResourceOptions(provider=provider),
        )
        k8s.apiextensions.CustomResource(
            "misspelled",
            api_version=f"{GROUP}/{version}",
            kind="ServiceMonitor",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="misspelled", namespace="e2e-strict"),
            spec={"selector": {}, "endpoints": [{"port": "http", "intervall": "30s"}]},
            opts=pulumi.ResourceOptions(provider=provider, depends_on=[crd, namespace]),
        )

    engine = open_engine(bins, tmp_path_factory.mktemp("strict-stack"), program, report, stack_name="production")
    try:
        with pytest.raises(auto.CommandError, match=r"\.spec\.endpoints\[0\]\.intervall: field not declared in schema"):
            engine.run("up")
        assert not apiserver.exists(f"/apis/{GROUP}/{version}/namespaces/e2e-strict/servicemonitors/misspelled")
    finally:
        engine.run("destroy")
    assert not apiserver.exists("/api/v1/namespaces/e2e-strict")
    assert not apiserver.exists(
        f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{manifest['metadata']['name']}"
    )
