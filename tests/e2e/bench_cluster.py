"""`make bench`'s real figure: the wall time of a first `up` of the K3s cluster, through the real engine,
on 3 and on 9 test machines of the production shape (its first server, then more agents).

The program is the cluster alone (settings, then `K3sCluster`, as `__main__.py` builds it), so the
figure is the SSH steps' and not the Helm releases'. Joins run in parallel, so the 9-machine `up`
should take about as long as the 3-machine one; the ratio is printed with both times.

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
from pathlib import Path

import pulumi

from components.cluster import K3sCluster, K3sClusterArgs
from components.settings.secrets import SecretKey
from components.settings.stack import load_settings, stack_config
from tests.e2e.apiserver import ApiServer, control_plane
from tests.e2e.charts import chart_repository
from tests.e2e.engine import bin_dir, open_engine
from tests.e2e.k3s_cluster import K3sMirror, api_forwarder, k3s_mirror, provision
from tests.e2e.machines import Fleet, test_network
from tests.e2e.whole_program import Variant, cluster_settings, k3s_version, machine_specs, variant_nodes

SIZES = (Variant("3 machines", "production", agents=2), Variant("9 machines", "production", agents=8))


def cluster_only() -> None:
    settings = load_settings(pulumi.get_stack(), *stack_config())
    K3sCluster(
        "sophia", K3sClusterArgs(cluster=settings.cluster, ssh_private_key=settings.secrets[SecretKey.SSH_PRIVATE_KEY])
    )


def first_up(
    variant: Variant, *, bins: Path, server: ApiServer, fleet: Fleet, mirror: K3sMirror, chart_mirror: str, root: Path
) -> float:
    """Seconds of the first `up` of the variant's cluster; its machines and stack are gone afterwards."""
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
        started = time.monotonic()
        engine.run("up")
        elapsed = time.monotonic() - started
        engine.run("destroy")
        return elapsed
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
            times = {}
            for variant in SIZES:
                times[variant.name] = first_up(
                    variant, bins=bins, server=server, fleet=fleet, mirror=mirror, chart_mirror=chart_mirror,
                    root=root / variant.name.replace(" ", "-"),
                )  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    small, large = (times[v.name] for v in SIZES)
    ratio = large / small
    if args.markdown:
        for variant in SIZES:
            print(f"| first `up` of the K3s cluster, {variant.name} (real engine, SSH) | {times[variant.name]:.1f} s |")
        print(f"| ratio 9 / 3 machines (joins in parallel: goal <= 1.25) | {ratio:.2f} |")
    else:
        for variant in SIZES:
            print(f"first up of the cluster on {variant.name}: {times[variant.name]:.1f} s")
        print(f"ratio 9 / 3 machines: {ratio:.2f} (goal <= 1.25)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
