"""shellcheck judges each distinct node script once, not once per machine, and still finds what it finds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from render import checks
from render.__main__ import _judge_scripts_ahead
from render.checks import node_scripts_pass_shellcheck, script_shape
from render.context import Context
from render.model import Rendered
from render.stack import load_stack


def _context(out_dir: Path) -> Context:
    return Context(None, None, out_dir)  # type: ignore[arg-type]  # the check reads only out_dir


@pytest.fixture
def fresh_findings(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """No finding remembered from earlier renders; each call of shellcheck recorded with the shapes it got."""
    monkeypatch.setattr(checks, "_FINDINGS", {})
    calls: list[dict[str, str]] = []
    run = checks._run_shellcheck

    def recording(shapes: dict[str, str]) -> dict[str, list[str]]:
        calls.append(dict(shapes))
        return run(shapes)

    monkeypatch.setattr(checks, "_run_shellcheck", recording)
    return calls


def test_machines_of_one_role_share_their_scripts_shapes_and_each_shape_is_checked_once(
    production: Rendered, fresh_findings: list[dict[str, str]]
) -> None:
    assert production.out_dir is not None
    scripts = sorted((production.out_dir / "nodes").glob("*/*.sh"))
    assert node_scripts_pass_shellcheck(_context(production.out_dir)) == []
    (checked,) = fresh_findings
    assert sorted(checked.values()) == sorted({script_shape(s.read_text()) for s in scripts})
    agents = ("sophia-mcp-orchestrator", "sophia-data-pipeline")
    shapes = [
        [script_shape(s.read_text()) for s in sorted((production.out_dir / "nodes" / a).glob("*.sh"))] for a in agents
    ]
    assert shapes[0] == shapes[1]
    # What is checked is the first server's scripts and one agent's (the GPU agents' differ only in
    # values): it does not grow with the number of machines.
    first = {
        script_shape(s.read_text()) for s in (production.out_dir / "nodes" / "sophia-production-instance").glob("*.sh")
    }
    assert len(checked) <= len(first) + len(set(shapes[0]))
    assert len(checked) < len(scripts) / 2
    # Judged once per process: a second render's scripts cost no shellcheck at all.
    assert node_scripts_pass_shellcheck(_context(production.out_dir)) == []
    assert len(fresh_findings) == 1


def test_scripts_judged_ahead_while_the_program_runs_are_the_ones_written(
    production: Rendered, fresh_findings: list[dict[str, str]]
) -> None:
    """The render starts shellcheck on the scripts the settings call for before the program runs;
    the written scripts then need no shellcheck of their own, because they are those scripts."""
    assert production.out_dir is not None
    _judge_scripts_ahead(load_stack("production"))
    assert node_scripts_pass_shellcheck(_context(production.out_dir)) == []
    (ahead,) = fresh_findings
    written = {script_shape(s.read_text()) for s in (production.out_dir / "nodes").glob("*/*.sh")}
    assert set(ahead.values()) == written


def test_a_fault_in_one_machines_script_is_reported_for_that_script_on_its_line(
    production: Rendered, tmp_path: Path, fresh_findings: list[dict[str, str]]
) -> None:
    assert production.out_dir is not None
    shutil.copytree(production.out_dir / "nodes", tmp_path / "nodes")
    broken = tmp_path / "nodes" / "sophia-ai-core" / "04-install.sh"
    lines = broken.read_text().splitlines()
    broken.write_text("\n".join([*lines, "rm -rf $ROOT/tmp/$STEP"]) + "\n")
    violations = node_scripts_pass_shellcheck(_context(tmp_path))
    assert violations and all(v.startswith(f"nodes/sophia-ai-core/04-install.sh:{len(lines) + 1}:") for v in violations)
    assert any("SC2086" in v for v in violations)


def test_a_shape_keeps_every_line_and_every_shellcheck_directive(production: Rendered) -> None:
    assert production.out_dir is not None
    for script in sorted((production.out_dir / "nodes").glob("*/*.sh")):
        text = script.read_text()
        shape = script_shape(text)
        assert shape.count("\n") == text.count("\n"), script
        directives = [line for line in text.splitlines() if "# shellcheck " in line]
        assert directives == [line for line in shape.splitlines() if "# shellcheck " in line], script
        assert shape.startswith("#!/usr/bin/env bash\n")


def test_what_a_shape_empties_is_only_quoted_data_and_comments() -> None:
    text = "export A='x $(y)\n z'\nexport B=plain\n# a comment\necho \"$A\" $B\n"
    assert script_shape(text) == "export A='\n'\nexport B=''\n#\necho \"$A\" $B\n"
