"""The invariants of DESIGN.md that the stack's resource inputs can prove or disprove, as plain functions.

Each rule (`RULES`) is `judge(resource_type, inputs, config) -> list[str]`: the violations of one
resource, each `<field path>: <what is wrong>`, empty when it complies or the rule does not concern
it. Each stack rule (`STACK_RULES`) judges what no single object shows (a Service and the pods it
selects, a workload and its PDB and HPA, a namespace and its NetworkPolicies) over all of them. The
same functions run in three places: the CrossGuard pack (`policy/__main__.py`, on `pulumi preview`
and `pulumi up`), the offline render (`render/checks.py`, on `resources.json`) and the tests.

Inputs are the engine's camelCase inputs. In the render a secret is the string `[secret]` and a
value not known yet is `[unknown]`; under `pulumi preview` secrets are their real values and unknown
values the engine's sentinels. A rule treats a secret as an opaque, non-empty value and never
judges a value it cannot know yet. No rule imports `pulumi_policy`.

Helm releases are judged as releases (pinned chart); the objects a chart renders are not inputs of
any resource and are covered by the platform's own tests of the chart values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from components.gpu import GPU_RESOURCE, GPU_TAINT_KEY, GPU_TYPE_LABEL, RUNTIME_CLASS
from components.settings.catalogue import NAMESPACES
from components.settings.gitops import ARGOCD_PROJECT
from components.settings.reader import is_mirror_url
from components.settings.secrets import PLACEHOLDER

SECRET: Final = "[secret]"
UNKNOWN: Final = "[unknown]"
# The Pulumi engine's sentinels for values not known during preview (pulumi_policy.proxy).
_ENGINE_UNKNOWNS: Final = frozenset(
    {
        "04da6b54-80e4-46f7-96ec-b56ff0331ba9",
        "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7",
        "3eeb2bf0-c639-47a8-9e75-3b44932eb421",
        "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2",
        "030794c1-ac77-496b-92df-f27374a8bd58",
        "e48ece36-62e2-4504-bad9-02848725956a",
        "dd056dcd-154b-4c76-9bd3-c8f88648b5ff",
    }
)

DEFAULT_REGISTRY: Final = "docker.io/scoobyjava15"
"""The registry of Pulumi.production.yaml (`images.registry`); the pack's config can override it."""

LOCAL_PATH: Final = "local-path"
"""K3s's bundled StorageClass: the node's disk, where stateful services keep their data."""

METALLB_IPS: Final = "metallb.io/loadBalancerIPs"
CERT_MANAGER_ANNOTATIONS: Final = ("cert-manager.io/cluster-issuer", "cert-manager.io/issuer")
GITOPS_BRANCH: Final = "main"
PSA_ENFORCE: Final = "pod-security.kubernetes.io/enforce"
# The volume types Pod Security `restricted` admits.
RESTRICTED_VOLUMES: Final = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
PART_OF: Final = ("app.kubernetes.io/part-of", "sophia-ai")
"""The label the apps layer puts on Sophia's namespaces and workloads."""

_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_NAME = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_SEMVER = re.compile(r"^v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")

JSON = Mapping[str, Any]


def sophia_namespaces() -> frozenset[str]:
    """The namespaces of the Sophia tiers, as the apps layer names them."""
    return frozenset(NAMESPACES.values())


@dataclass(frozen=True)
class PolicyConfig:
    """What the pack cannot know from a resource: where images must come from, which namespaces are Sophia's."""

    registry: str = DEFAULT_REGISTRY
    app_namespaces: frozenset[str] = field(default_factory=sophia_namespaces)


DEFAULT_CONFIG: Final = PolicyConfig()

Judge = Callable[[str, JSON, PolicyConfig], list[str]]


@dataclass(frozen=True)
class Rule:
    name: str
    """The CrossGuard policy name (kebab-case, unique in the pack)."""
    invariant: int
    """The number of the invariant in DESIGN.md it enforces."""
    description: str
    judge: Judge


# -- reading inputs -------------------------------------------------------------------------------


def is_unknown(value: object) -> bool:
    return isinstance(value, str) and (value == UNKNOWN or value in _ENGINE_UNKNOWNS)


def _map(value: object) -> JSON:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []


def kubernetes_object(resource_type: str, inputs: JSON) -> JSON | None:
    """The object a Kubernetes resource creates, or None (Helm releases, providers, patches, components)."""
    if not resource_type.startswith("kubernetes:") or resource_type.endswith("Patch"):
        return None
    if not isinstance(inputs.get("kind"), str) or not isinstance(inputs.get("apiVersion"), str):
        return None
    return inputs


def _kind(obj: JSON) -> str:
    return str(obj.get("kind"))


def _namespace(obj: JSON) -> str | None:
    namespace = _map(obj.get("metadata")).get("namespace")
    return namespace if isinstance(namespace, str) else None


_POD_TEMPLATE_PATHS: Final[Mapping[str, tuple[str, ...]]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def pod_spec(obj: JSON) -> tuple[str, JSON] | None:
    """The pod spec of a workload object and its field path, or None for other kinds."""
    path = _POD_TEMPLATE_PATHS.get(_kind(obj))
    if path is None:
        return None
    spec: object = obj
    for key in path:
        spec = _map(spec).get(key)
    return ".".join(path), _map(spec)


def containers(spec: JSON, path: str) -> Iterator[tuple[str, JSON]]:
    """Every container of a pod spec (init and ephemeral ones too), with its field path."""
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for i, container in enumerate(_list(spec.get(group))):
            yield f"{path}.{group}[{i}]", _map(container)


def _workload(resource_type: str, inputs: JSON) -> tuple[JSON, str, JSON] | None:
    obj = kubernetes_object(resource_type, inputs)
    if obj is None:
        return None
    found = pod_spec(obj)
    return None if found is None else (obj, *found)


# -- 1. images ------------------------------------------------------------------------------------


def images_from_the_registry(resource_type: str, inputs: JSON, config: PolicyConfig) -> list[str]:
    workload = _workload(resource_type, inputs)
    if workload is None:
        return []
    _, path, spec = workload
    pattern = re.compile(
        rf"^{re.escape(config.registry)}/{_NAME}(?:/{_NAME})*:(?P<tag>{_TAG})(?:@sha256:[0-9a-f]{{64}})?$"
    )
    violations = []
    for where, container in containers(spec, path):
        image = container.get("image")
        if is_unknown(image):
            continue
        match = pattern.match(image) if isinstance(image, str) else None
        if match is None:
            violations.append(f"{where}.image: {image!r} is not <{config.registry}>/<name>:<tag>")
        elif match.group("tag") == "latest":
            violations.append(f"{where}.image: {image!r} uses the tag 'latest'; pin a tag")
    return violations


# -- 2. resources, probes, ports --------------------------------------------------------------------


def containers_have_requests_and_limits(resource_type: str, inputs: JSON, config: PolicyConfig) -> list[str]:
    workload = _workload(resource_type, inputs)
    if workload is None:
        return []
    _, path, spec = workload
    violations = []
    for where, container in containers(spec, path):
        resources = _map(container.get("resources"))
        for kind in ("requests", "limits"):
            amounts = _map(resources.get(kind))
            missing = [r for r in ("cpu", "memory") if amounts.get(r) in (None, "", 0)]
            if missing:
                violations.append(f"{where}.resources.{kind}: no {' and no '.join(missing)}")
    return violations


def _declared_ports(container: JSON) -> tuple[set[int], set[str]]:
    numbers: set[int] = set()
    names: set[str] = set()
    for port in _list(container.get("ports")):
        number = _map(port).get("containerPort")
        if isinstance(number, int):
            numbers.add(number)
        name = _map(port).get("name")
        if isinstance(name, str):
            names.add(name)
    return numbers, names


def _probe_port(probe: JSON) -> object:
    for handler in ("httpGet", "tcpSocket", "grpc"):
        if handler in probe:
            return _map(probe[handler]).get("port")
    return None


def probes_on_a_declared_port(resource_type: str, inputs: JSON, config: PolicyConfig) -> list[str]:
    """Long-running workloads are probed on a port their container declares; PORT is that port.

    Sophia's containers all read their port from PORT (the one number, set from the catalogue), so
    for them PORT is required; for anyone else's it is checked where it is set.
    """
    workload = _workload(resource_type, inputs)
    if workload is None or _kind(workload[0]) not in ("Deployment", "StatefulSet", "DaemonSet"):
        return []
    obj, path, spec = workload
    sophia = _namespace(obj) in config.app_namespaces or _is_sophia(obj)
    violations = []
    for i, raw_container in enumerate(_list(spec.get("containers"))):
        container = _map(raw_container)
        where = f"{path}.containers[{i}]"
        numbers, names = _declared_ports(container)
        for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(probe_name)
            if not isinstance(probe, Mapping):
                if probe_name != "startupProbe":
                    violations.append(f"{where}.{probe_name}: missing")
                continue
            if "exec" in probe:
                violations.append(f"{where}.{probe_name}: probes a command, not the port the container serves")
                continue
            port = _probe_port(probe)
            if is_unknown(port):
                continue
            if not (port in numbers or port in names):
                violations.append(f"{where}.{probe_name}: port {port!r} is not a containerPort the container declares")
        port_env = [_map(e) for e in _list(container.get("env")) if _map(e).get("name") == "PORT"]
        if sophia and not port_env:
            violations.append(f"{where}.env: no PORT; it must be the containerPort {sorted(numbers)}")
        for env in port_env:
            if "value" not in env or is_unknown(env.get("value")):
                continue
            value = env.get("value")
            if not (isinstance(value, str) and value.isdigit() and int(value) in numbers):
                violations.append(f"{where}.env.PORT: {value!r} is not the containerPort {sorted(numbers)}")
    return violations


def services_name_their_target_port(resource_type: str, inputs: JSON, config: PolicyConfig) -> list[str]:
    """A Service with a selector says which container port it sends to; never Kubernetes' silent default."""
    obj = kubernetes_object(resource_type, inputs)
    if obj is None or _kind(obj) != "Service":
        return []
    spec = _map(obj.get("spec"))
    if not spec.get("selector") or spec.get("type") == "ExternalName":
        return []
    violations = []
    for i, port in enumerate(_list(spec.get("ports"))):
        target = _map(port).get("targetPort")
        if target is None or target in {"", 0}:
            violations.append(f"spec.ports[{i}].targetPort: not set (it would silently default to port)")
    return violations


# -- 3. GPU ---------------------------------------------------------------------------------------


def _gpu_amount(resources: JSON, kind: str) -> object:
    return _map(resources.get(kind)).get(GPU_RESOURCE)


def _requires_gpu_type(affinity: JSON) -> bool:
    required = _map(_map(_map(affinity).get("nodeAffinity")).get("requiredDuringSchedulingIgnoredDuringExecution"))
    terms = _list(required.get("nodeSelectorTerms"))
    return bool(terms) and all(
        any(
            _map(e).get("key") == GPU_TYPE_LABEL and _map(e).get("operator") == "In" and _list(_map(e).get("values"))
            for e in _list(_map(term).get("matchExpressions"))
        )
        for term in terms
    )


def _tolerates_gpu_taint(spec: JSON) -> bool:
    return any(
        _map(t).get("key") == GPU_TAINT_KEY and _map(t).get("operator", "Equal") in ("Exists", "Equal")
        for t in _list(spec.get("tolerations"))
    )


def gpu_pods_land_on_gpu_nodes(resource_type: str, inputs: JSON, config: PolicyConfig) -> list[str]:
    workload = _workload(resource_type, inputs)
    if workload is None:
        return []
    _, path, spec = workload
    violations = []
    uses_gpu = False
    for where, container in containers(spec, path):
        resources = _map(container.get("resources"))
        if _gpu_amount(resources, "requests") is not None and _gpu_amount(resources, "limits") is None:
            violations.append(f"{where}.resources: {GPU_RESOURCE} is requested but not limited (GPUs go in limits)")
        if _gpu_amount(resources, "limits") is not None:
            uses_gpu = True
    if GPU_RESOURCE in _map(spec.get("nodeSelector")):
        violations.append(
            f"{path}.nodeSelector: {GPU_RESOURCE} as a node selector guarantees no GPU; "
            f"limit {GPU_RESOURCE} and require the {GPU_TYPE_LABEL} label"
        )
    if uses_gpu:
        if spec.get("runtimeClassName") != RUNTIME_CLASS:
            violations.append(f"{path}.runtimeClassName: must be {RUNTIME_CLASS!r} for a GPU pod")
        if not _tolerates_gpu_taint(spec):
            violations.append(f"{path}.tolerations: a GPU pod must tolerate the {GPU_TAINT_KEY} taint")
        if not _requires_gpu_type(_map(spec.get("affinity"))):
            violations.append(
                f"{path}.affinity: a GPU pod must require node affinity on {GPU_TYPE_LABEL} in every node selector term"
            )
    return violations


# -- 4. secrets -----------------------------------------------------------------------------------


def secrets_are_never_empty(resource_type: str, inputs: JSON, config: PolicyConfig) -> list[str]:
    obj = kubernetes_object(resource_type, inputs)
    if obj is None or _kind(obj) != "Secret":
        return []
    violations = []
    entries = 0
    for field_name in ("data", "stringData"):
        values = obj.get(field_name)
        if values is None or is_unknown(values):
            entries += 0 if values is None else 1
            continue
        if not isinstance(values, Mapping):
            violations.append(f"{field_name}: must be a mapping")
            continue
        for key in sorted(values):
            entries += 1
            value = values[key]
            if value == SECRET or is_unknown(value):
                continue
            if not isinstance(value, str) or PLACEHOLDER.search(value):
                violations.append(f"{field_name}.{key}: is empty or a placeholder")
    if not entries:
        violations.append("data: the Secret holds no value")
    return violations


# -- 5. pod security ------------------------------------------------------------------------------


def _is_sophia(obj: JSON) -> bool:
    return _map(_map(obj.get("metadata")).get("labels")).get(PART_OF[0]) == PART_OF[1]


def app_namespaces_enforce_restricted(resource_type: str, inputs: JSON, config: PolicyConfig) -> list[str]:
    obj = kubernetes_object(resource_type, inputs)
    if obj is None or _kind(obj) != "Namespace":
        return []
    metadata = _map(obj.get("metadata"))
    if metadata.get("name") not in config.app_namespaces and not _is_sophia(obj):
        return []
    labels = _map(metadata.get("labels"))
    if labels.get(PSA_ENFORCE) != "restricted":
        return [f"metadata.labels.{PSA_ENFORCE}: {labels.get(PSA_ENFORCE)!r}, must be 'restricted'"]
    return []


def _pod_level(spec: JSON, container: JSON, key: str) -> object:
    """A security setting of a container, falling back to the pod's (Kubernetes' own precedence)."""
    own = _map(container.get("securityContext")).get(key)
    return own if own is not None else _map(spec.get("securityContext")).get(key)


def app_pods_are_restricted(resource_type: str, inputs: JSON, config: PolicyConfig) -> list[str]:
    """Pods in Sophia's namespaces pass Pod Security `restricted` (checked here, before admission refuses them)."""
    workload = _workload(resource_type, inputs)
    if workload is None or (_namespace(workload[0]) not in config.app_namespaces and not _is_sophia(workload[0])):
        return []
    _, path, spec = workload
    violations = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key) is True:
            violations.append(f"{path}.{key}: must not be true")
    for i, volume in enumerate(_list(spec.get("volumes"))):
        kinds = set(_map(volume)) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            violations.append(f"{path}.volumes[{i}]: {sorted(kinds - RESTRICTED_VOLUMES)} volumes are not allowed")
    for where, container in containers(spec, path):
        context = _map(container.get("securityContext"))
        if _pod_level(spec, container, "runAsNonRoot") is not True:
            violations.append(f"{where}.securityContext.runAsNonRoot: must be true (here or for the pod)")
        if _pod_level(spec, container, "runAsUser") == 0:
            violations.append(f"{where}.securityContext.runAsUser: must not be 0")
        seccomp = _map(_pod_level(spec, container, "seccompProfile")).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            violations.append(f"{where}.securityContext.seccompProfile.type: {seccomp!r}, must be RuntimeDefault")
        if context.get("allowPrivilegeEscalation") is not False:
            violations.append(f"{where}.securityContext.allowPrivilegeEscalation: must be false")
        if context.get("privileged") is True:
            violations.append(f"{where}.securityContext.privileged: must not be true")
        for j, port in enumerate(_list(container.get("ports"))):
            if _map(port).get("hostPort") not in (None, 0):
                violations.append(f"{where}.ports[{j}].hostPort: host ports are not allowed")
        capabilities = _map(context.get("capabilities"))
        if "ALL" not in _list(capabilities.get("drop")):
            violations.append(f"{where}.securityContext.capabilities.drop: must contain ALL")
        added = [c for c in _list(capabilities.get("add")) if c != "NET_BIND_SERVICE"]
        if added:
            violations.append(f"{where}.securityContext.capabilities.add: {added} are not allowed")
    return violations


# -- 6. availability ------------------------------------------------------------------------------


def _is_zero(value: object) -> bool:
    return value in {0, "0", "0%"}


def rollouts_keep_capacity_and_spread(resource_type: str, inputs: JSON, config: PolicyConfig) -> list[str]:
    obj = kubernetes_object(resource_type, inputs)
    if obj is None or _kind(obj) != "Deployment":
        return []
    spec = _map(obj.get("spec"))
    violations = []
    strategy = _map(spec.get("strategy"))
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        violations.append(f"spec.strategy.type: {strategy.get('type')!r}, must be RollingUpdate")
    elif not _is_zero(_map(strategy.get("rollingUpdate")).get("maxUnavailable")):
        violations.append("spec.strategy.rollingUpdate.maxUnavailable: must be 0 (the default 25% drops capacity)")
    pod = _map(_map(spec.get("template")).get("spec"))
    constraints = _list(pod.get("topologySpreadConstraints"))
    if not any(_map(c).get("topologyKey") == "kubernetes.io/hostname" for c in constraints):
        violations.append(
            "spec.template.spec.topologySpreadConstraints: must spread across nodes (kubernetes.io/hostname)"
        )
    return violations


def _percent(value: str) -> int | None:
    return int(value[:-1]) if value.endswith("%") and value[:-1].isdigit() else None


def disruption_budgets_allow_drains(resource_type: str, inputs: JSON, config: PolicyConfig) -> list[str]:
    """A PDB that allows no eviction blocks `kubectl drain` and so node removal and K3s upgrades."""
    obj = kubernetes_object(resource_type, inputs)
    if obj is None or _kind(obj) != "PodDisruptionBudget":
        return []
    spec = _map(obj.get("spec"))
    max_unavailable = spec.get("maxUnavailable")
    min_available = spec.get("minAvailable")
    if max_unavailable is not None:
        if _is_zero(max_unavailable):
            return ["spec.maxUnavailable: 0 allows no eviction; a drain would never finish"]
        return []
    if isinstance(min_available, str) and _percent(min_available) == 100:
        return ["spec.minAvailable: 100% allows no eviction; a drain would never finish"]
    if min_available is None:
        return ["spec: sets neither maxUnavailable nor minAvailable"]
    # An absolute minAvailable is only safe below the replica count, which this object does not hold.
    if isinstance(min_available, int):
        return [
            f"spec.minAvailable: {min_available} blocks drains whenever replicas <= {min_available}; "
            "use maxUnavailable: 1"
        ]
    return []


# -- 7. storage -----------------------------------------------------------------------------------


def stateful_data_on_local_path(resource_type: str, inputs: JSON, config: PolicyConfig) -> list[str]:
    obj = kubernetes_object(resource_type, inputs)
    if obj is None:
        return []
    if _kind(obj) == "PersistentVolumeClaim":
        storage_class = _map(obj.get("spec")).get("storageClassName")
        return (
            [] if storage_class == LOCAL_PATH else [f"spec.storageClassName: {storage_class!r}, must be {LOCAL_PATH}"]
        )
    if _kind(obj) != "StatefulSet":
        return []
    spec = _map(obj.get("spec"))
    violations = []
    templates = _list(spec.get("volumeClaimTemplates"))
    if not templates:
        violations.append("spec.volumeClaimTemplates: a stateful service keeps its data on a PVC; none declared")
    for i, template in enumerate(templates):
        storage_class = _map(_map(template).get("spec")).get("storageClassName")
        if storage_class != LOCAL_PATH:
            violations.append(
                f"spec.volumeClaimTemplates[{i}].spec.storageClassName: {storage_class!r}, must be {LOCAL_PATH}"
            )
    retention = _map(spec.get("persistentVolumeClaimRetentionPolicy"))
    for when in ("whenDeleted", "whenScaled"):
        if retention.get(when) == "Delete":
            violations.append(f"spec.persistentVolumeClaimRetentionPolicy.{when}: Delete loses the data")
    update = _map(spec.get("updateStrategy")).get("type", "RollingUpdate")
    if update != "RollingUpdate":
        violations.append(f"spec.updateStrategy.type: {update!r}, must be RollingUpdate")
    return violations


# -- 8. traffic -----------------------------------------------------------------------------------


def ingress_only_with_cert_manager_tls(resource_type: str, inputs: JSON, config: PolicyConfig) -> list[str]:
    obj = kubernetes_object(resource_type, inputs)
    if obj is None or _kind(obj) != "Ingress":
        return []
    annotations = _map(_map(obj.get("metadata")).get("annotations"))
    spec = _map(obj.get("spec"))
    violations = []
    if not any(annotations.get(a) for a in CERT_MANAGER_ANNOTATIONS):
        violations.append(
            f"metadata.annotations: no {CERT_MANAGER_ANNOTATIONS[0]}; the certificate must come from cert-manager"
        )
    tls = _list(spec.get("tls"))
    if not tls:
        violations.append("spec.tls: an Ingress serves only TLS")
    covered: set[str] = set()
    for i, raw_entry in enumerate(tls):
        entry = _map(raw_entry)
        if not entry.get("secretName"):
            violations.append(f"spec.tls[{i}].secretName: missing")
        covered.update(h for h in _list(entry.get("hosts")) if isinstance(h, str))
    for i, rule in enumerate(_list(spec.get("rules"))):
        host = _map(rule).get("host")
        if not isinstance(host, str) or is_unknown(host):
            if host is None:
                violations.append(f"spec.rules[{i}].host: a rule without a host cannot be covered by TLS")
            continue
        if host not in covered:
            violations.append(f"spec.rules[{i}].host: {host} is not in spec.tls")
    return violations


def load_balancers_only_through_metallb(resource_type: str, inputs: JSON, config: PolicyConfig) -> list[str]:
    obj = kubernetes_object(resource_type, inputs)
    if obj is None or _kind(obj) != "Service":
        return []
    spec = _map(obj.get("spec"))
    if spec.get("type") != "LoadBalancer":
        return []
    violations = []
    if "loadBalancerIP" in spec:
        violations.append(f"spec.loadBalancerIP: deprecated and ignored by MetalLB; use the {METALLB_IPS} annotation")
    if not _map(_map(obj.get("metadata")).get("annotations")).get(METALLB_IPS):
        violations.append(f"metadata.annotations.{METALLB_IPS}: a LoadBalancer gets its address from MetalLB's pool")
    return violations


# -- 9. GitOps ------------------------------------------------------------------------------------


def argocd_applications_follow_main(resource_type: str, inputs: JSON, config: PolicyConfig) -> list[str]:
    obj = kubernetes_object(resource_type, inputs)
    if obj is None or _kind(obj) != "Application" or not str(obj.get("apiVersion")).startswith("argoproj.io/"):
        return []
    spec = _map(obj.get("spec"))
    sources = [("spec.source", _map(spec.get("source")))] if "source" in spec else []
    sources += [(f"spec.sources[{i}]", _map(s)) for i, s in enumerate(_list(spec.get("sources")))]
    if not sources:
        return ["spec.source: missing"]
    violations = []
    for where, source in sources:
        if source.get("targetRevision") != GITOPS_BRANCH:
            violations.append(f"{where}.targetRevision: {source.get('targetRevision')!r}, must be {GITOPS_BRANCH!r}")
        if not source.get("path") and not source.get("chart"):
            violations.append(f"{where}.path: missing")
    return violations


def argocd_applications_in_the_sophia_project(resource_type: str, inputs: JSON, config: PolicyConfig) -> list[str]:
    obj = kubernetes_object(resource_type, inputs)
    if obj is None or _kind(obj) != "Application" or not str(obj.get("apiVersion")).startswith("argoproj.io/"):
        return []
    project = _map(obj.get("spec")).get("project")
    if project != ARGOCD_PROJECT:
        return [f"spec.project: {project!r}, must be {ARGOCD_PROJECT!r} (the fenced project)"]
    return []


# -- third-party software, pinned -----------------------------------------------------------------


def helm_releases_are_pinned(resource_type: str, inputs: JSON, config: PolicyConfig) -> list[str]:
    if resource_type != "kubernetes:helm.sh/v3:Release":
        return []
    violations = []
    version = inputs.get("version")
    if not (isinstance(version, str) and _SEMVER.match(version)):
        violations.append(f"version: {version!r} is not an exact chart version")
    repository = _map(inputs.get("repositoryOpts")).get("repo")
    # Plain http only as `platform.chartMirror` allows it: on the loopback of the machine running Helm.
    if not (
        isinstance(repository, str) and (repository.startswith(("https://", "oci://")) or is_mirror_url(repository))
    ):
        violations.append(
            f"repositoryOpts.repo: {repository!r} is not an https or oci chart repository, nor a loopback mirror"
        )
    return violations


RULES: Final[tuple[Rule, ...]] = (
    Rule(
        "images-from-the-configured-registry",
        1,
        "Every container image is <registry>/<name>:<tag> from the one configured registry, never :latest.",
        images_from_the_registry,
    ),
    Rule(
        "containers-have-requests-and-limits",
        2,
        "Every container declares CPU and memory requests and limits.",
        containers_have_requests_and_limits,
    ),
    Rule(
        "probes-on-a-declared-port",
        2,
        "Long-running containers have readiness and liveness probes on a port they declare; PORT is that port.",
        probes_on_a_declared_port,
    ),
    Rule(
        "services-name-their-target-port",
        2,
        "Every port of a Service with a selector names its targetPort.",
        services_name_their_target_port,
    ),
    Rule(
        "gpu-pods-land-on-gpu-nodes",
        3,
        "A GPU pod limits nvidia.com/gpu, runs with runtimeClassName nvidia, tolerates the GPU taint and requires "
        "the gpu-type label.",
        gpu_pods_land_on_gpu_nodes,
    ),
    Rule(
        "secrets-are-never-empty",
        4,
        "No Secret is empty, and none of its values is empty or a placeholder.",
        secrets_are_never_empty,
    ),
    Rule(
        "app-namespaces-enforce-restricted",
        5,
        "Sophia's namespaces enforce Pod Security 'restricted'.",
        app_namespaces_enforce_restricted,
    ),
    Rule(
        "app-pods-are-restricted",
        5,
        "Pods in Sophia's namespaces run as non-root with seccomp RuntimeDefault, no privilege escalation and no "
        "capabilities.",
        app_pods_are_restricted,
    ),
    Rule(
        "rollouts-keep-capacity-and-spread",
        6,
        "Deployments roll out with maxUnavailable 0 and spread their pods across nodes.",
        rollouts_keep_capacity_and_spread,
    ),
    Rule(
        "disruption-budgets-allow-drains",
        6,
        "A PodDisruptionBudget always allows at least one eviction, so nodes can be drained.",
        disruption_budgets_allow_drains,
    ),
    Rule(
        "stateful-data-on-local-path",
        7,
        "Stateful sets keep their data on local-path PVCs that updates and scale-downs never delete.",
        stateful_data_on_local_path,
    ),
    Rule(
        "ingress-only-with-cert-manager-tls",
        8,
        "Every Ingress serves TLS for all its hosts with a certificate from cert-manager.",
        ingress_only_with_cert_manager_tls,
    ),
    Rule(
        "load-balancers-only-through-metallb",
        8,
        "LoadBalancer Services get their address from MetalLB's annotation, never spec.loadBalancerIP.",
        load_balancers_only_through_metallb,
    ),
    Rule(
        "argocd-applications-follow-main",
        9,
        "Argo CD Applications track targetRevision main at a path of the repository.",
        argocd_applications_follow_main,
    ),
    Rule(
        "argocd-applications-in-the-sophia-project",
        9,
        "Argo CD Applications use the project 'sophia', never 'default' or another.",
        argocd_applications_in_the_sophia_project,
    ),
    Rule(
        "helm-releases-are-pinned",
        0,
        "Helm releases install an exact chart version from an https or oci repository (http only on loopback).",
        helm_releases_are_pinned,
    ),
)


# -- across resources: what one object cannot prove ----------------------------------------------
#
# A stack rule sees every resource of the stack (`StackValidationPolicy` in the pack): a Service and
# the pods it selects, a workload and its PDB and HPA, a namespace and its NetworkPolicies. Each is
# judged only for Sophia's own objects (namespace or label), since the objects a Helm chart renders
# are not resources of the stack.

Resources = Sequence[tuple[str, JSON]]


def _objects(resources: Resources) -> list[JSON]:
    return [obj for type_, inputs in resources if (obj := kubernetes_object(type_, inputs)) is not None]


# Kubernetes resource types that are not one object of the cluster.
_NOT_AN_OBJECT: Final = ("kubernetes:helm.sh/", "kubernetes:yaml/", "kubernetes:kustomize/")


def all_seen(resources: Resources) -> bool:
    """Whether every Kubernetes object of the stack shows what it holds.

    The engine runs stack policies on resource outputs, and at a first preview the outputs of the
    objects behind a provider whose kubeconfig is still unknown are empty. A rule can judge what it
    sees, but it can say that something is missing only when nothing is hidden from it.
    """
    return all(
        kubernetes_object(type_, props) is not None
        for type_, props in resources
        if type_.startswith("kubernetes:") and not type_.endswith("Patch") and not type_.startswith(_NOT_AN_OBJECT)
    )


def _label(obj: JSON) -> str:
    namespace = _namespace(obj)
    return f"{_kind(obj)} {namespace + '/' if namespace else ''}{_map(obj.get('metadata')).get('name')}"


def _in_scope(obj: JSON, config: PolicyConfig) -> bool:
    return _namespace(obj) in config.app_namespaces or _is_sophia(obj)


def _pod_labels(obj: JSON) -> JSON:
    return _map(_map(_map(_map(obj.get("spec")).get("template")).get("metadata")).get("labels"))


def _selects(selector: JSON, labels: JSON) -> bool:
    """A non-empty equality selector (matchLabels or a Service's selector) that `labels` satisfy."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


_WORKLOADS: Final = ("Deployment", "StatefulSet", "DaemonSet")


def _ports_by_name(spec: JSON) -> dict[str, object]:
    """Each named port the pod's containers declare, and its number."""
    return {
        name: _map(port).get("containerPort")
        for container in _list(spec.get("containers"))
        for port in _list(_map(container).get("ports"))
        if isinstance(name := _map(port).get("name"), str)
    }


def services_reach_the_port_they_name(resources: Resources, config: PolicyConfig) -> list[str]:
    """Each Sophia Service selects a workload, and each of its ports reaches the container port of its name.

    Any declared port is not enough: a pod also declares its exporter's port, and a Service port that
    sent the service's traffic there would pass a check of "some declared port". The port a Service
    port is meant to reach is the one it is named after (the apps layer names both alike), so a
    Sophia Service names each port, and its targetPort is that container port, by number or by name.
    """
    objects = _objects(resources)
    complete = all_seen(resources)
    workloads = [o for o in objects if _kind(o) in _WORKLOADS]
    violations = []
    for service in (o for o in objects if _kind(o) == "Service" and _in_scope(o, config)):
        spec = _map(service.get("spec"))
        selector = _map(spec.get("selector"))
        if not selector or is_unknown(spec.get("selector")):
            continue
        selected = [w for w in workloads if _namespace(w) == _namespace(service) and _selects(selector, _pod_labels(w))]
        if not selected and complete:
            violations.append(f"{_label(service)}: its selector {dict(selector)} matches no workload of the stack")
        for workload in selected:
            found = pod_spec(workload)
            declared = _ports_by_name(found[1]) if found else {}
            for i, raw_port in enumerate(_list(spec.get("ports"))):
                port = _map(raw_port)
                name = port.get("name")
                target = port.get("targetPort", port.get("port"))
                where = f"{_label(service)}: spec.ports[{i}]"
                if is_unknown(name) or is_unknown(target):
                    continue
                if not isinstance(name, str) or not name:
                    violations.append(f"{where}: no name; name it after the port of {_label(workload)} it reaches")
                elif name not in declared:
                    violations.append(f"{where}: {name!r} is no port {_label(workload)} declares")
                elif target not in (name, declared[name]):
                    violations.append(
                        f"{where}.targetPort {target!r} is not {name!r} ({declared[name]!r}), "
                        f"the port of {_label(workload)} it is named after"
                    )
    return violations


def _selector_is_everything(policy: JSON) -> bool:
    selector = _map(_map(policy.get("spec")).get("podSelector"))
    return not selector.get("matchLabels") and not selector.get("matchExpressions")


def app_namespaces_deny_by_default(resources: Resources, config: PolicyConfig) -> list[str]:
    """Each Sophia namespace has a NetworkPolicy denying all ingress and egress; the rest are explicit allows."""
    if not all_seen(resources):
        return []
    objects = _objects(resources)
    violations = []
    for namespace in (o for o in objects if _kind(o) == "Namespace"):
        name = _map(namespace.get("metadata")).get("name")
        if name not in config.app_namespaces and not _is_sophia(namespace):
            continue
        deny = [
            p
            for p in objects
            if _kind(p) == "NetworkPolicy"
            and _namespace(p) == name
            and _selector_is_everything(p)
            and {"Ingress", "Egress"} <= set(_list(_map(p.get("spec")).get("policyTypes")))
            and not _list(_map(p.get("spec")).get("ingress"))
            and not _list(_map(p.get("spec")).get("egress"))
        ]
        if not deny:
            violations.append(
                f"Namespace {name}: no default-deny NetworkPolicy (all pods, Ingress and Egress, no rule)"
            )
    return violations


def replicated_services_have_budgets_and_autoscalers(resources: Resources, config: PolicyConfig) -> list[str]:
    """A replicated Sophia service has an HPA and a PDB, and the PDB never demands all of its replicas."""
    objects = _objects(resources)
    complete = all_seen(resources)
    violations = []
    for workload in (o for o in objects if _kind(o) in ("Deployment", "StatefulSet") and _in_scope(o, config)):
        name = _map(workload.get("metadata")).get("name")
        replicas = _map(workload.get("spec")).get("replicas")
        if is_unknown(replicas):
            continue
        autoscalers = [
            h
            for h in objects
            if _kind(h) == "HorizontalPodAutoscaler"
            and _namespace(h) == _namespace(workload)
            and _map(_map(h.get("spec")).get("scaleTargetRef")).get("kind") == _kind(workload)
            and _map(_map(h.get("spec")).get("scaleTargetRef")).get("name") == name
        ]
        budgets = [
            b
            for b in objects
            if _kind(b) == "PodDisruptionBudget"
            and _namespace(b) == _namespace(workload)
            and _selects(_map(_map(_map(b.get("spec")).get("selector")).get("matchLabels")), _pod_labels(workload))
        ]
        if _kind(workload) == "Deployment" and replicas is None and not autoscalers and complete:
            violations.append(f"{_label(workload)}: leaves spec.replicas to an autoscaler, but no HPA targets it")
        replicated = bool(autoscalers) or (isinstance(replicas, int) and replicas >= 2)
        if (
            _kind(workload) == "Deployment"
            and isinstance(replicas, int)
            and replicas >= 2
            and not autoscalers
            and complete
        ):
            violations.append(f"{_label(workload)}: {replicas} replicas and no HPA")
        if replicated and not budgets and complete:
            violations.append(f"{_label(workload)}: replicated, but no PodDisruptionBudget selects its pods")
        floor = min(
            [int(_map(h.get("spec")).get("minReplicas", 1)) for h in autoscalers]
            + ([replicas] if isinstance(replicas, int) else [])
            or [1]
        )
        for budget in budgets:
            minimum = _map(budget.get("spec")).get("minAvailable")
            if isinstance(minimum, int) and minimum >= floor:
                violations.append(
                    f"{_label(budget)}: minAvailable {minimum} with as few as {floor} replicas blocks every drain"
                )
    return violations


@dataclass(frozen=True)
class StackRule:
    name: str
    invariant: int
    description: str
    judge: Callable[[Resources, PolicyConfig], list[str]]


STACK_RULES: Final[tuple[StackRule, ...]] = (
    StackRule(
        "services-reach-the-port-they-name",
        2,
        "Each Sophia Service selects a workload, and each of its ports targets the container port of its name.",
        services_reach_the_port_they_name,
    ),
    StackRule(
        "app-namespaces-deny-by-default",
        6,
        "Each Sophia namespace has a default-deny NetworkPolicy for ingress and egress.",
        app_namespaces_deny_by_default,
    ),
    StackRule(
        "replicated-services-have-budgets-and-autoscalers",
        6,
        "A replicated Sophia service has an HPA and a PDB, and the PDB never demands all of its replicas.",
        replicated_services_have_budgets_and_autoscalers,
    ),
)


def violations(resource_type: str, inputs: JSON, config: PolicyConfig = DEFAULT_CONFIG) -> dict[str, list[str]]:
    """Every rule's violations for one resource (rules without any left out)."""
    found = {rule.name: rule.judge(resource_type, inputs, config) for rule in RULES}
    return {name: messages for name, messages in found.items() if messages}
