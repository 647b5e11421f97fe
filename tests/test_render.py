"""`make render`: the contract of what it writes, its exit codes, determinism and redaction."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

import render.__main__ as render_main
from render import checks
from render.__main__ import main
from render.context import CheckResult, Context
from render.model import Rendered
from render.stack import load_stack
from tests.support import production_document, write_stack


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_check_passes_on_the_production_stack(production_checks: list[CheckResult]) -> None:
    failed = {r.name: r.violations[:5] for r in production_checks if r.violations}
    assert failed == {}


def test_resources_json_lists_every_resource_with_its_inputs_and_dependencies(production: Rendered) -> None:
    assert production.out_dir is not None
    document = json.loads((production.out_dir / "resources.json").read_text())
    assert document["stack"] == "production"
    urns = [r["urn"] for r in document["resources"]]
    assert len(urns) == len(set(urns)) == len(production.registrations)
    for resource in document["resources"]:
        assert set(resource) == {"urn", "type", "name", "parent", "provider", "dependencies", "inputs", "options"}
        assert resource["urn"].endswith(f"{resource['type']}::{resource['name']}")
    position = {urn: i for i, urn in enumerate(urns)}
    for resource in document["resources"]:
        for before in [*resource["dependencies"], *([resource["parent"]] if resource["parent"] else [])]:
            assert position[before] < position[resource["urn"]], f"{resource['urn']} listed before {before}"


def test_every_kubernetes_object_is_one_file_named_by_namespace_kind_and_name(production: Rendered) -> None:
    assert production.out_dir is not None
    written = sorted((production.out_dir / "manifests").rglob("*.yaml")) if production.manifests else []
    assert len(written) == len(production.manifests)
    for path in written:
        obj = yaml.safe_load(path.read_text())
        namespace = obj["metadata"].get("namespace") or "_cluster"
        assert path.parent.name == namespace
        assert path.name == f"{obj['kind']}.{obj['metadata']['name']}.yaml"


def test_every_helm_release_is_written_with_chart_version_repository_and_values(production: Rendered) -> None:
    assert production.out_dir is not None
    for name, release in production.releases.items():
        written = yaml.safe_load((production.out_dir / "releases" / f"{name}.yaml").read_text())
        assert written == {"name": name, **release}
        assert set(release) == {"chart", "version", "repository", "namespace", "values"}


def test_every_node_step_is_a_numbered_script(production: Rendered) -> None:
    assert production.out_dir is not None
    for node, steps in production.node_steps.items():
        for step in steps:
            script = production.out_dir / "nodes" / node / f"{step.index:02d}-{step.step}.sh"
            assert script.read_text().rstrip("\n") == step.create.rstrip("\n")


def test_the_graph_has_a_node_per_resource_and_an_edge_per_dependency(production: Rendered) -> None:
    assert production.out_dir is not None
    text = (production.out_dir / "graph.mmd").read_text()
    assert text.startswith("flowchart LR\n")
    edges = sum(1 for line in text.splitlines() if "-->" in line)
    expected = sum(len([d for d in r.dependencies if d != r.parent]) for r in production.registrations)
    assert edges == expected


def test_rendering_twice_gives_byte_identical_output(
    production: Rendered, production_main: tuple[int, str, Path]
) -> None:
    """`make render` again, as a user runs it (main), against the session's render of the same stack."""
    code, _, out = production_main
    assert production.out_dir is not None
    assert code == 0
    assert _files(out) == _files(production.out_dir)


def test_the_summary_total_counts_what_the_last_line_says_and_its_rows_add_up(
    production_main: tuple[int, str, Path],
) -> None:
    code, said, out = production_main
    assert code == 0
    lines = said.splitlines()
    phases = [line.split(" ", 2)[1] for line in lines if line.startswith("render: ")]
    assert phases == ["reading", "running", "writing", "checking"]
    table = lines[lines.index(next(line for line in lines if line.startswith("component "))) + 1 :]
    rows = table[: next(i for i, line in enumerate(table) if line.startswith("total "))]
    total = int(table[len(rows)].split()[-1])
    assert sum(int(row.split()[-1]) for row in rows) == total
    resources = json.loads((out / "resources.json").read_text())["resources"]
    assert total == len(resources), "the total is every resource, the stack included"
    assert lines[-1].startswith(f"rendered {total} resources (the stack included, as `pulumi preview` counts) into ")


def test_a_render_that_stops_leaves_the_previous_one_and_says_so_and_when_it_was_made(
    production: Rendered, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert production.out_dir is not None
    out = tmp_path / "out"
    shutil.copytree(production.out_dir, out)  # a previous render
    before = _files(out)
    made = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(out.stat().st_mtime))
    doc = production_document()
    doc["config"]["sophia-infra:cluster"]["k3sVersion"] = "latest"
    assert main(["--stack-file", str(write_stack(tmp_path, doc)), "--out", str(out)]) == 2
    said = capsys.readouterr()
    assert _files(out) == before
    assert f"render: {out} still holds the previous render, made {made}: it does not show this configuration" in (
        said.out.splitlines()
    )
    assert all(line.startswith("error: ") for line in said.err.splitlines())

    # A crash half-way through writing the new render: the folder is not replaced either, and the same is said.
    def half_written(rendered: Rendered, staging: Path) -> None:
        (staging / "resources.json").write_text("{}")
        raise RuntimeError("the disk filled up")

    monkeypatch.setattr(render_main, "write", half_written)
    with pytest.raises(RuntimeError):
        main(["--out", str(out)])
    assert _files(out) == before
    assert f"render: {out} still holds the previous render, made {made}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Pulumi.production.yaml", "out"], "no staging folder left"


def test_the_render_says_each_phase_as_it_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = production_document()
    doc["config"]["sophia-infra:cluster"]["k3sVersion"] = "latest"
    assert main(["--stack-file", str(write_stack(tmp_path, doc)), "--out", str(tmp_path / "out")]) == 2
    phases = [line for line in capsys.readouterr().out.splitlines() if line.startswith("render: ")]
    assert phases[:2] == [
        f"render: reading {tmp_path / 'Pulumi.production.yaml'} (every ESC secret gets a stand-in value)",
        "render: running the program under the mock engine",
    ]
    assert phases[2] == f"render: {tmp_path / 'out'} holds no render"


def test_no_secret_value_appears_anywhere_in_the_render(production: Rendered) -> None:
    assert production.out_dir is not None
    stack = load_stack("production")
    assert stack.stand_ins, "the render must stand in for every ESC secret"
    everything = b"".join(_files(production.out_dir).values())
    for key, value in stack.stand_ins.items():
        for line in value.strip().splitlines():
            if "PRIVATE KEY" not in line:
                assert line.encode() not in everything, key


def test_the_secret_check_catches_a_leaked_value(production: Rendered, tmp_path: Path) -> None:
    stack = load_stack("production")
    leaked = tmp_path / "manifests" / "leak.yaml"
    leaked.parent.mkdir(parents=True)
    leaked.write_text(f"value: {stack.stand_ins['sophia-infra:openaiApiKey']}\n")
    assert checks.no_secret_in_output(Context(production, stack, tmp_path)) == [
        "manifests/leak.yaml: contains the value of sophia-infra:openaiApiKey"
    ]


def test_a_configuration_error_exits_2_with_one_line_per_problem_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = production_document()
    doc["config"]["sophia-infra:cluster"]["nodes"][2]["host"] = "not an address"
    doc["config"]["sophia-infra:cluster"]["nodes"][0]["role"] = "agent"
    out = tmp_path / "out"
    code = main(["--stack-file", str(write_stack(tmp_path, doc)), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.splitlines() == [
        "error: sophia-infra:cluster.nodes[2].host: must be an IP address, got 'not an address'",
        "error: sophia-infra:cluster.nodes: needs at least one node with role server",
    ]
    assert "Traceback" not in captured.out + captured.err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "Pulumi.production.yaml"]


def test_a_failed_check_exits_1_with_each_violation_on_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def always_fails(context: Context) -> list[str]:
        return ["first thing wrong", "second thing wrong"]

    monkeypatch.setattr(checks, "CHECKS", [*checks.CHECKS, ("a check that fails", always_fails)])
    assert main(["--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert "violation: a check that fails: first thing wrong" in err
    assert "violation: a check that fails: second thing wrong" in err


def test_a_kubernetes_object_that_breaks_its_schema_is_a_violation(production: Rendered, tmp_path: Path) -> None:
    broken = Rendered(production.stack, production.registrations, production.component_outputs)
    broken.manifests = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": 1}, "colour": "blue"}
    ]
    violations = checks.kubernetes_schemas(Context(broken, load_stack("production"), tmp_path))
    assert any("ConfigMap x: data.a" in v for v in violations)
    assert any("ConfigMap x" in v and "colour" in v for v in violations)
