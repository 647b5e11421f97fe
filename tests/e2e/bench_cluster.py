"""`make bench`'s real figure: the wall time of a first `up` of the K3s cluster, through the real engine,
on 3 and on 9 test machines of the production shape (its first server, then more agents).

The program is the cluster alone (settings, then `K3sCluster`, as `__main__.py` builds it), so the
figure is the SSH steps' and not the Helm releases'. Joins run in parallel, so the 9-machine `up`
should take about as long as the 3-machine one; the ratio is printed with both times.

A ratio alone cannot tell a program that serializes its joins from a host that has run out of CPU
(every test machine's sshd, bash, sudo, kubectl and K3s stand-in share this host's cores with the
engine). So each size also reports, from the engine's own events, when the first server's chain
ended, how many agents' `install` steps ran at once (all of them, if the joins are parallel), and how
busy the host's CPUs were during the `up`.

Run as `python -m tests.e2e.bench_cluster` (needs root, the e2e's binaries and Debian's sshd, as
`make e2e` does); prints one line per size and the ratio, and `--markdown` rows for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pulumi

from components.cluster import K3sCluster, K3sClusterArgs
from components.settings.secrets import SecretKey
from components.settings.stack import load_settings, stack_config
from tests.e2e.apiserver import ApiServer, control_plane
from tests.e2e.charts import chart_repository
from tests.e2e.engine import Run, bin_dir, name_of, open_engine
from tests.e2e.k3s_cluster import K3sMirror, api_forwarder, k3s_mirror, provision
from tests.e2e.machines import Fleet, Machine, test_network
from tests.e2e.whole_program import Variant, cluster_settings, k3s_version, machine_specs, variant_nodes

SIZES = (Variant("3 machines", "production", agents=2), Variant("9 machines", "production", agents=8))


def cluster_only() -> None:
    settings = load_settings(pulumi.get_stack(), *stack_config())
    K3sCluster(
        "sophia", K3sClusterArgs(cluster=settings.cluster, ssh_private_key=settings.secrets[SecretKey.SSH_PRIVATE_KEY])
    )


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of every CPU of the host, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def machines_cpu(machines: list[Machine]) -> float | None:
    """The CPU time the machines' processes have used so far, all together (None: not accounted)."""
    used = [m.cpu_seconds() for m in machines]
    return None if any(u is None for u in used) else sum(u for u in used if u is not None)


@dataclass(frozen=True)
class Up:
    """One first `up`: its wall time, and what the engine's events and /proc/stat say about it."""

    variant: Variant
    seconds: float
    first_server_done: float
    """When the first server's last step ended (the others' joins need its token), from the start."""
    agents: int
    concurrent_installs: int
    """The most agents' `install` steps running at one moment."""
    agents_phase: float
    """From the first agent step's start to the last one's end."""
    cpu_busy: float
    """Fraction of the host's CPU time that was busy during the `up`."""
    cpu_seconds: float
    """CPU time the host spent during the `up` (every process: the engine, sshd, the machines' steps)."""
    machines_cpu_seconds: float | None
    """Of that, the test machines' own processes' (Machine.cpu_seconds: sshd, the sessions, the scripts,
    sudo, kubectl, K3s's stand-in): work each machine does on its own CPUs in production. None where
    the host has no cgroup CPU accounting."""

    def line(self) -> str:
        used = self.machines_cpu_seconds
        machines = "" if used is None else f", {used:.0f} of them the machines'"
        return (
            f"{self.variant.name}: first up {self.seconds:.1f} s; first server's steps done at "
            f"{self.first_server_done:.1f} s; {self.agents} agents' steps over {self.agents_phase:.1f} s, "
            f"their installs {self.concurrent_installs} at once; CPUs {self.cpu_busy:.0%} busy "
            f"({os.cpu_count()} cores), {self.cpu_seconds:.0f} CPU-seconds{machines}"
        )


def timeline(
    variant: Variant, run: Run, started: float, seconds: float, *, busy: int, total: int, machines_cpu: float | None
) -> Up:
    """The `up`'s shape from the remote commands' steps (`<node>-<step>`), `started` in time.time()."""
    nodes = [str(n["name"]) for n in variant_nodes(variant)]
    first, agents = nodes[0], set(nodes[1:])

    def node_of(name: str) -> str | None:
        # Longest first: `gpu-1-2-install` is the agent `gpu-1-2`'s, not `gpu-1`'s.
        return next((n for n in sorted(nodes, key=len, reverse=True) if name.startswith(f"{n}-")), None)

    spans = {
        name_of(urn): (start, run.finished.get(urn, start))
        for urn, start in run.started.items()
        if urn.split("::")[-2].endswith("remote:Command")
    }
    first_steps = [end for name, (_, end) in spans.items() if node_of(name) == first]
    agent_spans = [span for name, span in spans.items() if node_of(name) in agents]
    installs = [span for name, span in spans.items() if node_of(name) in agents and name.endswith("-install")]
    # An install that ends frees its place before one that starts at that moment.
    points = sorted([(s, 1) for s, _ in installs] + [(e, -1) for _, e in installs])
    running = peak = 0
    for _, delta in points:
        running += delta
        peak = max(peak, running)
    agent_start = min((s for s, _ in agent_spans), default=started)
    agent_end = max((e for _, e in agent_spans), default=agent_start)
    return Up(
        variant=variant,
        seconds=seconds,
        first_server_done=max(first_steps, default=started) - started,
        agents=len(agents),
        concurrent_installs=peak,
        agents_phase=agent_end - agent_start,
        cpu_busy=busy / total,
        cpu_seconds=busy / os.sysconf("SC_CLK_TCK"),
        machines_cpu_seconds=machines_cpu,
    )


def first_up(
    variant: Variant, *, bins: Path, server: ApiServer, fleet: Fleet, mirror: K3sMirror, chart_mirror: str, root: Path
) -> Up:
    """The first `up` of the variant's cluster; its machines and stack are gone afterwards."""
    program: Callable[[], None] = cluster_only
    added = []
    try:
        for spec in machine_specs(variant):
            provision(fleet.add(spec), server)
            added.append(spec.name)
        pins = mirror.publish(k3s_version(variant.stack))
        settings = cluster_settings(
            variant,
            fleet,
            k3s_mirror=mirror.url,
            k3s_sha256=pins,
            chart_mirror=chart_mirror,
            nodes=variant_nodes(variant),
        )
        log: list[str] = []
        engine = open_engine(
            bins, root, program, log, stack_name=variant.stack, settings=settings,
            secrets={"sshPrivateKey": fleet.private_key},
        )  # fmt: skip
        machines = [fleet.machines[name] for name in added]
        busy_before, total_before = cpu_ticks()
        machines_before = machines_cpu(machines)
        started = time.time()
        run = engine.run("up")
        elapsed = time.time() - started
        busy_after, total_after = cpu_ticks()
        machines_after = machines_cpu(machines)
        engine.run("destroy")
        used = None if machines_before is None or machines_after is None else machines_after - machines_before
        return timeline(
            variant, run, started, elapsed, busy=busy_after - busy_before, total=total_after - total_before,
            machines_cpu=used,
        )  # fmt: skip
    finally:
        for name in added:
            fleet.remove(name)
        server.request("DELETE", "/api/v1/namespaces/kube-system/secrets/k3s-stand-in-bootstrap")
        for node in server.items("/api/v1/nodes"):
            server.request("DELETE", f"/api/v1/nodes/{node['metadata']['name']}")


@contextlib.contextmanager
def harness(root: Path) -> Iterator[tuple[Path, ApiServer, Fleet, K3sMirror, str]]:
    bins = bin_dir()
    with (
        control_plane(bins, root / "control-plane") as server,
        test_network(root / "machines", python=sys.executable, ca_bundle=(server.pki / "ca.crt").read_text()) as fleet,
        api_forwarder(server),
        k3s_mirror(server, bins / "kubectl") as mirror,
        chart_repository(root / "charts") as charts,
    ):
        yield bins, server, fleet, mirror, charts.url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print table rows for docs/benchmarks.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_cluster: skipped: test machines need root (network namespaces, sshd)")
        return 0
    root = Path(tempfile.mkdtemp(prefix="sophia-bench-cluster-"))
    try:
        with harness(root) as (bins, server, fleet, mirror, chart_mirror):
            ups = [
                first_up(
                    variant,
                    bins=bins,
                    server=server,
                    fleet=fleet,
                    mirror=mirror,
                    chart_mirror=chart_mirror,
                    root=root / variant.name.replace(" ", "-"),
                )
                for variant in SIZES
            ]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    small, large = ups
    ratio = large.seconds / small.seconds
    if args.markdown:
        for up in ups:
            print(f"| first `up` of the K3s cluster, {up.variant.name} (real engine, SSH) | {up.seconds:.1f} s |")
        print(f"| ratio 9 / 3 machines (joins in parallel: goal <= 1.25) | {ratio:.2f} |")
        for up in ups:
            print(f"| {up.variant.name}: agents' installs running at once | {up.concurrent_installs} of {up.agents} |")
            cpu = f"{up.cpu_busy:.0%} ({up.cpu_seconds:.0f} CPU-s)"
            print(f"| {up.variant.name}: host CPUs busy during the `up` | {cpu} |")
            if (used := up.machines_cpu_seconds) is not None:
                print(f"| {up.variant.name}: of that, the test machines' own processes | {used:.0f} CPU-s |")
    else:
        for up in ups:
            print(up.line())
        print(
            f"ratio 9 / 3 machines: {ratio:.2f} (goal <= 1.25); the agents' phase alone: "
            f"{large.agents_phase / small.agents_phase:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
