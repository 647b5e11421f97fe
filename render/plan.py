"""`plan.md`: the stack at component level, as a Mermaid diagram GitHub draws in place.

`graph.mmd` has a box per resource and an edge per dependency, provider edges included: well over a
hundred boxes and hundreds of edges for production, which nobody can read. This view keeps what a
reviewer reasons about:

- a box per *unit*: each component one level below a top-level component (a K3sNode, an add-on,
  a Workload), the resources a top-level component holds itself (its "own" box), and each resource
  directly under the stack (the Kubernetes provider);
- the top-level components (K3sCluster, Platform, SophiaApps) as frames around their units;
- an arrow A --> B when something in B waits on something in A. The provider's wait is drawn once,
  to each frame that uses it, not to each of its objects (no fan-out); an arrow that another path
  already implies is left out (transitive reduction, which keeps every "waits on, at some remove").

The same units and keys serve the pull-request comment (render/preview_comment.py), which marks the
units whose resources a real `pulumi preview` changes: a unit is found from a resource's parent
chain and its components' types and names, which the mock engine and the real one spell alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

STACK_TYPE = "pulumi:pulumi:Stack"
COMPONENT_PREFIX = "sophia:"
"""Every component of this program has a `sophia:<module>:<Type>` token (DESIGN.md, Components)."""
PROVIDER_PREFIX = "pulumi:providers:"

UnitKey = tuple[str, str, str]
"""(kind, type, name): kind `component`, `own` (a top-level component's own resources) or `resource`."""


def is_component(type_: str) -> bool:
    return type_.startswith(COMPONENT_PREFIX)


def short(type_: str) -> str:
    return type_.rsplit(":", 1)[-1]


@dataclass(frozen=True)
class Node:
    """What the plan needs of a resource: from resources.json, or from a preview's step."""

    urn: str
    type: str
    name: str
    parent: str | None
    dependencies: tuple[str, ...] = ()


def nodes_of(resources: Sequence[Mapping[str, Any]]) -> list[Node]:
    """resources.json's list as plan nodes."""
    return [
        Node(str(r["urn"]), str(r["type"]), str(r["name"]), r.get("parent"), tuple(r.get("dependencies") or ()))
        for r in resources
    ]


def unit_of(urn: str, by_urn: Mapping[str, Node]) -> UnitKey | None:
    """The unit a resource belongs to; None for the stack itself (and a URN not in `by_urn`)."""
    chain: list[Node] = []
    current: str | None = urn
    while current is not None and current in by_urn:
        chain.append(by_urn[current])
        current = by_urn[current].parent
    chain.reverse()  # the stack (when present) first
    if chain and chain[0].type == STACK_TYPE:
        chain = chain[1:]
    if not chain:
        return None
    top = chain[0]
    if not is_component(top.type):
        return ("resource", top.type, top.name)
    if len(chain) >= 2 and is_component(chain[1].type):
        return ("component", chain[1].type, chain[1].name)
    # The top-level component itself, and what it holds outside its child components.
    return ("own", top.type, top.name)


def _frame(key: UnitKey, by_urn: Mapping[str, Node]) -> tuple[str, str] | None:
    """The top-level component (type, name) a unit is drawn inside, if any."""
    kind, type_, name = key
    if kind == "own":
        return (type_, name)
    if kind == "component":
        for node in by_urn.values():
            if node.type == type_ and node.name == name and node.parent is not None and node.parent in by_urn:
                parent = by_urn[node.parent]
                if parent.type != STACK_TYPE and is_component(parent.type):
                    return (parent.type, parent.name)
    return None


_UNSAFE = re.compile(r"[^A-Za-z0-9]+")


def mermaid_id(key: UnitKey | tuple[str, str]) -> str:
    """A Mermaid node id that is a function of the unit (kind, type, name) or frame (type, name) alone."""
    kind, type_, name = key if len(key) == 3 else ("frame", *key)
    return "_".join(_UNSAFE.sub("_", part).strip("_") for part in (kind[0], short(type_), name))


@dataclass(frozen=True)
class Plan:
    units: dict[UnitKey, int]
    """Each unit and how many resources it holds (the component itself included)."""
    frames: dict[tuple[str, str], list[UnitKey]]
    """Each top-level component drawn as a frame, with the units inside it."""
    edges: tuple[tuple[str, str], ...]
    """(from id, to id): `to` waits on `from`; ids are units' or frames' mermaid ids."""


def _reduce(edges: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Drop each edge whose target stays reachable without it (in a fixed order: deterministic)."""
    after: dict[str, set[str]] = {}
    for a, b in edges:
        after.setdefault(a, set()).add(b)

    def reachable(source: str, target: str) -> bool:
        seen, todo = {source}, [source]
        while todo:
            for b in after.get(todo.pop(), ()):
                if b == target:
                    return True
                if b not in seen:
                    seen.add(b)
                    todo.append(b)
        return False

    for source, target in sorted(edges):
        after[source].discard(target)
        if not reachable(source, target):
            after[source].add(target)
    return {(a, b) for a, targets in after.items() for b in targets}


def plan(nodes: Iterable[Node]) -> Plan:
    by_urn = {n.urn: n for n in nodes}
    unit = {urn: unit_of(urn, by_urn) for urn in by_urn}
    units: dict[UnitKey, int] = {}
    for key in unit.values():
        if key is not None:
            units[key] = units.get(key, 0) + 1
    frames: dict[tuple[str, str], list[UnitKey]] = {}
    for key in sorted(units):
        frame = _frame(key, by_urn)
        if frame is not None:
            frames.setdefault(frame, []).append(key)
    frame_of = {key: frame for frame, keys in frames.items() for key in keys}

    edges: set[tuple[str, str]] = set()
    for node in by_urn.values():
        to = unit[node.urn]
        if to is None:
            continue
        for dependency in node.dependencies:
            if dependency == node.parent or dependency not in by_urn:
                continue
            source = unit[dependency]
            if source is None or source == to:
                continue
            if by_urn[dependency].type.startswith(PROVIDER_PREFIX) and to in frame_of:
                # A provider's one arrow, to the frame that uses it (none inside its own frame).
                if frame_of.get(source) != frame_of[to]:
                    edges.add((mermaid_id(source), mermaid_id(frame_of[to])))
            else:
                edges.add((mermaid_id(source), mermaid_id(to)))
    return Plan(units, frames, tuple(sorted(_reduce(edges))))


def _label(key: UnitKey, count: int) -> str:
    kind, type_, name = key
    what = {
        "own": f"{short(type_)} {name}: its own",
        "resource": f"{short(type_)} provider {name}"
        if type_.startswith(PROVIDER_PREFIX)
        else f"{short(type_)} {name}",
    }.get(kind, f"{short(type_)} {name}")
    resources = "resource" if count == 1 else "resources"
    return f"{what} ({count} {resources})".replace('"', "'")


def mermaid(p: Plan, changed: Iterable[UnitKey] = ()) -> str:
    """The plan as a Mermaid flowchart; `changed` units are drawn highlighted."""
    lines = ["flowchart LR"]
    framed = {key for keys in p.frames.values() for key in keys}
    for frame, keys in sorted(p.frames.items()):
        lines.append(f'  subgraph {mermaid_id(frame)}["{short(frame[0])} {frame[1]}"]')
        lines.extend(f'    {mermaid_id(key)}["{_label(key, p.units[key])}"]' for key in keys)
        lines.append("  end")
    for key in sorted(set(p.units) - framed):
        lines.append(f'  {mermaid_id(key)}["{_label(key, p.units[key])}"]')
    lines.extend(f"  {a} --> {b}" for a, b in p.edges)
    marked = sorted(mermaid_id(key) for key in set(changed) if key in p.units)
    if marked:
        lines.append("  classDef changed fill:#ffd8a8,stroke:#e8590c,stroke-width:3px")
        lines.append(f"  class {','.join(marked)} changed")
    return "\n".join(lines) + "\n"


def plan_markdown(stack: str, resources: Sequence[Mapping[str, Any]]) -> str:
    """The text of build/<stack>/plan.md."""
    p = plan(nodes_of(resources))
    return (
        f"# The {stack} stack, component by component\n\n"
        "Each box is a component (a machine, an add-on, a workload), or the objects a top-level component\n"
        "holds itself, with the number of resources in it. An arrow A → B: something in B waits on\n"
        "something in A; an arrow implied by others is left out, and the Kubernetes provider's is drawn once\n"
        "per frame. Every resource and every dependency: `resources.json` and `graph.mmd` beside this file.\n\n"
        f"```mermaid\n{mermaid(p)}```\n"
    )
