"""How long `pulumi up` takes at best: the longest chain of waits in the real dependency graph.

The engine starts a resource as soon as everything it waits on (`dependencies` in resources.json:
depends_on, property dependencies and the provider) is done and a slot is free, and runs
independent resources in parallel. So the wall time of an `up` from nothing is at least the
heaviest path through that graph, each resource weighted by how long its operation takes.

The slots are not unbounded: `pulumi up` runs at most `--parallel` (or `PULUMI_PARALLEL`) resource
operations at once, and by default four per CPU of the machine running the CLI (pulumi/pulumi
pkg/v3 cmd/pulumi/operations/up.go, `defaultParallel`: `runtime.GOMAXPROCS(0) * 4`; before
pulumi/pulumi#14989 it was unbounded). `width` is how many operations that take time run at once
when each starts as soon as its waits are done: with fewer slots than that, joins queue behind each
other and the path above is no longer the bound.

The durations below are estimates for a fresh machine on Lambda Cloud and a fresh cluster; they
are what the bench and docs/architecture.md quote (render/figures.py), and what makes "joins run
in parallel" measurable: adding machines must not lengthen the critical path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

REMOTE_COMMAND: Final = "command:remote:Command"
HELM_RELEASE: Final = "kubernetes:helm.sh/v3:Release"

NODE_STEP_SECONDS: Final[Mapping[str, float]] = {
    "preflight": 5,  # SSH in, check OS, arch, GPU, ports
    "claim": 5,  # reserve the node name on the first server
    "prepare": 10,  # write the K3s config and join token
    "install": 90,  # download and start K3s at the pinned version (the SSH install)
    "ready": 30,  # wait for /readyz and the node to be Ready
    "admit": 5,  # label and uncordon through the API
    "kubeconfig": 2,  # read the admin kubeconfig
    "token": 2,  # read a secure join token (server-token, agent-token)
}
OTHER_COMMAND_SECONDS: Final = 10.0
HELM_RELEASE_SECONDS: Final = 60.0  # install a chart and wait for its workloads (helm --wait)
KUBERNETES_OBJECT_SECONDS: Final = 2.0  # create one object through the API server (and await it)
"""Every other Kubernetes resource: namespaces, secrets, workloads, custom resources."""

DURATION_TABLE: Final[tuple[tuple[str, float], ...]] = (
    *((f"remote Command `<node>-{step}`", seconds) for step, seconds in NODE_STEP_SECONDS.items()),
    ("remote Command, any other", OTHER_COMMAND_SECONDS),
    ("Helm release", HELM_RELEASE_SECONDS),
    ("Kubernetes object (built-in or custom resource)", KUBERNETES_OBJECT_SECONDS),
    ("providers, components, random values, the stack", 0.0),
)


def seconds(resource: Mapping[str, Any]) -> float:
    """The estimated duration of creating one resource of resources.json."""
    type_ = str(resource["type"])
    if type_ == REMOTE_COMMAND:
        step = str(resource["name"]).rsplit("-", 1)[-1]
        return float(NODE_STEP_SECONDS.get(step, OTHER_COMMAND_SECONDS))
    if type_ == HELM_RELEASE:
        return HELM_RELEASE_SECONDS
    if type_.startswith("kubernetes:") and not type_.startswith("pulumi:providers:"):
        return KUBERNETES_OBJECT_SECONDS
    return 0.0


@dataclass(frozen=True)
class CriticalPath:
    seconds: float
    steps: tuple[tuple[str, str, float], ...]
    """(type, name, seconds) of each resource on the path that takes time, first to last."""

    width: int = 0
    """The most resources that take time running at once, each started as soon as its waits are
    done: the `--parallel` an `up` from nothing needs so that nothing waits for a slot."""

    def shape(self) -> tuple[tuple[str, float], ...]:
        """The path without names: what stays the same when only the number of machines changes."""
        return tuple((type_, s) for type_, _, s in self.steps)


def critical_path(resources: Sequence[Mapping[str, Any]]) -> CriticalPath:
    """The heaviest dependency chain of `resources` (resources.json's list)."""
    by_urn = {str(r["urn"]): r for r in resources}
    finish: dict[str, float] = {}
    previous: dict[str, str | None] = {}

    def visit(urn: str) -> float:
        # Iterative, so that a chain of thousands of resources cannot exhaust the recursion limit.
        stack = [urn]
        while stack:
            current = stack[-1]
            if current in finish:
                stack.pop()
                continue
            waits = [d for d in by_urn[current]["dependencies"] if d in by_urn and d != current]
            pending = [d for d in waits if d not in finish]
            if pending:
                stack.extend(pending)
                continue
            before = max(waits, key=lambda d: (finish[d], d), default=None)
            previous[current] = before
            finish[current] = (finish[before] if before else 0.0) + seconds(by_urn[current])
            stack.pop()
        return finish[urn]

    for urn in by_urn:
        visit(urn)
    if not finish:
        return CriticalPath(0.0, ())
    end: str | None = max(finish, key=lambda u: (finish[u], u))
    chain = []
    while end is not None:
        resource = by_urn[end]
        if seconds(resource):
            chain.append((str(resource["type"]), str(resource["name"]), seconds(resource)))
        end = previous[end]
    return CriticalPath(max(finish.values()), tuple(reversed(chain)), width(by_urn, finish))


def width(by_urn: Mapping[str, Mapping[str, Any]], finish: Mapping[str, float]) -> int:
    """The peak number of timed operations running at once in the as-soon-as-possible schedule."""
    edges: list[tuple[float, int]] = []
    for urn, end in finish.items():
        duration = seconds(by_urn[urn])
        if duration:
            # An operation that ends at t frees its slot before one that starts at t takes it.
            edges += [(end - duration, 1), (end, -1)]
    running = peak = 0
    for _, delta in sorted(edges):
        running += delta
        peak = max(peak, running)
    return peak
