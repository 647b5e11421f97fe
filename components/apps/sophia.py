"""Sophia AI on the cluster: namespaces, generated configuration, one Workload per catalogue entry, the Ingress."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.apps.config import (
    llm_gateway_json,
    mcp_servers_json,
    secret_config_fingerprint,
    secret_config_text,
)
from components.apps.namespaces import PULL_SECRET, AppNamespace, AppNamespaceArgs
from components.apps.network import ACME_SOLVER_LABELS, ACME_SOLVER_PORT, TRAEFIK, Connection, Peer, tcp
from components.apps.postgres import PostgresArgs, PostgresCluster, service_host
from components.apps.workload import (
    NAME_LABEL,
    ConfigMount,
    GpuPlacement,
    Metrics,
    SecretFile,
    Sidecar,
    StorageClaim,
    Workload,
    WorkloadArgs,
)
from components.ingress import Route, tls_ingress
from components.platform.backups import BackupTarget
from components.settings.apps import Amounts, AppsSettings, Resources
from components.settings.catalogue import BY_NAME as SERVICES
from components.settings.catalogue import (
    CATALOGUE,
    CONFIG_FILES,
    NAMESPACES,
    SECRET_ENV,
    ConfigFile,
    External,
    Service,
    callers,
)
from components.settings.images import ImageSettings
from components.settings.llm_gateway import LlmGatewaySettings
from components.settings.secrets import SecretKey, Secrets

INGRESS_NAME = "sophia"


@dataclass(frozen=True)
class AppsArgs:
    apps: AppsSettings
    llm_gateway: LlmGatewaySettings
    images: ImageSettings
    secrets: Secrets
    domain: str
    cluster_issuer: str
    """The cert-manager ClusterIssuer that signs the public certificate."""
    ingress_class: str
    monitoring: pulumi.Resource | None = None
    """The release that installs the ServiceMonitor CRD; without it no ServiceMonitor is made."""
    ingress_depends_on: tuple[pulumi.Resource, ...] = ()
    """What must exist before the Ingress asks for its certificate: the ClusterIssuer."""
    database_operator: tuple[pulumi.Resource, ...] = ()
    """CloudNativePG's operator and Barman Cloud plugin releases (their CRDs)."""
    backups: BackupTarget | None = None
    """The backup bucket and its keys, when `cluster.backups` is set."""


def _variable(name: str) -> str:
    return name.upper().replace("-", "_")


def _sidecars(service: Service, images: ImageSettings) -> tuple[Sidecar, ...]:
    exporter = service.exporter
    if exporter is None:
        return ()
    return (
        Sidecar(
            name="exporter",
            image=images.image(exporter.image),
            port=exporter.port,
            port_name=exporter.port_name,
            resources=Resources(Amounts(*exporter.requests), Amounts(*exporter.limits)),
            args=exporter.args,
            env=exporter.env,
            secret_env={name: SECRET_ENV[key] for name, key in exporter.secrets.items()},
        ),
    )


def _metrics(service: Service, monitoring: pulumi.Resource | None) -> Metrics | None:
    if monitoring is None:
        return None
    if service.exporter is not None:
        return Metrics(service.exporter.metrics_path, service.exporter.port_name, monitoring)
    if service.metrics_path is not None:
        return Metrics(service.metrics_path, service.port_name, monitoring)
    return None


def _secret_files(service: Service, secrets: Secrets) -> tuple[SecretFile, ...]:
    config = service.secret_config
    if config is None:
        return ()
    return (
        SecretFile(
            key=config.file,
            directory=config.directory,
            content=secret_config_text(config, secrets.values),
            fingerprint=secret_config_fingerprint(config),
        ),
    )


def _sidecar_secrets(service: Service, secrets: Secrets) -> dict[str, pulumi.Output[str]]:
    """What the exporter reads that the main container does not get as a variable."""
    if service.exporter is None:
        return {}
    keys = sorted(set(service.exporter.secrets.values()) - set(service.env_secrets))
    return {SECRET_ENV[key]: secrets[key] for key in keys}


def host(service: Service, apps: AppsSettings) -> str:
    """Where a service is reached: its Service, or for the database its Cluster's read-write Service
    (whose name follows the Cluster's, which a restore changes)."""
    database = apps.services[service.name].database
    return service_host(database.cluster, service.namespace) if database is not None else service.host


def _env(service: Service, apps: AppsSettings) -> dict[str, str]:
    env = dict(service.env)
    for name in service.talks_to:
        target = SERVICES[name]
        env[f"{_variable(name)}_HOST"] = host(target, apps)
        env[f"{_variable(name)}_PORT"] = str(target.port)
    if External.QDRANT in service.external:
        env["QDRANT_URL"] = apps.qdrant_url
    return env


class SophiaApps(pulumi.ComponentResource):
    """Every application resource of Sophia AI (type token `sophia:apps:SophiaApps`)."""

    namespaces: dict[str, AppNamespace]
    workloads: dict[str, Workload]
    ingress: k8s.networking.v1.Ingress
    url: str

    def __init__(self, name: str, args: AppsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sophia:apps:SophiaApps", name, None, opts)
        self.namespaces = {
            namespace: AppNamespace(
                namespace,
                AppNamespaceArgs(
                    name=namespace,
                    tier=tier.value,
                    registry_host=args.images.registry_host,
                    registry_user=args.images.registry_namespace,
                    registry_token=args.secrets[SecretKey.DOCKER_HUB_TOKEN],
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for tier, namespace in NAMESPACES.items()
        }

        contents = {
            ConfigFile.LLM_GATEWAY: llm_gateway_json(args.llm_gateway),
            ConfigFile.MCP_SERVERS: mcp_servers_json(args.apps),
        }
        config_maps: dict[tuple[str, ConfigFile], k8s.core.v1.ConfigMap] = {}
        for service in CATALOGUE:
            for config in service.config_files:
                if (service.namespace, config) in config_maps:
                    continue
                key = CONFIG_FILES[config][0]
                config_maps[service.namespace, config] = k8s.core.v1.ConfigMap(
                    f"{service.namespace}-{config.value}",
                    metadata=k8s.meta.v1.ObjectMetaArgs(
                        name=config.value,
                        namespace=service.namespace,
                        labels={"app.kubernetes.io/part-of": "sophia-ai"},
                    ),
                    data={key: contents[config]},
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[self.namespaces[service.namespace].namespace]),
                )

        self.workloads = {}
        self.databases: dict[str, PostgresCluster] = {}
        for service in CATALOGUE:
            wanted = args.apps.services[service.name]
            namespace = self.namespaces[service.namespace]
            if service.managed_database:
                self.databases[service.name] = PostgresCluster(
                    service.name,
                    PostgresArgs(
                        service=service,
                        settings=wanted,
                        image=args.images.image(service.image),
                        pull_secret=PULL_SECRET,
                        password=args.secrets[SecretKey.POSTGRES_PASSWORD],
                        callers=tuple(Peer(c.namespace, {NAME_LABEL: c.name}) for c in callers(service)),
                        backups=args.backups,
                        operator=args.database_operator,
                        monitoring=args.monitoring,
                        depends_on=(namespace.namespace, namespace.pull_secret),
                    ),
                    opts=pulumi.ResourceOptions(parent=self),
                )
                continue
            arches = set(service.pod_arches)
            gpu = None
            if wanted.gpu is not None:
                gpu = GpuPlacement(wanted.gpu.count, wanted.gpu.model.label)
                arches &= {wanted.gpu.model.arch}
            mounts = tuple(
                ConfigMount(
                    config_map=config.value,
                    key=CONFIG_FILES[config][0],
                    directory=CONFIG_FILES[config][1],
                    env=CONFIG_FILES[config][2],
                    content=contents[config],
                )
                for config in service.config_files
            )
            self.workloads[service.name] = Workload(
                service.name,
                WorkloadArgs(
                    name=service.name,
                    namespace=service.namespace,
                    image=args.images.image(service.image),
                    port=service.port,
                    port_name=service.port_name,
                    health_path=service.health_path,
                    resources=wanted.resources,
                    replicas=wanted.replicas,
                    autoscaling=args.apps.autoscaling,
                    arches=tuple(sorted(a.value for a in arches)),
                    pull_secret=PULL_SECRET,
                    uid=service.uid,
                    gpu=gpu,
                    read_only_root=service.read_only_root,
                    writable_paths=service.writable_paths,
                    shared_memory=service.shared_memory,
                    env=_env(service, args.apps),
                    secret_env={SECRET_ENV[key]: args.secrets[key] for key in service.env_secrets},
                    sidecar_secrets=_sidecar_secrets(service, args.secrets),
                    secret_files=_secret_files(service, args.secrets),
                    config=mounts,
                    args=service.args,
                    sidecars=_sidecars(service, args.images),
                    storage=StorageClaim(service.storage.mount_path, wanted.storage)
                    if service.storage is not None and wanted.storage
                    else None,
                    ingress_from=tuple(Peer(c.namespace, {NAME_LABEL: c.name}) for c in callers(service)),
                    egress_to=tuple(
                        Connection(Peer(SERVICES[t].namespace, {NAME_LABEL: t}), SERVICES[t].port)
                        for t in service.talks_to
                    ),
                    public=service.public_path is not None,
                    public_https_egress=service.public_https,
                    metrics=_metrics(service, args.monitoring),
                    labels={"app.kubernetes.io/component": service.tier.value},
                    depends_on=(
                        namespace.namespace,
                        namespace.pull_secret,
                        *(config_maps[service.namespace, c] for c in service.config_files),
                    ),
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )

        self.ingress = self._ingress(args)
        self.url = f"https://{args.domain}"
        self.register_outputs(
            {
                "url": self.url,
                "namespaces": sorted(self.namespaces),
                "services": {s.name: f"{host(s, args.apps)}:{s.port}" for s in CATALOGUE},
            }
        )

    def _ingress(self, args: AppsArgs) -> k8s.networking.v1.Ingress:
        """The one public entry: `<domain>` over TLS, path prefixes to the public services."""
        public = sorted((s for s in CATALOGUE if s.public_path), key=lambda s: len(s.public_path or ""), reverse=True)
        namespaces = {s.namespace for s in public}
        if len(namespaces) != 1:
            raise ValueError(f"public services must share one namespace, got {sorted(namespaces)}")
        namespace = namespaces.pop()
        self.acme_solver_policy = k8s.networking.v1.NetworkPolicy(
            f"{namespace}-allow-acme-http01-solver",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="allow-acme-http01-solver", namespace=namespace, labels={"app.kubernetes.io/part-of": "sophia-ai"}
            ),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=dict(ACME_SOLVER_LABELS)),
                policy_types=["Ingress"],
                ingress=[
                    k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                        from_=[TRAEFIK.args()], ports=[tcp(ACME_SOLVER_PORT)]
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.namespaces[namespace].namespace]),
        )
        return tls_ingress(
            INGRESS_NAME,
            namespace=namespace,
            host=args.domain,
            routes=[Route(s.public_path, self.workloads[s.name].service_name, s.port) for s in public if s.public_path],
            cluster_issuer_name=args.cluster_issuer,
            ingress_class=args.ingress_class,
            labels={"app.kubernetes.io/part-of": "sophia-ai"},
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*args.ingress_depends_on, *(self.workloads[s.name].service for s in public)]
            ),
        )
