"""Scale: machines join in parallel, so adding them never lengthens `pulumi up`'s critical path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.settings import catalogue
from render.bench import extra_mcp_servers, scaled_document, stack_of
from render.critical_path import HELM_RELEASE_SECONDS, NODE_STEP_SECONDS, critical_path, seconds
from render.engine import run_program
from render.model import Rendered, build
from render.stack import PROJECT_DIR
from tests.support import problems_of


def _render_program(document: dict[str, Any], folder: Path) -> Rendered:
    stack = stack_of(document, folder)
    return build(stack.stack, run_program(stack))


def test_adding_machines_does_not_lengthen_the_critical_path(production: Rendered, fifty_machines: Rendered) -> None:
    scaled = fifty_machines
    nodes = {r["name"] for r in scaled.resources if r["type"] == "sophia:cluster:K3sNode"}
    assert len(nodes) == 50
    small, large = critical_path(production.resources), critical_path(scaled.resources)
    assert large.seconds == small.seconds
    assert large.shape() == small.shape()
    # The path crosses the machines once: one server install and one join, never a chain of joins.
    installs = [name for type_, name, _ in large.steps if name.endswith("-install")]
    assert len(installs) <= 2


def workflow_parallel() -> int:
    workflow = yaml.safe_load((PROJECT_DIR / ".github" / "workflows" / "pulumi.yml").read_text())
    return int(workflow["env"]["PULUMI_PARALLEL"])


def test_every_join_of_fifty_machines_gets_a_slot_of_its_own(production: Rendered, fifty_machines: Rendered) -> None:
    """The engine runs at most PULUMI_PARALLEL operations at once (by default four per CPU): CI's value
    and the README's must exceed what a 50-machine stack starts together, or joins queue in turns."""
    small, large = critical_path(production.resources), critical_path(fifty_machines.resources)
    # Each added machine adds width (its own join), never length: the 49 joining machines' steps
    # run at the same moment.
    assert large.width >= 49 > small.width
    assert workflow_parallel() >= large.width
    readme = (PROJECT_DIR / "README.md").read_text()
    assert re.findall(r"export PULUMI_PARALLEL=(\d+)", readme) == [str(workflow_parallel())]


def test_the_width_is_the_most_operations_running_at_once() -> None:
    chain = [_resource(f"n{i}-install", COMMAND, *([f"n{i - 1}-install"] if i else [])) for i in range(3)]
    fan = [_resource("first-install", COMMAND)] + [
        _resource(f"a{i}-install", COMMAND, "first-install") for i in range(4)
    ]
    # An operation that ends frees its slot for the one that starts at that moment.
    assert critical_path(chain).width == 1
    assert critical_path(fan).width == 4
    assert critical_path([_resource("component", "sophia:cluster:K3sNode")]).width == 0


def test_adding_services_renders_each_and_keeps_the_critical_path(production: Rendered, tmp_path: Path) -> None:
    with extra_mcp_servers(4):
        scaled = _render_program(scaled_document(5, services=4), tmp_path)
    deployments = {r["inputs"]["metadata"]["name"] for r in scaled.resources if r["inputs"].get("kind") == "Deployment"}
    assert {f"mcp-bench-{i:03d}" for i in range(4)} <= deployments
    assert critical_path(scaled.resources).seconds == critical_path(production.resources).seconds


def test_the_generated_service_catalogue_is_restored_afterwards() -> None:
    before = catalogue.CATALOGUE
    with extra_mcp_servers(3):
        assert len(catalogue.CATALOGUE) == len(before) + 3
    assert catalogue.CATALOGUE is before


def test_generated_machines_are_a_valid_configuration(tmp_path: Path) -> None:
    document = scaled_document(250)
    nodes = document["config"]["sophia-infra:cluster"]["nodes"]
    assert len(nodes) == 250
    assert (
        len({n["name"] for n in nodes}) == len({n["host"] for n in nodes}) == len({n["hostKey"] for n in nodes}) == 250
    )
    assert problems_of(tmp_path, document) == []


def _resource(name: str, type_: str, *after: str) -> dict[str, Any]:
    return {"urn": name, "type": type_, "name": name, "dependencies": list(after)}


COMMAND = "command:remote:Command"


def test_the_critical_path_is_the_heaviest_chain_of_waits() -> None:
    resources = [
        _resource("a-install", COMMAND),
        _resource("b-install", COMMAND),
        _resource("c-ready", COMMAND, "a-install", "b-install"),
        _resource("chart", "kubernetes:helm.sh/v3:Release", "c-ready"),
        _resource("side", "kubernetes:core/v1:Namespace", "a-install"),
    ]
    path = critical_path(resources)
    expected = NODE_STEP_SECONDS["install"] + NODE_STEP_SECONDS["ready"] + HELM_RELEASE_SECONDS
    assert path.seconds == expected
    assert [name for _, name, _ in path.steps] == ["b-install", "c-ready", "chart"]


def test_machines_joining_one_after_another_would_lengthen_the_path() -> None:
    parallel = [_resource(f"n{i}-install", COMMAND) for i in range(5)]
    serial = [_resource(f"n{i}-install", COMMAND, *([f"n{i - 1}-install"] if i else [])) for i in range(5)]
    assert critical_path(parallel).seconds == NODE_STEP_SECONDS["install"]
    assert critical_path(serial).seconds == 5 * NODE_STEP_SECONDS["install"]


@pytest.mark.parametrize(
    ("type_", "name", "expected"),
    [
        (COMMAND, "sophia-ai-core-install", NODE_STEP_SECONDS["install"]),
        (COMMAND, "sophia-ai-core-preflight", NODE_STEP_SECONDS["preflight"]),
        ("kubernetes:helm.sh/v3:Release", "argocd", HELM_RELEASE_SECONDS),
        ("kubernetes:apps/v1:Deployment", "sophia-backend", 2.0),
        ("pulumi:providers:kubernetes", "sophia", 0.0),
        ("sophia:cluster:K3sNode", "sophia-ai-core", 0.0),
    ],
)
def test_each_resource_type_has_its_documented_duration(type_: str, name: str, expected: float) -> None:
    assert seconds({"type": type_, "name": name}) == expected
