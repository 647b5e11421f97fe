"""Stand-ins for the platform's Helm charts, served by a Helm repository on 127.0.0.1: the e2e's chart mirror.

Helm charts cannot be downloaded here. Each stand-in has the real chart's name and pinned version
(components/platform/charts.py), so the release the program asks for resolves in the repository's
index as it does in the official repository or an internal mirror (`platform.chartMirror`), and
carries in its `crds/` the CRDs the real chart installs that the program's custom resources need,
written from the project's own schemas (tests/e2e/crds.py). Helm installs `crds/` first and waits
for the API server to establish them, as it does for the real charts; the program's custom
resources depend on the release, so this checks that ordering through the real provider.

A stand-in does not run the add-on: no controller, webhook or pod, so what only a running add-on
does (certificates issued, addresses announced, Argo CD syncing) is for a real cluster. One thing
the running add-on does is done by its stand-in because the program depends on it: Argo CD's server
creates the `default` AppProject when it starts (argo-cd server.go, initializeDefaultProject),
which the program then fences with a forced server-side-apply patch.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from components.platform.argocd import DEFAULT_PROJECT
from components.platform.charts import (
    ARGO_CD,
    CERT_MANAGER,
    CHARTS,
    CLOUDNATIVE_PG,
    DCGM_EXPORTER,
    KUBE_PROMETHEUS_STACK,
    METALLB,
    NVIDIA_DEVICE_PLUGIN,
    PLUGIN_BARMAN_CLOUD,
    Chart,
)
from tests.e2e.crds import (
    APP_PROJECTS,
    APPLICATIONS,
    BARMAN_OBJECT_STORES,
    CLUSTER_ISSUERS,
    CNPG_CLUSTERS,
    CNPG_SCHEDULED_BACKUPS,
    IP_ADDRESS_POOLS,
    L2_ADVERTISEMENTS,
    POD_MONITORS,
    PROMETHEUS_RULES,
    SERVICE_MONITORS,
    CustomKind,
)

CRDS_OF: Final[Mapping[str, tuple[CustomKind, ...]]] = {
    METALLB.name: (IP_ADDRESS_POOLS, L2_ADVERTISEMENTS),
    CERT_MANAGER.name: (CLUSTER_ISSUERS,),
    ARGO_CD.name: (APP_PROJECTS, APPLICATIONS),
    NVIDIA_DEVICE_PLUGIN.name: (),
    DCGM_EXPORTER.name: (),
    KUBE_PROMETHEUS_STACK.name: (SERVICE_MONITORS, POD_MONITORS, PROMETHEUS_RULES),
    CLOUDNATIVE_PG.name: (CNPG_CLUSTERS, CNPG_SCHEDULED_BACKUPS),
    PLUGIN_BARMAN_CLOUD.name: (BARMAN_OBJECT_STORES,),
}
"""Of each chart, the CRDs it installs on a real cluster that the program's custom resources need."""

# What Argo CD's server writes into `default` (argo-cd server.go, initializeDefaultProject).
ARGOCD_DEFAULT_PROJECT: Final = f"""apiVersion: {APP_PROJECTS.group}/{APP_PROJECTS.version}
kind: AppProject
metadata:
  name: {DEFAULT_PROJECT}
  namespace: {{{{ .Release.Namespace }}}}
spec:
  sourceRepos: ["*"]
  destinations: [{{server: "*", namespace: "*"}}]
  clusterResourceWhitelist: [{{group: "*", kind: "*"}}]
"""
TEMPLATES_OF: Final[Mapping[str, Mapping[str, str]]] = {ARGO_CD.name: {"default-project.yaml": ARGOCD_DEFAULT_PROJECT}}

# Fixed, so that the same charts pack to the same bytes and the index never changes between runs.
PACKED_AT = 1767225600  # 2026-01-01T00:00:00Z
CREATED = "2026-01-01T00:00:00Z"


def _file(archive: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), PACKED_AT, 0o644
    archive.addfile(info, io.BytesIO(data))


def package(chart: Chart) -> bytes:
    """The stand-in of `chart` as `helm package` lays a chart out: a gzipped tar of `<name>/...`."""
    metadata = {
        "apiVersion": "v2",
        "name": chart.name,
        "version": chart.version,
        "description": f"e2e stand-in for {chart.name} {chart.version} ({chart.source}): its CRDs only",
        "type": "application",
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        _file(archive, f"{chart.name}/Chart.yaml", yaml.safe_dump(metadata, sort_keys=True))
        _file(archive, f"{chart.name}/values.yaml", "{}\n")
        for kind in CRDS_OF[chart.name]:
            _file(archive, f"{chart.name}/crds/{kind.crd_name}.yaml", yaml.safe_dump(kind.manifest(), sort_keys=True))
        for name, text in sorted(TEMPLATES_OF.get(chart.name, {}).items()):
            _file(archive, f"{chart.name}/templates/{name}", text)
    return gzip.compress(raw.getvalue(), mtime=0)


def write_repository(directory: Path, url: str) -> None:
    """Every chart of the platform packed into `directory`, with the `index.yaml` a Helm repository serves."""
    missing = {c.name for c in CHARTS} - set(CRDS_OF)
    if missing:
        raise ValueError(f"no stand-in for {sorted(missing)}: say which CRDs the real chart installs")
    entries: dict[str, list[dict[str, Any]]] = {}
    for chart in CHARTS:
        archive = f"{chart.name}-{chart.version}.tgz"
        data = package(chart)
        (directory / archive).write_bytes(data)
        entries[chart.name] = [
            {
                "apiVersion": "v2",
                "name": chart.name,
                "version": chart.version,
                "type": "application",
                "urls": [f"{url}/{archive}"],
                "digest": hashlib.sha256(data).hexdigest(),
                "created": CREATED,
            }
        ]
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
    """A Helm repository of the stand-ins on 127.0.0.1 (a free port), for as long as the block runs."""
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
