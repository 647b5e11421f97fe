"""The `apps` and `llmGateway` sections: every mistake is one line naming its key, before anything is built."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from components.settings.apps import Restore
from components.settings.catalogue import CATALOGUE, MCP_SERVERS, catalogue_problems
from components.settings.cluster import Arch
from components.settings.secrets import SecretKey
from tests.support import problems_of, production_document, settings_from

Doc = dict[str, Any]
APPS = "sophia-infra:apps"
GATEWAY = "sophia-infra:llmGateway"
PLATFORM = "sophia-infra:platform"
SHARING = f"{PLATFORM}.gpuSharing.replicas"


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
        f"{APPS}.services.ai-memory.gpu.count: ai-memory needs (2 replica(s) + 1 surge) x 1 GPU(s) = 3 gh200 GPU(s)"
        f" during a rollout; the cluster advertises 2 (1 physical x 2 from {SHARING})",
    ),
    (
        "two time-slices asked for as if they were two GPUs",
        _set(APPS, "services.ai-memory.gpu.count", 2),
        f"{APPS}.services.ai-memory.gpu.count: must be 1 while {SHARING} is 2: a time-sliced GPU is shared,"
        " 2 of them are not 2 GPUs",
    ),
    (
        "GPU sharing of none",
        _set(PLATFORM, "gpuSharing.replicas", 0),
        f"{SHARING}: must be between 1 and 8, got 0",
    ),
    (
        "GPU sharing as text",
        _set(PLATFORM, "gpuSharing.replicas", "2"),
        f"{SHARING}: must be a whole number, got a string",
    ),
    (
        "GPU sharing without replicas",
        _set(PLATFORM, "gpuSharing", {"replica": 2}),
        f"{PLATFORM}.gpuSharing.replica: unknown key",
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
        _set("sophia-infra:images", "tags.redis-exporter", ...),
        "sophia-infra:images.tags.redis-exporter: is required (an image of redis)",
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
    (
        "a memory limit that /dev/shm would fill",
        _set(APPS, "services.postgres.resources.limits.memory", "1Gi"),
        f"{APPS}.services.postgres.resources.limits.memory: must be above the 1Gi of /dev/shm that postgres keeps"
        " in memory",
    ),
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


# GPU capacity during rollouts ----------------------------------------------------------------------

NO_ROOM_FOR_THE_SURGE = (
    f"{APPS}.services.ai-memory.gpu.count: ai-memory needs (1 replica(s) + 1 surge) x 1 GPU(s) = 2 gh200 GPU(s)"
    f" during a rollout; the cluster advertises 1 (1 physical x 1 from {SHARING})"
)


def test_production_has_room_for_the_surge_pod_of_every_gpu_service(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, production_document())
    assert settings.platform.gpu_sharing.replicas == 2
    memory = settings.apps.services["ai-memory"]
    assert memory.gpu is not None and memory.replicas.max == 1
    gh200 = sum(n.gpu.count for n in settings.cluster.nodes if n.gpu is not None and n.gpu.model.label == "gh200")
    assert gh200 == 1, "production has one GH200: without sharing its rollouts could not surge"


@pytest.mark.parametrize(
    "sharing",
    [_set(PLATFORM, "gpuSharing.replicas", 1), _set(PLATFORM, "gpuSharing", ...)],
    ids=["sharing 1", "no sharing setting"],
)
def test_a_single_gh200_without_sharing_cannot_roll_ai_memory(tmp_path: Path, sharing: Callable[[Doc], None]) -> None:
    doc = production_document()
    sharing(doc)
    assert problems_of(tmp_path, doc) == [NO_ROOM_FOR_THE_SURGE]


def test_a_second_gpu_service_on_the_gh200_that_overflows_it_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import components.settings.apps as apps_settings
    from components.settings.catalogue import McpServer

    vision = McpServer("ai-vision", port=9001, gpu=True).service()
    monkeypatch.setattr(apps_settings, "CATALOGUE", (*CATALOGUE, vision))
    doc = production_document()
    services = doc["config"][APPS]["services"]
    services["ai-vision"] = {**services["ai-memory"], "gpu": {"type": "gh200", "count": 1}}
    assert problems_of(tmp_path, doc) == [
        f"{APPS}.services.ai-vision.gpu.count: ai-vision needs (1 replica(s) + 1 surge) x 1 GPU(s) = 2 gh200 GPU(s)"
        f" during a rollout, 4 with ai-memory; the cluster advertises 2 (1 physical x 2 from {SHARING})"
    ]
    # The same service on a GPU model of its own fits: the A100, time-sliced in two, holds its surge.
    services["ai-vision"]["gpu"] = {"type": "a100", "count": 1}
    assert problems_of(tmp_path, doc) == []


def test_a_stateful_gpu_service_needs_no_room_for_a_surge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A StatefulSet replaces its pod in place: one GH200 without sharing is enough for one replica."""
    import dataclasses

    import components.settings.apps as apps_settings
    from components.settings.catalogue import Storage

    stateful = tuple(
        dataclasses.replace(s, storage=Storage("/var/lib/ai-memory")) if s.name == "ai-memory" else s for s in CATALOGUE
    )
    monkeypatch.setattr(apps_settings, "CATALOGUE", stateful)
    doc = production_document()
    doc["config"][PLATFORM]["gpuSharing"]["replicas"] = 1
    memory = doc["config"][APPS]["services"]["ai-memory"]
    del memory["replicas"]
    memory["storage"] = "20Gi"
    assert problems_of(tmp_path, doc) == []


def test_an_unreadable_postgres_memory_limit_is_one_problem_not_a_crash(tmp_path: Path) -> None:
    doc = production_document()
    _set(APPS, "services.postgres.resources.limits.memory", "lots")(doc)
    problems = problems_of(tmp_path, doc)
    assert [p.split(":")[1] for p in problems] == ["apps.services.postgres.resources.limits.memory"]


@pytest.mark.parametrize("cpu", ["1m", 0.001])
def test_the_smallest_cpu_quantity_kubernetes_takes_is_accepted(tmp_path: Path, cpu: str | float) -> None:
    """One millicore is the smallest CPU quantity the API server keeps; a request of it is valid."""
    doc = production_document()
    _set(APPS, "services.redis.resources.requests.cpu", cpu)(doc)
    assert problems_of(tmp_path, doc) == []


def _catalogue_with(monkeypatch: pytest.MonkeyPatch, *services: Any) -> None:
    """The catalogue with `services` in place of the entries of the same name (or added)."""
    from components.settings import catalogue

    names = {s.name for s in services}
    changed = (*(s for s in CATALOGUE if s.name not in names), *services)
    monkeypatch.setattr(catalogue, "CATALOGUE", changed)
    monkeypatch.setattr(catalogue, "BY_NAME", {s.name: s for s in changed})


def _edit(name: str, **fields: Any) -> Any:
    import dataclasses

    from components.settings.catalogue import BY_NAME

    return dataclasses.replace(BY_NAME[name], **fields)


def _edit_exporter(name: str, **fields: Any) -> Any:
    import dataclasses

    from components.settings.catalogue import BY_NAME

    exporter = BY_NAME[name].exporter
    assert exporter is not None
    return dataclasses.replace(BY_NAME[name], exporter=dataclasses.replace(exporter, **fields))


# Each check of catalogue_problems, on a catalogue broken in that one place (the catalogue is a
# platform engineer's everyday edit: a service added, a secret given, an exporter attached).
@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (lambda: [_edit("redis"), _edit("redis", port=1)], "duplicate service 'redis'"),
        (lambda: [_edit("sophia-backend", talks_to=("sophia-cache",))], "talks to unknown service 'sophia-cache'"),
        (lambda: [_edit("redis", public_path="/redis")], "redis is stateful and public"),
        (lambda: [_edit("sophia-backend", env={"PORT": "9000"})], "sets PORT itself"),
        (lambda: [_edit("ai-memory", secrets=(SecretKey.OPENAI_API_KEY,))], "ai-memory calls Qdrant without its key"),
        (lambda: [_edit("redis", secrets=())], "redis.conf holds redisPassword, which redis does not read"),
        (
            lambda: [_edit("sophia-backend", args=("--redis-password=$(REDIS_PASSWORD)",))],
            "passes the secret REDIS_PASSWORD in its arguments",
        ),
        (
            lambda: [_edit_exporter("redis", args=("--redis.password=$(REDIS_PASSWORD)",))],
            "passes the secret REDIS_PASSWORD in its arguments",
        ),
        (
            lambda: [_edit_exporter("redis", secrets={"REDIS_PASSWORD": SecretKey.POSTGRES_PASSWORD})],
            "redis's exporter reads postgresPassword, which redis does not",
        ),
        (lambda: [_edit_exporter("redis", port=6379)], "redis's exporter listens on the service's own port"),
        (lambda: [_edit("redis", metrics_path="/metrics")], "redis has metrics of its own and an exporter"),
        (
            lambda: [_edit("sophia-frontend", public_path="/api")],
            "public path '/api' is served twice",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_each_check_of_the_catalogue_catches_its_mistake(
    monkeypatch: pytest.MonkeyPatch, broken: Any, problem: str
) -> None:
    from components.settings.catalogue import catalogue_problems as problems_now

    _catalogue_with(monkeypatch, *broken())
    found = problems_now()
    assert any(problem in p for p in found), found


def test_a_restore_names_a_new_cluster_the_one_it_restores_from_and_the_time(tmp_path: Path) -> None:
    """docs/operations.md, "Restore PostgreSQL": `cluster: postgres-2`, `restoreFrom: {cluster: postgres}`."""
    doc = production_document()
    postgres = doc["config"][APPS]["services"]["postgres"]
    postgres["cluster"] = "postgres-2"
    postgres["restoreFrom"] = {"cluster": "postgres", "targetTime": "2026-11-28T12:00:00Z"}
    database = settings_from(tmp_path, doc).apps.services["postgres"].database
    assert database is not None
    assert (database.cluster, database.restore) == ("postgres-2", Restore("postgres", "2026-11-28T12:00:00Z"))


def test_a_restore_into_the_cluster_it_restores_from_is_refused(tmp_path: Path) -> None:
    doc = production_document()
    doc["config"][APPS]["services"]["postgres"]["restoreFrom"] = {"cluster": "postgres"}
    (problem,) = problems_of(tmp_path, doc)
    assert problem.startswith(f"{APPS}.services.postgres.restoreFrom.cluster: must differ from the cluster's own name")
