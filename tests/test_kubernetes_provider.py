"""The Kubernetes provider as pulumi-kubernetes 4.34.2 judges it (provider/pkg/provider DiffConfig)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from render.engine import run_program
from render.model import Rendered, build
from tests.support import production_document, stack_from

PROVIDER = "pulumi:providers:kubernetes"


def kubernetes_provider(rendered: Rendered) -> dict[str, Any]:
    (provider,) = rendered.by_type(PROVIDER)
    inputs: dict[str, Any] = provider["inputs"]
    return inputs


def test_the_provider_is_replaced_only_when_the_cluster_is_another_one(production: Rendered, tmp_path: Path) -> None:
    # Without clusterIdentifier, a kubeconfig unknown at preview (every re-run of the first server's
    # install: an upgrade, a label or taint change) plans a replacement of the provider and of every
    # object it manages. The identifier must therefore not move with what re-runs those steps.
    identifier = kubernetes_provider(production)["clusterIdentifier"]
    assert identifier == "k3s/sophia/sophia-production-instance"
    document = production_document()
    cluster = document["config"]["sophia-infra:cluster"]
    cluster["k3sVersion"] = "v1.35.6+k3s1"
    cluster["apiEndpoint"] = "k8s.example.com"
    cluster["nodes"][0]["labels"] = {**cluster["nodes"][0].get("labels", {}), "sophia.ai/pool": "upgraded"}
    upgraded = build("production", run_program(stack_from(tmp_path, document)))
    assert kubernetes_provider(upgraded)["clusterIdentifier"] == identifier


def test_secrets_and_config_maps_change_in_place_without_a_delete_gap(production: Rendered) -> None:
    # With explicit names, a changed `data` would otherwise be a delete-before-replace of the object.
    inputs = kubernetes_provider(production)
    assert inputs["enableSecretMutable"] == "true"
    assert inputs["enableConfigMapMutable"] == "true"
    assert production.objects("Secret") and production.objects("ConfigMap")
    for kind in ("Secret", "ConfigMap"):
        for obj in production.objects(kind):
            assert not obj.get("immutable"), obj["metadata"]["name"]
