"""Fixtures of the e2e: a real API server and the real engine. `make e2e` runs these; `make test` deselects them."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.apiserver import ApiServer, control_plane
from tests.e2e.charts import ChartRepository, chart_repository
from tests.e2e.engine import bin_dir, versions
from tests.e2e.k3s_cluster import K3sMirror, api_forwarder, k3s_mirror
from tests.e2e.machines import Fleet, test_network

_REPORT: list[str] = []


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # A SIGTERM (a CI timeout, `timeout`) ends the run as Ctrl-C does: the fixtures' teardowns still run,
    # so no machine, namespace or control-plane process outlives it.
    signal.signal(signal.SIGTERM, _interrupt)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.e2e)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _REPORT:
        terminalreporter.section("e2e: what ran and what the engine did")
        for line in _REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def report() -> list[str]:
    return _REPORT


@pytest.fixture(scope="session")
def bins(report: list[str]) -> Path:
    path = bin_dir()
    pins = versions()
    cli = subprocess.run([str(path / "pulumi"), "version"], capture_output=True, text=True, check=True, timeout=60)
    report.append(f"binaries: {path}")
    report.append(f"pulumi CLI {cli.stdout.strip()} ({pins['PULUMI_CLI_MODULE']})")
    report.append(f"kubernetes provider {pins['KUBERNETES_PROVIDER_VERSION']} ({pins['KUBERNETES_PROVIDER_MODULE']})")
    built_from_archives = (("command provider", "COMMAND"), ("random provider", "RANDOM"), ("language host", "PYTHON"))
    for what, prefix in built_from_archives:
        version = pins.get(f"{prefix}_VERSION") or pins[f"{prefix}_HOST_VERSION"]
        commit = pins.get(f"{prefix}_COMMIT") or pins[f"{prefix}_HOST_COMMIT"]
        report.append(f"{what} {version} ({commit[:12]}, ../shared/third_party/{pins[f'{prefix}_ARCHIVE']})")
    report.append(f"etcd {pins['ETCD_VERSION']} ({pins['ETCD_MODULE']})")
    report.append(f"ESC evaluator {pins['ESC_VERSION']} ({pins['ESC_MODULE']}), in esc-project")
    report.append(f"kwok {pins['KWOK_VERSION']} ({pins['KWOK_MODULE']})")
    return path


@pytest.fixture(scope="session")
def apiserver(bins: Path, tmp_path_factory: pytest.TempPathFactory, report: list[str]) -> Iterator[ApiServer]:
    workdir = tmp_path_factory.mktemp("control-plane")
    try:
        with control_plane(bins, workdir) as server:
            report.append(
                f"kube-apiserver, kube-controller-manager and kube-scheduler {server.version} at {server.url}"
            )
            yield server
    finally:
        # The components' logs stay in pytest's temporary directory for a post-mortem; etcd's data and
        # the keys do not outlive the run.
        shutil.rmtree(workdir / "etcd", ignore_errors=True)
        shutil.rmtree(workdir / "pki", ignore_errors=True)


@pytest.fixture(scope="session")
def charts(tmp_path_factory: pytest.TempPathFactory, report: list[str]) -> Iterator[ChartRepository]:
    """The upstream charts, served as a Helm repository on 127.0.0.1: the stack's `platform.chartMirror`."""
    with chart_repository(tmp_path_factory.mktemp("chart-repository")) as repository:
        report.append(f"chart mirror: the upstream chart packages (sha256-checked) at {repository.url}")
        yield repository


@pytest.fixture(scope="session")
def network(apiserver: ApiServer, tmp_path_factory: pytest.TempPathFactory, report: list[str]) -> Iterator[Fleet]:
    """The test network (a bridge on this host); the whole-program cases add their machines to it."""
    ca = (apiserver.pki / "ca.crt").read_text()
    with test_network(tmp_path_factory.mktemp("machines"), python=sys.executable, ca_bundle=ca) as fleet:
        report.append(f"test network: bridge {fleet.network.bridge}, machines reached over SSH")
        yield fleet


@pytest.fixture(scope="session")
def api_endpoint(apiserver: ApiServer, network: Fleet) -> Iterator[str]:
    """The API server on the test network's gateway, where every K3s stand-in server forwards its 6443."""
    with api_forwarder(apiserver) as address:
        yield address


@pytest.fixture(scope="session")
def k3s(apiserver: ApiServer, network: Fleet, bins: Path, api_endpoint: str, report: list[str]) -> Iterator[K3sMirror]:
    """The K3s mirror on the test network, serving the stand-in (tests/e2e/k3s_standin.py)."""
    with k3s_mirror(apiserver, bins / "kubectl") as mirror:
        report.append(f"K3s mirror: the K3s stand-in at {mirror.url}")
        yield mirror
