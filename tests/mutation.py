"""What `make mutate` needs of the tests' renders: each mutant judged by every test that reads a render
its function shaped, and the parts of a render a mutant cannot change not made again per mutant.

Outside a mutation run (no MUTANT_UNDER_TEST in the environment) nothing here does anything: the
session fixtures render as they always do.

mutmut (3.x) runs each mutant's tests in a fresh fork, so every render a session fixture makes is made
again for every mutant (a few seconds each on two shared cores, thousands of mutants). Two memos, both
kept on disk under SOPHIA_MUTATION_MEMO (`make mutate` sets it to mutants/.memo), remove the part of
that cost a mutant cannot change, and nothing else:

- **shellcheck's findings, by the digest of the script shape it judged** (render.checks keeps the same
  memo in memory for one process). shellcheck is a program of its own, a pure function of the text it
  reads: a mutant that changes a node script changes the digest and is judged by a real shellcheck run.
- **the program's recording, by the stack it ran for, made once with no mutant active**, together with
  the set of mutated functions that run called (recorded by mutmut's own trampolines in their "stats"
  mode, in a subprocess of its own). A mutant whose function is not in that set cannot change the run:
  every call the run makes goes to the same code as in the clean run, which is why the recording is
  reused; a mutant whose function is in it runs the program itself. The recording is keyed by the
  digest of the program's sources (components/, policy/, render/, esc/, the stack files) as mutmut
  copied them, and by the stack the mutant's own code loaded. The checks, the files and everything
  the tests do with a render still run under the mutant.

mutmut picks a mutant's tests by which tests called its function in one clean run; a session
fixture's render is made during the first test that asks for it, so the functions a render calls are
credited to that test only. `credit_render` gives them to every test that reads the render: a
mutant that changes a render is then judged by all of them (the alert tests, the policy tests), not
by whichever test happened to come first.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from render.engine import Recording, run_program
from render.stack import PROJECT_DIR, StackConfig

MEMO_ENV = "SOPHIA_MUTATION_MEMO"
_SOURCES = ("components", "policy", "render", "esc")
_RENDER_HITS: dict[str, frozenset[str]] = {}
"""The mutated functions each render fixture's render called in the stats run, by fixture name."""


def _mutant() -> str:
    return os.environ.get("MUTANT_UNDER_TEST", "")


def collecting_stats() -> bool:
    """mutmut's clean run that finds which tests call which functions."""
    return _mutant() == "stats"


def judging_a_mutant() -> bool:
    return "__mutmut_" in _mutant()


def _memo_dir() -> Path | None:
    """Where the memos live, in a run of one mutant under `make mutate` only."""
    memo = os.environ.get(MEMO_ENV)
    return Path(memo) if memo and judging_a_mutant() else None


def _mutated_function() -> str:
    """The active mutant's function as mutmut's trampolines record it: `module.x_name` or `module.xǁClassǁname`."""
    return _mutant().partition("__mutmut_")[0]


@functools.cache
def _sources_digest() -> str:
    digest = hashlib.sha256()
    files = [p for top in _SOURCES for p in (PROJECT_DIR / top).rglob("*") if p.is_file()]
    files += [*PROJECT_DIR.glob("Pulumi*.yaml"), PROJECT_DIR / "__main__.py"]
    # mutmut writes its results beside the sources it mutated (.meta, .spans) while it runs.
    sources = (f for f in files if "__pycache__" not in f.parts and f.suffix not in {".meta", ".spans"})
    for path in sorted(sources):
        digest.update(str(path.relative_to(PROJECT_DIR)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _clean_recording(stack: StackConfig, memo: Path) -> tuple[frozenset[str], Recording]:
    """The program's recording for `stack` with no mutant active, and the mutated functions it called."""
    # Canonical: pickle would write the frozenset in an order that differs between processes.
    spelled = json.dumps(
        [stack.project, stack.stack, stack.config, sorted(stack.secret_keys), stack.stand_ins], sort_keys=True
    )
    key = hashlib.sha256(f"{_sources_digest()}\0{spelled}".encode()).hexdigest()
    entry = memo / f"program-{key}.pickle"
    if not entry.exists():
        memo.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=memo) as scratch:
            request = Path(scratch) / "stack.pickle"
            request.write_bytes(pickle.dumps(stack))
            # A process of its own: the clean run must not leave this mutant's process with anything
            # computed without the mutant (nor the Pulumi SDK's threads of a second run).
            subprocess.run(
                [sys.executable, "-m", "tests.mutation", str(request), str(entry)],
                cwd=PROJECT_DIR,
                env={**os.environ, "MUTANT_UNDER_TEST": "stats"},
                check=True,
                timeout=300,
            )
    hits, recording = pickle.loads(entry.read_bytes())
    return hits, recording


def program(stack: StackConfig) -> Recording:
    """run_program(stack), or, for a mutant whose function the clean run never called, that run's recording."""
    memo = _memo_dir()
    if memo is None:
        return run_program(stack)
    hits, recording = _clean_recording(stack, memo)
    if _mutated_function() in hits:
        return run_program(stack)
    return recording


@contextlib.contextmanager
def _shellcheck_memo(memo: Path) -> Iterator[None]:
    from render import checks

    findings = memo / "shellcheck.json"
    with contextlib.suppress(FileNotFoundError):
        for digest, found in json.loads(findings.read_text()).items():
            checks._FINDINGS.setdefault(digest, found)
    try:
        yield
    finally:
        memo.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=memo, delete=False, suffix=".json") as new:
            json.dump(checks._FINDINGS, new)
        Path(new.name).replace(findings)  # whole or not at all: two mutants may write at once


@contextlib.contextmanager
def render_fixture(name: str) -> Iterator[None]:
    """Around a session fixture's render: the memos in a mutant's run, the functions it calls in the stats run."""
    if collecting_stats():
        from mutmut.state import state

        from render import checks

        earlier = set(state()._stats)
        state()._stats.clear()
        checked: set[str] = set()

        def run_checks(context: Any) -> Any:
            """The render's checks, the functions they call kept apart from the program's."""
            before = set(state()._stats)
            state()._stats.clear()
            try:
                return original_run_checks(context)
            finally:
                checked.update(state()._stats)
                state()._stats.clear()
                state()._stats.update(before)

        original_run_checks = checks.run_checks
        try:
            with _replaced(checks, "run_checks", run_checks):
                yield
        finally:
            _RENDER_HITS[name] = frozenset(state()._stats)
            _RENDER_HITS[f"{name} checks"] = frozenset(checked)
            state()._stats.update(earlier | checked)
        return
    memo = _memo_dir()
    if memo is None:
        yield
        return
    import render.__main__ as main

    with _shellcheck_memo(memo), _replaced(main, "run_program", program):
        yield


@contextlib.contextmanager
def _replaced(owner: Any, name: str, value: Callable[..., Any]) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def credit_render(fixture_names: list[str], readers: dict[str, tuple[str, bool]]) -> None:
    """In the stats run, count the functions a render called as called by this test too, if it reads the render.

    `readers` maps each fixture that reads a render to the render fixture (a name given to render_fixture)
    and whether it reads the render's check results too: the functions only the checks call (the policy
    pack's rules among them) change those results and nothing else of a render, so they are credited
    to the tests that read the results, not to every test that reads the render's objects.
    """
    if not collecting_stats():
        return
    from mutmut.state import state

    for fixture in fixture_names:
        render, with_checks = readers.get(fixture, ("", False))
        state()._stats.update(_RENDER_HITS.get(render, ()))
        if with_checks:
            state()._stats.update(_RENDER_HITS.get(f"{render} checks", ()))


def run_tool(args: list[str], cwd: Path, inputs: list[Path]) -> subprocess.CompletedProcess[str]:
    """subprocess.run(args, cwd=cwd, capture_output=True, text=True); in a mutant's run, once per content.

    For a program of its own whose answer depends on nothing but `args` and the files `inputs` name
    (promtool): the memo is keyed by both, so a mutant that changes a file gets a real run.
    """
    memo = _memo_dir()
    if memo is None:
        return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    digest = hashlib.sha256(json.dumps(args).encode())
    for path in inputs:
        digest.update(b"\0" + path.name.encode() + b"\0" + path.read_bytes())
    entry = memo / f"tool-{digest.hexdigest()}.json"
    if entry.exists():
        done = json.loads(entry.read_text())
        return subprocess.CompletedProcess(args, done["returncode"], done["stdout"], done["stderr"])
    run = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    memo.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=memo, delete=False, suffix=".json") as new:
        json.dump({"returncode": run.returncode, "stdout": run.stdout, "stderr": run.stderr}, new)
    Path(new.name).replace(entry)
    return run


def _record_clean_run(request: Path, entry: Path) -> None:
    """The subprocess of _clean_recording: run the program, keep its recording and the functions it called."""
    from mutmut.state import state

    stack: StackConfig = pickle.loads(request.read_bytes())
    recording = run_program(stack)
    with tempfile.NamedTemporaryFile("wb", dir=entry.parent, delete=False) as new:
        pickle.dump((frozenset(state()._stats), recording), new)
    Path(new.name).replace(entry)


if __name__ == "__main__":
    _record_clean_run(Path(sys.argv[1]), Path(sys.argv[2]))
