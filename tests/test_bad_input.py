"""Bad configuration, generated: every mutated stack renders valid or fails cleanly with key paths.

Hypothesis mutates Pulumi.production.yaml (wrong types, missing keys, bad addresses, duplicates,
odd server counts, unknown GPU types, huge and empty lists, unknown keys, numbers as keys,
sections as (truncated) JSON text) and runs `make render`'s
own entry point on each. The only acceptable outcomes: exit 0 with a render written, or exit 2 with
nothing but `error: <key path>: <message>` lines and no output directory. A traceback, exit 1 (a
configuration accepted that renders invalid) or a half-written directory fails the test.

Speed: a rejected configuration costs a few milliseconds (settings fail before any resource is
registered); an accepted one is a full render with every check. Mutations are drawn so that most
are invalid, and each distinct accepted configuration is rendered once (a repeat is served from
`_ACCEPTED`), which keeps 500 examples within about 15 s on two idle cores.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import re
import shutil
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from render import checks
from render.__main__ import main
from render.context import Context
from tests.support import production_document, stack_text

Doc = dict[str, Any]
Path_ = tuple[str | int, ...]

EXAMPLES = 500
# Every mutation is of a configuration value, so every problem names a key of the project's namespace.
ERROR_LINE = re.compile(r"^error: (?P<key>sophia-infra:[A-Za-z][\w-]*(?:\.[^\s.:]+|\[\d+\])*): (?P<message>\S.*)$")

WRONG_TYPES: list[Any] = [42, -1, 0, 3.5, True, False, None, "text", "", " ", [], {}, ["x"], {"x": 1}]
BAD_ADDRESSES = ["999.1.1.1", "1.2.3", "10.0.0.300", "::g", "192.0.2.10", "a b", "-", "10.0.0.0/33", "fe80::1%eth0"]
BAD_STRINGS = ["", " ", "\t", "x" * 300, "ÜNÏCODÉ", "UPPER", "with space", "semi;colon", "$(rm -rf /)", "a\nb"]
EXTREME_NUMBERS = [0, -5, 1, 2, 7, 65536, 10**9, 2**63, 1.5, float("nan")]
GPU_TYPES = ["h200", "tpu-v5", "A100", "", "gh200", "a10"]
ROLES = ["server", "agent", "master", "", "SERVER"]

_ACCEPTED: dict[str, int] = {}
"""The exit code of each distinct accepted configuration, by digest, rendered once per session."""
_RUNS = {"examples": 0, "renders": 0}
_KINDS: set[str] = set()


def _paths(value: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    yield prefix
    if isinstance(value, dict):
        for key in value:
            yield from _paths(value[key], (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


PRODUCTION = production_document()
CONFIG_PATHS: list[Path_] = [p for p in _paths(PRODUCTION["config"]) if p]


def _get(doc: Doc, path: Path_) -> Any:
    target: Any = doc["config"]
    for part in path:
        target = target[part]
    return target


def _parent(doc: Doc, path: Path_) -> tuple[Any, str | int] | None:
    """The container holding `path` and its key, or None when an earlier mutation removed it."""
    target: Any = doc["config"]
    for part in path[:-1]:
        try:
            target = target[part]
        except (KeyError, IndexError, TypeError):
            return None
    if isinstance(target, dict) and path[-1] in target:
        return target, path[-1]
    if isinstance(target, list) and isinstance(path[-1], int) and path[-1] < len(target):
        return target, path[-1]
    return None


@st.composite
def mutation(draw: st.DrawFn) -> tuple[str, Path_, Any]:
    path = draw(st.sampled_from(CONFIG_PATHS))
    value = _get(PRODUCTION, path)
    leaf = str(path[-1])
    kinds = ["delete", "wrong type", "unknown key"]
    if isinstance(value, str):
        kinds += ["bad string"]
    if leaf in ("host", "privateIp", "apiEndpoint") or (path[-2:-1] == ("loadBalancerAddresses",)):
        kinds += ["bad address"] * 3
    if isinstance(value, int | float) and not isinstance(value, bool):
        kinds += ["extreme number"] * 2
    if isinstance(value, list):
        kinds += ["duplicate entry", "empty", "huge"] * 3
    if isinstance(value, dict):
        kinds += ["empty", "number as key", "as JSON text"]
    if leaf == "type" and "gpu" in path:
        kinds += ["gpu type"] * 3
    if leaf == "role":
        kinds += ["role"] * 3
    kind = draw(st.sampled_from(kinds))
    choice: Any = None
    if kind == "wrong type":
        choice = draw(st.sampled_from(WRONG_TYPES))
    elif kind == "bad string":
        choice = draw(st.sampled_from(BAD_STRINGS))
    elif kind == "bad address":
        choice = draw(st.sampled_from(BAD_ADDRESSES))
    elif kind == "extreme number":
        choice = draw(st.sampled_from(EXTREME_NUMBERS))
    elif kind == "gpu type":
        choice = draw(st.sampled_from(GPU_TYPES))
    elif kind == "role":
        choice = draw(st.sampled_from(ROLES))
    elif kind == "huge":
        choice = draw(st.sampled_from([60, 600]))
    elif kind in ("duplicate entry", "unknown key", "number as key", "as JSON text"):
        choice = draw(st.integers(min_value=0, max_value=10))
    return kind, path, choice


def mutate(doc: Doc, kind: str, path: Path_, choice: Any) -> None:
    found = _parent(doc, path)
    if found is None:
        return
    container, key = found
    current = container[key]
    if kind == "delete":
        del container[key]
    elif kind == "unknown key":
        target = current if isinstance(current, dict) else container
        if isinstance(target, dict):
            target[f"unexpected{choice}"] = choice
        else:
            container[key] = {"unexpected": choice}
    elif kind == "number as key":
        if isinstance(current, dict):
            current[choice] = copy.deepcopy(next(iter(current.values()), "x"))
    elif kind == "as JSON text":
        container[key] = json.dumps(current)[: 10 + 20 * choice]
    elif kind == "empty":
        container[key] = type(current)() if isinstance(current, list | dict) else []
    elif kind == "duplicate entry":
        if isinstance(current, list) and current:
            current.append(copy.deepcopy(current[choice % len(current)]))
    elif kind == "huge":
        if isinstance(current, list) and current:
            container[key] = [copy.deepcopy(current[i % len(current)]) for i in range(choice)]
    else:
        container[key] = choice


_SHELLCHECKED: dict[str, list[str]] = {}
"""shellcheck's findings for each node script already checked, by content digest."""


def shellcheck_once_per_script(context: Context) -> list[str]:
    """`node_scripts_pass_shellcheck`, run only on scripts whose exact text it has not judged yet.

    Each script is checked on its own (no `source` is followed), so a script's findings depend on
    its text alone; two renders that differ in one node share every other node's scripts.
    """
    scripts = sorted((context.out_dir / "nodes").glob("*/*.sh"))
    digests = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in scripts}
    new = [path for path in scripts if digests[path] not in _SHELLCHECKED]
    if new:
        with tempfile.TemporaryDirectory() as scratch:
            for path in new:
                copy_to = Path(scratch) / "nodes" / digests[path] / path.name
                copy_to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, copy_to)
                _SHELLCHECKED[digests[path]] = []
            for line in checks.node_scripts_pass_shellcheck(Context(context.rendered, context.stack, Path(scratch))):
                _SHELLCHECKED[line.split("/")[1]].append(line)
    return [line for path in scripts for line in _SHELLCHECKED[digests[path]]]


_FOLDER: list[Path] = []
"""One scratch folder for every example: a new one each time cost more than many a rejection."""


def _folder() -> Path:
    if not _FOLDER:
        _FOLDER.append(Path(tempfile.mkdtemp(prefix="bad-input-")))
    return _FOLDER[0]


def _render(text: str) -> tuple[int, str, str, Path]:
    """`python -m render` on the stack file `text` in an empty folder: exit code, stdout, stderr, the folder."""
    folder = _folder()
    (folder / "Pulumi.production.yaml").write_text(text)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["--stack-file", str(folder / "Pulumi.production.yaml"), "--out", str(folder / "out")])
        except BaseException:  # a traceback is the failure this test looks for
            code = -1
            err.write(traceback.format_exc())
    return code, out.getvalue(), err.getvalue(), folder


def _judge(doc: Doc) -> None:
    # The stack file's own text, as libyaml writes it, once: it is both the file and the digest.
    text = stack_text(doc)
    digest = hashlib.sha256(text.encode()).hexdigest()
    if digest in _ACCEPTED:
        assert _ACCEPTED[digest] == 0
        return
    code, out, err, folder = _render(text)
    try:
        assert "Traceback" not in out + err, err
        assert code in (0, 2), f"exit {code}\n{err[-3000:]}"
        if code == 2:
            lines = err.splitlines()
            assert lines, "exit 2 without an error line"
            bad = [line for line in lines if not ERROR_LINE.match(line)]
            assert not bad, bad[:5]
            assert [line for line in out.splitlines() if not line.startswith("render: ")] == []
            assert sorted(p.name for p in folder.iterdir()) == ["Pulumi.production.yaml"], "partial output"
        else:
            _RUNS["renders"] += 1
            _ACCEPTED[digest] = code
            assert (folder / "out" / "resources.json").is_file()
            assert sorted(p.name for p in folder.iterdir()) == ["Pulumi.production.yaml", "out"]
    finally:
        shutil.rmtree(folder / "out", ignore_errors=True)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(mutation(), min_size=1, max_size=3))
def _mutated_configs_render_valid_or_fail_with_key_paths(mutations: list[tuple[str, Path_, Any]]) -> None:
    _RUNS["examples"] += 1
    doc = production_document()
    for kind, path, choice in mutations:
        _KINDS.add(kind)
        mutate(doc, kind, path, choice)
    _judge(doc)


def test_every_mutated_configuration_renders_valid_or_fails_with_key_paths_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        checks,
        "CHECKS",
        [
            (name, shellcheck_once_per_script if check is checks.node_scripts_pass_shellcheck else check)
            for name, check in checks.CHECKS
        ],
    )
    try:
        _mutated_configs_render_valid_or_fail_with_key_paths()
    finally:
        for folder in _FOLDER:
            shutil.rmtree(folder, ignore_errors=True)
        _FOLDER.clear()
    assert _RUNS["examples"] >= EXAMPLES
    assert {
        "delete",
        "wrong type",
        "unknown key",
        "bad string",
        "bad address",
        "extreme number",
        "duplicate entry",
        "empty",
        "huge",
        "gpu type",
        "role",
        "number as key",
        "as JSON text",
    } == _KINDS


def test_the_shellcheck_cache_finds_what_shellcheck_finds(tmp_path: Path) -> None:
    script = tmp_path / "nodes" / "node-a" / "01-install.sh"
    script.parent.mkdir(parents=True)
    script.write_text("#!/usr/bin/env bash\necho $UNQUOTED\n")
    (tmp_path / "nodes" / "node-b").mkdir()
    shutil.copyfile(script, tmp_path / "nodes" / "node-b" / "01-install.sh")
    context = Context(None, None, tmp_path)  # type: ignore[arg-type]  # the check reads only out_dir
    direct = checks.node_scripts_pass_shellcheck(context)
    assert len(direct) == 2 and all("SC2086" in line for line in direct)
    first = shellcheck_once_per_script(context)
    again = shellcheck_once_per_script(context)
    assert len(first) == len(again) == 2
    assert all("SC2086" in line for line in first)


# Where K3s comes from is not in the production stack file, so the mutations above never reach it: the
# same mutations, each on its own, of a stack that sets both (stand-in pins, in the format of a
# release's sha256sum-<arch>.txt).
K3S_SOURCE = {
    "k3sMirror": "https://k3s-mirror.internal.example/k3s",
    "k3sSha256": {"amd64": "a" * 64, "arm64": "b" * 64},
}
K3S_PATHS: list[Path_] = [
    ("sophia-infra:cluster", "k3sMirror"),
    ("sophia-infra:cluster", "k3sSha256"),
    ("sophia-infra:cluster", "k3sSha256", "amd64"),
    ("sophia-infra:cluster", "k3sSha256", "arm64"),
]
K3S_MUTATIONS: list[tuple[str, Any]] = [
    ("delete", None),
    ("unknown key", 1),
    ("empty", None),
    ("as JSON text", 2),
    *(("wrong type", value) for value in (42, True, None, ["x"], {"x": 1})),
    *(("bad string", value) for value in [*BAD_STRINGS, "http://10.0.0.1/k3s", "https://user@mirror/k3s?x=1"]),
]


@pytest.mark.parametrize("path", K3S_PATHS, ids=[".".join(map(str, p[1:])) for p in K3S_PATHS])
def test_every_mutation_of_where_k3s_comes_from_renders_valid_or_fails_with_key_paths_only(
    monkeypatch: pytest.MonkeyPatch, path: Path_
) -> None:
    monkeypatch.setattr(
        checks,
        "CHECKS",
        [
            (name, shellcheck_once_per_script if check is checks.node_scripts_pass_shellcheck else check)
            for name, check in checks.CHECKS
        ],
    )
    for kind, choice in K3S_MUTATIONS:
        doc = production_document()
        doc["config"]["sophia-infra:cluster"].update(copy.deepcopy(K3S_SOURCE))
        if kind == "bad string" and not isinstance(_get(doc, path), str):
            continue
        mutate(doc, kind, path, choice)
        _judge(doc)
