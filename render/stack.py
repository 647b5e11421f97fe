"""A stack's configuration as `pulumi up` would hand it to the program, with ESC secrets stood in for."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

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


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StackFileError(f"{path.name}: {exc}") from None
    if not isinstance(data, dict):
        raise StackFileError(f"{path.name}: must be a YAML mapping")
    return data


def esc_environment_file(name: str) -> Path:
    """`sophia-ai/production` is defined in `esc/sophia-ai-production.yaml`."""
    return ESC_DIR / f"{name.replace('/', '-')}.yaml"


def esc_config_keys(name: str) -> dict[str, bool]:
    """The `pulumiConfig` keys an ESC environment provides, and whether each is a secret."""
    values = _load_yaml(esc_environment_file(name)).get("values") or {}
    pulumi_config = values.get("pulumiConfig") or {}
    return {key: isinstance(v, dict) and "fn::secret" in v for key, v in pulumi_config.items()}


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
