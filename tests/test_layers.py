"""The house: lower layers never import higher ones, and no modules import each other in a circle.

Read from the source with `ast`, so imports inside functions and `if TYPE_CHECKING:` blocks count too:
a circle that only type checking sees still ties the modules' meaning together.
"""

from __future__ import annotations

import ast
from pathlib import Path

from render.stack import PROJECT_DIR

PACKAGES = ("components", "render", "policy")

# Bottom to top. A module may import from its own layer (its own package, for a layer of several
# packages) or from a layer below. `components/*.py` hold the facts every layer shares.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "components.gpu",
        "components.host_ports",
        "components.k3s",
        "components.kubernetes_provider",
        "components.namespaces",
        "components.rollout",
        "components.pod_security",
    ),
    ("components.settings",),
    # How anything is published (a Kubernetes helper both the platform and the apps use).
    ("components.ingress",),
    ("components.cluster", "components.platform"),
    ("components.apps",),
    # The platform and the apps on one provider: what __main__ and the e2e both apply.
    ("components.kubernetes_layer",),
    ("policy",),
    ("render",),
    ("__main__",),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_DIR).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    files = [PROJECT_DIR / "__main__.py"]
    for package in PACKAGES:
        files += sorted((PROJECT_DIR / package).rglob("*.py"))
    return {_module_name(p): p for p in files}


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports, wherever in the file the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from components import namespaces` imports the module components.namespaces.
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            if name in modules:
                found.add(name)
    # `from a.b import c` also names the package `a.b`; keep the most precise module only.
    return {m for m in found if not any(other.startswith(m + ".") for other in found)}


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    modules = set(sources)
    return {name: _imports(path, modules) - {name} for name, path in sources.items()}


def _layer(module: str) -> tuple[int, str]:
    """The layer index of a module and the package (or module) it belongs to within the layer."""
    if module == "components":  # the namespace package's own __init__, which imports nothing
        return 0, module
    for index, members in enumerate(LAYERS):
        for member in members:
            if module == member or module.startswith(member + "."):
                return index, member
    raise AssertionError(f"{module} belongs to no layer; add it to LAYERS")


def test_no_layer_imports_a_layer_above_it_or_beside_it() -> None:
    wrong = []
    for module, imported in sorted(_graph().items()):
        layer, home = _layer(module)
        for other in sorted(imported):
            other_layer, other_home = _layer(other)
            if other_layer > layer or (other_layer == layer and other_home != home):
                wrong.append(f"{module} imports {other}")
    assert wrong == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    graph = _graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                circles.append([*path[path.index(other) :], other])
            elif other not in state:
                visit(other)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert [" -> ".join(c) for c in circles] == []


def test_the_layer_rules_see_the_imports_they_judge() -> None:
    """The walk finds imports in functions and TYPE_CHECKING blocks, so the two tests above cannot pass vacuously."""
    graph = _graph()
    assert "components.settings.catalogue" in graph["components.settings.apps"]
    assert "components.settings.cluster" in graph["components.cluster.cluster"]
    assert "render.context" in graph["render.platform_checks"]
    assert "components.settings.catalogue" in graph["render.bench"]  # imported inside a function
