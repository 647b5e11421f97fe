"""Production with 50 machines (kwok nodes are cheap) through the real engine: everything schedules,
and how long `up` takes. `make bench` runs it beside the 5 machines of production itself
(SOPHIA_E2E_SCALE=5,50; `make e2e` runs only the 50) and prints both times.

The variant is render/bench.py's: production's machines and then generated GPU agents, every GPU
model in turn, the GH200s arm64 and tainted; each with one GPU, the one count every GPU model is
rented with on Lambda (tests/e2e/instances.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi import automation as auto

from components import namespaces
from components.settings.catalogue import NAMESPACES
from components.settings.stack import load_settings
from render.bench import NAMESPACE, scaled_document
from render.stack import load_stack
from tests.e2e.apiserver import ApiServer, wait_until
from tests.e2e.charts import ChartRepository
from tests.e2e.engine import open_engine
from tests.e2e.kwok import node_names, nodes_of, register_nodes, remove_nodes
from tests.e2e.placement import settled
from tests.e2e.program import kubernetes_program

pytestmark = pytest.mark.e2e

SCALES = tuple(int(n) for n in os.environ.get("SOPHIA_E2E_SCALE", "50").split(","))
# Where `make bench` wants the times (JSON: machines -> seconds); unset under `make e2e`.
BENCH_OUT = os.environ.get("SOPHIA_E2E_BENCH_OUT")
SETTLE_TIMEOUT = 300.0
CHART_MIRROR = "sophia-infra:platform.chartMirror"
STACK_NAMESPACES = (*NAMESPACES.values(), *namespaces.PLATFORM)


def variant(machines: int) -> dict[str, Any]:
    document = scaled_document(machines)
    for node in document["config"][f"{NAMESPACE}:cluster"]["nodes"]:
        node["gpu"]["count"] = 1
    return document


@pytest.fixture(scope="module")
def times() -> Iterator[dict[int, float]]:
    measured: dict[int, float] = {}
    yield measured
    if BENCH_OUT:
        Path(BENCH_OUT).write_text(json.dumps(measured))


@pytest.mark.parametrize("machines", SCALES)
def test_production_with_more_machines_schedules_everything(
    *,
    machines: int,
    bins: Path,
    apiserver: ApiServer,
    charts: ChartRepository,
    tmp_path_factory: pytest.TempPathFactory,
    report: list[str],
    times: dict[int, float],
) -> None:
    root = tmp_path_factory.mktemp(f"scale-{machines}")
    path = root / "Pulumi.production.yaml"
    path.write_text(yaml.safe_dump(variant(machines), sort_keys=False))
    config = load_stack("production", stack_file=path)
    settings = load_settings(config.stack, config.config, config.secret_keys)
    assert len(settings.cluster.nodes) == machines
    nodes = nodes_of(settings.cluster, settings.platform.gpu_sharing)
    register_nodes(apiserver, nodes, timeout=300)
    engine = open_engine(bins, root, kubernetes_program(apiserver.kubeconfig), report, stack_path=path)
    engine.stack.set_config(CHART_MIRROR, auto.ConfigValue(charts.url), path=True)
    try:
        started = time.monotonic()
        up = engine.run("up")
        times[machines] = time.monotonic() - started
        assert set(up.changes) == {"create"}, up.describe()

        def pods() -> list[dict[str, Any]]:
            return [p for ns in STACK_NAMESPACES for p in apiserver.items(f"/api/v1/namespaces/{ns}/pods")]

        wait_until("every pod Ready", lambda: all(settled(p) for p in pods()), SETTLE_TIMEOUT, interval=2)
        placed = {p["spec"]["nodeName"] for p in pods()}
        assert placed <= set(node_names(nodes))
        report.append(
            f"production with {machines} machines: `up` {times[machines]:.0f} s, {len(pods())} pods Ready "
            f"on {len(placed)} of the {machines} kwok nodes"
        )
    finally:
        engine.run("destroy")
        remove_nodes(apiserver, node_names(nodes), timeout=300)
