"""A secret rotated in ESC reaches exactly the pods that read it, and never shows in the render.

Each test renders the production stack twice under the mock engine, the second time with one
stand-in ESC value changed, and compares every pod template (and Grafana's, which the monitoring
chart builds from its values). The render writes every secret as `[secret]`; here each secret is
written as a digest of its value instead, so that a changed secret is a changed template.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest

from components.apps.workload import SECRET_CHECKSUM
from components.settings.catalogue import CATALOGUE
from components.settings.secrets import SecretKey
from render import engine
from render.model import Rendered, build
from render.stack import StackConfig, load_stack

CONTROLLERS = ("Deployment", "StatefulSet")


def _digest_secrets(value: Any) -> Any:
    """Like the engine's redaction, but each secret leaf becomes a digest of its value."""
    if isinstance(value, dict) and value.get(engine._SIG) == engine._SECRET_SIG:
        return _digest_secrets(value.get("value"))
    if isinstance(value, dict) and engine._SIG not in value:
        return {k: _digest_secrets(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_digest_secrets(v) for v in value]
    return "[secret " + hashlib.sha256(json.dumps(value).encode()).hexdigest()[:16] + "]"


def _render(stack: StackConfig, monkeypatch: pytest.MonkeyPatch) -> Rendered:
    with monkeypatch.context() as patch:
        patch.setattr(engine, "_blank", _digest_secrets)
        return build(stack.stack, engine.run_program(stack))


def _templates(rendered: Rendered) -> dict[str, Any]:
    """Every pod template, by `<Kind>/<namespace>/<name>`, and Grafana's pod annotations."""
    templates: dict[str, Any] = {
        f"{kind}/{m['metadata']['namespace']}/{m['metadata']['name']}": m["spec"]["template"]
        for kind in CONTROLLERS
        for m in rendered.objects(kind)
    }
    grafana = rendered.releases["monitoring"]["values"]["grafana"]
    templates["grafana"] = {"podAnnotations": grafana["podAnnotations"], "init": grafana["extraInitContainers"]}
    return templates


def _rotated(stack: StackConfig, key: SecretKey) -> StackConfig:
    full = f"{stack.project}:{key.value}"
    config = dict(stack.config)
    config[full] = stack.config[full] + "rotated"
    return dataclasses.replace(stack, config=config, stand_ins={**stack.stand_ins, full: config[full]})


@pytest.fixture(scope="module")
def baseline() -> tuple[StackConfig, dict[str, Any]]:
    stack = load_stack("production")
    with pytest.MonkeyPatch.context() as patch:
        return stack, _templates(_render(stack, patch))


def _expected(key: SecretKey) -> set[str]:
    names = {
        f"{'StatefulSet' if s.stateful else 'Deployment'}/{s.namespace}/{s.name}"
        for s in CATALOGUE
        if key in s.secrets and not s.managed_database
    }
    return names | ({"grafana"} if key is SecretKey.GRAFANA_ADMIN_PASSWORD else set())


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (SecretKey.REDIS_PASSWORD, {"StatefulSet/sophia-data/redis", "Deployment/sophia-apps/sophia-backend"}),
        (SecretKey.QDRANT_API_KEY, {"Deployment/sophia-mcp/ai-memory"}),
        # PostgreSQL itself takes the new password through its managed role (test_postgres.py).
        (SecretKey.POSTGRES_PASSWORD, {"Deployment/sophia-apps/sophia-backend"}),
        (SecretKey.GRAFANA_ADMIN_PASSWORD, {"grafana"}),
        # Read when an image is pulled, not by a running pod: no rollout.
        (SecretKey.DOCKER_HUB_TOKEN, set()),
    ],
)
def test_a_rotated_secret_changes_exactly_the_pod_templates_of_its_readers(
    baseline: tuple[StackConfig, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, key: SecretKey, expected: set[str]
) -> None:
    stack, before = baseline
    after = _templates(_render(_rotated(stack, key), monkeypatch))
    assert after.keys() == before.keys()
    changed = {name for name in before if before[name] != after[name]}
    assert changed == expected
    if key is not SecretKey.DOCKER_HUB_TOKEN:
        assert changed == _expected(key)
    for name in changed - {"grafana"}:
        # The checksum annotation is what changed, and only it: the rollout is that annotation.
        old, new = dict(before[name]["metadata"]["annotations"]), dict(after[name]["metadata"]["annotations"])
        assert old.pop(SECRET_CHECKSUM) != new.pop(SECRET_CHECKSUM)
        assert old == new
        assert before[name]["spec"] == after[name]["spec"]


def test_the_checksums_are_secret_in_the_render(production: Rendered) -> None:
    readers = {s.name for s in CATALOGUE if s.secrets}
    for kind in CONTROLLERS:
        for m in production.objects(kind):
            annotations = m["spec"]["template"]["metadata"].get("annotations") or {}
            assert (SECRET_CHECKSUM in annotations) == (m["metadata"]["name"] in readers), m["metadata"]["name"]
            if SECRET_CHECKSUM in annotations:
                assert annotations[SECRET_CHECKSUM] == "[secret]"
    grafana = production.releases["monitoring"]["values"]["grafana"]
    assert grafana["podAnnotations"] == {SECRET_CHECKSUM: "[secret]"}


def test_grafanas_stored_admin_password_is_reset_from_the_secret_before_it_starts(production: Rendered) -> None:
    grafana = production.releases["monitoring"]["values"]["grafana"]
    (init,) = grafana["extraInitContainers"]
    script = init["command"][-1]
    assert "reset-admin-password --password-from-stdin" in script
    # The password is read from the Secret by the shell, never an argument of any process.
    assert "$GF_SECURITY_ADMIN_PASSWORD" in script and "$(" not in script
    (env,) = init["env"]
    assert env["valueFrom"]["secretKeyRef"] == {"name": "grafana-admin", "key": "admin-password"}
    assert grafana["admin"]["existingSecret"] == "grafana-admin"
    assert {m["name"] for m in init["volumeMounts"]} == {"storage", "config"}


def test_secrets_are_updated_in_place_so_none_is_ever_missing(production: Rendered) -> None:
    (provider,) = production.by_type("pulumi:providers:kubernetes")
    assert provider["inputs"]["enableSecretMutable"] == "true"
