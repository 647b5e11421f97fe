"""plan.md and the pull-request comment: the stack at component level, and what a preview changes in it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from render.model import Rendered
from render.plan import STACK_TYPE, is_component, mermaid_id, nodes_of, plan, unit_of
from render.preview_comment import COMMENT_LIMIT, main

BOX = re.compile(r'^\s+(\w+)\["(.*)"\]$')
EDGE = re.compile(r"^\s+(\w+) --> (\w+)$")
FRAME = re.compile(r'^\s+subgraph (\w+)\["(.*)"\]$')


def _diagram(text: str) -> str:
    (block,) = re.findall(r"```mermaid\n(.*?)```", text, re.S)
    return str(block)


def _boxes(diagram: str) -> dict[str, str]:
    return {m[1]: m[2] for line in diagram.splitlines() if (m := BOX.match(line))}


def _edges(diagram: str) -> set[tuple[str, str]]:
    return {(m[1], m[2]) for line in diagram.splitlines() if (m := EDGE.match(line))}


def _frames(diagram: str) -> dict[str, str]:
    return {m[1]: m[2] for line in diagram.splitlines() if (m := FRAME.match(line))}


def _reach(edges: set[tuple[str, str]], source: str) -> set[str]:
    seen, todo = {source}, [source]
    while todo:
        current = todo.pop()
        for a, b in edges:
            if a == current and b not in seen:
                seen.add(b)
                todo.append(b)
    return seen - {source}


def test_plan_md_draws_every_component_once_with_its_resources_counted(production: Rendered) -> None:
    assert production.out_dir is not None
    diagram = _diagram((production.out_dir / "plan.md").read_text())
    assert diagram.startswith("flowchart LR\n")
    boxes = _boxes(diagram)
    labels = list(boxes.values())
    by_urn = {r.urn: r for r in production.registrations}
    stack = next(r.urn for r in production.registrations if r.type == STACK_TYPE)
    for r in production.registrations:
        if not is_component(r.type):
            continue
        if r.parent == stack:
            # A top-level component is a frame, and the objects it holds itself one box in it.
            assert f"{r.type.rsplit(':', 1)[-1]} {r.name}" in _frames(diagram).values()
        elif by_urn[r.parent or ""].parent == stack:
            matching = [label for label in labels if label.startswith(f"{r.type.rsplit(':', 1)[-1]} {r.name} (")]
            assert len(matching) == 1, (r.type, r.name, matching)
    counted = sum(int(m[1]) for label in labels if (m := re.search(r"\((\d+) resources?\)$", label)))
    assert counted == len(production.registrations) - 1, "every resource but the stack is in exactly one box"


def test_plan_md_stays_readable_for_production_and_has_no_provider_fan_out(production: Rendered) -> None:
    assert production.out_dir is not None
    diagram = _diagram((production.out_dir / "plan.md").read_text())
    boxes, edges, frames = _boxes(diagram), _edges(diagram), _frames(diagram)
    assert len(boxes) <= 40 and len(edges) <= 60, (len(boxes), len(edges))
    providers = [i for i, label in boxes.items() if " provider " in label]
    assert providers, "the Kubernetes provider is a box"
    for provider in providers:
        out_of = {b for a, b in edges if a == provider}
        assert out_of <= set(frames), "a provider's arrows go to the frames that use it, not to each object"
    assert {a for a, _ in edges} | {b for _, b in edges} <= set(boxes) | set(frames)


def test_every_arrow_is_a_real_wait_and_every_wait_between_components_is_kept(production: Rendered) -> None:
    """An arrow A --> B is some resource of B waiting on one of A; reduction keeps every wait reachable."""
    assert production.out_dir is not None
    nodes = nodes_of(production.resources)
    by_urn = {n.urn: n for n in nodes}
    drawn = _edges(_diagram((production.out_dir / "plan.md").read_text()))
    frames = set(_frames(_diagram((production.out_dir / "plan.md").read_text())))
    waits: set[tuple[str, str]] = set()
    for n in nodes:
        to = unit_of(n.urn, by_urn)
        for d in n.dependencies:
            source = unit_of(d, by_urn)
            if to is None or source is None or source == to or d == n.parent:
                continue
            waits.add((mermaid_id(source), mermaid_id(to)))
    for a, b in drawn:
        assert (a, b) in waits or b in frames, f"{a} --> {b} is no wait in resources.json"
    p = plan(nodes)
    for a, b in waits:
        if a.startswith("r_") or (a, b) in drawn:
            continue  # the provider's waits are drawn to frames
        assert b in _reach(set(p.edges), a), f"{b} waits on {a}, and the diagram lost it"


# A preview as the real engine reports it: the URNs spell the whole chain of parent types.
def _real_urn(resource: dict[str, Any], by_urn: dict[str, dict[str, Any]]) -> str:
    chain = []
    parent = resource["parent"]
    while parent and by_urn[parent]["type"] != STACK_TYPE:
        chain.append(by_urn[parent]["type"])
        parent = by_urn[parent]["parent"]
    qualified = "$".join([*reversed(chain), resource["type"]])
    return f"urn:pulumi:production::sophia-infra::{qualified}::{resource['name']}"


def _events(resources: list[dict[str, Any]], ops: dict[str, str]) -> Iterator[dict[str, Any]]:
    by_urn = {r["urn"]: r for r in resources}
    real = {r["urn"]: _real_urn(r, by_urn) for r in resources}
    for i, r in enumerate(resources):
        state = {"type": r["type"], "urn": real[r["urn"]], "parent": real.get(r["parent"] or "", "")}
        op = ops.get(r["urn"], "same")
        yield {
            "sequence": i,
            "timestamp": 0,
            "resourcePreEvent": {
                "metadata": {
                    "op": op,
                    "urn": state["urn"],
                    "type": r["type"],
                    "provider": "",
                    "old": state,
                    "new": None if op == "delete" else state,
                }
            },
        }


def _gone_node(resources: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """A machine removed from the stack: its component and steps, deleted (they are in no render)."""
    cluster = next(r for r in resources if r["type"] == "sophia:cluster:K3sCluster")
    stack_urn = "urn:pulumi:production::sophia-infra::pulumi:pulumi:Stack::sophia-infra-production"
    cluster_urn = f"urn:pulumi:production::sophia-infra::sophia:cluster:K3sCluster::{cluster['name']}"
    assert cluster["parent"].endswith("::sophia-infra-production") and stack_urn
    node = "urn:pulumi:production::sophia-infra::sophia:cluster:K3sCluster$sophia:cluster:K3sNode::sophia-old"
    steps = [(node, "sophia:cluster:K3sNode", cluster_urn)]
    for step in ("preflight", "install"):
        urn = f"{node.rsplit('::', 1)[0]}$command:remote:Command::sophia-old-{step}"
        steps.append((urn, "command:remote:Command", node))
    for i, (urn, type_, parent) in enumerate(steps):
        state = {"type": type_, "urn": urn, "parent": parent}
        yield {
            "sequence": 1000 + i,
            "resourcePreEvent": {"metadata": {"op": "delete", "urn": urn, "type": type_, "provider": "", "old": state}},
        }


@pytest.fixture(scope="module")
def recorded(production: Rendered, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recorded preview: redis's Secret updated, its StatefulSet replaced, one machine removed."""
    resources = production.resources
    redis = [r for r in resources if r["parent"] and r["parent"].endswith("sophia:apps:Workload::redis")]
    secret = next(r for r in redis if r["type"] == "kubernetes:core/v1:Secret")
    statefulset = next(r for r in redis if r["type"] == "kubernetes:apps/v1:StatefulSet")
    ops = {secret["urn"]: "update", statefulset["urn"]: "replace"}
    events = [*_events(resources, ops), *_gone_node(resources)]
    for op in ("create-replacement", "delete-replaced"):
        pre = json.loads(json.dumps(next(e for e in events if e["resourcePreEvent"]["metadata"]["op"] == "replace")))
        pre["resourcePreEvent"]["metadata"]["op"] = op
        events.append(pre)
    events.append(
        {
            "sequence": 5000,
            "summaryEvent": {"resourceChanges": {"same": len(resources) - 2, "update": 1, "replace": 1, "delete": 3}},
        }
    )
    path = tmp_path_factory.mktemp("preview") / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def test_the_comment_marks_exactly_the_components_the_preview_changes(
    production: Rendered, recorded: Path, tmp_path: Path
) -> None:
    assert production.out_dir is not None
    out = tmp_path / "comment.md"
    assert main(["--events", str(recorded), "--render", str(production.out_dir), "--out", str(out)]) == 0
    text = out.read_text()
    diagram = _diagram(text)
    assert diagram.splitlines()[-1] == "  class c_Workload_redis changed", "only redis changed among the drawn"
    assert _boxes(diagram) == _boxes(_diagram((production.out_dir / "plan.md").read_text()))
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows == [
        "| Workload redis | 1 to replace, 1 to update |",
        "| K3sNode sophia-old (not in this render: removed) | 3 to delete |",
    ]
    assert "succeeded" in text.splitlines()[0]
    assert "Resources: 3 delete, 1 replace, 140 same, 1 update." in text


def test_a_preview_with_nothing_changed_marks_nothing(production: Rendered, tmp_path: Path) -> None:
    assert production.out_dir is not None
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in _events(production.resources, {})))
    out = tmp_path / "comment.md"
    assert main(["--events", str(events), "--render", str(production.out_dir), "--out", str(out)]) == 0
    assert "changed" not in _diagram(out.read_text())
    assert "No component changes." in out.read_text()


def test_a_mandatory_policy_violation_fails_and_is_listed(production: Rendered, tmp_path: Path) -> None:
    assert production.out_dir is not None
    violation = {
        "sequence": 1,
        "policyEvent": {
            "message": "Every container declares CPU and memory requests and limits.\nredis has none.",
            "policyName": "containers-have-requests-and-limits",
            "policyPackName": "sophia-infra",
            "policyPackVersion": "0.0.1",
            "enforcementLevel": "mandatory",
            "resourceUrn": "urn:pulumi:production::sophia-infra::kubernetes:apps/v1:StatefulSet::redis",
        },
    }
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(violation) + "\n")
    out = tmp_path / "comment.md"
    assert main(["--events", str(events), "--render", str(production.out_dir), "--out", str(out)]) == 1
    text = out.read_text()
    assert "FAILED" in text.splitlines()[0]
    assert "- mandatory: containers-have-requests-and-limits (redis): Every container declares" in text


def test_a_huge_preview_output_still_fits_in_one_comment(production: Rendered) -> None:
    from render.preview_comment import Preview, comment

    preview = Preview(output=[f"    ~ kubernetes:core/v1:ConfigMap line {i}" for i in range(20_000)])
    text = comment("production", production.resources, preview, True)
    assert len(text) <= COMMENT_LIMIT
    assert "line 19999" in text and "are left out" in text
