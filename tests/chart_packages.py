"""The real packages of the pinned charts (../shared/third_party/charts/<name>-<version>.tgz), read in place.

Tests read facts from them that the program relies on (a chart's default values, its kubeVersion,
a template's hostNetwork) instead of copying them. The packages are not in this repository; without
them these tests fail, naming the directory: SOPHIA_CHART_PACKAGES points elsewhere.
"""

from __future__ import annotations

import functools
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.platform.charts import Chart
from render.stack import PROJECT_DIR

PACKAGES = Path(os.environ.get("SOPHIA_CHART_PACKAGES", PROJECT_DIR.parent / "shared" / "third_party" / "charts"))


def package(chart: Chart) -> Path:
    path = PACKAGES / f"{chart.name}-{chart.version}.tgz"
    if not path.is_file():
        pytest.fail(f"the chart package {path} is missing (set SOPHIA_CHART_PACKAGES to the charts' directory)")
    return path


@functools.cache
def _text(path: Path, member: str) -> str:
    with tarfile.open(path) as archive:
        handle = archive.extractfile(member)
        assert handle is not None, f"{member} is not a file in {path}"
        return handle.read().decode()


def chart_text(chart: Chart, member: str) -> str:
    """A file of the package, `member` relative to the chart's own directory (`values.yaml`, `templates/x.yaml`)."""
    return _text(package(chart), f"{chart.name}/{member}")


def chart_yaml(chart: Chart, member: str) -> Any:
    return yaml.safe_load(chart_text(chart, member))


def merged(base: Any, override: Any) -> Any:
    """Helm's values merge: mappings key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {k: merged(base.get(k), override[k]) if k in override else base[k] for k in base.keys() | override}
    return override if override is not None else base
