"""Stack configurations for tests: the production one, and variations of it."""

from __future__ import annotations

import copy
import shlex
from pathlib import Path
from typing import Any

import yaml

from components.settings.stack import ConfigError, Settings, load_settings
from render.stack import PROJECT_DIR, StackConfig, load_stack

# libyaml: the bad-input test reads and writes a stack file for each of its hundreds of examples.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_PRODUCTION = yaml.load((PROJECT_DIR / "Pulumi.production.yaml").read_text(), Loader=_LOADER)


def production_document() -> dict[str, Any]:
    """Pulumi.production.yaml as data, a fresh copy each call."""
    return copy.deepcopy(_PRODUCTION)


def stack_text(document: dict[str, Any]) -> str:
    """The text of a stack file holding `document`, as write_stack writes it."""
    return yaml.dump(document, Dumper=_DUMPER, sort_keys=False)


def write_stack(directory: Path, document: dict[str, Any], stack: str = "production") -> Path:
    path = directory / f"Pulumi.{stack}.yaml"
    path.write_text(stack_text(document))
    return path


def stack_from(directory: Path, document: dict[str, Any]) -> StackConfig:
    return load_stack("production", stack_file=write_stack(directory, document))


def settings_from(directory: Path, document: dict[str, Any]) -> Settings:
    stack = stack_from(directory, document)
    return load_settings(stack.stack, stack.config, stack.secret_keys)


def problems_of(directory: Path, document: dict[str, Any]) -> list[str]:
    """The `<key>: <message>` lines a configuration fails with (empty when it is valid)."""
    try:
        settings_from(directory, document)
    except ConfigError as error:
        return [str(p) for p in error.problems]
    return []


def script_exports(script: str) -> dict[str, str]:
    """The settings a composed node script starts with: its `export NAME=value` lines, read as bash
    reads them (a value may span lines: the K3s config and systemd unit do)."""
    lexer = shlex.shlex(script[script.index("\nexport ") :], posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    values: dict[str, str] = {}
    while lexer.get_token() == "export":
        name, value = str(lexer.get_token()).split("=", 1)
        values[name] = value
    return values
