"""Argo CD's `admin.passwordMtime` moves exactly when the admin password's hash does, across `pulumi up` runs.

Argo CD refuses a session token issued before `passwordMtime`, so a rotated password must move it
(ending every session) and an unchanged one must not (logging no one out). The program runs three
times under the mock engine, as three `pulumi up`: the same hash twice, then a rotated one. The
stand-in provider below keeps a `command:local:Command`'s output while its `triggers` are unchanged
and runs its `create` again (a later time) when they change, which is what pulumi-command does
(a change of `triggers` replaces the resource; otherwise its stdout stays in the state).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, ClassVar

import pytest
from pulumi.runtime import mocks

from components.platform.argocd import ARGOCD_SECRET, PASSWORD_MTIME_COMMAND
from components.settings.secrets import SecretKey
from render import engine
from render.model import Rendered, build
from render.stack import StackConfig, load_stack


class _Provider(engine.StandInCloud):
    """The stand-in cloud, with local commands whose stdout lives in a state kept across runs."""

    state: ClassVar[dict[str, tuple[Any, str]]] = {}
    clock = itertools.count(1)

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if args.typ != "command:local:Command":
            return super().new_resource(args)
        assert args.inputs["create"] == PASSWORD_MTIME_COMMAND
        triggers = args.inputs.get("triggers")
        kept = self.state.get(args.name)
        if kept is None or kept[0] != triggers:
            # `create` runs: the time now (an hour later each time it runs, from 2026-12-02T01:00:00Z).
            kept = (triggers, f"2026-12-02T{next(self.clock):02d}:00:00Z\n")
            self.state[args.name] = kept
        return f"{args.name}-id", {**args.inputs, "stdout": kept[1], "stderr": ""}


def _reveal(value: Any) -> Any:
    """Secret leaves as their value (the render would write `[secret]`)."""
    if isinstance(value, dict) and value.get(engine._SIG) == engine._SECRET_SIG:
        return _reveal(value.get("value"))
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    return value


def _up(stack: StackConfig, monkeypatch: pytest.MonkeyPatch) -> Rendered:
    with monkeypatch.context() as patch:
        patch.setattr(engine, "StandInCloud", _Provider)
        patch.setattr(engine, "_blank", _reveal)
        return build(stack.stack, engine.run_program(stack))


def _mtime(rendered: Rendered) -> str:
    (secret,) = [m for m in rendered.objects("Secret") if m["metadata"]["name"] == ARGOCD_SECRET]
    value: str = secret["stringData"]["admin.passwordMtime"]
    return value


def _rotated(stack: StackConfig) -> StackConfig:
    """Another valid bcrypt hash of the admin password: its last character changed."""
    key = f"{stack.project}:{SecretKey.ARGOCD_ADMIN_PASSWORD_BCRYPT.value}"
    old = stack.config[key]
    new = old[:-1] + ("a" if old[-1] != "a" else "b")
    return dataclasses.replace(stack, config={**stack.config, key: new}, stand_ins={**stack.stand_ins, key: new})


def test_the_password_mtime_moves_exactly_when_the_hash_does(monkeypatch: pytest.MonkeyPatch) -> None:
    _Provider.state.clear()
    stack = load_stack("production")
    first = _mtime(_up(stack, monkeypatch))
    again = _mtime(_up(stack, monkeypatch))
    rotated = _mtime(_up(_rotated(stack), monkeypatch))
    rotated_again = _mtime(_up(_rotated(stack), monkeypatch))
    assert first == again  # an unchanged password logs no one out
    assert rotated == rotated_again
    assert rotated > first  # every token issued before the rotation is refused
    # Each the time of the run that created it: the first, then the one that rotated the password.
    assert (first, rotated) == ("2026-12-02T01:00:00Z", "2026-12-02T02:00:00Z")
