"""The `apps` and `llmGateway` sections: every mistake is one line naming its key, before anything is built."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from components.apps.catalogue import CATALOGUE, MCP_SERVERS, catalogue_problems
from components.settings.cluster import Arch
from tests.support import problems_of, production_document, settings_from

Doc = dict[str, Any]
APPS = "sophia-infra:apps"
GATEWAY = "sophia-infra:llmGateway"


def _set(key: str, path: str, value: object) -> Callable[[Doc], None]:
    """Set `config[key]` at the dotted `path` (`[i]` for list items); `...` deletes."""

    def mutate(doc: Doc) -> None:
        target: Any = doc["config"][key]
        parts = [int(p[1:-1]) if p.startswith("[") else p for p in path.replace("[", ".[").split(".") if p]
        for part in parts[:-1]:
            target = target[part]
        if value is ...:
            del target[parts[-1]]
        else:
            target[parts[-1]] = value

    return mutate


def _only_gh200_node_loses_its_gpu(doc: Doc) -> None:
    node = doc["config"]["sophia-infra:cluster"]["nodes"][1]
    node["gpu"] = {"type": "rtx6000", "count": 1}
    node["arch"] = "amd64"


CASES: list[tuple[str, Callable[[Doc], None], str]] = [
    (
        "a catalogue service without settings",
        _set(APPS, "services.redis", ...),
        f"{APPS}.services.redis: is required",
    ),
    (
        "a service the catalogue does not know",
        _set(APPS, "services.ai-memroy", {"replicas": {"min": 1, "max": 1}}),
        f"{APPS}.services.ai-memroy: unknown key",
    ),
    (
        "replicas on a database",
        _set(APPS, "services.postgres.replicas", {"min": 2, "max": 2}),
        f"{APPS}.services.postgres.replicas: unknown key",
    ),
    (
        "a database without storage",
        _set(APPS, "services.postgres.storage", ...),
        f"{APPS}.services.postgres.storage: is required",
    ),
    (
        "a GPU service without a GPU",
        _set(APPS, "services.ai-memory.gpu", ...),
        f"{APPS}.services.ai-memory.gpu: is required",
    ),
    (
        "a GPU for a service that needs none",
        _set(APPS, "services.sophia-backend.gpu", {"type": "a10", "count": 1}),
        f"{APPS}.services.sophia-backend.gpu: unknown key",
    ),
    (
        "a GPU model no node has",
        _set(APPS, "services.ai-memory.gpu.type", "h100"),
        f"{APPS}.services.ai-memory.gpu.type: no node of the cluster has a h100 GPU"
        " (present: a10, a100, a6000, gh200, rtx6000)",
    ),
    (
        "the GH200 machine replaced by an x86 one",
        _only_gh200_node_loses_its_gpu,
        f"{APPS}.services.ai-memory.gpu.type: no node of the cluster has a gh200 GPU"
        " (present: a10, a100, a6000, rtx6000)",
    ),
    (
        "more GPUs than the cluster has",
        _set(APPS, "services.ai-memory.replicas.max", 2),
        f"{APPS}.services.ai-memory.gpu.count: 2 replica(s) x 1 GPU(s) need 2 gh200 GPUs; the cluster has 1",
    ),
    (
        "limit below request",
        _set(APPS, "services.sophia-backend.resources.limits.memory", "512Mi"),
        f"{APPS}.services.sophia-backend.resources.limits.memory: 512Mi is below the request 1Gi",
    ),
    (
        "CPU limit below request",
        _set(APPS, "services.sophia-backend.resources.limits.cpu", "250m"),
        f"{APPS}.services.sophia-backend.resources.limits.cpu: 250m is below the request 500m",
    ),
    (
        "missing limits",
        _set(APPS, "services.sophia-frontend.resources.limits", ...),
        f"{APPS}.services.sophia-frontend.resources.limits: is required",
    ),
    (
        "malformed memory",
        _set(APPS, "services.redis.resources.requests.memory", "1GB"),
        f"{APPS}.services.redis.resources.requests.memory: must be a memory quantity such as 512Mi or 4Gi, got '1GB'",
    ),
    (
        "max below min",
        _set(APPS, "services.sophia-backend.replicas.max", 1),
        f"{APPS}.services.sophia-backend.replicas.max: must be at least min (2), got 1",
    ),
    (
        "an image without a tag",
        _set("sophia-infra:images", "tags.sophia-mcp-base", ...),
        "sophia-infra:images.tags.sophia-mcp-base: is required (an image of ai-memory)",
    ),
    (
        "an exporter image without a tag",
        _set("sophia-infra:images", "tags.postgres-exporter", ...),
        "sophia-infra:images.tags.postgres-exporter: is required (an image of postgres)",
    ),
    (
        "Qdrant over plain HTTP",
        _set(APPS, "qdrantUrl", "http://cloud.qdrant.io"),
        f"{APPS}.qdrantUrl: must be an https URL on the default port (the egress policy allows 443),"
        " got 'http://cloud.qdrant.io'",
    ),
    (
        "gateway on another port",
        _set(GATEWAY, "primary.endpoint", "https://api.portkey.ai:8443/v1"),
        f"{GATEWAY}.primary.endpoint: must be an https URL on the default port (the egress policy allows 443),"
        " got 'https://api.portkey.ai:8443/v1'",
    ),
    (
        "fallback is the primary",
        _set(GATEWAY, "fallback.provider", "portkey"),
        f"{GATEWAY}.fallback: must be another provider than the primary (portkey)",
    ),
    (
        "unknown gateway provider",
        _set(GATEWAY, "primary.provider", "litellm"),
        f"{GATEWAY}.primary.provider: must be one of portkey, openrouter, got 'litellm'",
    ),
    (
        "duplicate model",
        _set(GATEWAY, "models", ["gpt-4o", "gpt-4o"]),
        f"{GATEWAY}.models[1]: duplicate model 'gpt-4o'",
    ),
    (
        "duplicate routing task",
        _set(GATEWAY, "routingRules", [{"task": "analysis", "model": "a"}, {"task": "analysis", "model": "b"}]),
        f"{GATEWAY}.routingRules[1].task: duplicate task 'analysis'",
    ),
    ("no model", _set(GATEWAY, "models", []), f"{GATEWAY}.models: must have at least 1 entry, got 0"),
]


@pytest.mark.parametrize(("mutate", "line"), [(m, line) for _, m, line in CASES], ids=[c[0] for c in CASES])
def test_each_apps_problem_is_one_line_naming_the_key(tmp_path: Path, mutate: Callable[[Doc], None], line: str) -> None:
    doc = production_document()
    mutate(doc)
    assert line in problems_of(tmp_path, doc)


def test_the_production_apps_settings_cover_the_catalogue(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, production_document())
    assert set(settings.apps.services) == {s.name for s in CATALOGUE}
    memory = settings.apps.services["ai-memory"]
    assert memory.gpu is not None
    assert memory.gpu.model.label == "gh200"
    assert settings.llm_gateway.primary.endpoint == "https://api.portkey.ai/v1"
    assert settings.llm_gateway.fallback.endpoint == "https://openrouter.ai/api/v1"
    assert [r.task for r in settings.llm_gateway.routing_rules] == ["code_generation", "analysis"]


def test_the_catalogue_is_consistent() -> None:
    assert catalogue_problems() == []
    assert [m.name for m in MCP_SERVERS] == [s.name for s in CATALOGUE if s.tier == "mcp"]


def test_a_gpu_model_of_another_architecture_than_the_image_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import components.settings.apps as apps_settings

    amd64_only = tuple(
        dataclasses.replace(s, arches=frozenset({Arch.AMD64})) if s.name == "ai-memory" else s for s in CATALOGUE
    )
    monkeypatch.setattr(apps_settings, "CATALOGUE", amd64_only)
    assert (
        f"{APPS}.services.ai-memory.gpu.type: NVIDIA GH200 machines are arm64, but the images of ai-memory are"
        " built for amd64" in problems_of(tmp_path, production_document())
    )
