"""One service, all of its Kubernetes objects, consistent by construction.

A `Workload` is a Deployment (or, with storage, a StatefulSet with a PVC per replica), its
Service, its Secret (only the keys it reads) and config Secret (files with secrets in them,
mounted read-only: no secret ever goes on a command line), HorizontalPodAutoscaler (when it scales),
PodDisruptionBudget, NetworkPolicy and ServiceMonitor. Every number and name that two of those
objects share is taken from one field of `WorkloadArgs`: the port is declared once and is the
containerPort, the Service port and targetPort, the probes' port and the PORT variable.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import pulumi
import pulumi_kubernetes as k8s

from components.apps.network import PROMETHEUS, TRAEFIK, Connection, Peer, public_https_rule, tcp
from components.gpu import ARCH_LABEL, GPU_POD_TOLERATIONS, GPU_RESOURCE, GPU_TYPE_LABEL, RUNTIME_CLASS
from components.k3s import LOCAL_STORAGE_CLASS
from components.rollout import MAX_SURGE, MAX_UNAVAILABLE
from components.settings.apps import Autoscaling, Replicas, Resources

NAME_LABEL: Final = "app.kubernetes.io/name"
PART_OF: Final = {"app.kubernetes.io/part-of": "sophia-ai", "app.kubernetes.io/managed-by": "pulumi"}
CONFIG_CHECKSUM: Final = "sophia.ai/config-checksum"
SECRET_CHECKSUM: Final = "sophia.ai/secret-checksum"
HOSTNAME_TOPOLOGY: Final = "kubernetes.io/hostname"
STORAGE_CLASS: Final = LOCAL_STORAGE_CLASS  # K3s' bundled local-path-provisioner
DATA_VOLUME: Final = "data"
METRICS_INTERVAL: Final = "30s"
SHARED_MEMORY_PATH: Final = "/dev/shm"


@dataclass(frozen=True)
class GpuPlacement:
    """A GPU workload: how many GPUs, of which model (the `gpu-type` node label value)."""

    count: int
    gpu_type: str


@dataclass(frozen=True)
class ConfigMount:
    """A generated configuration file: ConfigMap `config_map`, key `key`, mounted at `directory`."""

    config_map: str
    key: str
    directory: str
    env: str
    """The variable that holds the file's path."""
    content: str
    """The file itself, for the pod template's checksum (a change rolls the pods)."""

    @property
    def volume(self) -> str:
        return f"config-{self.config_map}"


@dataclass(frozen=True)
class SecretFile:
    """A file with secrets in it: key `key` of the workload's config Secret, mounted read-only in `directory`."""

    key: str
    directory: str
    content: pulumi.Output[str]
    """A secret Output: the render and the state show it redacted."""
    fingerprint: str
    """The file with its secrets left out, for the pod template's checksum (a change rolls the pods)."""

    @property
    def volume(self) -> str:
        return "secret-" + re.sub(r"[^a-z0-9]+", "-", self.key.lower()).strip("-")[:56]


@dataclass(frozen=True)
class StorageClaim:
    mount_path: str
    size: str
    storage_class: str = STORAGE_CLASS


@dataclass(frozen=True)
class Sidecar:
    """A second container of every pod (an exporter): its own port, probed and served like the main one."""

    name: str
    image: str
    port: int
    port_name: str
    resources: Resources
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)
    """Variable name -> key of the workload's Secret (`WorkloadArgs.secret_env`)."""


@dataclass(frozen=True)
class Metrics:
    path: str
    port_name: str
    """The named port Prometheus scrapes: the main one or a sidecar's."""
    monitoring: pulumi.Resource
    """The release that installs the ServiceMonitor CRD."""


@dataclass(frozen=True)
class WorkloadArgs:
    name: str
    namespace: str
    image: str
    """A full reference from `ImageSettings.image`."""
    port: int
    resources: Resources
    replicas: Replicas
    autoscaling: Autoscaling
    arches: tuple[str, ...]
    """The CPU architectures the image is built for (node affinity on kubernetes.io/arch)."""
    pull_secret: str
    uid: int
    port_name: str = "http"
    health_path: str | None = None
    """HTTP probe path; None probes the TCP port."""
    gpu: GpuPlacement | None = None
    read_only_root: bool = True
    writable_paths: tuple[str, ...] = ("/tmp",)
    shared_memory: str | None = None
    """Size limit of a memory-backed emptyDir at /dev/shm in the main container; None: the runtime's own."""
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)
    """Variables from secrets: put in this workload's own Secret, read through secretKeyRef."""
    sidecar_secrets: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)
    """Keys of this workload's own Secret that only sidecars read; the main container never gets them."""
    secret_files: tuple[SecretFile, ...] = ()
    """Files with secrets in them, from this workload's config Secret (`<name>-config`)."""
    config: tuple[ConfigMount, ...] = ()
    args: tuple[str, ...] = ()
    sidecars: tuple[Sidecar, ...] = ()
    storage: StorageClaim | None = None
    ingress_from: tuple[Peer, ...] = ()
    """Who may connect to the port, besides Traefik (`public`) and Prometheus (`metrics`)."""
    egress_to: tuple[Connection, ...] = ()
    public: bool = False
    public_https_egress: bool = False
    metrics: Metrics | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    depends_on: Sequence[pulumi.Resource] = ()
    """What must exist first: the namespace, its pull secret, the ConfigMaps mounted."""


def _volume_name(path: str) -> str:
    return "w-" + (re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "root")[:61]


def _sidecar_tmp(sidecar: Sidecar) -> str:
    return _volume_name(f"{sidecar.name}/tmp")


class Workload(pulumi.ComponentResource):
    """All objects of one service (type token `sophia:apps:Workload`)."""

    selector: dict[str, str]
    service_name: str
    controller: k8s.apps.v1.Deployment | k8s.apps.v1.StatefulSet
    service: k8s.core.v1.Service
    secret: k8s.core.v1.Secret | None
    config_secret: k8s.core.v1.Secret | None
    autoscaler: k8s.autoscaling.v2.HorizontalPodAutoscaler | None
    disruption_budget: k8s.policy.v1.PodDisruptionBudget
    network_policy: k8s.networking.v1.NetworkPolicy
    service_monitor: k8s.apiextensions.CustomResource | None

    def __init__(self, name: str, args: WorkloadArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sophia:apps:Workload", name, None, opts)
        self.args = args
        self._check(args)
        self.selector = {NAME_LABEL: args.name}
        self.service_name = args.name
        labels = {**self.selector, **PART_OF, **args.labels}
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))

        self.secret = None
        if args.secret_env or args.sidecar_secrets:
            self.secret = k8s.core.v1.Secret(
                f"{args.name}-secrets",
                metadata=self._metadata(self._secret_name, labels),
                type="Opaque",
                # Each value a secret Output: the keys stay readable, the values never are.
                string_data={**args.secret_env, **args.sidecar_secrets},
                opts=child,
            )
        self.config_secret = None
        if args.secret_files:
            self.config_secret = k8s.core.v1.Secret(
                f"{args.name}-config",
                metadata=self._metadata(self._config_secret_name, labels),
                type="Opaque",
                string_data={f.key: f.content for f in args.secret_files},
                opts=child,
            )

        template = self._pod_template(labels)
        controller_opts = pulumi.ResourceOptions.merge(
            child,
            pulumi.ResourceOptions(depends_on=[s for s in (self.secret, self.config_secret) if s is not None]),
        )
        self.service = k8s.core.v1.Service(
            args.name,
            metadata=self._metadata(args.name, labels),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=self.selector,
                ports=[
                    k8s.core.v1.ServicePortArgs(name=name, port=port, target_port=port, protocol="TCP")
                    for name, port in self._ports.items()
                ],
            ),
            opts=child,
        )
        if args.storage is None:
            self.controller = k8s.apps.v1.Deployment(
                args.name,
                metadata=self._metadata(args.name, labels),
                spec=k8s.apps.v1.DeploymentSpecArgs(
                    # Left to the autoscaler when there is one; `pulumi up` must not reset its count.
                    replicas=None if args.replicas.autoscaled else args.replicas.min,
                    selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self.selector),
                    strategy=k8s.apps.v1.DeploymentStrategyArgs(
                        type="RollingUpdate",
                        rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                            max_unavailable=MAX_UNAVAILABLE, max_surge=MAX_SURGE
                        ),
                    ),
                    revision_history_limit=5,
                    template=template,
                ),
                opts=controller_opts,
            )
        else:
            self.controller = k8s.apps.v1.StatefulSet(
                args.name,
                metadata=self._metadata(args.name, labels),
                spec=k8s.apps.v1.StatefulSetSpecArgs(
                    replicas=args.replicas.min,
                    # The ClusterIP Service governs it: one instance, reached by the Service name.
                    service_name=args.name,
                    selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self.selector),
                    pod_management_policy="OrderedReady",
                    update_strategy=k8s.apps.v1.StatefulSetUpdateStrategyArgs(
                        type="RollingUpdate",
                        rolling_update=k8s.apps.v1.RollingUpdateStatefulSetStrategyArgs(partition=0),
                    ),
                    # Deleting or scaling down the StatefulSet never deletes a volume with data.
                    persistent_volume_claim_retention_policy=(
                        k8s.apps.v1.StatefulSetPersistentVolumeClaimRetentionPolicyArgs(
                            when_deleted="Retain", when_scaled="Retain"
                        )
                    ),
                    volume_claim_templates=[
                        k8s.core.v1.PersistentVolumeClaimArgs(
                            metadata=k8s.meta.v1.ObjectMetaArgs(name=DATA_VOLUME, labels=labels),
                            spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                                access_modes=["ReadWriteOnce"],
                                storage_class_name=args.storage.storage_class,
                                resources=k8s.core.v1.VolumeResourceRequirementsArgs(
                                    requests={"storage": args.storage.size}
                                ),
                            ),
                        )
                    ],
                    template=template,
                ),
                opts=pulumi.ResourceOptions.merge(controller_opts, pulumi.ResourceOptions(depends_on=[self.service])),
            )

        self.autoscaler = None
        if args.replicas.autoscaled:
            self.autoscaler = k8s.autoscaling.v2.HorizontalPodAutoscaler(
                args.name,
                metadata=self._metadata(args.name, labels),
                spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                    scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                        api_version="apps/v1", kind=self._kind, name=args.name
                    ),
                    min_replicas=args.replicas.min,
                    max_replicas=args.replicas.max,
                    metrics=[
                        self._utilization("cpu", args.autoscaling.cpu_utilization),
                        self._utilization("memory", args.autoscaling.memory_utilization),
                    ],
                ),
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.controller])),
            )

        # maxUnavailable 1 whatever the replica count: one pod may always be evicted, so a node drain
        # never blocks, and pods that are not ready never count against the budget.
        self.disruption_budget = k8s.policy.v1.PodDisruptionBudget(
            args.name,
            metadata=self._metadata(args.name, labels),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self.selector),
                unhealthy_pod_eviction_policy="AlwaysAllow",
            ),
            opts=child,
        )

        self.network_policy = k8s.networking.v1.NetworkPolicy(
            args.name,
            metadata=self._metadata(args.name, labels),
            spec=self._network_policy(),
            opts=child,
        )

        self.service_monitor = None
        if args.metrics is not None:
            self.service_monitor = k8s.apiextensions.CustomResource(
                args.name,
                api_version="monitoring.coreos.com/v1",
                kind="ServiceMonitor",
                metadata=self._metadata(args.name, labels),
                spec={
                    "selector": {"matchLabels": self.selector},
                    "endpoints": [
                        {
                            "port": args.metrics.port_name,
                            "path": args.metrics.path,
                            "scheme": "http",
                            "interval": METRICS_INTERVAL,
                        }
                    ],
                },
                opts=pulumi.ResourceOptions.merge(
                    child, pulumi.ResourceOptions(depends_on=[args.metrics.monitoring, self.service])
                ),
            )

        self.register_outputs(
            {
                "kind": self._kind,
                "name": args.name,
                "namespace": args.namespace,
                "serviceHost": f"{args.name}.{args.namespace}.svc.cluster.local",
                "port": args.port,
            }
        )

    @staticmethod
    def _check(args: WorkloadArgs) -> None:
        """Mistakes in how a caller put the arguments together (the catalogue test keeps them out)."""
        names = [args.port_name, *(s.port_name for s in args.sidecars)]
        numbers = [args.port, *(s.port for s in args.sidecars)]
        if len(set(names)) != len(names) or len(set(numbers)) != len(numbers):
            raise ValueError(
                f"{args.name}: ports must differ in name and number: {dict(zip(names, numbers, strict=True))}"
            )
        for sidecar in args.sidecars:
            missing = set(sidecar.secret_env.values()) - set(args.secret_env) - set(args.sidecar_secrets)
            if missing:
                raise ValueError(f"{args.name}/{sidecar.name}: secrets {sorted(missing)} are not the workload's")
        # Kubernetes expands `$(VAR)` in command and args: a secret variable there is a secret in the process list.
        for container, variables, container_args in (
            (args.name, set(args.secret_env), args.args),
            *((f"{args.name}/{s.name}", set(s.secret_env), s.args) for s in args.sidecars),
        ):
            exposed = sorted(v for v in variables if any(f"$({v})" in a for a in container_args))
            if exposed:
                raise ValueError(f"{container}: secrets {exposed} in the arguments show in the process list")
        keys = [f.key for f in args.secret_files]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{args.name}: secret files must differ in name: {keys}")
        if args.metrics is not None and args.metrics.port_name not in names:
            raise ValueError(f"{args.name}: metrics on unknown port {args.metrics.port_name!r}")

    @property
    def _secret_name(self) -> str:
        return f"{self.args.name}-secrets"

    @property
    def _config_secret_name(self) -> str:
        return f"{self.args.name}-config"

    @property
    def _ports(self) -> dict[str, int]:
        return {self.args.port_name: self.args.port, **{s.port_name: s.port for s in self.args.sidecars}}

    @property
    def _metrics_port(self) -> int | None:
        return self._ports[self.args.metrics.port_name] if self.args.metrics else None

    @property
    def _kind(self) -> str:
        return "Deployment" if self.args.storage is None else "StatefulSet"

    def _metadata(self, name: str, labels: Mapping[str, str]) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(name=name, namespace=self.args.namespace, labels=dict(labels))

    @staticmethod
    def _utilization(resource: str, percent: int) -> k8s.autoscaling.v2.MetricSpecArgs:
        return k8s.autoscaling.v2.MetricSpecArgs(
            type="Resource",
            resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                name=resource,
                target=k8s.autoscaling.v2.MetricTargetArgs(type="Utilization", average_utilization=percent),
            ),
        )

    def _env(
        self, port: int, plain: Mapping[str, str], secret: Mapping[str, str], config: tuple[ConfigMount, ...] = ()
    ) -> list[k8s.core.v1.EnvVarArgs]:
        """PORT, then plain variables, config file paths and secretKeyRefs (variable -> Secret key)."""
        env = [k8s.core.v1.EnvVarArgs(name="PORT", value=str(port))]
        env += [k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in sorted(plain.items())]
        env += [k8s.core.v1.EnvVarArgs(name=c.env, value=f"{c.directory}/{c.key}") for c in config]
        env += [
            k8s.core.v1.EnvVarArgs(
                name=name,
                value_from=k8s.core.v1.EnvVarSourceArgs(
                    secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=self._secret_name, key=key)
                ),
            )
            for name, key in sorted(secret.items())
        ]
        return env

    @staticmethod
    def _probe(port: int, path: str | None, period: int, failures: int) -> k8s.core.v1.ProbeArgs:
        if path is None:
            return k8s.core.v1.ProbeArgs(
                tcp_socket=k8s.core.v1.TCPSocketActionArgs(port=port),
                period_seconds=period,
                failure_threshold=failures,
                timeout_seconds=5,
            )
        return k8s.core.v1.ProbeArgs(
            http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port=port),
            period_seconds=period,
            failure_threshold=failures,
            timeout_seconds=5,
        )

    def _container(
        self,
        *,
        name: str,
        image: str,
        port_name: str,
        port: int,
        health_path: str | None,
        resources: k8s.core.v1.ResourceRequirementsArgs,
        env: list[k8s.core.v1.EnvVarArgs],
        args: tuple[str, ...],
        mounts: list[k8s.core.v1.VolumeMountArgs],
    ) -> k8s.core.v1.ContainerArgs:
        """One container: its one port declared, probed and handed over as PORT; the restricted context."""
        return k8s.core.v1.ContainerArgs(
            name=name,
            image=image,
            image_pull_policy="IfNotPresent",
            args=list(args) or None,
            ports=[k8s.core.v1.ContainerPortArgs(name=port_name, container_port=port, protocol="TCP")],
            env=env,
            resources=resources,
            startup_probe=self._probe(port, health_path, period=10, failures=30),
            readiness_probe=self._probe(port, health_path, period=10, failures=3),
            liveness_probe=self._probe(port, health_path, period=20, failures=3),
            security_context=k8s.core.v1.SecurityContextArgs(
                allow_privilege_escalation=False,
                read_only_root_filesystem=self.args.read_only_root,
                run_as_non_root=True,
                capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
            ),
            volume_mounts=mounts,
        )

    @staticmethod
    def _amounts(resources: Resources) -> tuple[dict[str, str], dict[str, str]]:
        return (
            {"cpu": resources.requests.cpu, "memory": resources.requests.memory},
            {"cpu": resources.limits.cpu, "memory": resources.limits.memory},
        )

    def _resources(self) -> k8s.core.v1.ResourceRequirementsArgs:
        args = self.args
        requests, limits = self._amounts(args.resources)
        if args.gpu is not None:
            # Extended resources are never overcommitted: request and limit are the same count.
            requests[GPU_RESOURCE] = str(args.gpu.count)
            limits[GPU_RESOURCE] = str(args.gpu.count)
        return k8s.core.v1.ResourceRequirementsArgs(requests=requests, limits=limits)

    def _affinity(self) -> k8s.core.v1.AffinityArgs:
        args = self.args
        expressions = [k8s.core.v1.NodeSelectorRequirementArgs(key=ARCH_LABEL, operator="In", values=list(args.arches))]
        if args.gpu is not None:
            expressions.append(
                k8s.core.v1.NodeSelectorRequirementArgs(key=GPU_TYPE_LABEL, operator="In", values=[args.gpu.gpu_type])
            )
        return k8s.core.v1.AffinityArgs(
            node_affinity=k8s.core.v1.NodeAffinityArgs(
                required_during_scheduling_ignored_during_execution=k8s.core.v1.NodeSelectorArgs(
                    node_selector_terms=[k8s.core.v1.NodeSelectorTermArgs(match_expressions=expressions)]
                )
            )
        )

    def _pod_template(self, labels: Mapping[str, str]) -> k8s.core.v1.PodTemplateSpecArgs:
        args = self.args
        mounts = [k8s.core.v1.VolumeMountArgs(name=_volume_name(p), mount_path=p) for p in args.writable_paths]
        volumes = [
            k8s.core.v1.VolumeArgs(name=_volume_name(p), empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs())
            for p in args.writable_paths
        ]
        for c in args.config:
            mounts.append(k8s.core.v1.VolumeMountArgs(name=c.volume, mount_path=c.directory, read_only=True))
            volumes.append(
                k8s.core.v1.VolumeArgs(
                    name=c.volume, config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=c.config_map)
                )
            )
        for f in args.secret_files:
            mounts.append(k8s.core.v1.VolumeMountArgs(name=f.volume, mount_path=f.directory, read_only=True))
            volumes.append(
                k8s.core.v1.VolumeArgs(
                    name=f.volume,
                    secret=k8s.core.v1.SecretVolumeSourceArgs(
                        secret_name=self._config_secret_name,
                        items=[k8s.core.v1.KeyToPathArgs(key=f.key, path=f.key)],
                        # Read-only for everyone: the container's own user is not the files' owner (root).
                        default_mode=0o444,
                    ),
                )
            )
        if args.storage is not None:
            mounts.append(k8s.core.v1.VolumeMountArgs(name=DATA_VOLUME, mount_path=args.storage.mount_path))
        if args.shared_memory is not None:
            mounts.append(
                k8s.core.v1.VolumeMountArgs(name=_volume_name(SHARED_MEMORY_PATH), mount_path=SHARED_MEMORY_PATH)
            )
            volumes.append(
                k8s.core.v1.VolumeArgs(
                    name=_volume_name(SHARED_MEMORY_PATH),
                    empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(medium="Memory", size_limit=args.shared_memory),
                )
            )
        annotations: dict[str, pulumi.Input[str]] = {}
        checksummed = [*(c.content for c in args.config), *(f.fingerprint for f in args.secret_files)]
        if checksummed:
            annotations[CONFIG_CHECKSUM] = hashlib.sha256("\0".join(checksummed).encode()).hexdigest()
        secret_checksum = self._secret_checksum()
        if secret_checksum is not None:
            annotations[SECRET_CHECKSUM] = secret_checksum
        spread = k8s.core.v1.TopologySpreadConstraintArgs(
            max_skew=1,
            topology_key=HOSTNAME_TOPOLOGY,
            when_unsatisfiable="DoNotSchedule",
            label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self.selector),
            # Only nodes the pod may run on count as places to spread to; a cordoned node does not.
            node_affinity_policy="Honor",
            node_taints_policy="Honor",
            # Spread each rollout's pods on their own, not against the pods they replace.
            match_label_keys=["pod-template-hash"] if args.storage is None else None,
        )
        main = self._container(
            name=args.name,
            image=args.image,
            port_name=args.port_name,
            port=args.port,
            health_path=args.health_path,
            resources=self._resources(),
            env=self._env(args.port, args.env, {key: key for key in args.secret_env}, args.config),
            args=args.args,
            mounts=mounts,
        )
        sidecars = [
            self._container(
                name=s.name,
                image=s.image,
                port_name=s.port_name,
                port=s.port,
                health_path=None,
                resources=k8s.core.v1.ResourceRequirementsArgs(
                    requests=self._amounts(s.resources)[0], limits=self._amounts(s.resources)[1]
                ),
                env=self._env(s.port, s.env, s.secret_env),
                args=s.args,
                # Its own /tmp only: a sidecar never sees the service's data, configuration or scratch files.
                mounts=[k8s.core.v1.VolumeMountArgs(name=_sidecar_tmp(s), mount_path="/tmp")],
            )
            for s in args.sidecars
        ]
        volumes += [
            k8s.core.v1.VolumeArgs(name=_sidecar_tmp(s), empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs())
            for s in args.sidecars
        ]
        return k8s.core.v1.PodTemplateSpecArgs(
            metadata=k8s.meta.v1.ObjectMetaArgs(labels=dict(labels), annotations=annotations or None),
            spec=k8s.core.v1.PodSpecArgs(
                containers=[main, *sidecars],
                image_pull_secrets=[k8s.core.v1.LocalObjectReferenceArgs(name=args.pull_secret)],
                automount_service_account_token=False,
                enable_service_links=False,
                runtime_class_name=RUNTIME_CLASS if args.gpu is not None else None,
                tolerations=[
                    k8s.core.v1.TolerationArgs(
                        key=t.key, operator=t.operator, value=t.value or None, effect=t.effect or None
                    )
                    for t in GPU_POD_TOLERATIONS
                ]
                if args.gpu is not None
                else None,
                affinity=self._affinity(),
                topology_spread_constraints=[spread],
                security_context=k8s.core.v1.PodSecurityContextArgs(
                    run_as_non_root=True,
                    run_as_user=args.uid,
                    run_as_group=args.uid,
                    seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
                ),
                termination_grace_period_seconds=60 if args.storage is not None else 30,
                volumes=volumes,
            ),
        )

    def _secret_checksum(self) -> pulumi.Output[str] | None:
        """A digest of every secret value the pods read, so that a secret rotated in ESC rolls them.

        Kubernetes hands a pod its Secret's values when the container starts (variables) and a
        running process keeps what it read (Redis its `requirepass`), so only a new pod sees a new
        value. The digest is a secret Output itself: a hash of a short secret can be reversed by
        trying candidates, so it is kept out of the render and encrypted in the state. The image
        pull secret is left out: it is read when an image is pulled, not by a running pod.
        """
        args = self.args
        values: dict[str, pulumi.Output[str]] = {
            **{f"env:{k}": v for k, v in args.secret_env.items()},
            **{f"env:{k}": v for k, v in args.sidecar_secrets.items()},
            **{f"file:{f.key}": f.content for f in args.secret_files},
        }
        if not values:
            return None
        names = sorted(values)

        def digest(texts: list[str]) -> str:
            text = "\0".join(f"{name}={value}" for name, value in zip(names, texts, strict=True))
            return hashlib.sha256(text.encode()).hexdigest()

        return pulumi.Output.secret(pulumi.Output.all(*(values[n] for n in names)).apply(digest))

    def _network_policy(self) -> k8s.networking.v1.NetworkPolicySpecArgs:
        args = self.args
        ingress = []
        callers = [*args.ingress_from, *([TRAEFIK] if args.public else [])]
        if callers:
            ingress.append(
                k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                    from_=[p.args() for p in callers], ports=[tcp(args.port)]
                )
            )
        metrics_port = self._metrics_port
        if metrics_port is not None:
            ingress.append(
                k8s.networking.v1.NetworkPolicyIngressRuleArgs(from_=[PROMETHEUS.args()], ports=[tcp(metrics_port)])
            )
        # DNS is allowed namespace-wide (AppNamespace); these are the workload's own destinations.
        egress = [
            k8s.networking.v1.NetworkPolicyEgressRuleArgs(to=[c.peer.args()], ports=[tcp(c.port)])
            for c in args.egress_to
        ]
        if args.public_https_egress:
            egress.append(public_https_rule())
        return k8s.networking.v1.NetworkPolicySpecArgs(
            pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self.selector),
            policy_types=["Ingress", "Egress"],
            ingress=ingress,
            egress=egress,
        )
