"""`make bench`: the render of production and of stacks with 10x and 50x its machines and services.

First the wall time of `make render` of every stack as a user runs it (a new process each time).
For each stack it prints the resources registered, the wall time of the program under the mock
engine and of the whole render (program, files, every check), the time per resource, and the ratio
of the program's time to the plain Pulumi SDK registering as many ConfigMaps of the same input size
under the same mock engine: the program's own overhead. Then the critical path of `pulumi up`
estimated from the real dependency graph (render/critical_path.py), which must not grow with the
number of machines. Last, when the e2e's binaries are built (`make engine apiserver`), the wall time
of `up` through the real engine against the e2e's control plane, with kwok nodes, of production's
5 machines and of a 50-machine variant (tests/e2e/test_scale.py); without them it says why not.

What scales: machines are config (`cluster.nodes`: generated GPU agents with unique names, hosts
from 198.18.0.0/15 and host keys). Services are code (components/settings/catalogue.py), not config; the
bench adds generated MCP servers to the catalogue for the run, plus their `apps.services` entries,
which is how a new MCP server is added for real (one `McpServer(...)` entry and its settings).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from render.checks import CHECKS
from render.context import Context
from render.critical_path import DURATION_TABLE, CriticalPath, critical_path
from render.engine import run_program
from render.model import build
from render.stack import PROJECT_DIR, StackConfig, load_stack, stack_names
from render.write import write

NAMESPACE = "sophia-infra"
# GPU models cycled through for generated agents, with the architecture of their machines.
GPU_CYCLE = (
    ("a10", "amd64"),
    ("a100", "amd64"),
    ("a6000", "amd64"),
    ("h100", "amd64"),
    ("b200", "amd64"),
    ("rtx6000", "amd64"),
    ("gh200", "arm64"),
)
BENCH_MCP_PORT = 9100


def production_document() -> dict[str, Any]:
    return dict(yaml.safe_load((PROJECT_DIR / "Pulumi.production.yaml").read_text()))


def host_key(name: str) -> str:
    """A well-formed ed25519 public key blob, unique to `name`."""
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + hashlib.sha256(name.encode()).digest()
    return f"ssh-ed25519 {base64.b64encode(blob).decode()}"


def generated_agent(index: int) -> dict[str, Any]:
    name = f"sophia-agent-{index:03d}"
    gpu, arch = GPU_CYCLE[index % len(GPU_CYCLE)]
    node: dict[str, Any] = {
        "name": name,
        "host": f"198.18.{index // 200}.{index % 200 + 10}",
        "role": "agent",
        "arch": arch,
        "gpu": {"type": gpu, "count": 1 + index % 2},
        "hostKey": host_key(name),
        "labels": {"sophia.ai/instance": name},
    }
    if arch == "arm64":
        node["taints"] = [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
    return node


def bench_mcp_name(index: int) -> str:
    return f"mcp-bench-{index:03d}"


def scaled_document(machines: int, services: int = 0, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The production stack with agents added up to `machines` and `services` generated MCP servers' settings."""
    document = copy.deepcopy(base or production_document())
    config = document["config"]
    nodes = config[f"{NAMESPACE}:cluster"]["nodes"]
    nodes.extend(generated_agent(i) for i in range(max(0, machines - len(nodes))))
    apps = config[f"{NAMESPACE}:apps"]["services"]
    for i in range(services):
        apps[bench_mcp_name(i)] = {
            "replicas": {"min": 2, "max": 4},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
        }
    return document


@contextlib.contextmanager
def extra_mcp_servers(count: int) -> Iterator[None]:
    """The service catalogue with `count` generated MCP servers, in every module that holds it."""
    from components.settings import catalogue

    if count == 0:
        yield
        return
    extras = tuple(catalogue.McpServer(bench_mcp_name(i), port=BENCH_MCP_PORT + i) for i in range(count))
    old = {
        "MCP_SERVERS": catalogue.MCP_SERVERS,
        "CATALOGUE": catalogue.CATALOGUE,
        "BY_NAME": catalogue.BY_NAME,
    }
    catalogue_ = (*catalogue.CATALOGUE, *(m.service() for m in extras))
    new = {
        "MCP_SERVERS": (*catalogue.MCP_SERVERS, *extras),
        "CATALOGUE": catalogue_,
        "BY_NAME": MappingProxyType({s.name: s for s in catalogue_}),
    }
    # Modules that imported the names hold the old objects: replace each reference, then restore.
    patched: list[tuple[Any, str, Any]] = []
    for name, module in list(sys.modules.items()):
        if not (name == "components" or name.startswith("components.")) or module is None:
            continue
        for attribute, value in list(vars(module).items()):
            for key, before in old.items():
                if value is before:
                    patched.append((module, attribute, value))
                    setattr(module, attribute, new[key])
    try:
        yield
    finally:
        for module, attribute, value in patched:
            setattr(module, attribute, value)


def stack_of(document: dict[str, Any], folder: Path) -> StackConfig:
    path = folder / "Pulumi.production.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_stack("production", stack_file=path)


BASELINE_PROGRAM = '''\
"""The plain SDK: {count} ConfigMaps of {size} bytes of inputs each, through one explicit provider."""
import pulumi
import pulumi_kubernetes as k8s

provider = k8s.Provider("baseline", k8s.ProviderArgs(kubeconfig="stand-in"))
for i in range({count}):
    k8s.core.v1.ConfigMap(
        f"baseline-{{i}}",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=f"baseline-{{i}}", namespace="default"),
        data={{"blob": "x" * {size}}},
        opts=pulumi.ResourceOptions(provider=provider),
    )
'''


def baseline_seconds(stack: StackConfig, count: int, size: int, folder: Path) -> float:
    program = folder / "baseline" / "__main__.py"
    program.parent.mkdir(exist_ok=True)
    program.write_text(BASELINE_PROGRAM.format(count=count, size=size))
    started = time.perf_counter()
    recording = run_program(stack, program)
    elapsed = time.perf_counter() - started
    assert len(recording.registrations) == count + 2, "baseline registered an unexpected number of resources"
    return elapsed


@dataclass(frozen=True)
class Result:
    label: str
    machines: int
    services: int
    resources: int
    program_seconds: float
    render_seconds: float | None
    """Program, files and every check: what `make render` takes."""
    phases: tuple[tuple[str, float], ...]
    """The render's time by phase: the files, then each check."""
    baseline_seconds: float
    path: CriticalPath


def measure(label: str, machines: int, extra_services: int, full_render: bool) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch, extra_mcp_servers(extra_services):
        folder = Path(scratch)
        stack = stack_of(scaled_document(machines, extra_services), folder)
        started = time.perf_counter()
        recording = run_program(stack)
        program = time.perf_counter() - started
        rendered = build(stack.stack, recording)
        render_seconds = None
        phases: list[tuple[str, float]] = []
        if full_render:
            # What `render.__main__.render` does, phase by phase.
            out = folder / "out"
            started = time.perf_counter()
            write(rendered, out)
            phases.append(("files", time.perf_counter() - started))
            failed = []
            for name, check in CHECKS:
                started = time.perf_counter()
                if check(Context(rendered, stack, out)):
                    failed.append(name)
                phases.append((name, time.perf_counter() - started))
            if failed:
                raise SystemExit(f"{label}: the render is invalid ({', '.join(failed)})")
            render_seconds = program + sum(s for _, s in phases)
        count = len(rendered.resources)
        size = sum(len(json.dumps(r["inputs"])) for r in rendered.resources) // max(count, 1)
        baseline = baseline_seconds(stack, count - 2, size, folder)
        services = 5 + extra_services
        return Result(
            label,
            machines,
            services,
            count,
            program,
            render_seconds,
            tuple(phases),
            baseline,
            critical_path(rendered.resources),
        )


WHOLE_PROCESS_RUNS = 5


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def whole_process_seconds(stack: str, folder: Path) -> list[tuple[float, float]]:
    """Wall and CPU times of `make render STACK=<stack>` as a user runs it: a new Python each time, venv ready.

    The CPU time (the render and its shellcheck processes) tells how much of the wall time was the
    render's own work on a machine that was busy with something else.
    """
    times = []
    for i in range(WHOLE_PROCESS_RUNS):
        command = [sys.executable, "-m", "render", "--stack", stack, "--out", str(folder / f"{stack}-{i}")]
        started, cpu = time.perf_counter(), _children_cpu()
        done = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, check=False)
        times.append((time.perf_counter() - started, _children_cpu() - cpu))
        if done.returncode != 0:
            raise SystemExit(f"make render STACK={stack} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return times


def whole_process_report(stacks: list[str], folder: Path) -> str:
    lines = [
        f"`make render`, the whole process ({WHOLE_PROCESS_RUNS} runs each, {os.cpu_count()} cores; "
        f"load average before: {os.getloadavg()[0]:.1f}):",
        f"  {'stack':<12} {'median s':>9} {'best s':>7} {'worst s':>8} {'CPU s':>6}",
    ]
    for stack in stacks:
        runs = whole_process_seconds(stack, folder)
        wall = [w for w, _ in runs]
        cpu = statistics.median(c for _, c in runs)
        lines.append(f"  {stack:<12} {statistics.median(wall):9.2f} {min(wall):7.2f} {max(wall):8.2f} {cpu:6.2f}")
    return "\n".join(lines)


def report(results: list[Result]) -> str:
    lines = [
        f"{'stack':<12} {'machines':>8} {'services':>8} {'resources':>9} {'program s':>10} {'ms/res':>7} "
        f"{'render s':>9} {'ms/res':>7} {'SDK s':>7} {'ratio':>6} {'critical path':>14}",
    ]
    for r in results:
        render_s = f"{r.render_seconds:9.1f}" if r.render_seconds is not None else f"{'-':>9}"
        render_ms = f"{1000 * r.render_seconds / r.resources:7.1f}" if r.render_seconds is not None else f"{'-':>7}"
        lines.append(
            f"{r.label:<12} {r.machines:>8} {r.services:>8} {r.resources:>9} {r.program_seconds:10.2f} "
            f"{1000 * r.program_seconds / r.resources:7.2f} {render_s} {render_ms} {r.baseline_seconds:7.2f} "
            f"{r.program_seconds / r.baseline_seconds:6.2f} {r.path.seconds:12.0f} s"
        )
    if any(r.phases for r in results):
        lines += ["", "render time by phase (s):"]
        names = [name for name, _ in next(r.phases for r in results if r.phases)]
        lines += [f"  {'program under the mock engine':<52} " + " ".join(f"{r.program_seconds:8.1f}" for r in results)]
        for i, name in enumerate(names):
            cells = " ".join(f"{r.phases[i][1]:8.1f}" if r.phases else f"{'-':>8}" for r in results)
            lines.append(f"  {name:<52} {cells}")
    lines += ["", "critical path of `pulumi up` (estimated durations per resource type):"]
    lines += [f"  {what:<52} {s:5.0f} s" for what, s in DURATION_TABLE]
    first = results[0].path
    lines += ["", f"{results[0].label}: {first.seconds:.0f} s"]
    lines += [f"  {s:5.0f} s  {type_.split(':')[-1]} {name}" for type_, name, s in first.steps]
    same = all(r.path.shape() == first.shape() for r in results)
    lines.append(
        f"\nthe critical path is {'the same' if same else 'NOT the same'} for every size "
        f"({', '.join(f'{r.label}: {r.path.seconds:.0f} s' for r in results)})"
    )
    return "\n".join(lines)


def _machine() -> str:
    """The machine a measurement was taken on: CPU model, cores, kernel, Python."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    system = os.uname()
    python = sys.version.split()[0]
    return f"{model}, {os.cpu_count()} cores, {system.sysname} {system.release} {system.machine}, Python {python}"


def _commit() -> str:
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=PROJECT_DIR, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown (not a git checkout)"


def benchmarks_document(command: str, sections: list[tuple[str, str]], load_before: float) -> str:
    """docs/benchmarks.md: what was measured, when, on what, under what load, and the tables."""
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command}`: a measurement, of this run only.",
        "Run it again to compare, back to back on one machine: the host under a shared machine varies,",
        "and other work on it slows every figure.",
        "What is computed rather than measured (resource counts, the critical path estimate) is in",
        "[architecture.md](architecture.md#figures-the-program-computes), held to the code by a test.",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- commit: `{_commit()}`",
        f"- machine: {_machine()}",
        f"- load average (1 minute): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after",
        "",
    ]
    titles = [title for title, _ in sections] + [MEASURED]
    lines += ["## Contents", "", *(f"- [{title}](#{_anchor(title)})" for title in titles), ""]
    for title, text in sections:
        lines += [f"## {title}", "", "```text", text.rstrip("\n"), "```", ""]
    lines += [f"## {MEASURED}", "", *(__doc__ or "").strip().splitlines(), ""]
    return "\n".join(lines)


MEASURED = "How it is measured"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


E2E_SCALES = "5,50"
E2E_TIMEOUT = 3600


def e2e_up_report(folder: Path) -> str:
    """`up` through the real engine (tests/e2e/test_scale.py), or why it did not run."""
    found = subprocess.run(
        [sys.executable, "-c", "from tests.e2e.engine import bin_dir; print(bin_dir())"],
        cwd=PROJECT_DIR, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if found.returncode != 0:
        reason = (found.stderr.strip().splitlines() or ["no binaries"])[-1]
        return f"e2e `up` through the real engine: not measured ({reason})"
    out = folder / "e2e-times.json"
    env = {
        **os.environ,
        "SOPHIA_E2E_BIN": found.stdout.strip(),
        "SOPHIA_E2E_SCALE": E2E_SCALES,
        "SOPHIA_E2E_BENCH_OUT": str(out),
    }
    command = [sys.executable, "-m", "pytest", "-m", "e2e", "-q", "tests/e2e/test_scale.py"]
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, check=False, timeout=E2E_TIMEOUT
    )
    if done.returncode != 0 or not out.exists():
        return f"e2e `up` through the real engine: FAILED ({' '.join(command)}):\n{done.stdout[-3000:]}"
    times = {int(k): v for k, v in json.loads(out.read_text()).items()}
    lines = [f"e2e `up` through the real engine, kwok nodes (whole run {time.perf_counter() - started:.0f} s):"]
    lines += [f"  production, {machines:>3} machines: {seconds:6.0f} s" for machines, seconds in sorted(times.items())]
    return "\n".join(lines)


def cluster_up_report() -> str:
    """The first `up` of the K3s cluster over SSH on 3 and on 9 test machines (tests/e2e/bench_cluster.py)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.e2e.bench_cluster"],
        cwd=PROJECT_DIR, capture_output=True, text=True, check=False, timeout=E2E_TIMEOUT,
    )  # fmt: skip
    if done.returncode != 0:
        return f"the cluster over SSH through the real engine: FAILED:\n{(done.stdout + done.stderr)[-3000:]}"
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m render.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--factors", default="1,10,50", help="machine and service multipliers (default 1,10,50)")
    parser.add_argument("--program-only", action="store_true", help="skip the files and checks (faster)")
    parser.add_argument("--render-only", action="store_true", help="only time the whole-process `make render`")
    parser.add_argument("--write", type=Path, help="also write the results, dated, to this Markdown file")
    parser.add_argument("--no-e2e", action="store_true", help="skip the `up` through the real engine")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    sections: list[tuple[str, str]] = []
    stacks = stack_names()
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        whole = whole_process_report(stacks, Path(scratch))
    print(whole, flush=True)
    sections.append(("`make render`, the whole process", whole))
    command = "python -m render.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.render_only:
        if args.write:
            args.write.write_text(benchmarks_document(command.strip(), sections, load_before))
        return 0
    base = production_document()
    machines = len(base["config"][f"{NAMESPACE}:cluster"]["nodes"])
    services = len(base["config"][f"{NAMESPACE}:apps"]["services"])
    # Warm-up: the first run imports every module of the program and of pulumi_kubernetes' types.
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        stack = stack_of(base, Path(scratch))
        run_program(stack)
        baseline_seconds(stack, 10, 100, Path(scratch))
    results = []
    for factor in (int(f) for f in args.factors.split(",")):
        label = "production" if factor == 1 else f"{factor}x"
        result = measure(label, machines * factor, services * (factor - 1), not args.program_only)
        print(f"measured {label}: {result.resources} resources", file=sys.stderr, flush=True)
        results.append(result)
    text = report(results)
    print(text)
    sections.append(("The program and the render, at 1x, 10x and 50x the machines and services", text))
    if not args.no_e2e:
        with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
            e2e = e2e_up_report(Path(scratch))
        print("\n" + e2e, flush=True)
        sections.append(("`up` through the real engine, kwok nodes", e2e))
        cluster = cluster_up_report()
        print("\n" + cluster, flush=True)
        sections.append(("The K3s cluster over SSH through the real engine, 3 and 9 test machines", cluster))
    if args.write:
        args.write.write_text(benchmarks_document(command.strip(), sections, load_before))
    return 0 if all(r.path.shape() == results[0].path.shape() for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
