"""`pulumi preview --policy-pack policy`: the CLI path operators and CI use, through the real engine.

The built CLI runs in a copy of the project folder: `runtime: python` through the language host
`make engine` built (`pulumi-language-python`), the program in the project's virtualenv (Pulumi.yaml
`virtualenv: .venv`, a link to the one running these tests), on a file backend. The policy pack
(policy/, `runtime: python` without a virtualenv of its own) runs on the first `python3` on PATH,
the project's virtualenv as policy/PulumiPolicy.yaml says (the language host's RunPlugin starts an
analyzer with `python -u -m pulumi.policy`, its toolchain without a virtualenv option looks up
`python3` on PATH: pulumi sdk/v3 python/toolchain/pip.go CommandPath). A preview runs no remote
command, so no machine is needed: the stack's own addresses stay as they are.

The stack file is the production stack's without its ESC import (a file backend cannot open ESC);
the ESC keys are set with `pulumi config set-all --secret`, with the values ESC projects
(tests/e2e/esc.py). What the pack did is read from the engine's own events (`--event-log`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from policy.pack import PACK_NAME
from policy.rules import RULES, STACK_RULES
from render.stack import PROJECT_DIR, load_stack
from tests.e2e.charts import ChartRepository
from tests.e2e.engine import PASSPHRASE, stack_file
from tests.e2e.esc import esc_config

STACK = "production"
TIMEOUT = 900  # seconds for one preview of the whole program on two shared cores
REGISTRY_POLICY = "images-from-the-configured-registry"
# What the project folder holds besides the program: not copied (the virtualenv is linked instead).
NOT_COPIED = (".git", ".venv", "build", "tests", "*cache*", ".hypothesis", "__pycache__", "Pulumi.*.yaml")


@dataclass
class Preview:
    returncode: int
    output: str
    events: list[dict[str, Any]]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event[kind] for event in self.events if kind in event]


class Project:
    """A copy of the project folder with a stack on a file backend, driven by the built CLI."""

    def __init__(self, bins: Path, root: Path) -> None:
        self.dir = root / "project"
        shutil.copytree(PROJECT_DIR, self.dir, ignore=shutil.ignore_patterns(*NOT_COPIED))
        venv = Path(sys.prefix)
        assert venv != Path(sys.base_prefix), "the e2e runs in the project's virtualenv (`make` builds .venv)"
        (self.dir / ".venv").symlink_to(venv)
        self.root = root
        home, backend = root / "pulumi-home", root / "backend"
        home.mkdir()
        backend.mkdir()
        self.env = {
            key: value for key, value in os.environ.items() if not key.startswith(("PULUMI_", "VIRTUAL_ENV", "PYTHON"))
        } | {
            # The built CLI and plugins first, then the virtualenv's python3 (the policy pack's).
            "PATH": os.pathsep.join([str(bins), str(venv / "bin"), os.environ.get("PATH", "")]),
            "PULUMI_HOME": str(home),
            "PULUMI_BACKEND_URL": backend.as_uri(),
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_DIY_BACKEND_NO_LEGACY_WARNING": "true",
        }
        self.bins = bins

    def pulumi(
        self, *args: str, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bins / "pulumi"), *args, "--non-interactive", "--color", "never"],
            cwd=self.dir,
            env=self.env | (env or {}),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def init(self, settings: dict[str, Any]) -> None:
        """The stack: its settings file's `config:`, and the ESC keys as stack secrets."""
        done = self.pulumi("stack", "init", STACK)
        assert done.returncode == 0, done.stderr
        path = self.dir / f"Pulumi.{STACK}.yaml"
        data = yaml.safe_load(path.read_text()) or {}
        data["config"] = settings
        path.write_text(yaml.safe_dump(data))
        plain = load_stack(STACK, stack_file=path).config
        projection = esc_config(self.bins, STACK, plain)
        secrets = [f"{key}={value}" for key, (value, secret) in sorted(projection.items()) if secret]
        assert len(secrets) == len(projection), "ESC gives the program secrets only"
        done = self.pulumi("config", "set-all", *(arg for pair in secrets for arg in ("--secret", pair)))
        assert done.returncode == 0, done.stderr

    def preview(self) -> Preview:
        # `--json` with streaming on: the engine's events, one JSON object a line (the CLI's
        # PULUMI_ENABLE_STREAMING_JSON_PREVIEW, as `pulumi preview --help` documents it).
        done = self.pulumi(
            "preview",
            "--policy-pack",
            "policy",
            "--stack",
            STACK,
            "--json",
            timeout=TIMEOUT,
            env={"PULUMI_ENABLE_STREAMING_JSON_PREVIEW": "true"},
        )
        events = []
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))
        return Preview(done.returncode, done.stdout + done.stderr, events)


@pytest.fixture
def settings(charts: ChartRepository) -> dict[str, Any]:
    """Production's settings, its charts from the e2e's mirror on 127.0.0.1 (`platform.chartMirror`, as
    an operator on a restricted network sets it): even a preview fetches each chart (the provider's
    Helm Release Check loads it), and the e2e sends nothing past the loopback."""
    config = dict(stack_file(load_stack(STACK))["config"])
    config["sophia-infra:platform"] = dict(config["sophia-infra:platform"]) | {"chartMirror": charts.url}
    return config


@pytest.fixture
def project(bins: Path, tmp_path: Path) -> Iterator[Project]:
    yield Project(bins, tmp_path)


def test_preview_with_the_policy_pack_runs_every_policy_inside_the_engine_and_passes(
    project: Project, settings: dict[str, Any]
) -> None:
    project.init(settings)
    preview = project.preview()
    assert preview.returncode == 0, preview.output[-4000:]
    summaries = [s for s in preview.of("policyAnalyzeSummaryEvent") if s["policyPackName"] == PACK_NAME]
    stack_summaries = [s for s in preview.of("policyAnalyzeStackSummaryEvent") if s["policyPackName"] == PACK_NAME]
    assert summaries, f"the engine ran no resource policy of {PACK_NAME}:\n{preview.output[-4000:]}"
    passed = {name for s in summaries for name in s.get("passed") or []}
    failed = {name for s in summaries + stack_summaries for name in s.get("failed") or []}
    assert passed == {rule.name for rule in RULES}
    assert {name for s in stack_summaries for name in s.get("passed") or []} == {rule.name for rule in STACK_RULES}
    assert not failed
    assert not preview.of("policyEvent")
    # Every resource the program registers was analyzed: the pack saw the whole program.
    steps = {e["resourceUrn"] for e in summaries}
    planned = {e["metadata"]["urn"] for e in preview.of("resourcePreEvent")}
    assert planned - steps <= {u for u in planned if "::pulumi:pulumi:Stack::" in u or "pulumi:providers:" in u}
    # The run's summary names the pack (`<name>|local|<folder>` for a local pack) and its version, as
    # `Policies: sophia-infra@v1.0.0 (local: policy)` in the CLI's text.
    version = yaml.safe_load((PROJECT_DIR / "policy" / "PulumiPolicy.yaml").read_text())["version"]
    assert [s["PolicyPacks"] for s in preview.of("summaryEvent")] == [{f"{PACK_NAME}|local|policy": version}]


def test_a_stack_that_breaks_a_policy_fails_the_preview_naming_it(project: Project, settings: dict[str, Any]) -> None:
    # The settings accept any registry ('<host>/<namespace>'); the pack allows only the configured one
    # (its `registry` config, default docker.io/scoobyjava15): a stack pulling from elsewhere is stopped.
    settings["sophia-infra:images"] = dict(settings["sophia-infra:images"]) | {"registry": "ghcr.io/elsewhere"}
    project.init(settings)
    preview = project.preview()
    assert preview.returncode != 0, preview.output[-4000:]
    violations = [e for e in preview.of("policyEvent") if e["policyPackName"] == PACK_NAME]
    assert violations, preview.output[-4000:]
    assert {e["policyName"] for e in violations} == {REGISTRY_POLICY}
    assert all(e["enforcementLevel"] == "mandatory" for e in violations)
    assert all("ghcr.io/elsewhere/" in e["message"] for e in violations)
    assert REGISTRY_POLICY in preview.output
