"""Writes a render to disk: the files a reviewer reads in a pull request."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from render.model import Rendered
from render.plan import plan_markdown

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class _Dumper(yaml.CSafeDumper):
    """Block-style YAML with multi-line strings (scripts, configs) kept readable.

    libyaml's emitter (PyYAML's wheels carry it) writes the same bytes as the pure-Python one, five
    times faster; a render writes a file per Kubernetes object.
    """


def _str(dumper: yaml.CSafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name)


def _mermaid_id(index: int) -> str:
    return f"r{index}"


def graph(rendered: Rendered) -> str:
    """The dependency graph as Mermaid: component resources as subgraphs, dependencies as edges."""
    index = {r.urn: i for i, r in enumerate(rendered.registrations)}
    children: dict[str | None, list[int]] = {}
    for i, r in enumerate(rendered.registrations):
        if r.type == "pulumi:pulumi:Stack":
            continue
        parent = (
            r.parent
            if r.parent in index and rendered.registrations[index[r.parent]].type != "pulumi:pulumi:Stack"
            else None
        )
        children.setdefault(parent, []).append(i)
    lines = ["flowchart LR"]

    def emit(parent: str | None, depth: int) -> None:
        pad = "  " * depth
        for i in children.get(parent, []):
            r = rendered.registrations[i]
            label = f"{r.type.split(':')[-1]} {r.name}".replace('"', "'")
            if r.custom:
                lines.append(f'{pad}{_mermaid_id(i)}["{label}"]')
            else:
                lines.append(f'{pad}subgraph {_mermaid_id(i)}["{label}"]')
                emit(r.urn, depth + 1)
                lines.append(f"{pad}end")

    emit(None, 1)
    for i, r in enumerate(rendered.registrations):
        for dep in r.dependencies:
            if dep in index and dep != r.parent:
                lines.append(f"  {_mermaid_id(index[dep])} --> {_mermaid_id(i)}")
    return "\n".join(lines) + "\n"


def write(rendered: Rendered, out: Path) -> None:
    """Write every view of the render below `out`, which must not exist or be a previous render."""
    out.mkdir(parents=True, exist_ok=True)
    document = {"stack": rendered.stack, "resources": rendered.resources}
    (out / "resources.json").write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    (out / "outputs.json").write_text(json.dumps(rendered.outputs, indent=2, sort_keys=True) + "\n")
    for manifest in rendered.manifests:
        metadata = manifest.get("metadata") or {}
        folder = out / "manifests" / _safe(str(metadata.get("namespace") or "_cluster"))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{manifest['kind']}.{_safe(str(metadata.get('name', 'unnamed')))}.yaml").write_text(
            to_yaml(manifest)
        )
    if rendered.releases:
        (out / "releases").mkdir(exist_ok=True)
    for name, release in rendered.releases.items():
        (out / "releases" / f"{_safe(name)}.yaml").write_text(to_yaml({"name": name, **release}))
    for node, steps in rendered.node_steps.items():
        folder = out / "nodes" / _safe(node)
        folder.mkdir(parents=True, exist_ok=True)
        for step in steps:
            stem = f"{step.index:02d}-{_safe(step.step)}"
            (folder / f"{stem}.sh").write_text(step.create if step.create.endswith("\n") else step.create + "\n")
            if step.delete:
                (folder / f"{stem}.delete.sh").write_text(
                    step.delete if step.delete.endswith("\n") else step.delete + "\n"
                )
    (out / "graph.mmd").write_text(graph(rendered))
    (out / "plan.md").write_text(plan_markdown(rendered.stack, rendered.resources))
