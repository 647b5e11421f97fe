"""The whole program under the real engine: `__main__.py` itself, on test machines reached over SSH.

`whole_program()` runs the project's own `__main__.py` (runpy, as the render runs it under the mock
engine), so the e2e has no second copy of the construction: settings → K3sCluster over SSH → the
Kubernetes provider on the `kubeconfig` step's output → the platform and Sophia. The one harness
transform is the readiness one of tests/e2e/program.py (no kubelet runs pods here).

`cluster_settings()` is the stack's own `Pulumi.<stack>.yaml` with what an operator fills in for
machines of their own: each node's `host` (and `privateIp` where a variant has a private network)
and `hostKey` from the test machines, `k3sMirror` and `k3sSha256` for the K3s mirror, and the
platform's `chartMirror`.
"""

from __future__ import annotations

import contextlib
import copy
import runpy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from components.settings.cluster import GPU_MODELS
from render.stack import PROJECT_DIR
from tests.e2e.apiserver import ApiServer
from tests.e2e.charts import ChartRepository
from tests.e2e.engine import Engine, open_engine
from tests.e2e.k3s_cluster import K3sMirror, provision
from tests.e2e.machines import Fleet, Machine, MachineSpec
from tests.e2e.program import skip_await

PROJECT = "sophia-infra"
CLUSTER_KEY = f"{PROJECT}:cluster"
PLATFORM_KEY = f"{PROJECT}:platform"
# What the K3s stand-in records in the cluster, as K3s keeps its bootstrap data in its datastore.
BOOTSTRAP = "/api/v1/namespaces/kube-system/secrets/k3s-stand-in-bootstrap"


def whole_program() -> Callable[[], None]:
    def program() -> None:
        pulumi.runtime.register_resource_transform(skip_await)
        runpy.run_path(str(PROJECT_DIR / "__main__.py"), run_name="__main__")

    return program


@dataclass(frozen=True)
class Variant:
    """A shape of cluster the e2e runs: the stack's own file, reshaped where the variant says."""

    name: str
    stack: str
    servers: int = 1
    """How many of the stack's first nodes are servers (more than one needs a private network)."""
    agents: int | None = None
    """How many agents after the servers (None: the stack's own; more repeat its agents' shapes)."""

    @property
    def private(self) -> bool:
        return self.servers > 1


def stack_file(stack: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())
    return data


def variant_nodes(variant: Variant) -> list[dict[str, Any]]:
    """The variant's nodes, as the stack file would list them (before addresses and keys)."""
    nodes = [copy.deepcopy(n) for n in stack_file(variant.stack)["config"][CLUSTER_KEY]["nodes"]]
    servers = [n for n in nodes if n["role"] == "server"]
    agents = [n for n in nodes if n["role"] != "server"]
    ordered = servers + agents
    for i, node in enumerate(ordered):
        node["role"] = "server" if i < variant.servers else "agent"
    if variant.agents is None:
        return ordered
    head, tail = ordered[: variant.servers], ordered[variant.servers :] or [servers[0]]
    extra: list[dict[str, Any]] = []
    for i in range(variant.agents):
        node = copy.deepcopy(tail[i % len(tail)])
        if i >= len(tail):
            node["name"] = f"{node['name']}-{i // len(tail) + 1}"
        node["role"] = "agent"
        extra.append(node)
    return head + extra


def machine_spec(node: Mapping[str, Any], default_user: str, private: bool) -> MachineSpec:
    gpu = node.get("gpu")
    product = GPU_MODELS[gpu["type"]].product if gpu else None
    return MachineSpec(
        name=str(node["name"]),
        user=str(node.get("sshUser", default_user)),
        arch=str(node["arch"]),
        gpu_product=product,
        gpu_count=int(gpu["count"]) if gpu else 0,
        private=private,
    )


def machine_specs(variant: Variant) -> list[MachineSpec]:
    cluster = stack_file(variant.stack)["config"][CLUSTER_KEY]
    return [machine_spec(n, cluster.get("sshUser", "ubuntu"), variant.private) for n in variant_nodes(variant)]


def cluster_settings(
    variant: Variant,
    fleet: Fleet,
    *,
    k3s_mirror: str,
    k3s_sha256: Mapping[str, str],
    chart_mirror: str,
    nodes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The stack file's `config:` for the variant on these machines (module docstring)."""
    config: dict[str, Any] = copy.deepcopy(stack_file(variant.stack)["config"])
    cluster = config[CLUSTER_KEY]
    listed = nodes if nodes is not None else variant_nodes(variant)
    for node in listed:
        machine = fleet.machines[node["name"]]
        node["host"] = machine.address
        node["hostKey"] = machine.host_key
        if machine.private_address:
            node["privateIp"] = machine.private_address
        else:
            node.pop("privateIp", None)
    cluster["nodes"] = listed
    cluster["k3sMirror"] = k3s_mirror
    cluster["k3sSha256"] = dict(k3s_sha256)
    config.setdefault(PLATFORM_KEY, {})["chartMirror"] = chart_mirror
    return config


@dataclass
class Cluster:
    """A stack of the whole program on its own test machines, and what an operator edits."""

    variant: Variant
    engine: Engine
    fleet: Fleet
    mirror: K3sMirror
    chart_mirror: str
    pins: dict[str, str]
    nodes: list[dict[str, Any]] = field(default_factory=list)
    """The stack file's nodes as the engine's stack file now lists them."""
    version: str = ""

    def machine(self, name: str) -> Machine:
        return self.fleet.machines[name]

    def write_settings(self) -> None:
        """The stack file with the current nodes and version: what an operator edits before `pulumi up`."""
        settings = cluster_settings(
            self.variant,
            self.fleet,
            k3s_mirror=self.mirror.url,
            k3s_sha256=self.pins,
            chart_mirror=self.chart_mirror,
            nodes=self.nodes,
        )
        settings[CLUSTER_KEY]["k3sVersion"] = self.version
        path = Path(self.engine.stack.workspace.work_dir) / f"Pulumi.{self.variant.stack}.yaml"
        # The engine keeps the stack's secrets (encrypted) and their salt in the same file: only the
        # plain settings change, as when an operator edits the file.
        current = yaml.safe_load(path.read_text())
        current["config"] = {k: v for k, v in current["config"].items() if k not in settings} | settings
        path.write_text(yaml.safe_dump(current))


def k3s_version(stack: str) -> str:
    return str(stack_file(stack)["config"][CLUSTER_KEY]["k3sVersion"])


def state(engine: Engine) -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = (engine.stack.export_stack().deployment or {}).get("resources") or []
    return resources


@contextlib.contextmanager
def cluster_on_machines(
    variant: Variant,
    *,
    bins: Path,
    apiserver: ApiServer,
    fleet: Fleet,
    k3s: K3sMirror,
    chart_mirror: str,
    root: Path,
    report: list[str],
) -> Iterator[Cluster]:
    """The variant's machines on the test network and a stack for them; after the block, `destroy` (if
    anything is left), the machines stopped, and the cluster's datastore records gone."""
    report.append(f"whole program, {variant.name} ({len(machine_specs(variant))} machines over SSH):")
    # Every machine started while this cluster lives (its own and those its tests add) goes with it:
    # the next module's cluster sees only its own machines on the shared network.
    before = set(fleet.machines)
    engine: Engine | None = None
    try:
        for spec in machine_specs(variant):
            provision(fleet.add(spec), apiserver)
        version = k3s_version(variant.stack)
        pins = k3s.publish(version)
        nodes = variant_nodes(variant)
        settings = cluster_settings(
            variant, fleet, k3s_mirror=k3s.url, k3s_sha256=pins, chart_mirror=chart_mirror, nodes=nodes
        )
        engine = open_engine(
            bins,
            root,
            whole_program(),
            report,
            stack_name=variant.stack,
            settings=settings,
            secrets={"sshPrivateKey": fleet.private_key},
        )
        yield Cluster(variant, engine, fleet, k3s, chart_mirror, pins, nodes, version)
    finally:
        if engine is not None and state(engine):
            try:
                engine.run("destroy")
            except Exception as error:  # the teardown goes on: machines and the datastore must go
                report.append(f"    teardown: destroy failed: {error}")
        for name in [n for n in fleet.machines if n not in before]:
            fleet.remove(name)
        # The cluster's datastore goes with its machines: the next cluster starts from nothing.
        apiserver.request("DELETE", BOOTSTRAP)
        for node in apiserver.items("/api/v1/nodes"):
            apiserver.request("DELETE", f"/api/v1/nodes/{node['metadata']['name']}")


def cluster_fixture(variant: Variant) -> Callable[..., Iterator[Cluster]]:
    """A module-scoped pytest fixture: the variant's cluster on the session's test network."""

    @pytest.fixture(scope="module")
    def cluster(
        *,
        bins: Path,
        apiserver: ApiServer,
        network: Fleet,
        api_endpoint: str,
        k3s: K3sMirror,
        charts: ChartRepository,
        tmp_path_factory: pytest.TempPathFactory,
        report: list[str],
    ) -> Iterator[Cluster]:
        with cluster_on_machines(
            variant, bins=bins, apiserver=apiserver, fleet=network, k3s=k3s, chart_mirror=charts.url,
            root=tmp_path_factory.mktemp("cluster"), report=report,
        ) as made:  # fmt: skip
            yield made

    return cluster
