"""What every render check is given: the render, the stack it came from, and where it was written.

Its own module so that the checks of each layer (render/checks.py, platform_checks.py,
policy_check.py) depend on it and not on each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from render.model import Rendered
from render.stack import StackConfig


@dataclass(frozen=True)
class Context:
    rendered: Rendered
    stack: StackConfig
    out_dir: Path

    @property
    def kubernetes_version(self) -> str:
        """The Kubernetes minor of the pinned K3s release (`1.35` for `v1.35.5+k3s1`)."""
        cluster = json.loads(self.stack.config["sophia-infra:cluster"])
        version = str(cluster["k3sVersion"]).lstrip("v")
        return ".".join(version.split("+")[0].split(".")[:2])


Check = Callable[[Context], list[str]]


@dataclass(frozen=True)
class CheckResult:
    name: str
    violations: list[str]
