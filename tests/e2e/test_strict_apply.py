"""Server-side apply through the real provider refuses what the API server's schema does not declare."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pytest
from pulumi import automation as auto

from tests.e2e.apiserver import ApiServer
from tests.e2e.engine import open_engine
from tests.e2e.program import CUSTOM_KINDS, custom_resource_definition

pytestmark = pytest.mark.e2e


def test_an_undeclared_field_fails_the_up(
    bins: Path, apiserver: ApiServer, tmp_path_factory: pytest.TempPathFactory, report: list[str]
) -> None:
    """A misspelled field is an error, not a field the server silently prunes (the render's schemas
    catch it offline; this is the API server's own word, through the provider the program uses)."""

    def program() -> None:
        provider = k8s.Provider(
            "strict", k8s.ProviderArgs(kubeconfig=apiserver.kubeconfig, enable_server_side_apply=True)
        )
        crd = custom_resource_definition(CUSTOM_KINDS[0], pulumi.ResourceOptions(provider=provider))
        namespace = k8s.core.v1.Namespace(
            "strict",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="e2e-strict"),
            opts=pulumi.ResourceOptions(provider=provider),
        )
        k8s.apiextensions.CustomResource(
            "misspelled",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="misspelled", namespace="e2e-strict"),
            spec={"selector": {}, "endpoints": [{"port": "http", "intervall": "30s"}]},
            opts=pulumi.ResourceOptions(provider=provider, depends_on=[crd, namespace]),
        )

    engine = open_engine(bins, tmp_path_factory.mktemp("strict-stack"), program, report, stack_name="production")
    try:
        with pytest.raises(auto.CommandError, match=r"\.spec\.endpoints\[0\]\.intervall: field not declared in schema"):
            engine.run("up")
        assert not apiserver.exists("/apis/monitoring.coreos.com/v1/namespaces/e2e-strict/servicemonitors/misspelled")
    finally:
        engine.run("destroy")
    assert not apiserver.exists("/api/v1/namespaces/e2e-strict")
    assert not apiserver.exists(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/servicemonitors.monitoring.coreos.com"
    )
