"""No secret is empty or a placeholder, and every one comes from ESC as a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.settings.secrets import SECRET_SPECS, SecretKey
from components.settings.stack import ConfigError, load_settings
from render.stack import load_stack
from tests.support import production_document, write_stack


def _problems(tmp_path: Path, key: str, value: str | None, *, secret: bool = True) -> list[str]:
    stack = load_stack("production", stack_file=write_stack(tmp_path, production_document()))
    config = dict(stack.config)
    secret_keys = set(stack.secret_keys)
    full = f"sophia-infra:{key}"
    if value is None:
        del config[full]
    else:
        config[full] = value
    if not secret:
        secret_keys.discard(full)
    try:
        load_settings("production", config, frozenset(secret_keys))
    except ConfigError as error:
        return [str(p) for p in error.problems]
    return []


@pytest.mark.parametrize("value", ["", "   ", "changeme", "<openai key>", "${OPENAI}", "xxxxxxxxxxxxxxxxxxxx", "TODO"])
def test_an_empty_or_placeholder_secret_is_refused(tmp_path: Path, value: str) -> None:
    assert _problems(tmp_path, "openaiApiKey", value) == [
        "sophia-infra:openaiApiKey: is empty or a placeholder; set the real value in the ESC environment"
    ]


def test_the_esc_definition_placeholders_are_refused(tmp_path: Path) -> None:
    assert _problems(tmp_path, "openaiApiKey", "replace-with-the-openai-api-key") == [
        "sophia-infra:openaiApiKey: is empty or a placeholder; set the real value in the ESC environment"
    ]


def test_a_missing_secret_names_its_key(tmp_path: Path) -> None:
    assert _problems(tmp_path, "redisPassword", None) == [
        "sophia-infra:redisPassword: is required; it comes from the ESC environment (esc/), which the stack must import"
    ]


def test_a_secret_given_as_plain_config_is_refused(tmp_path: Path) -> None:
    assert _problems(tmp_path, "postgresPassword", "a-long-enough-password-1234", secret=False) == [
        "sophia-infra:postgresPassword: must be a secret (fn::secret in ESC, or `pulumi config set --secret`)"
    ]


def test_the_ssh_key_must_be_a_private_key(tmp_path: Path) -> None:
    assert _problems(tmp_path, "sshPrivateKey", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE/8SNRdonHWbMbr5J6I/fwLpr") == [
        "sophia-infra:sshPrivateKey: must be a PEM/OpenSSH private key ('-----BEGIN ... PRIVATE KEY-----')"
    ]


def test_the_argocd_admin_password_must_be_a_bcrypt_hash(tmp_path: Path) -> None:
    # The plain password would be accepted by Argo CD's Secret but never match at login.
    assert _problems(tmp_path, "argocdAdminPasswordBcrypt", "a-plain-admin-password-123") == [
        "sophia-infra:argocdAdminPasswordBcrypt: must be a bcrypt hash ('$2a$10$' and 53 characters),"
        " as `argocd account bcrypt` prints it"
    ]
    valid = "$2a$10$" + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"
    assert _problems(tmp_path, "argocdAdminPasswordBcrypt", valid) == []


def test_a_problem_line_never_shows_the_secret_value(tmp_path: Path) -> None:
    value = "short-secret"
    problems = _problems(tmp_path, "anthropicApiKey", value)
    assert problems
    assert all(value not in line for line in problems)


def test_every_secret_the_program_needs_is_a_known_key() -> None:
    assert {spec.key for spec in SECRET_SPECS} == set(SecretKey)
