"""The platform's Helm charts, the upstream packages, served by a Helm repository on 127.0.0.1: the e2e's chart mirror.

Helm charts cannot be downloaded here: ../shared/third_party/charts holds the upstream package of
every chart the program pins (components/platform/charts.py), each checked against
../shared/third_party/SHA256SUMS (tests/e2e/third_party.py) before it is served. The repository's
index lists them as the official repository or an internal mirror (`platform.chartMirror`) would,
so the release the program asks for resolves, and Helm inside the provider fetches it from here;
the real chart installs its real CRDs, Deployments, DaemonSets, hooks and webhook configurations.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.platform.charts import CHARTS, Chart
from tests.e2e.third_party import verified

# Fixed, so that the index never changes between runs.
CREATED = "2026-01-01T00:00:00Z"


def package_name(chart: Chart) -> str:
    return f"{chart.name}-{chart.version}.tgz"


def chart_metadata(data: bytes, chart: Chart) -> dict[str, Any]:
    """The package's own Chart.yaml (`<name>/Chart.yaml`), which must be the pinned chart's."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        member = archive.extractfile(f"{chart.name}/Chart.yaml")
        if member is None:
            raise ValueError(f"{package_name(chart)}: no {chart.name}/Chart.yaml")
        metadata: dict[str, Any] = yaml.safe_load(member.read())
    if (metadata.get("name"), str(metadata.get("version"))) != (chart.name, chart.version):
        raise ValueError(f"{package_name(chart)} holds {metadata.get('name')} {metadata.get('version')}")
    return metadata


def write_repository(directory: Path, url: str) -> None:
    """The upstream package of every chart the platform pins, in `directory`, with the `index.yaml` a
    Helm repository serves (each entry the package's own Chart.yaml, as `helm repo index` writes it)."""
    entries: dict[str, list[dict[str, Any]]] = {}
    for chart in CHARTS:
        archive = package_name(chart)
        data = verified(f"charts/{archive}")
        (directory / archive).write_bytes(data)
        entry = chart_metadata(data, chart)
        entry |= {"urls": [f"{url}/{archive}"], "digest": hashlib.sha256(data).hexdigest(), "created": CREATED}
        entries[chart.name] = [entry]
    index = {"apiVersion": "v1", "entries": entries, "generated": CREATED}
    (directory / "index.yaml").write_text(yaml.safe_dump(index, sort_keys=True))


@dataclass
class ChartRepository:
    url: str
    fetched: list[str] = field(default_factory=list)
    """Every path a client asked for, in order: the engine's provider fetched what it installed from here."""


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, repository: ChartRepository, **kwargs: Any) -> None:
        self.repository = repository
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self.repository.fetched.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # `fetched` is the log; stderr would mix into pytest's output


@contextmanager
def chart_repository(directory: Path) -> Iterator[ChartRepository]:
    """A Helm repository of the upstream charts on 127.0.0.1 (a free port), for as long as the block runs."""
    directory.mkdir(parents=True, exist_ok=True)
    repository = ChartRepository(url="")
    handler = functools.partial(_Handler, repository=repository, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    try:
        repository.url = f"http://127.0.0.1:{server.server_address[1]}"
        write_repository(directory, repository.url)
        thread = threading.Thread(target=server.serve_forever, name="chart-repository", daemon=True)
        thread.start()
        try:
            yield repository
        finally:
            server.shutdown()
            thread.join(timeout=10)
    finally:
        server.server_close()
