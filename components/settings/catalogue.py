"""The Sophia AI services: one typed entry per service, the facts of each in one place.

Facts only (ports, health paths, which secrets a service reads, whom it calls, whether it needs a
GPU). What an operator changes (replicas, resources, GPU model, storage size, image tags) lives in
the `apps` settings section; `components.settings.apps` checks the two against each other.

Adding an MCP server is one `McpServer(...)` entry in `MCP_SERVERS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from components.settings.cluster import Arch
from components.settings.secrets import SecretKey


class Tier(StrEnum):
    """Which namespace a service lives in; each tier is one namespace."""

    APPS = "apps"
    MCP = "mcp"
    DATA = "data"


NAMESPACES: Final[Mapping[Tier, str]] = MappingProxyType(
    {Tier.APPS: "sophia-apps", Tier.MCP: "sophia-mcp", Tier.DATA: "sophia-data"}
)


class External(StrEnum):
    """Public HTTPS services a Sophia service calls (egress on 443 to public addresses)."""

    LLM_APIS = "llm-apis"
    """The gateways of `sophia-infra:llmGateway` and the model providers behind them."""
    QDRANT = "qdrant"
    """Qdrant Cloud at `sophia-infra:apps.qdrantUrl`; its callers get QDRANT_URL and read the Qdrant key."""


class ConfigFile(StrEnum):
    """The generated configuration files a service reads (one ConfigMap each, per namespace)."""

    LLM_GATEWAY = "llm-gateway"
    MCP_SERVERS = "mcp-servers"


# Where each configuration file is mounted, and the variable that tells the service where it is.
CONFIG_FILES: Final[Mapping[ConfigFile, tuple[str, str, str]]] = MappingProxyType(
    {
        ConfigFile.LLM_GATEWAY: ("gateway.json", "/etc/sophia/llm-gateway", "LLM_GATEWAY_CONFIG"),
        ConfigFile.MCP_SERVERS: ("servers.json", "/etc/sophia/mcp-servers", "MCP_SERVERS_CONFIG"),
    }
)

# The environment variable each secret is handed to a container as.
SECRET_ENV: Final[Mapping[SecretKey, str]] = MappingProxyType(
    {
        SecretKey.OPENAI_API_KEY: "OPENAI_API_KEY",
        SecretKey.ANTHROPIC_API_KEY: "ANTHROPIC_API_KEY",
        SecretKey.PORTKEY_API_KEY: "PORTKEY_API_KEY",
        SecretKey.OPENROUTER_API_KEY: "OPENROUTER_API_KEY",
        SecretKey.QDRANT_API_KEY: "QDRANT_API_KEY",
        SecretKey.POSTGRES_PASSWORD: "POSTGRES_PASSWORD",
        SecretKey.REDIS_PASSWORD: "REDIS_PASSWORD",
    }
)

# Images built by Sophia run as this unprivileged user; the official images as their own.
SOPHIA_UID: Final = 10001
DATA_UID: Final = 999  # the `postgres` and `redis` users of the official images

POSTGRES_PORT: Final = 5432
REDIS_PORT: Final = 6379
POSTGRES_SHARED_MEMORY: Final = "1Gi"
REDIS_EXPORTER_PORT: Final = 9121
MULTI_ARCH: Final = frozenset({Arch.AMD64, Arch.ARM64})


@dataclass(frozen=True)
class SecretConfig:
    """A configuration file with secrets in it, as `directive value` lines (Redis' config syntax).

    It reaches the container as a file from a Kubernetes Secret, mounted read-only: a secret in the
    arguments shows in the process list of the container and the node, one in the environment in
    /proc/<pid>/environ; one in a file shows in neither.
    """

    file: str
    directory: str
    directives: tuple[tuple[str, str], ...]
    """Plain `directive value` lines."""
    secrets: tuple[tuple[str, SecretKey], ...]
    """Directives whose value is a secret (one of the service's own)."""

    @property
    def path(self) -> str:
        return f"{self.directory}/{self.file}"

    @property
    def keys(self) -> frozenset[SecretKey]:
        return frozenset(key for _, key in self.secrets)


@dataclass(frozen=True)
class Storage:
    """A stateful service's data: one PVC per replica from the StatefulSet's volumeClaimTemplates."""

    mount_path: str


@dataclass(frozen=True)
class Exporter:
    """A Prometheus exporter beside a service that speaks no Prometheus itself (the databases)."""

    image: str
    port: int
    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, SecretKey] = field(default_factory=dict)
    """Variable name -> the secret it holds (one of the service's own)."""
    arches: frozenset[Arch] = frozenset({Arch.AMD64, Arch.ARM64})
    port_name: str = "metrics"
    metrics_path: str = "/metrics"
    # An exporter's size does not change with the load of the service it watches.
    requests: tuple[str, str] = ("50m", "64Mi")
    limits: tuple[str, str] = ("200m", "128Mi")


@dataclass(frozen=True)
class Service:
    """One Sophia service. `port` is its one port number: container, Service, probes and PORT."""

    name: str
    tier: Tier
    image: str
    arches: frozenset[Arch]
    port: int
    port_name: str = "http"
    health_path: str | None = "/health"
    """HTTP readiness/liveness path; None probes the TCP port (databases speak no HTTP)."""
    metrics_path: str | None = None
    """Prometheus metrics on the service port; None: no metrics of its own."""
    exporter: Exporter | None = None
    """Metrics from an exporter container beside it, on the exporter's port."""
    secrets: tuple[SecretKey, ...] = ()
    talks_to: tuple[str, ...] = ()
    """In-cluster services it calls: egress from it, ingress to them, `<NAME>_HOST`/`_PORT` variables."""
    external: tuple[External, ...] = ()
    public_path: str | None = None
    """Served to the world through the Ingress under this path prefix."""
    gpu: bool = False
    storage: Storage | None = None
    uid: int = SOPHIA_UID
    read_only_root: bool = True
    writable_paths: tuple[str, ...] = ("/tmp",)
    shared_memory: str | None = None
    """Size of a memory-backed /dev/shm for the main container; None keeps the runtime's 64Mi one."""
    config_files: tuple[ConfigFile, ...] = ()
    secret_config: SecretConfig | None = None
    """A configuration file holding some of its secrets; the main container does not get those as variables."""
    env: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    managed_database: bool = False
    """PostgreSQL run by CloudNativePG (components.apps.postgres) instead of a Workload of its own."""

    @property
    def namespace(self) -> str:
        return NAMESPACES[self.tier]

    @property
    def env_secrets(self) -> tuple[SecretKey, ...]:
        """The secrets the main container reads from its environment."""
        in_file = self.secret_config.keys if self.secret_config else frozenset()
        return tuple(k for k in self.secrets if k not in in_file)

    @property
    def images(self) -> tuple[str, ...]:
        return (self.image, self.exporter.image) if self.exporter else (self.image,)

    @property
    def public_https(self) -> bool:
        return bool(self.external)

    @property
    def pod_arches(self) -> frozenset[Arch]:
        """The architectures every image of its pods is built for."""
        return self.arches & self.exporter.arches if self.exporter else self.arches

    @property
    def scraped(self) -> bool:
        return self.metrics_path is not None or self.exporter is not None

    @property
    def stateful(self) -> bool:
        return self.storage is not None

    @property
    def host(self) -> str:
        """The in-cluster DNS name of its Service."""
        return f"{self.name}.{self.namespace}.svc.cluster.local"


@dataclass(frozen=True)
class McpServer:
    """An MCP server: everything that differs between two of them."""

    name: str
    port: int
    gpu: bool = False
    secrets: tuple[SecretKey, ...] = ()
    external: tuple[External, ...] = ()
    image: str = "sophia-mcp-base"
    """Every MCP server runs from the multi-arch MCP base image, picking its server by MCP_SERVER."""
    arches: frozenset[Arch] = MULTI_ARCH

    def service(self) -> Service:
        return Service(
            name=self.name,
            tier=Tier.MCP,
            image=self.image,
            arches=self.arches,
            port=self.port,
            metrics_path="/metrics",
            secrets=self.secrets,
            external=self.external,
            gpu=self.gpu,
            config_files=(ConfigFile.MCP_SERVERS,),
            env={"MCP_SERVER": self.name},
        )


MCP_SERVERS: Final[tuple[McpServer, ...]] = (
    # Embeddings on the GPU, vectors in Qdrant Cloud (seed 000: ai-memory, QDRANT_URL).
    McpServer(
        "ai-memory",
        port=9000,
        gpu=True,
        secrets=(SecretKey.QDRANT_API_KEY, SecretKey.OPENAI_API_KEY),
        external=(External.QDRANT, External.LLM_APIS),
    ),
)

POSTGRES_DATABASE: Final = "sophia"
POSTGRES_USER: Final = "sophia"
"""The application role: owner of the database, its password `postgresPassword` from ESC."""

# Run by CloudNativePG: the Cluster, its backups and its metrics are components.apps.postgres; this
# entry holds what the other services need to know (port, secret, image) and what it is sized by.
POSTGRES: Final = Service(
    name="postgres",
    tier=Tier.DATA,
    # CloudNativePG's operand image (ghcr.io/cloudnative-pg/postgresql), mirrored as `postgres`.
    image="postgres",
    arches=MULTI_ARCH,
    port=POSTGRES_PORT,
    port_name="postgres",
    health_path=None,
    secrets=(SecretKey.POSTGRES_PASSWORD,),
    storage=Storage("/var/lib/postgresql/data"),
    uid=DATA_UID,
    # Parallel queries and hash joins allocate dynamic shared memory in /dev/shm (POSIX, the default
    # dynamic_shared_memory_type); the container runtime's 64Mi fails them with "could not resize
    # shared memory segment". It counts against the container's memory limit, like any tmpfs.
    shared_memory=POSTGRES_SHARED_MEMORY,
    managed_database=True,
)

REDIS_DATA: Final = "/data"
# redis-server takes a config file as its first argument; the official image's docker-entrypoint.sh
# runs `redis-server <file>` as given (as a non-root user it only appends its bundled modules'
# `--loadmodule`s). The password is in the file, never an argument.
REDIS_CONFIG: Final = SecretConfig(
    file="redis.conf",
    directory="/etc/redis",
    directives=(("port", str(REDIS_PORT)), ("dir", REDIS_DATA), ("appendonly", "yes")),
    secrets=(("requirepass", SecretKey.REDIS_PASSWORD),),
)

REDIS: Final = Service(
    name="redis",
    tier=Tier.DATA,
    image="redis",
    arches=MULTI_ARCH,
    port=REDIS_PORT,
    port_name="redis",
    health_path=None,
    secrets=(SecretKey.REDIS_PASSWORD,),
    storage=Storage(REDIS_DATA),
    # oliver006/redis_exporter, mirrored as `redis-exporter`.
    exporter=Exporter(
        image="redis-exporter",
        port=REDIS_EXPORTER_PORT,
        args=(f"--web.listen-address=:{REDIS_EXPORTER_PORT}",),
        env={"REDIS_ADDR": f"redis://localhost:{REDIS_PORT}"},
        # The exporter reads the variable itself; it is never expanded into its arguments.
        secrets={"REDIS_PASSWORD": SecretKey.REDIS_PASSWORD},
    ),
    uid=DATA_UID,
    secret_config=REDIS_CONFIG,
    args=("redis-server", REDIS_CONFIG.path),
)

BACKEND: Final = Service(
    name="sophia-backend",
    tier=Tier.APPS,
    image="sophia-backend",
    arches=frozenset({Arch.AMD64}),
    port=8000,
    metrics_path="/metrics",
    secrets=(
        SecretKey.OPENAI_API_KEY,
        SecretKey.ANTHROPIC_API_KEY,
        SecretKey.PORTKEY_API_KEY,
        SecretKey.OPENROUTER_API_KEY,
        SecretKey.POSTGRES_PASSWORD,
        SecretKey.REDIS_PASSWORD,
    ),
    talks_to=(POSTGRES.name, REDIS.name, *(m.name for m in MCP_SERVERS)),
    external=(External.LLM_APIS,),
    public_path="/api",
    config_files=(ConfigFile.LLM_GATEWAY, ConfigFile.MCP_SERVERS),
    env={"POSTGRES_USER": POSTGRES_USER, "POSTGRES_DB": POSTGRES_DATABASE},
)

FRONTEND: Final = Service(
    name="sophia-frontend",
    tier=Tier.APPS,
    image="sophia-frontend",
    arches=frozenset({Arch.AMD64}),
    port=3000,
    health_path="/",
    talks_to=(BACKEND.name,),
    public_path="/",
)

CATALOGUE: Final[tuple[Service, ...]] = (BACKEND, FRONTEND, *(m.service() for m in MCP_SERVERS), POSTGRES, REDIS)
BY_NAME: Final[Mapping[str, Service]] = MappingProxyType({s.name: s for s in CATALOGUE})


def callers(service: Service) -> tuple[Service, ...]:
    """The services that call `service`: who may open connections to it."""
    return tuple(s for s in CATALOGUE if service.name in s.talks_to)


def catalogue_problems() -> list[str]:
    """Inconsistencies of the catalogue itself (a test keeps this empty)."""
    problems = []
    names = [s.name for s in CATALOGUE]
    problems += [f"duplicate service {n!r}" for n in sorted({n for n in names if names.count(n) > 1})]
    for s in CATALOGUE:
        problems += [f"{s.name} talks to unknown service {t!r}" for t in s.talks_to if t not in BY_NAME]
        problems += [
            f"{s.name} reads secret {k.value} that has no variable name" for k in s.secrets if k not in SECRET_ENV
        ]
        if s.stateful and s.public_path:
            problems.append(f"{s.name} is stateful and public")
        if "PORT" in s.env:
            problems.append(f"{s.name} sets PORT itself; the Workload sets it from `port`")
        if External.QDRANT in s.external and SecretKey.QDRANT_API_KEY not in s.secrets:
            problems.append(f"{s.name} calls Qdrant without its key")
        if s.secret_config is not None:
            problems += [
                f"{s.name}'s {s.secret_config.file} holds {k.value}, which {s.name} does not read"
                for k in sorted(s.secret_config.keys)
                if k not in s.secrets
            ]
        secret_variables = {SECRET_ENV[k] for k in s.secrets if k in SECRET_ENV}
        problems += [
            f"{s.name} passes the secret {v} in its arguments (the process list shows them)"
            for v in sorted(secret_variables)
            if any(f"$({v})" in a for a in (*s.args, *(s.exporter.args if s.exporter else ())))
        ]
        if s.exporter is not None:
            problems += [
                f"{s.name}'s exporter reads {k.value}, which {s.name} does not"
                for k in s.exporter.secrets.values()
                if k not in s.secrets
            ]
            if s.exporter.port == s.port:
                problems.append(f"{s.name}'s exporter listens on the service's own port")
            if s.metrics_path is not None:
                problems.append(f"{s.name} has metrics of its own and an exporter")
    paths = [s.public_path for s in CATALOGUE if s.public_path]
    problems += [f"public path {p!r} is served twice" for p in sorted({p for p in paths if paths.count(p) > 1})]
    return problems
