"""A stack's secret config as Pulumi ESC hands it to the program, evaluated by ESC's own evaluator.

In production the stack file imports ESC environments (`environment: [sophia-ai/production]`), the
CLI opens them through the Pulumi Cloud and merges their `pulumiConfig` into the stack's config,
secrets secret. A file backend cannot open ESC, so the e2e does the service's part with `esc-project`
(tests/e2e/engine/esc, built by `make engine`): it reads the same stack file and the definitions in
esc/, sets each secret the way `esc env set <env> pulumiConfig.<key> <value> --secret` does (with the
render's stand-in values, or a test's own), evaluates them with github.com/pulumi/esc's evaluator and
projects `pulumiConfig` with the CLI's own code. What comes back is what the engine gives the program.

A definition that does not evaluate, or that lacks a secret the program needs (the program's own
settings check decides which), fails with one line per problem naming the definition and the key.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from components.settings.secrets import SECRET_SPECS
from components.settings.stack import ConfigError, load_settings
from render.stack import ESC_DIR, PROJECT_DIR, load_stack, stand_in

BINARY = "esc-project"
SECRET_NAMES = frozenset(spec.key.value for spec in SECRET_SPECS)


class EscError(Exception):
    """What is wrong with the ESC definitions of a stack, one `error: ...` line per problem."""


def stand_ins() -> dict[str, str]:
    """The value the render stands in for each secret of the program's catalogue, by its ESC key."""
    return {name: stand_in(name) for name in sorted(SECRET_NAMES)}


def _shown(path: Path) -> str:
    return str(path.relative_to(PROJECT_DIR)) if path.is_relative_to(PROJECT_DIR) else str(path)


def evaluate(
    bins: Path,
    stack: str,
    *,
    definitions: Path = ESC_DIR,
    values: Mapping[str, str] | None = None,
) -> dict[str, tuple[str, bool]]:
    """`{config key: (value, secret)}` of the stack's ESC environments, as the engine would receive them.

    `values`: ESC key (`sshPrivateKey`) -> the secret value to set; the render's stand-ins by default.
    Only the definitions' `fn::secret` placeholders are set: a key they lack is not added, and a plain
    or computed value stays as written, for the definitions are what is under test.
    """
    given = stand_ins() if values is None else dict(values)
    with tempfile.TemporaryDirectory(prefix="esc-") as scratch:
        values_file = Path(scratch) / "values.json"
        values_file.write_text(json.dumps({f"pulumiConfig.{key}": value for key, value in given.items()}))
        # Paths relative to the project, so that the messages name `esc/<file>` as an operator sees it.
        out = subprocess.run(
            [
                str(bins / BINARY),
                "-project",
                "Pulumi.yaml",
                "-stack",
                f"Pulumi.{stack}.yaml",
                "-definitions",
                _shown(definitions),
                "-stand-ins",
                str(values_file),
            ],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if out.returncode != 0:
        lines = [line for line in out.stderr.splitlines() if line.strip()] or [f"{BINARY} exited {out.returncode}"]
        raise EscError("\n".join(f"error: {line}" for line in lines))
    projected = json.loads(out.stdout)
    return {key: (entry["value"], bool(entry["secret"])) for key, entry in projected.items()}


def check(
    stack: str, plain: Mapping[str, str], projection: Mapping[str, tuple[str, bool]], *, definitions: Path = ESC_DIR
) -> None:
    """The program's own settings check on the stack's plain config plus the projection: a secret it
    needs that the definitions lack (or give as a plain value) is an EscError naming file and key.

    `plain`: the stack file's `config:` as the CLI hands it to the program (render.stack.load_stack's
    `config` without the ESC keys)."""
    project = load_stack(stack).project
    raw = dict(plain) | {key: value for key, (value, _) in projection.items()}
    secret_keys = frozenset(key for key, (_, secret) in projection.items() if secret)
    try:
        load_settings(stack, raw, secret_keys)
    except ConfigError as exc:
        files = ", ".join(_shown(definitions / f"{env.replace('/', '-')}.yaml") for env in imports(stack))
        lines = [
            f"error: {files}: pulumiConfig.{name}: {problem.message}"
            for problem in exc.problems
            for namespace, _, name in [problem.key.partition(":")]
            if namespace == project and name in SECRET_NAMES
        ]
        if lines:
            raise EscError("\n".join(lines)) from None
        # Anything else is the plain settings' business: the program reports it itself when it runs.


def imports(stack: str) -> list[str]:
    """The ESC environments the project's stack file imports."""
    data = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text()) or {}
    environments = data.get("environment") or []
    if isinstance(environments, dict):
        environments = environments.get("imports") or []
    return [str(env) for env in environments]


def esc_config(
    bins: Path,
    stack: str,
    plain: Mapping[str, str],
    *,
    definitions: Path = ESC_DIR,
    values: Mapping[str, str] | None = None,
) -> dict[str, tuple[str, bool]]:
    """`evaluate`, then `check`: the stack's ESC config, or an EscError."""
    projection = evaluate(bins, stack, definitions=definitions, values=values)
    check(stack, plain, projection, definitions=definitions)
    return projection
