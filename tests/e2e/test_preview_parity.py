"""Preview parity: for every stack, the real engine plans a first `up` of exactly the render's resources.

The whole program (`__main__.py`, tests/e2e/whole_program.py) previews on a fresh file-backend stack
with the stack's own settings file, as CI's `pulumi preview` on a pull request would before the first
`up`. A preview connects to no machine (a remote command runs only on `up`), so the stack's own
documentation addresses serve. What the engine plans to create, by type, name and parent, is what
`make render` writes to resources.json, resource for resource.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from render.stack import PROJECT_DIR, stack_names
from tests.e2e.engine import open_engine
from tests.e2e.test_kubernetes_layer import short_urn
from tests.e2e.whole_program import whole_program

pytestmark = pytest.mark.e2e


def render(stack: str, out: Path) -> list[dict[str, Any]]:
    """`make render`'s resources (in a process of its own: the mock engine's settings are process-wide)."""
    subprocess.run(
        [sys.executable, "-m", "render", "--stack", stack, "--out", str(out)],
        cwd=PROJECT_DIR, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    resources: list[dict[str, Any]] = json.loads((out / "resources.json").read_text())["resources"]
    return resources


def comparable(urn: str) -> str:
    """A URN as both engines spell it: the mock engine qualifies a top-level resource's type with the
    stack's (`pulumi:pulumi:Stack$...`), the real engine does not; and it qualifies a grandchild's with
    its parent's only (short_urn)."""
    head, qualified, name = urn.rsplit("::", 2)
    return short_urn("::".join((head, qualified.removeprefix("pulumi:pulumi:Stack$"), name)))


@pytest.mark.parametrize("stack_name", stack_names())
def test_a_first_preview_plans_exactly_the_rendered_resources(
    stack_name: str, bins: Path, tmp_path: Path, report: list[str]
) -> None:
    expected = {comparable(r["urn"]) for r in render(stack_name, tmp_path / "render")}
    engine = open_engine(bins, tmp_path / "engine", whole_program(), report, stack_name=stack_name)
    preview = engine.run("preview")
    planned = {comparable(urn) for op, _, urn in preview.steps if op == "create"}
    assert planned == expected, (sorted(expected - planned)[:10], sorted(planned - expected)[:10])
    assert {op for op, _, _ in preview.steps} == {"create"}, preview.describe()
    report.append(f"preview parity, {stack_name}: {len(planned)} creates, one for one the render's resources")
