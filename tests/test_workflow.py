"""The GitHub workflow: valid for GitHub, pinned, OIDC-only, and running what the README says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from render.stack import PROJECT_DIR, stack_names

WORKFLOWS = sorted((PROJECT_DIR / ".github" / "workflows").glob("*.y*ml"))
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v\d+\.\d+\.\d+\s*$")


def _check_jsonschema(*paths: Path) -> subprocess.CompletedProcess[str]:
    checker = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )


def _load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    # YAML 1.1 reads the bare key `on` as the boolean true.
    if True in document:
        document["on"] = document.pop(True)
    return document


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return _load(PROJECT_DIR / ".github" / "workflows" / "pulumi.yml")


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["steps"])


def _uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in _steps(job) if str(s.get("uses", "")).split("@")[0] == action]


def test_every_workflow_is_valid_against_the_github_workflow_schema() -> None:
    assert WORKFLOWS, "no workflow in .github/workflows"
    result = _check_jsonschema(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dependabot_keeps_the_pinned_actions_current() -> None:
    path = PROJECT_DIR / ".github" / "dependabot.yml"
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.dependabot", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    updates = yaml.safe_load(path.read_text())["updates"]
    assert {u["package-ecosystem"] for u in updates} == {"github-actions"}


def test_the_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        yaml.safe_dump({"name": "x", "on": "push", "jobs": {"a": {"runs-on": "ubuntu-24.04", "step": []}}})
    )
    result = _check_jsonschema(broken)
    assert result.returncode == 1
    assert "broken.yml" in result.stdout + result.stderr


def test_every_action_is_pinned_to_a_commit_with_its_version_noted() -> None:
    for path in WORKFLOWS:
        lines = [line for line in path.read_text().splitlines() if re.match(r"^\s*(-\s+)?uses:", line)]
        assert lines, f"{path.name} uses no action"
        for line in lines:
            reference = line.split("uses:", 1)[1].split("#", 1)[0].strip()
            if reference.startswith("./"):
                continue
            assert PINNED.match(reference), f"{path.name}: {reference} is not pinned to a full commit SHA"
            assert VERSION_COMMENT.search(line), f"{path.name}: {reference} has no '# vX.Y.Z' comment"


def test_the_workflow_stores_no_long_lived_credentials(workflow: dict[str, Any]) -> None:
    text = (PROJECT_DIR / ".github" / "workflows" / "pulumi.yml").read_text()
    assert "secrets." not in text
    assert "PULUMI_ACCESS_TOKEN" not in text
    assert workflow["permissions"] == {}


def test_pull_requests_run_preview_with_oidc_and_comment_the_plan_on_the_pr(workflow: dict[str, Any]) -> None:
    assert set(workflow["on"]) == {"pull_request", "push"}
    preview = workflow["jobs"]["preview"]
    assert "pull_request" in preview["if"]
    assert preview["permissions"] == {"contents": "read", "id-token": "write", "pull-requests": "write"}
    steps = _steps(preview)
    names = [str(s.get("uses", s.get("run"))).split("@")[0] for s in steps]
    (auth,) = _uses(preview, "pulumi/auth-actions")
    assert auth["with"]["requested-token-type"] == "urn:pulumi:token-type:access_token:organization"
    (cli,) = _uses(preview, "pulumi/actions")
    assert "command" not in cli["with"], "the action only installs the CLI; the preview runs below"
    assert cli["with"]["pulumi-version"] == "${{ env.PULUMI_VERSION }}"
    runs = [str(s.get("run", "")) for s in steps]
    (render,) = [i for i, r in enumerate(runs) if r == "make render"]
    (run,) = [i for i, r in enumerate(runs) if "render.preview_comment" in r]
    (post,) = [i for i, r in enumerate(runs) if r.startswith("gh pr comment")]
    assert render < names.index("pulumi/auth-actions") < names.index("pulumi/actions") < run < post
    # The comment is the plan of this pull request's render, marked from this preview of this stack.
    assert runs[run].split() == [
        "python", "-m", "render.preview_comment", "--stack", '"$PULUMI_ORG/$PULUMI_STACK"',
        "--render", "build/production", "--out", "preview-comment.md",
    ]  # fmt: skip
    assert runs[post].split() == [
        "gh", "pr", "comment", '"$PR"', "--edit-last", "--create-if-none", "--body-file", "preview-comment.md",
    ]  # fmt: skip
    assert steps[post]["env"]["PR"] == "${{ github.event.pull_request.number }}"
    assert steps[post]["env"]["GH_TOKEN"] == "${{ github.token }}"
    assert steps[post]["if"].startswith("${{ !cancelled()"), "a failed preview is commented too"
    assert workflow["env"]["PULUMI_STACK"] == "production"
    # The preview the script runs is the one the old action ran: the diff, the policy pack, no outputs.
    source = (PROJECT_DIR / "render" / "preview_comment.py").read_text()
    assert re.search(r"diff=True,\s+policy_packs=\[str\(policy_pack\)\],\s+suppress_outputs=True,", source)


def test_main_runs_up_behind_the_protected_environment_one_at_a_time(workflow: dict[str, Any]) -> None:
    up = workflow["jobs"]["up"]
    assert up["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert up["environment"] == "production"
    assert up["concurrency"]["cancel-in-progress"] is False
    assert up["permissions"] == {"contents": "read", "id-token": "write"}
    (pulumi,) = _uses(up, "pulumi/actions")
    assert pulumi["with"]["command"] == "up"
    assert pulumi["with"]["policyPacks"] == "policy"
    assert up["needs"] == "check"
    assert workflow["jobs"]["preview"]["needs"] == "check"


STACKS = stack_names()


def test_every_run_tests_renders_every_stack_and_uploads_the_render(workflow: dict[str, Any]) -> None:
    check = workflow["jobs"]["check"]
    assert "if" not in check
    assert check["permissions"] == {"contents": "read"}, "the offline checks need no token"
    commands = [s["run"] for s in _steps(check) if "run" in s]
    assert commands[0] == "make test"
    assert sorted(commands[1:]) == sorted(
        "make render" if stack == "production" else f"make render STACK={stack}" for stack in STACKS
    )
    (upload,) = _uses(check, "actions/upload-artifact")
    assert sorted(upload["with"]["path"].split()) == [f"build/{stack}/" for stack in STACKS]
    readme = (PROJECT_DIR / "README.md").read_text()
    assert "make test" in readme and "make render" in readme


def test_the_render_is_made_and_uploaded_also_when_a_test_failed(workflow: dict[str, Any]) -> None:
    """A step after a failed one runs only if its `if` says so; `!cancelled()` runs it after a failure."""
    steps = _steps(workflow["jobs"]["check"])
    after_tests = steps[[s.get("run") for s in steps].index("make test") + 1 :]
    assert after_tests, "nothing runs after the tests"
    for step in after_tests:
        assert step.get("if") == "${{ !cancelled() }}", step.get("name")


def test_ci_renders_every_stack_even_when_a_test_failed(tmp_path: Path) -> None:
    """.ci/run with a `make` whose tests fail: every stack is still rendered, the e2e still runs, and
    the run still fails."""
    log = tmp_path / "make.log"
    fake = tmp_path / "make"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n[ "$1" != test ]\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    run = subprocess.run([str(PROJECT_DIR / ".ci" / "run")], env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 1
    assert log.read_text().splitlines() == ["test", *(f"render STACK={stack}" for stack in STACKS), "e2e"]


def test_the_pulumi_jobs_build_the_venv_the_makefile_builds(workflow: dict[str, Any]) -> None:
    makefile = (PROJECT_DIR / "Makefile").read_text()
    assert "VENV   := .venv" in makefile and "$(VENV)/.installed:" in makefile
    for name in ("preview", "up"):
        commands = "\n".join(s.get("run", "") for s in _steps(workflow["jobs"][name]))
        assert "make .venv/.installed" in commands
        assert '"$PWD/.venv/bin" >> "$GITHUB_PATH"' in commands


def test_the_pulumi_cli_and_python_match_the_pinned_sdk(workflow: dict[str, Any]) -> None:
    pins = dict(
        line.split("==", 1) for line in (PROJECT_DIR / "requirements.txt").read_text().splitlines() if "==" in line
    )
    assert workflow["env"]["PULUMI_VERSION"] == pins["pulumi"]
    for job in workflow["jobs"].values():
        for step in _uses(job, "actions/setup-python"):
            assert step["with"]["python-version"] == "3.11"


def test_the_policy_pack_pins_what_the_project_pins() -> None:
    def pins(path: Path) -> dict[str, str]:
        return dict(line.split("==", 1) for line in path.read_text().splitlines() if "==" in line)

    project = pins(PROJECT_DIR / "requirements.txt") | pins(PROJECT_DIR / "requirements-dev.txt")
    pack = pins(PROJECT_DIR / "policy" / "requirements.txt")
    assert pack == {name: project[name] for name in pack}
    assert set(pack) == {"pulumi", "pulumi-policy"}
