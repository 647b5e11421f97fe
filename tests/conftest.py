"""The production and development stacks rendered once per test session, for tests of every invariant.

A render is the most expensive thing a test does; every test that reads a stack as it is checked in
reads these, and only tests that change a stack render their own.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from render.__main__ import main, render
from render.context import CheckResult
from render.model import Rendered, build
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
def production_main(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    """`make render` of production as a user runs it (`main`), once: exit code, stdout, the folder."""
    out = tmp_path_factory.mktemp("main") / "production"
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        code = main(["--out", str(out)])
    return code, said.getvalue(), out


@pytest.fixture(scope="session")
def fifty_machines(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """The production stack with generated agents up to 50 machines, the program only (no files, no checks)."""
    from render.bench import scaled_document, stack_of
    from render.engine import run_program

    stack = stack_of(scaled_document(50), tmp_path_factory.mktemp("fifty"))
    return build(stack.stack, run_program(stack))


@pytest.fixture(scope="session")
def development(development_render: tuple[Rendered, list[CheckResult]]) -> Rendered:
    """The rendered development stack (one machine)."""
    return development_render[0]
