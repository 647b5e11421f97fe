"""Each stack rendered once per test session, for tests of every invariant."""

from __future__ import annotations

from pathlib import Path

import pytest

from render.__main__ import render
from render.context import CheckResult
from render.model import Rendered
from render.stack import load_stack


@pytest.fixture(scope="session")
def production_render(tmp_path_factory: pytest.TempPathFactory) -> tuple[Rendered, list[CheckResult]]:
    out: Path = tmp_path_factory.mktemp("render") / "production"
    return render(load_stack("production"), out)


@pytest.fixture(scope="session")
def production(production_render: tuple[Rendered, list[CheckResult]]) -> Rendered:
    """The rendered production stack: resources, manifests, releases, node scripts, outputs, out_dir."""
    return production_render[0]


@pytest.fixture(scope="session")
def production_checks(production_render: tuple[Rendered, list[CheckResult]]) -> list[CheckResult]:
    return production_render[1]


@pytest.fixture(scope="session")
def development_render(tmp_path_factory: pytest.TempPathFactory) -> tuple[Rendered, list[CheckResult]]:
    return render(load_stack("development"), tmp_path_factory.mktemp("render") / "development")


@pytest.fixture(scope="session")
def development(development_render: tuple[Rendered, list[CheckResult]]) -> Rendered:
    """The rendered development stack (one machine)."""
    return development_render[0]
