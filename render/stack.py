"""A stack's configuration as `pulumi up` would hand it to the program, with ESC secrets stood in for."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.settings.errors import ConfigError, Problem
from components.settings.secrets import SECRET_SPECS, SecretKind

PROJECT_DIR = Path(__file__).resolve().parent.parent
ESC_DIR = PROJECT_DIR / "esc"


class StackFileError(Exception):
    """The stack or ESC file itself cannot be read (not a configuration value problem)."""


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    config: dict[str, str]
    secret_keys: frozenset[str]
    stand_ins: dict[str, str]
    """Each ESC secret key and the value the render gives it; none of them may reach the output."""


def stand_in(key: str) -> str:
    """A value that passes the program's checks for the secret's kind and is easy to search for."""
    digest = hashlib.sha256(f"sophia-render:{key}".encode()).hexdigest()
    kinds = {spec.key.value: spec.kind for spec in SECRET_SPECS}
    if kinds.get(key) is SecretKind.SSH_PRIVATE_KEY:
        return f"-----BEGIN OPENSSH PRIVATE KEY-----\nrendered{digest}{digest}\n-----END OPENSSH PRIVATE KEY-----\n"
    if kinds.get(key) is SecretKind.BCRYPT_HASH:
        salt_and_hash = "".join(c for c in base64.b64encode(bytes.fromhex(digest + digest)).decode() if c.isalnum())
        return f"$2a$10${salt_and_hash[:53]}"
    return f"rendered-{key}-{digest[:32]}"


def _config_text(value: Any) -> str:
    # The CLI hands the program plain strings as they are and everything else as JSON.
    return value if isinstance(value, str) else json.dumps(value)


def _shown(path: Path) -> str:
    """How an error names a file: relative to the project when it is in it."""
    return str(path.relative_to(PROJECT_DIR)) if path.is_relative_to(PROJECT_DIR) else str(path)


def _step(path: str, key: str) -> str:
    # `config:` is the file's, not the key's: keys under it are named as `pulumi config` names them.
    return key if path in ("", "config") else f"{path}.{key}"


def _written_twice(node: yaml.Node, path: str, file: str) -> list[Problem]:
    """Keys a mapping of the file holds twice; YAML loaders keep the last one without a word."""
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        lines: dict[object, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None and key in lines:
                problems.append(
                    Problem(_step(path, str(key)), f"is written twice in {file}, on lines {lines[key]} and {line}")
                )
            elif key is not None:
                lines[key] = line
            problems += _written_twice(value_node, _step(path, str(key)), file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _written_twice(item, f"{path}[{i}]", file)
    return problems


def _parse(text: str, file: str, loader_class: type[yaml.SafeLoader]) -> object:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        twice = _written_twice(node, "", file) if node is not None else []
        if twice:
            raise ConfigError(twice)
        return loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def _load_yaml(path: Path) -> dict[str, Any]:
    file = _shown(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise StackFileError(f"{file}: {exc.strerror}") from None
    try:
        # libyaml when PyYAML has it (ten times faster); its error messages are terser, so a file it
        # refuses is parsed again by the pure-Python loader for the message.
        data = _parse(text, file, getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        try:
            data = _parse(text, file, yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            # One line with the place, instead of PyYAML's several lines quoting the text.
            mark = exc.problem_mark or exc.context_mark
            where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark is not None else file
            opened = (
                f" ({exc.context} on line {exc.context_mark.line + 1})"
                if exc.context and exc.context_mark is not None and exc.problem_mark is not None
                else ""
            )
            raise StackFileError(f"{where}: {exc.problem or exc.context}{opened}") from None
        except yaml.YAMLError as exc:
            raise StackFileError(f"{file}: {str(exc).splitlines()[0]}") from None
        raise StackFileError(f"{file}: not YAML that PyYAML reads") from None
    if not isinstance(data, dict):
        raise StackFileError(f"{file}: must be a YAML mapping")
    return data


def esc_environment_file(name: str) -> Path:
    """`sophia-ai/production` is defined in `esc/sophia-ai-production.yaml`."""
    return ESC_DIR / f"{name.replace('/', '-')}.yaml"


def esc_config_keys(name: str) -> dict[str, bool]:
    """The `pulumiConfig` keys an ESC environment provides, and whether each is a secret."""
    values = _load_yaml(esc_environment_file(name)).get("values") or {}
    pulumi_config = values.get("pulumiConfig") or {}
    return {key: isinstance(v, dict) and "fn::secret" in v for key, v in pulumi_config.items()}


def stack_names(project_dir: Path = PROJECT_DIR) -> list[str]:
    """Every stack of the project: one `Pulumi.<stack>.yaml` each."""
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in project_dir.glob("Pulumi.*.yaml"))


def load_stack(stack: str, project_dir: Path = PROJECT_DIR, stack_file: Path | None = None) -> StackConfig:
    project = str(_load_yaml(project_dir / "Pulumi.yaml")["name"])
    data = _load_yaml(stack_file or project_dir / f"Pulumi.{stack}.yaml")
    environments = data.get("environment") or []
    if isinstance(environments, dict):
        environments = environments.get("imports") or []
    config: dict[str, str] = {}
    secret_keys: set[str] = set()
    stand_ins: dict[str, str] = {}
    for env in environments:
        if not esc_environment_file(str(env)).exists():
            raise StackFileError(f"ESC environment {env!r} has no definition in esc/")
        for key, secret in esc_config_keys(str(env)).items():
            full = key if ":" in key else f"{project}:{key}"
            if not secret:
                raise StackFileError(f"ESC environment {env!r}: pulumiConfig.{key} must be an fn::secret")
            stand_ins[full] = stand_in(key.split(":")[-1])
            config[full] = stand_ins[full]
            secret_keys.add(full)
    plain = data.get("config") or {}
    if not isinstance(plain, dict):
        raise StackFileError(f"Pulumi.{stack}.yaml: config must be a mapping")
    for key, value in plain.items():
        full = key if ":" in str(key) else f"{project}:{key}"
        if isinstance(value, dict) and "secure" in value:
            raise StackFileError(f"Pulumi.{stack}.yaml: {full} is an encrypted value; secrets belong in ESC")
        config[full] = _config_text(value)
    return StackConfig(project, stack, config, frozenset(secret_keys), stand_ins)
