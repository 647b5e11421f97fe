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
from tests import mutation

# Each fixture that reads a render, the render fixture it reads and whether it reads the render's check
# results too (for `make mutate`: tests/mutation.py). A test's fixtures include those its fixtures use,
# so the render fixtures themselves (which every reader uses) stand for their objects only.
RENDER_READERS = {
    "production_render": ("production_render", False),
    "production": ("production_render", False),
    "production_checks": ("production_render", True),
    "development_render": ("development_render", False),
    "development": ("development_render", False),
    "with_application": ("with_application", False),
}


@pytest.fixture(scope="session")
def production_render(tmp_path_factory: pytest.TempPathFactory) -> tuple[Rendered, list[CheckResult]]:
    out: Path = tmp_path_factory.mktemp("render") / "production"
    with mutation.render_fixture("production_render"):
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
    with mutation.render_fixture("development_render"):
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """In a mutant's run (mutmut stops at the first failure), the tests that read no render go first,
    and those that run promtool (seconds each) last."""

    def cost(item: pytest.Item) -> int:
        fixtures = getattr(item, "fixturenames", ())
        return 2 if "promtool" in fixtures else int(any(f in RENDER_READERS for f in fixtures))

    if mutation.judging_a_mutant():
        items.sort(key=cost)


@pytest.hookimpl(tryfirst=True)  # before mutmut's own teardown hook reads what the test called
def pytest_runtest_teardown(item: pytest.Item) -> None:
    request = getattr(item, "_request", None)  # its fixturenames include those asked for by getfixturevalue
    mutation.credit_render(list(request.fixturenames if request else getattr(item, "fixturenames", ())), RENDER_READERS)
