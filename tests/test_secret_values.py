"""Every secret carries the value of the ESC key it claims, in every stack.

The public render shows each secret as `[secret]`, so two secrets swapped between keys render the
same. Here each stack is rendered once more with the secrets revealed: every ESC key has a stand-in
value of its own (render.stack.stand_in), so a Secret key, an environment variable, a file or an SSH
connection that carries another key's value shows it. What each place claims is stated here, apart
from the code that fills it: by the ESC key's name for an environment variable (OPENAI_API_KEY is
openaiApiKey), by the tables below for everything else.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from components.settings.secrets import SecretKey
from render import engine
from render.model import Rendered, build
from render.stack import StackConfig, load_stack

# Each key of each Secret the program makes, and the ESC key whose value it holds.
SECRET_KEYS: dict[tuple[str, str], SecretKey] = {
    ("sophia-backend-secrets", "OPENAI_API_KEY"): SecretKey.OPENAI_API_KEY,
    ("sophia-backend-secrets", "ANTHROPIC_API_KEY"): SecretKey.ANTHROPIC_API_KEY,
    ("sophia-backend-secrets", "PORTKEY_API_KEY"): SecretKey.PORTKEY_API_KEY,
    ("sophia-backend-secrets", "OPENROUTER_API_KEY"): SecretKey.OPENROUTER_API_KEY,
    ("sophia-backend-secrets", "POSTGRES_PASSWORD"): SecretKey.POSTGRES_PASSWORD,
    ("sophia-backend-secrets", "REDIS_PASSWORD"): SecretKey.REDIS_PASSWORD,
    ("ai-memory-secrets", "OPENAI_API_KEY"): SecretKey.OPENAI_API_KEY,
    ("ai-memory-secrets", "QDRANT_API_KEY"): SecretKey.QDRANT_API_KEY,
    ("redis-secrets", "REDIS_PASSWORD"): SecretKey.REDIS_PASSWORD,
    # CloudNativePG's managed role reads `password` of its basic-auth Secret.
    ("postgres-app", "password"): SecretKey.POSTGRES_PASSWORD,
    ("grafana-admin", "admin-password"): SecretKey.GRAFANA_ADMIN_PASSWORD,
    ("argocd-secret", "admin.password"): SecretKey.ARGOCD_ADMIN_PASSWORD_BCRYPT,
    ("postgres-backups-s3", "ACCESS_KEY_ID"): SecretKey.BACKUP_ACCESS_KEY_ID,
    ("postgres-backups-s3", "ACCESS_SECRET_KEY"): SecretKey.BACKUP_SECRET_ACCESS_KEY,
    # K3s's etcd S3 config Secret (k3s-io/k3s pkg/etcd/s3/config_secret.go: etcd-s3-access-key, -secret-key).
    ("k3s-etcd-s3", "etcd-s3-access-key"): SecretKey.BACKUP_ACCESS_KEY_ID,
    ("k3s-etcd-s3", "etcd-s3-secret-key"): SecretKey.BACKUP_SECRET_ACCESS_KEY,
}
# Secret keys that are files with a secret inside: the ESC key, and the secret read out of the file.
REDIS_CONF = re.compile(r'^requirepass "(.*)"$', re.M)


def _registry_password(text: str) -> list[str]:
    auths = json.loads(text)["auths"].values()
    # `auth` is base64 of user:token, which the kubelet sends; `password` the token itself.
    return [a["password"] for a in auths] + [base64.b64decode(a["auth"]).decode().split(":", 1)[1] for a in auths]


SECRET_FILES: dict[tuple[str, str], tuple[SecretKey, Callable[[str], list[str]]]] = {
    ("redis-config", "redis.conf"): (SecretKey.REDIS_PASSWORD, REDIS_CONF.findall),
    ("registry-pull", ".dockerconfigjson"): (SecretKey.DOCKER_HUB_TOKEN, _registry_password),
}
# Environment variables whose name is not the ESC key's own.
ENV_CLAIMS = {"GF_SECURITY_ADMIN_PASSWORD": SecretKey.GRAFANA_ADMIN_PASSWORD}
# References to a Secret key that chart or operator values make, by the field that names them.
REFERENCE_CLAIMS = {
    "accessKeyId": SecretKey.BACKUP_ACCESS_KEY_ID,  # CloudNativePG barman s3Credentials
    "secretAccessKey": SecretKey.BACKUP_SECRET_ACCESS_KEY,
}


def _reveal(value: Any) -> Any:
    if isinstance(value, dict) and value.get(engine._SIG) == engine._SECRET_SIG:
        return _reveal(value.get("value"))
    if isinstance(value, dict):
        return {k: _reveal(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    return value


def env_claim(name: str) -> SecretKey | None:
    """The ESC key an environment variable is named for: OPENAI_API_KEY is openaiApiKey."""
    head, *rest = name.lower().split("_")
    camel = head + "".join(part.capitalize() for part in rest)
    return ENV_CLAIMS.get(name) or next((k for k in SecretKey if k.value == camel), None)


@pytest.fixture(scope="module")
def revealed() -> list[tuple[StackConfig, Rendered]]:
    """Each stack rendered with every secret value kept (never written anywhere)."""
    stacks = [load_stack("production"), load_stack("development")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "_blank", _reveal)
        patch.setattr(engine, "_connection", _reveal)
        return [(stack, build(stack.stack, engine.run_program(stack))) for stack in stacks]


def values_of(stack: StackConfig) -> dict[SecretKey, str]:
    return {SecretKey(full.split(":", 1)[1]): value for full, value in stack.stand_ins.items()}


def secrets_of(rendered: Rendered) -> dict[tuple[str, str], dict[str, str]]:
    """Every Secret's keys and values (stringData, and data decoded), by namespace and name."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for m in rendered.objects("Secret"):
        data = {k: base64.b64decode(v).decode() for k, v in (m.get("data") or {}).items()}
        found[m["metadata"].get("namespace", ""), m["metadata"]["name"]] = data | (m.get("stringData") or {})
    return found


def strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from strings(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from strings(v, f"{path}/{i}")
    elif isinstance(value, str):
        yield path, value


def carried(text: str, values: dict[SecretKey, str]) -> set[SecretKey]:
    """The ESC keys whose value is in `text`, as it is or base64-encoded."""
    return {k for k, v in values.items() if v in text or base64.b64encode(v.encode()).decode() in text}


def test_every_secret_key_and_file_holds_the_value_of_the_esc_key_it_claims(
    revealed: list[tuple[StackConfig, Rendered]],
) -> None:
    wrong: list[str] = []
    for stack, rendered in revealed:
        values = values_of(stack)
        for (namespace, name), data in secrets_of(rendered).items():
            for key, value in data.items():
                where = f"{stack.stack}: Secret {namespace}/{name} key {key}"
                if (name, key) in SECRET_KEYS:
                    claim = SECRET_KEYS[name, key]
                    if value != values.get(claim):
                        wrong.append(f"{where} does not hold {claim.value}; it holds {carried(value, values)}")
                elif (name, key) in SECRET_FILES:
                    claim, read = SECRET_FILES[name, key]
                    inside = read(value)
                    if not inside or any(v != values[claim] for v in inside):
                        wrong.append(f"{where} does not carry {claim.value}; it carries {carried(value, values)}")
                elif carried(value, values):
                    wrong.append(f"{where} carries {carried(value, values)}, which no claim here names")
    assert wrong == []


def test_every_environment_variable_and_reference_resolves_to_the_esc_key_it_claims(
    revealed: list[tuple[StackConfig, Rendered]],
) -> None:
    wrong: list[str] = []
    checked = 0
    for stack, rendered in revealed:
        values = values_of(stack)
        secrets = secrets_of(rendered)
        documents: list[tuple[str, str, Any]] = [
            (m["kind"], m["metadata"].get("namespace", ""), m) for m in rendered.manifests
        ]
        documents += [("Release", str(r["namespace"]), r["values"]) for r in rendered.releases.values()]
        for kind, namespace, document in documents:
            for reference, claim, where in _references(document):
                data = secrets.get((namespace, reference["name"]), {})
                key = reference.get("key", "password")
                held = carried(data.get(key, ""), values)
                checked += 1
                if claim is None and held:
                    wrong.append(f"{stack.stack}: {kind} {where} names no ESC key but gets {held}")
                elif claim is not None and data.get(key) != values.get(claim):
                    wrong.append(f"{stack.stack}: {kind} {where} claims {claim.value}, gets {held}")
    assert wrong == []
    assert checked >= 20


def _references(document: Any, path: str = "") -> Iterator[tuple[dict[str, Any], SecretKey | None, str]]:
    """Each reference to a Secret key in a manifest or chart values, the ESC key it claims, and where."""
    if isinstance(document, list):
        for i, item in enumerate(document):
            yield from _references(item, f"{path}/{i}")
        return
    if not isinstance(document, dict):
        return
    ref = (document.get("valueFrom") or {}).get("secretKeyRef")
    if ref is not None:
        yield ref, env_claim(document["name"]), f"{path} env {document['name']}"
    for field, claim in REFERENCE_CLAIMS.items():
        if isinstance(document.get(field), dict) and "key" in document[field]:
            yield document[field], claim, f"{path}/{field}"
    if "passwordSecret" in document:  # CloudNativePG managed role: a basic-auth Secret's `password`
        yield document["passwordSecret"], SecretKey.POSTGRES_PASSWORD, f"{path}/passwordSecret"
    if "existingSecret" in document and "passwordKey" in document:  # the Grafana chart's admin
        ref = {"name": document["existingSecret"], "key": document["passwordKey"]}
        yield ref, SecretKey.GRAFANA_ADMIN_PASSWORD, f"{path}/existingSecret"
    for key, value in document.items():
        yield from _references(value, f"{path}/{key}")


def test_every_machine_is_reached_with_the_ssh_key(revealed: list[tuple[StackConfig, Rendered]]) -> None:
    for stack, rendered in revealed:
        key = values_of(stack)[SecretKey.SSH_PRIVATE_KEY]
        commands = rendered.by_type(engine.REMOTE_COMMAND)
        assert commands
        assert {c["inputs"]["connection"]["privateKey"] for c in commands} == {key}


def test_every_esc_key_reaches_a_place_and_no_value_reaches_an_unclaimed_one(
    revealed: list[tuple[StackConfig, Rendered]],
) -> None:
    for stack, rendered in revealed:
        values = values_of(stack)
        places: dict[SecretKey, set[str]] = {}
        for registration in rendered.registrations:
            for path, text in strings(registration.inputs):
                for key in carried(text, values):
                    places.setdefault(key, set()).add(f"{registration.type} {registration.name}{path}")
        assert set(places) == set(values), stack.stack
        unclaimed = [
            place
            for held in places.values()
            for place in held
            if not place.startswith(("kubernetes:core/v1:Secret ", f"{engine.REMOTE_COMMAND} "))
        ]
        assert unclaimed == [], stack.stack
        commands = {p.rsplit("/", 1)[1] for p in places.get(SecretKey.SSH_PRIVATE_KEY, set())}
        assert commands == {"privateKey"}


def test_the_public_render_shows_every_secret_as_secret_and_no_value(
    production: Rendered, development: Rendered
) -> None:
    for rendered in (production, development):
        stack = load_stack(rendered.stack)
        assert rendered.objects("Secret")
        for m in rendered.objects("Secret"):
            shown = {**(m.get("stringData") or {}), **(m.get("data") or {})}
            assert set(shown.values()) <= {engine.SECRET}, m["metadata"]["name"]
        assert rendered.out_dir is not None
        needles = list(stack.stand_ins.values())
        needles += [base64.b64encode(v.encode()).decode() for v in stack.stand_ins.values()]
        for path in sorted(Path(rendered.out_dir).rglob("*")):
            if path.is_file():
                text = path.read_text(errors="replace")
                assert not any(n in text for n in needles), path


def _gateways(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if {"provider", "api_key_env"} <= value.keys():
            yield value
        for v in value.values():
            yield from _gateways(v)


def test_every_gateway_the_apps_are_told_of_authenticates_with_its_own_key(
    revealed: list[tuple[StackConfig, Rendered]],
) -> None:
    """The gateway file names the variable that holds each gateway's key: it must be that gateway's."""
    for _, rendered in revealed:
        gateways = [
            gateway
            for m in rendered.objects("ConfigMap")
            for text in (m.get("data") or {}).values()
            if text.lstrip().startswith("{")
            for gateway in _gateways(json.loads(text))
        ]
        assert {g["provider"] for g in gateways} == {"portkey", "openrouter"}
        for gateway in gateways:
            assert env_claim(gateway["api_key_env"]) == SecretKey(f"{gateway['provider']}ApiKey"), gateway
