"""render/crds.py's schemas against the real CRDs: what the render allows must be what the API server allows.

The render's schemas are hand-written, strict and partial (only the fields the program may set).
Each must be no looser than the CRD the chart really installs: a field the render allows that the
real CRD does not declare would pass `make render` and then be pruned (or, under strict field
validation, refused) by the API server. `looser` lists every such place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

JSON = Mapping[str, Any]
INT_OR_STRING = "x-kubernetes-int-or-string"
PRESERVE = "x-kubernetes-preserve-unknown-fields"


def _types(schema: JSON) -> set[str]:
    if schema.get(INT_OR_STRING):
        return {"integer", "string"}
    declared = schema.get("type")
    if isinstance(declared, list):
        return set(declared)
    if isinstance(declared, str):
        return {"number", "integer"} if declared == "number" else {declared}
    if "anyOf" in schema:
        return set().union(*(_types(branch) for branch in schema["anyOf"]))
    if "enum" in schema:
        return {"string"} if all(isinstance(v, str) for v in schema["enum"]) else set()
    if "const" in schema:
        return {"string"} if isinstance(schema["const"], str) else set()
    return set()


def looser(render: JSON, crd: JSON, path: str = "") -> list[str]:
    """Where `render` (a JSON schema of render/crds.py) allows what `crd` (a CRD's openAPIV3Schema) does not."""
    problems: list[str] = []
    if crd.get(PRESERVE) and "properties" not in crd and "items" not in crd:
        return problems  # the CRD keeps whatever it is given here
    mine, theirs = _types(render), _types(crd)
    if mine and theirs and not mine <= theirs:
        problems.append(f"{path or '.'}: the render allows {sorted(mine)}, the CRD {sorted(theirs)}")
    allowed = crd.get("enum")
    if allowed is not None:
        values = render.get("enum") or ([render["const"]] if "const" in render else None)
        if values is None:
            problems.append(f"{path or '.'}: the render allows any value, the CRD only {allowed}")
        elif extra := [v for v in values if v not in allowed]:
            problems.append(f"{path or '.'}: the render allows {extra}, which the CRD's enum {allowed} does not")
    crd_properties: JSON = crd.get("properties") or {}
    crd_additional = crd.get("additionalProperties")
    for name, sub in (render.get("properties") or {}).items():
        where = f"{path}.{name}"
        if name in crd_properties:
            problems += looser(sub, crd_properties[name], where)
        elif isinstance(crd_additional, Mapping):
            problems += looser(sub, crd_additional, where)
        elif crd_additional is True or crd.get(PRESERVE):
            continue
        else:
            problems.append(f"{where}: allowed by the render, not declared by the CRD")
    render_additional = render.get("additionalProperties")
    if isinstance(render_additional, Mapping) or render_additional is True:
        if isinstance(crd_additional, Mapping):
            if isinstance(render_additional, Mapping):
                problems += looser(render_additional, crd_additional, f"{path}.*")
        elif not (crd_additional is True or crd.get(PRESERVE)):
            problems.append(f"{path or '.'}: the render allows any key, the CRD only {sorted(crd_properties)}")
    if isinstance(render.get("items"), Mapping):
        crd_items = crd.get("items")
        if isinstance(crd_items, Mapping):
            problems += looser(render["items"], crd_items, f"{path}[]")
        elif not crd.get(PRESERVE):
            problems.append(f"{path}[]: the render allows items, the CRD declares none")
    return problems


def served_schema(crd: JSON, version: str) -> JSON:
    """The openAPIV3Schema of one served version of a CRD."""
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version and entry.get("served"):
            schema: JSON = entry["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"{crd['metadata']['name']} serves no version {version}")
