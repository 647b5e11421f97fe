"""Every secret the program needs. Each one comes from the Pulumi ESC environment.

The ESC definition in `esc/` provides exactly these keys under `values.pulumiConfig`; a test holds
the two sets equal. Values are read once, checked, and from then on exist only as secret Outputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import pulumi

from components.settings.reader import Problems


class SecretKind(StrEnum):
    API_TOKEN = "api-token"
    PASSWORD = "password"
    SSH_PRIVATE_KEY = "ssh-private-key"
    BCRYPT_HASH = "bcrypt-hash"


class SecretKey(StrEnum):
    """Config keys (in the `sophia-infra` namespace) of the secrets ESC provides."""

    SSH_PRIVATE_KEY = "sshPrivateKey"
    DOCKER_HUB_TOKEN = "dockerHubToken"
    OPENAI_API_KEY = "openaiApiKey"
    ANTHROPIC_API_KEY = "anthropicApiKey"
    PORTKEY_API_KEY = "portkeyApiKey"
    OPENROUTER_API_KEY = "openrouterApiKey"
    QDRANT_API_KEY = "qdrantApiKey"
    POSTGRES_PASSWORD = "postgresPassword"
    REDIS_PASSWORD = "redisPassword"
    GRAFANA_ADMIN_PASSWORD = "grafanaAdminPassword"
    BACKUP_ACCESS_KEY_ID = "backupAccessKeyId"
    BACKUP_SECRET_ACCESS_KEY = "backupSecretAccessKey"
    ARGOCD_ADMIN_PASSWORD_BCRYPT = "argocdAdminPasswordBcrypt"


@dataclass(frozen=True)
class SecretSpec:
    key: SecretKey
    kind: SecretKind
    purpose: str
    optional: bool = False
    """Needed only with the settings that use it; `components.settings.stack` says which and checks it."""


SECRET_SPECS: tuple[SecretSpec, ...] = (
    SecretSpec(SecretKey.SSH_PRIVATE_KEY, SecretKind.SSH_PRIVATE_KEY, "SSH login to every machine as the SSH user"),
    SecretSpec(SecretKey.DOCKER_HUB_TOKEN, SecretKind.API_TOKEN, "Docker Hub access token for the image pull secret"),
    SecretSpec(SecretKey.OPENAI_API_KEY, SecretKind.API_TOKEN, "OpenAI API"),
    SecretSpec(SecretKey.ANTHROPIC_API_KEY, SecretKind.API_TOKEN, "Anthropic API"),
    SecretSpec(SecretKey.PORTKEY_API_KEY, SecretKind.API_TOKEN, "Portkey, the primary LLM gateway"),
    SecretSpec(SecretKey.OPENROUTER_API_KEY, SecretKind.API_TOKEN, "OpenRouter, the fallback LLM gateway"),
    SecretSpec(SecretKey.QDRANT_API_KEY, SecretKind.API_TOKEN, "Qdrant Cloud, the vector store of ai-memory"),
    SecretSpec(
        SecretKey.POSTGRES_PASSWORD,
        SecretKind.PASSWORD,
        "PostgreSQL password of the application role sophia (CloudNativePG applies changes)",
    ),
    SecretSpec(SecretKey.REDIS_PASSWORD, SecretKind.PASSWORD, "Redis password"),
    SecretSpec(SecretKey.GRAFANA_ADMIN_PASSWORD, SecretKind.PASSWORD, "Grafana admin password"),
    SecretSpec(
        SecretKey.BACKUP_ACCESS_KEY_ID,
        SecretKind.API_TOKEN,
        "access key of the S3-compatible backup storage (cluster.backups)",
        optional=True,
    ),
    SecretSpec(
        SecretKey.BACKUP_SECRET_ACCESS_KEY,
        SecretKind.API_TOKEN,
        "secret key of the S3-compatible backup storage (cluster.backups)",
        optional=True,
    ),
    # Argo CD keeps only a bcrypt hash of its admin password (argocd-secret `admin.password`), and
    # nothing in this program can compute one; the operator keeps the password itself.
    SecretSpec(
        SecretKey.ARGOCD_ADMIN_PASSWORD_BCRYPT,
        SecretKind.BCRYPT_HASH,
        "bcrypt hash of the Argo CD admin password (`argocd account bcrypt --password ...`)",
    ),
)

MIN_LENGTH = {
    SecretKind.API_TOKEN: 16,
    SecretKind.PASSWORD: 16,
    SecretKind.SSH_PRIVATE_KEY: 64,
    SecretKind.BCRYPT_HASH: 60,
}

# Values people type while "filling it in later": the seed reports' empty secrets in other words.
PLACEHOLDER = re.compile(
    r"^\s*$|^<.*>$|^\$\{.*\}$|^x+$|^\*+$|^(?i:changeme|change[-_ ]me|placeholder|todo|tbd|fixme|secret|password"
    r"|none|null|dummy|example|test|redacted)$|^(?i:your|replace|insert|fill)[-_ ]",
)
# `$2a$`/`$2b$`/`$2y$`, a two-digit cost, 22 characters of salt and 31 of hash (bcrypt's own base64).
BCRYPT = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
PEM_PRIVATE_KEY = re.compile(
    r"^-----BEGIN ([A-Z]+ )?PRIVATE KEY-----\n.+\n-----END ([A-Z]+ )?PRIVATE KEY-----\n?$", re.S
)


@dataclass(frozen=True)
class Secrets:
    """The secret values, as secret Outputs only."""

    values: Mapping[SecretKey, pulumi.Output[str]]

    def __getitem__(self, key: SecretKey) -> pulumi.Output[str]:
        return self.values[key]


MISSING_SECRET = "is required; it comes from the ESC environment (esc/), which the stack must import"


def check_secret(spec: SecretSpec, value: str) -> str | None:
    """What is wrong with a secret value, or None. The value itself never appears in the message."""
    if PLACEHOLDER.search(value):
        return "is empty or a placeholder; set the real value in the ESC environment"
    if spec.kind is SecretKind.SSH_PRIVATE_KEY and not PEM_PRIVATE_KEY.match(value):
        return "must be a PEM/OpenSSH private key ('-----BEGIN ... PRIVATE KEY-----')"
    if spec.kind is SecretKind.BCRYPT_HASH and not BCRYPT.match(value):
        return "must be a bcrypt hash ('$2a$10$' and 53 characters), as `argocd account bcrypt` prints it"
    if len(value.strip()) < MIN_LENGTH[spec.kind]:
        return f"is too short for {spec.kind.value} (at least {MIN_LENGTH[spec.kind]} characters)"
    if spec.kind is not SecretKind.SSH_PRIVATE_KEY and any(c.isspace() for c in value):
        return "must not contain white space"
    return None


def read_secrets(namespace: str, raw: Mapping[str, str], secret_keys: frozenset[str], problems: Problems) -> Secrets:
    values: dict[SecretKey, pulumi.Output[str]] = {}
    for spec in SECRET_SPECS:
        path = f"{namespace}:{spec.key.value}"
        value = raw.get(path)
        if value is None:
            if not spec.optional:
                problems.add(path, MISSING_SECRET)
            continue
        if path not in secret_keys:
            problems.add(path, "must be a secret (fn::secret in ESC, or `pulumi config set --secret`)")
            continue
        wrong = check_secret(spec, value)
        if wrong:
            problems.add(path, wrong)
            continue
        values[spec.key] = pulumi.Output.secret(value)
    return Secrets(values)
