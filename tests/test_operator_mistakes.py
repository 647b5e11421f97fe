"""The mistakes a new operator makes, each caught by `make render`'s own entry point with exact output.

Each case edits the text of Pulumi.production.yaml the way an operator would (not the parsed data),
so what is tested is what the operator sees: exit 2, nothing written, and exactly these lines.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from render.__main__ import main
from render.context import CheckResult
from render.model import Rendered
from render.stack import PROJECT_DIR

PRODUCTION = (PROJECT_DIR / "Pulumi.production.yaml").read_text()
GH200_TAINT = '{key: nvidia.com/gpu, value: "true", effect: NoSchedule}'
DEVELOPMENT_HOST_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIIATjZLV2sliQno+4wLIdp7sckDqhiQbRclWjHjfq9lz"
FIRST_SERVER_HOST_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIE/8SNRdonHWbMbr5J6I/fwLprmtJJ0c0qbtOnUOVp/T"
BACKEND_REPLICAS = "        replicas: {min: 2, max: 6}\n"


def _edited(old: str, new: str) -> str:
    assert PRODUCTION.count(old) == 1, f"the production stack no longer holds {old!r} once"
    return PRODUCTION.replace(old, new)


def _line_of(text: str, needle: str, occurrence: int = 1) -> int:
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return lines[occurrence - 1]


def _render(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], Path]:
    stack_file = tmp_path / "Pulumi.production.yaml"
    stack_file.write_text(text)
    out = tmp_path / "out"
    code = main(["--stack-file", str(stack_file), "--out", str(out)])
    captured = capsys.readouterr()
    assert not out.exists(), "a refused configuration wrote a render"
    return code, captured.err.splitlines(), stack_file


def test_a_gh200_taint_with_another_effect_is_refused_naming_the_taint_and_the_workload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _edited(GH200_TAINT, GH200_TAINT.replace("NoSchedule", "NoExecute"))
    code, lines, _ = _render(tmp_path, text, capsys)
    assert (code, lines) == (
        2,
        [
            "error: sophia-infra:cluster.nodes[1].taints[0]: nvidia.com/gpu=true:NoExecute is not tolerated by "
            "sophia-infra:apps.services.ai-memory.gpu, which places ai-memory on gh200 machine sophia-ai-core "
            "(GPU pods tolerate nvidia.com/gpu:NoSchedule)"
        ],
    )


def test_a_gh200_taint_with_another_key_is_refused_for_the_workload_and_the_gpu_agents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _edited(GH200_TAINT, "{key: dedicated, value: gh200, effect: NoSchedule}")
    code, lines, _ = _render(tmp_path, text, capsys)
    assert (code, lines) == (
        2,
        [
            "error: sophia-infra:cluster.nodes[1].taints[0]: dedicated=gh200:NoSchedule keeps the NVIDIA device "
            "plugin and dcgm-exporter off GPU machine sophia-ai-core, so its GPUs are never offered (they tolerate "
            "nvidia.com/gpu:(any effect), CriticalAddonsOnly:(any effect))",
            "error: sophia-infra:cluster.nodes[1].taints[0]: dedicated=gh200:NoSchedule is not tolerated by "
            "sophia-infra:apps.services.ai-memory.gpu, which places ai-memory on gh200 machine sophia-ai-core "
            "(GPU pods tolerate nvidia.com/gpu:NoSchedule)",
        ],
    )


def test_the_taints_the_settings_accept_are_the_ones_the_rendered_gpu_pods_tolerate(production: Rendered) -> None:
    """The check above and the pods agree: the GH200's taint is tolerated by every pod placed there."""
    gpu_pods = [
        (m["metadata"]["name"], m["spec"]["template"]["spec"])
        for m in production.manifests
        if m["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
        and any(
            "nvidia.com/gpu" in (c.get("resources") or {}).get("limits", {})
            for c in m["spec"]["template"]["spec"]["containers"]
        )
    ]
    assert [name for name, _ in gpu_pods] == ["ai-memory"]
    for _, spec in gpu_pods:
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    for release in ("nvidia-device-plugin", "dcgm-exporter"):
        assert {"key": "nvidia.com/gpu", "operator": "Exists"} in production.releases[release]["values"]["tolerations"]


def test_two_machines_with_one_host_key_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _edited(DEVELOPMENT_HOST_KEY, FIRST_SERVER_HOST_KEY)
    code, lines, _ = _render(tmp_path, text, capsys)
    assert (code, lines) == (
        2,
        [
            "error: sophia-infra:cluster.nodes[4].hostKey: is the host key of nodes[0] (sophia-production-instance); "
            "two machines cannot share a host key"
        ],
    )


def test_a_key_written_twice_is_refused_naming_the_key_and_both_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _edited(BACKEND_REPLICAS, BACKEND_REPLICAS + "        replicas: {min: 3, max: 6}\n")
    code, lines, stack_file = _render(tmp_path, text, capsys)
    first = _line_of(text, "replicas: {min: 2, max: 6}")
    assert (code, lines) == (
        2,
        [
            f"error: sophia-infra:apps.services.sophia-backend.replicas: is written twice in {stack_file}, "
            f"on lines {first} and {first + 1}"
        ],
    )


def test_an_unclosed_brace_is_one_error_line_with_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _edited("gpu: {type: gh200, count: 1}\n        hostKey", "gpu: {type: gh200, count: 1\n        hostKey")
    code, lines, stack_file = _render(tmp_path, text, capsys)
    opened = _line_of(text, "gpu: {type: gh200, count: 1")
    assert (code, lines) == (
        2,
        [
            f"error: {stack_file}:{opened + 1}:16: expected ',' or '}}', but got ':' "
            f"(while parsing a flow mapping on line {opened})"
        ],
    )


def test_a_tab_is_one_error_line_with_file_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _edited("    k3sVersion: v1.35.5+k3s1", "\tk3sVersion: v1.35.5+k3s1")
    code, lines, stack_file = _render(tmp_path, text, capsys)
    line = _line_of(text, "k3sVersion")
    assert (code, lines) == (2, [f"error: {stack_file}:{line}:1: found character '\\t' that cannot start any token"])


def runbooks() -> list[str]:
    """The runbooks' titles: the `###` headings under `## Runbooks` in docs/operations.md."""
    titles, inside = [], False
    for line in (PROJECT_DIR / "docs" / "operations.md").read_text().splitlines():
        if line.startswith("## "):
            inside = line == "## Runbooks"
        elif inside and line.startswith("### "):
            titles.append(line.removeprefix("### "))
    return titles


def test_make_help_lists_every_target_from_its_comment_and_the_runbooks_and_plain_make_shows_it() -> None:
    expected = [
        "usage: make <target> [STACK=<stack>] [OUT=<dir>]   stacks: development production",
        "  make help      this list and the runbooks (plain `make` shows it too)",
        "  make render    the whole desired state of STACK, offline, into OUT; exit 0 valid, 1 invalid, 2 bad config",
        "  make test      lint, types and the whole test suite (with promtool, built first and cached), on every core",
        "  make engine    the Pulumi CLI, language host, plugins and ESC evaluator, from the module proxy and "
        "../shared/third_party",
        "  make apiserver kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd and kwok, built the "
        "same way",
        "  make promtool  Prometheus's promtool, of the version the monitoring stack deploys, built the same way",
        "  make e2e       the whole program through the real engine: test machines over SSH, a real API server",
        "  make lint      ruff, ruff format and mypy (strict on components/, render/ and policy/)",
        "  make bench     time `make render`, render production and stacks with 10x and 50x its machines and services, "
        "and (e2e binaries built) time `up` through the real engine; write docs/benchmarks.md",
        "  make mutate    mutation testing (mutmut) of the settings, policies and alerts; slow, in neither CI nor make "
        "test",
        "  make clean     remove build/ and the tools' caches",
        "runbooks, in docs/operations.md (each a heading with numbered steps):",
        # Every `###` under `## Runbooks` (tests/test_docs.py holds each to numbered steps).
        *(f"  {title}" for title in runbooks()),
    ]
    for argv in (["make", "help"], ["make"]):
        run = subprocess.run(
            [*argv, "--no-print-directory"], check=False, cwd=PROJECT_DIR, capture_output=True, text=True
        )
        assert (run.returncode, run.stdout.splitlines(), run.stderr) == (0, expected, "")


def test_every_node_script_says_which_machine_it_runs_on(production: Rendered) -> None:
    assert production.out_dir is not None
    first = "sophia-production-instance"
    for node, steps in production.node_steps.items():
        for step in steps:
            on_first_server = step.step in ("claim", "admit") and node != first
            expected = (
                f"# runs on {first}, the first server, on behalf of {node}"
                if on_first_server
                else f"# runs on {node} itself"
            )
            for suffix, text in ((".sh", step.create), (".delete.sh", step.delete)):
                if text is None:
                    continue
                written = (production.out_dir / "nodes" / node / f"{step.index:02d}-{step.step}{suffix}").read_text()
                assert written.splitlines()[3] == expected, f"{node}/{step.step}{suffix}"


def test_resources_json_shows_where_each_step_connects_and_hides_the_private_key(
    production: Rendered, production_checks: list[CheckResult]
) -> None:
    assert production.out_dir is not None
    document = json.loads((production.out_dir / "resources.json").read_text())
    connections = {
        r["name"]: r["inputs"]["connection"] for r in document["resources"] if r["type"] == "command:remote:Command"
    }
    assert connections["sophia-ai-core-claim"] == {
        "host": "192.0.2.10",
        "port": 22,
        "user": "ubuntu",
        "hostKey": "ssh-ed25519 " + FIRST_SERVER_HOST_KEY,
        "privateKey": "[secret]",
        "dialErrorLimit": 10,
        "perDialTimeout": 15,
    }
    assert connections["sophia-ai-core-install"]["host"] == "192.0.2.11"
    assert {c["privateKey"] for c in connections.values()} == {"[secret]"}
    assert not [r for r in production_checks if r.name == "no secret value in the render" and r.violations]


def test_the_first_make_says_what_it_installs_and_how_long_before_the_venv_and_shows_pips_progress(
    tmp_path: Path,
) -> None:
    """`make render` on a fresh clone: one line first, then the venv, then pip without --quiet."""
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt"):
        shutil.copyfile(PROJECT_DIR / name, tmp_path / name)
    log = tmp_path / "calls.log"
    # A stand-in python: `-m venv DIR` makes DIR/bin/python (itself); anything else is logged.
    fake = tmp_path / "python3"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$0 $*" >> {log}\n'
        'if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; fi\n'
    )
    fake.chmod(0o755)
    run = subprocess.run(
        ["make", "--no-print-directory", f"PYTHON={fake}", ".venv/.installed"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    said = run.stdout.splitlines()
    assert said[0].startswith("make: first run: installing into .venv the pinned Pulumi SDK")
    assert "about 1-3 minutes" in said[0] and "pip's progress below" in said[0]
    calls = log.read_text().splitlines()
    assert calls[0].endswith("python3 -m venv .venv")
    (pip,) = [c for c in calls if " -m pip install " in c]
    assert "--quiet" not in pip and "-q" not in pip.split()
