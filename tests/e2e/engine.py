"""The real Pulumi engine for the e2e: the CLI and plugins `make engine` built, driven through pulumi.automation.

The program runs inline (pulumi.automation with `program=`): this process serves the language
runtime itself and the CLI connects to it, so no `pulumi-language-python` plugin is needed (its
module is not served by the Go module proxy). The kubernetes provider is the binary on `PATH`, and
the engine is told never to download a plugin: a missing one fails the run instead.
"""

from __future__ import annotations

import enum
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pulumi import automation as auto

from render.stack import ESC_DIR, PROJECT_DIR, StackConfig, load_stack
from tests.e2e.esc import esc_config, stand_ins

ENGINE_DIR = Path(__file__).resolve().parent / "engine"
BINARIES = (
    "pulumi",
    "pulumi-language-python",
    "pulumi-language-python-exec",
    "pulumi-resource-kubernetes",
    "pulumi-resource-command",
    "pulumi-resource-random",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "etcd",
    "esc-project",
    "kwok",
)
# The engine says which plugin binary it runs, and that its version is not the SDK's (4.34.2).
PLUGIN_NOTE = re.compile(
    r"using pulumi-resource-(?P<plugin>[a-z]+) from \$PATH at (?P<path>\S+)$"
    r"|resource plugin (?P<name>[a-z]+) is expected to have version >=(?P<wanted>\S+), but has (?P<has>\S+);"
)
PASSPHRASE = "sophia-e2e"  # protects a throwaway file backend in a temporary directory


def versions() -> dict[str, str]:
    """tests/e2e/engine/versions.env: what `make engine` and `make apiserver` build."""
    pins: dict[str, str] = {}
    for line in (ENGINE_DIR / "versions.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pins[key] = value
    return pins


def bin_dir() -> Path:
    """The directory build.sh linked every binary into (`SOPHIA_E2E_BIN`, as `make e2e` sets it)."""
    configured = os.environ.get("SOPHIA_E2E_BIN")
    if configured:
        path = Path(configured)
    else:
        out = subprocess.run([str(ENGINE_DIR / "build.sh"), "--bin-dir"], check=True, capture_output=True, text=True)
        path = Path(out.stdout.strip())
    missing = [b for b in BINARIES if not os.access(path / b, os.X_OK)]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not built in {path}: run `make engine apiserver` (or `make e2e`)")
    return path


@dataclass
class Run:
    """What the engine did in one operation, from its own events."""

    operation: str
    steps: list[tuple[str, str, str]] = field(default_factory=list)
    """(op, type, urn) of every step the engine ran, in the order it started them."""
    changes: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """Warning and error diagnostics, with the URN they concern (but for the plugin notes below)."""
    plugin_notes: list[str] = field(default_factory=list)
    """The engine's own warnings that it runs the provider from PATH, at a version other than the SDK's."""
    detailed: dict[str, list[str]] = field(default_factory=dict)
    """URN -> the property paths the engine found changed."""

    errors: list[str] = field(default_factory=list)
    """Events this record could not read: the SDK only warns about a failing callback, so they are kept."""
    events: list[str] = field(default_factory=list)
    """Every engine event, whole, as text: what a log of the run would hold (the secret checks read it)."""
    started: dict[str, float] = field(default_factory=dict)
    """URN -> when (time.time()) the engine started its step."""
    finished: dict[str, float] = field(default_factory=dict)
    """URN -> when its step finished and its outputs were recorded (a step that failed has none)."""

    def on_event(self, event: auto.EngineEvent) -> None:
        try:
            self._record(event)
        except Exception as exc:  # kept, and raised by Engine.run once the operation ends
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _record(self, event: auto.EngineEvent) -> None:
        self.events.append(repr(_plain(event)))
        pre = event.resource_pre_event
        if pre is not None:
            meta = pre.metadata
            self.steps.append((_text(meta.op), meta.type, meta.urn))
            self.started[meta.urn] = time.time()
            if meta.diffs or meta.detailed_diff:
                self.detailed[meta.urn] = sorted(set(meta.diffs or []) | set((meta.detailed_diff or {}).keys()))
        outputs = event.res_outputs_event
        if outputs is not None:
            self.finished[outputs.metadata.urn] = time.time()
        diagnostic = event.diagnostic_event
        if diagnostic is not None and diagnostic.severity in ("warning", "error"):
            message = diagnostic.message.strip()
            if diagnostic.severity == "warning" and PLUGIN_NOTE.match(message):
                self.plugin_notes.append(message)
            else:
                self.warnings.append(f"{diagnostic.severity}: {diagnostic.urn or '-'}: {message}")
        summary = event.summary_event
        if summary is not None:
            self.changes = {_text(op): n for op, n in summary.resource_changes.items()}

    def changed(self) -> list[tuple[str, str, str]]:
        return [s for s in self.steps if s[0] not in ("same", "read", "refresh")]

    def describe(self) -> str:
        counts = ", ".join(f"{op} {n}" for op, n in sorted(self.changes.items())) or "no summary"
        lines = [f"{self.operation}: {counts}"]
        ops = Counter((op, typ) for op, typ, _ in self.changed())
        lines += [f"    {op:<20} {n:>3} x {typ}" for (op, typ), n in sorted(ops.items())]
        return "\n".join(lines)


def _plain(value: object, depth: int = 0) -> object:
    """An event as plain data, every field of every nested object included."""
    if depth > 30:
        return repr(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if hasattr(value, "__dict__"):
        return {k: _plain(v, depth + 1) for k, v in vars(value).items()}
    return value


def _text(op: object) -> str:
    """An OpType as its text (the SDK hands some as enums and the summary's keys as plain strings)."""
    value = getattr(op, "value", op)
    return str(value)


def name_of(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


@dataclass
class Engine:
    """A stack of the project on a file backend in a temporary directory, run by the built CLI."""

    stack: auto.Stack
    home: Path
    config: StackConfig
    log: list[str]
    runs: list[Run] = field(default_factory=list)

    def run(self, operation: str, **kwargs: Any) -> Run:
        """`up`, `preview`, `refresh` or `destroy`, recording what the engine did."""
        run = Run(operation)
        self.runs.append(run)
        method = getattr(self.stack, operation)
        try:
            method(on_event=run.on_event, color="never", **kwargs)
        except auto.CommandError:
            run.operation += " (failed)"
            self.log.append(run.describe())
            raise
        self.log.append(run.describe())
        if run.errors:
            raise AssertionError(f"{operation}: engine events not understood: {run.errors}")
        return run


def stack_file(config: StackConfig, path: Path | None = None) -> dict[str, Any]:
    """The stack's settings file (`path`, else the project's) without its ESC import; the ESC keys are
    set as stack secrets instead.

    A file backend cannot open ESC environments. The plain values stay structured YAML, as in
    Pulumi.production.yaml, so the engine hands them to the program exactly as it does in production.
    """
    data = yaml.safe_load((path or PROJECT_DIR / f"Pulumi.{config.stack}.yaml").read_text())
    return {"config": data.get("config") or {}}


def open_engine(
    bins: Path,
    root: Path,
    program: Callable[[], None],
    log: list[str],
    stack_name: str = "production",
    *,
    stack_path: Path | None = None,
    settings: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    esc_definitions: Path = ESC_DIR,
) -> Engine:
    """`stack_path`: a settings file of the stack other than the project's (a variant of it);
    `settings`: the stack file's `config:` to use instead; `secrets`: ESC keys (without the project
    prefix) whose stand-in values the test replaces (a real SSH key, say).

    The secret config comes from the stack's ESC environments as ESC projects them (tests/e2e/esc.py),
    so a definition in esc/ (or `esc_definitions`) that does not evaluate or lacks a key fails here,
    before the engine runs."""
    config = load_stack(stack_name, stack_file=stack_path)
    project = config.project
    home, backend, work = root / "pulumi-home", root / "backend", root / "work"
    for d in (home, backend, work):
        d.mkdir(parents=True)
    contents = stack_file(config, stack_path) if settings is None else {"config": settings}
    (work / f"Pulumi.{stack_name}.yaml").write_text(yaml.safe_dump(contents))
    env = {
        "PATH": f"{bins}{os.pathsep}{os.environ.get('PATH', '')}",
        "PULUMI_HOME": str(home),
        "PULUMI_BACKEND_URL": backend.as_uri(),
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        # A plugin the engine does not find on PATH fails the run; nothing is ever downloaded.
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_DIY_BACKEND_NO_LEGACY_WARNING": "true",
        # Helm, inside the provider, keeps its repository index and chart cache with the stack, not in ~.
        "HELM_CACHE_HOME": str(root / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(root / "helm" / "config"),
        "HELM_DATA_HOME": str(root / "helm" / "data"),
    }
    workspace = auto.LocalWorkspaceOptions(
        work_dir=str(work),
        pulumi_home=str(home),
        env_vars=env,
        project_settings=auto.ProjectSettings(
            name=project, runtime="python", backend=auto.ProjectBackend(url=backend.as_uri())
        ),
        pulumi_command=auto.PulumiCommand(root=str(bins.parent)),
    )
    stack = auto.create_or_select_stack(stack_name=stack_name, project_name=project, program=program, opts=workspace)
    # The ESC keys as ESC projects them (tests/e2e/esc.py): the stack's definitions in esc/, each
    # secret set to the render's stand-in or the test's own value, evaluated by ESC's evaluator.
    plain = load_stack(stack_name, stack_file=work / f"Pulumi.{stack_name}.yaml").config
    projection = esc_config(
        bins, stack_name, plain, definitions=esc_definitions, values=stand_ins() | dict(secrets or {})
    )
    stack.set_all_config({key: auto.ConfigValue(value, secret=secret) for key, (value, secret) in projection.items()})
    config.stand_ins.update({key: value for key, (value, secret) in projection.items() if secret})
    return Engine(stack, home, config, log)
