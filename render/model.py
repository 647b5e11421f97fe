"""The rendered desired state: every resource, and the views reviewers and checks read."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from render.engine import REMOTE_COMMAND, Recording, Registration

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"

NODE_COMPONENT = "sophia:cluster:K3sNode"
_NOT_OBJECTS = (HELM_RELEASE, "pulumi:providers:kubernetes")


def ordered(registrations: list[Registration]) -> list[Registration]:
    """Registration order made reproducible: dependencies and parents first, ties by URN.

    The SDK registers from a thread pool, so the raw arrival order can differ between two runs.
    """
    by_urn = {r.urn: r for r in registrations}
    done: set[str] = set()
    result: list[Registration] = []

    def visit(urn: str, trail: frozenset[str]) -> None:
        if urn in done or urn not in by_urn or urn in trail:
            return
        registration = by_urn[urn]
        for before in sorted({*registration.dependencies, *([registration.parent] if registration.parent else [])}):
            visit(before, trail | {urn})
        done.add(urn)
        result.append(registration)

    for urn in sorted(by_urn):
        visit(urn, frozenset())
    return result


def is_kubernetes_object(registration: Registration) -> bool:
    return (
        registration.type.startswith("kubernetes:")
        and registration.type not in _NOT_OBJECTS
        and "apiVersion" in registration.inputs
        and "kind" in registration.inputs
    )


def manifest(inputs: dict[str, Any]) -> dict[str, Any]:
    """A Kubernetes object as `kubectl` would read it, keys in the usual order."""
    head = {k: inputs[k] for k in ("apiVersion", "kind", "metadata") if k in inputs}
    return head | {k: inputs[k] for k in sorted(inputs) if k not in head}


@dataclass(frozen=True)
class NodeStep:
    index: int
    step: str
    create: str
    delete: str | None


@dataclass
class Rendered:
    stack: str
    registrations: list[Registration]
    component_outputs: dict[str, dict[str, Any]]
    out_dir: Path | None = None
    resources: list[dict[str, Any]] = field(init=False)
    manifests: list[dict[str, Any]] = field(init=False)
    releases: dict[str, dict[str, Any]] = field(init=False)
    node_steps: dict[str, list[NodeStep]] = field(init=False)

    def __post_init__(self) -> None:
        self.resources = [
            {
                "urn": r.urn,
                "type": r.type,
                "name": r.name,
                "parent": r.parent,
                "provider": r.provider,
                "dependencies": list(r.dependencies),
                "inputs": r.inputs,
                "options": r.options,
            }
            for r in self.registrations
        ]
        self.manifests = [manifest(r.inputs) for r in self.registrations if is_kubernetes_object(r)]
        self.releases = {
            str(r.inputs.get("name", r.name)): {
                "chart": r.inputs.get("chart"),
                "version": r.inputs.get("version"),
                "repository": (r.inputs.get("repositoryOpts") or {}).get("repo"),
                "namespace": r.inputs.get("namespace"),
                "values": r.inputs.get("values", {}),
            }
            for r in self.registrations
            if r.type == HELM_RELEASE
        }
        self.node_steps = self._node_steps()

    def _node_steps(self) -> dict[str, list[NodeStep]]:
        nodes = {r.urn: r.name for r in self.registrations if r.type == NODE_COMPONENT}
        steps: dict[str, list[Registration]] = defaultdict(list)
        for r in self.registrations:
            if r.type == REMOTE_COMMAND and r.parent in nodes:
                steps[nodes[r.parent]].append(r)
        result: dict[str, list[NodeStep]] = {}
        for node in sorted(steps):
            commands = ordered(steps[node])  # dependency order within the node
            result[node] = [
                NodeStep(
                    index=i + 1,
                    step=c.name.removeprefix(f"{node}-"),
                    create=str(c.inputs.get("create", "")),
                    delete=str(c.inputs["delete"]) if c.inputs.get("delete") else None,
                )
                for i, c in enumerate(commands)
            ]
        return result

    @property
    def node_scripts(self) -> dict[str, list[tuple[str, str]]]:
        return {node: [(s.step, s.create) for s in steps] for node, steps in self.node_steps.items()}

    @property
    def outputs(self) -> dict[str, Any]:
        """The stack outputs (`pulumi stack output`), secrets as `[secret]`."""
        stack = next((r.urn for r in self.registrations if r.type == "pulumi:pulumi:Stack"), None)
        return dict(self.component_outputs.get(stack, {})) if stack else {}

    def by_type(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["type"] == type_]

    def objects(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m.get("kind") == kind]


def build(stack: str, recording: Recording) -> Rendered:
    return Rendered(stack, ordered(recording.registrations), recording.outputs)
