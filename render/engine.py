"""Runs the real `__main__.py` under the Pulumi SDK's mock engine and records what it registers.

The recording is what the engine would receive: each resource's type, name, parent, the URNs it
waits on (dependencies and property dependencies) and its inputs, with every secret value replaced
by `[secret]` before anything is kept.
"""

from __future__ import annotations

import hashlib
import runpy
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime.config as pulumi_config
from google.protobuf import json_format, struct_pb2
from pulumi.runtime import mocks
from pulumi.runtime.settings import ROOT, SETTINGS
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

from render.stack import PROJECT_DIR, StackConfig

SECRET = "[secret]"
UNKNOWN = "[unknown]"
_SIG = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def _blank(value: Any) -> Any:
    """A secret value with its shape kept (the keys of a secret map are names, not secrets)."""
    if isinstance(value, dict) and value.get(_SIG) == _SECRET_SIG:
        return _blank(value.get("value"))
    if isinstance(value, dict) and _SIG not in value:
        return {k: _blank(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_blank(v) for v in value]
    return SECRET


def redact(value: Any) -> Any:
    """Engine wire values as plain JSON, secrets replaced, resource references as URNs."""
    if isinstance(value, dict):
        sig = value.get(_SIG)
        if sig == _SECRET_SIG:
            return _blank(value.get("value"))
        if sig == _RESOURCE_SIG:
            return value.get("urn", "")
        # Struct fields come back in no fixed order; sorted keys make two renders byte-identical.
        return {k: redact(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if value == _UNKNOWN:
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


REMOTE_COMMAND = "command:remote:Command"
# pulumi-command's SDK makes a Command's whole `connection` secret, because the private key is part
# of it. Which machine a step runs on (and as whom, pinned to which public host key) is plain
# settings a reviewer must see; the credentials stay `[secret]`.
PLAIN_CONNECTION_FIELDS = frozenset({"host", "port", "user", "hostKey", "dialErrorLimit", "perDialTimeout"})


def _connection(value: Any) -> Any:
    if isinstance(value, dict) and value.get(_SIG) == _SECRET_SIG:
        value = value.get("value")
    if not isinstance(value, dict):
        return SECRET
    return {k: redact(value[k]) if k in PLAIN_CONNECTION_FIELDS else SECRET for k in sorted(value)}


def recorded_inputs(type_: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """A resource's inputs as the render keeps them: secrets replaced, except a connection's plain fields."""
    kept = redact(inputs)
    if type_ == REMOTE_COMMAND and "connection" in inputs:
        kept["connection"] = _connection(inputs["connection"])
    return dict(kept)


@dataclass(frozen=True)
class Registration:
    urn: str
    type: str
    name: str
    parent: str | None
    custom: bool
    provider: str | None
    dependencies: tuple[str, ...]
    inputs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    """The resource options that change how the engine replaces or deletes it (only those set)."""


@dataclass
class Recording:
    registrations: list[Registration] = field(default_factory=list)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Outputs each component registered, by URN; the stack's own are its exports."""


def _lifecycle_options(request: Any) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if request.protect:
        options["protect"] = True
    if request.retainOnDelete:
        options["retainOnDelete"] = True
    if request.deleteBeforeReplace:
        options["deleteBeforeReplace"] = True
    if request.ignoreChanges:
        options["ignoreChanges"] = sorted(request.ignoreChanges)
    if request.replaceOnChanges:
        options["replaceOnChanges"] = sorted(request.replaceOnChanges)
    if request.deletedWith:
        options["deletedWith"] = request.deletedWith
    timeouts = {k: v for k, v in json_format.MessageToDict(request.customTimeouts).items() if v}
    if timeouts:
        options["customTimeouts"] = dict(sorted(timeouts.items()))
    return options


class RecordingMonitor(mocks.MockMonitor):
    """The SDK's mock monitor, keeping every registration request as the engine would see it."""

    def __init__(self, mocks_: mocks.Mocks, recording: Recording) -> None:
        super().__init__(mocks_)
        self.recording = recording
        self._lock = threading.Lock()

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        # The engine, not the SDK, makes `additionalSecretOutputs` secret; the SDK mock does not.
        for key in request.additionalSecretOutputs:
            if key in response.object.fields:
                plain = struct_pb2.Value()
                plain.CopyFrom(response.object.fields[key])
                wrapped = struct_pb2.Struct()
                wrapped.fields[_SIG].string_value = _SECRET_SIG
                wrapped.fields["value"].CopyFrom(plain)
                response.object.fields[key].struct_value.CopyFrom(wrapped)
        deps = set(request.dependencies)
        for prop in request.propertyDependencies.values():
            deps.update(prop.urns)
        # A resource also waits for its provider: `dependencies` here are everything the engine waits on.
        provider = request.provider.rsplit("::", 1)[0] if request.provider else None
        if provider:
            deps.add(provider)
        registration = Registration(
            urn=response.urn,
            type=request.type,
            name=request.name,
            parent=request.parent or None,
            custom=bool(request.custom),
            provider=provider,
            dependencies=tuple(sorted(deps)),
            inputs=recorded_inputs(request.type, json_format.MessageToDict(request.object)),
            options=_lifecycle_options(request),
        )
        with self._lock:
            self.recording.registrations.append(registration)
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        with self._lock:
            self.recording.outputs[request.urn] = redact(json_format.MessageToDict(request.outputs))
        return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]


def stand_in_value(kind: str, name: str) -> str:
    """The made-up value a provider output gets in the render; searched for in the output."""
    return f"{kind}-{hashlib.sha256(name.encode()).hexdigest()[:20]}"


class StandInCloud(mocks.Mocks):
    """What the providers would answer, made up deterministically from each resource's name."""

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":
            state["result"] = stand_in_value("rendered-random", args.name)
        elif args.typ in ("command:remote:Command", "command:local:Command"):
            state.setdefault("stdout", f"rendered stdout of {args.name}")
            state.setdefault("stderr", "")
        return f"{args.name}-id", state

    def call(self, args: mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


def run_program(stack: StackConfig, program: Path = PROJECT_DIR / "__main__.py") -> Recording:
    """Run the program once for `stack`; raises whatever the program raises (ConfigError included)."""
    recording = Recording()
    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()
    monitor = RecordingMonitor(StandInCloud(), recording)
    # set_mocks makes (and at once finishes) a root stack of its own when there is none; the program
    # must run in a stack that registers its exports at the end, as `pulumi up` runs it, so
    # set_mocks is shown a stand-in root and `run_in_stack` below makes the real one.
    ROOT.set(pulumi.CustomResource.__new__(pulumi.CustomResource))
    mocks.set_mocks(StandInCloud(), project=stack.project, stack=stack.stack, preview=False, monitor=monitor)
    ROOT.set(None)
    pulumi_config.set_all_config(dict(stack.config), sorted(stack.secret_keys))
    if str(program.parent) not in sys.path:
        sys.path.insert(0, str(program.parent))

    def main() -> None:
        runpy.run_path(str(program), run_name="__main__")

    _sync_await(run_in_stack(main))
    return recording


def registrations_by_urn(recording: Recording) -> Mapping[str, Registration]:
    return {r.urn: r for r in recording.registrations}
