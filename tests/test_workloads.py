"""The Sophia workloads in the rendered production stack keep every invariant of DESIGN.md that concerns them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.apps.network import (
    ACME_SOLVER_LABELS,
    ACME_SOLVER_PORT,
    HTTPS_PORT,
    MONITORING_NAMESPACE,
    NOT_PUBLIC,
    PROMETHEUS_POD_LABELS,
)
from components.apps.sophia import host
from components.gpu import ARCH_LABEL, GPU_RESOURCE, GPU_TAINT_KEY, GPU_TYPE_LABEL, RUNTIME_CLASS
from components.rollout import MAX_SURGE
from components.settings.apps import memory_bytes
from components.settings.catalogue import (
    BY_NAME,
    CATALOGUE,
    NAMESPACES,
    POSTGRES,
    REDIS,
    REDIS_CONFIG,
    SECRET_ENV,
    callers,
)
from components.settings.cluster import GPU_MODELS
from components.settings.secrets import SECRET_SPECS, SecretKey
from components.settings.stack import ConfigError, Settings, load_settings
from render.__main__ import render
from render.model import Rendered
from render.stack import PROJECT_DIR, esc_config_keys, load_stack
from tests.support import production_document, settings_from, stack_from

Manifest = dict[str, Any]
APP_NAMESPACES = frozenset(NAMESPACES.values())
NAME = "app.kubernetes.io/name"
SECRET = "[secret]"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return settings_from(tmp_path_factory.mktemp("settings"), production_document())


def _namespace(m: Manifest) -> str:
    return str(m["metadata"].get("namespace", ""))


def _name(m: Manifest) -> str:
    return str(m["metadata"]["name"])


def in_apps(production: Rendered, kind: str) -> list[Manifest]:
    return [m for m in production.objects(kind) if _namespace(m) in APP_NAMESPACES]


def controllers(production: Rendered) -> list[Manifest]:
    return in_apps(production, "Deployment") + in_apps(production, "StatefulSet")


def one(production: Rendered, kind: str, namespace: str, name: str) -> Manifest:
    found = [m for m in production.objects(kind) if _namespace(m) == namespace and _name(m) == name]
    assert len(found) == 1, f"{kind} {namespace}/{name}: {len(found)} objects"
    return found[0]


def pod_spec(m: Manifest) -> Manifest:
    return m["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def containers(m: Manifest) -> Iterator[Manifest]:
    spec = pod_spec(m)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def env_of(container: Manifest) -> dict[str, Manifest]:
    return {e["name"]: e for e in container.get("env", [])}


def matches(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# 1 ------------------------------------------------------------------------------------------


def test_the_render_holds_the_whole_catalogue(production: Rendered) -> None:
    found = {(_namespace(m), _name(m), m["kind"]) for m in controllers(production)}
    found |= {(_namespace(m), _name(m), m["kind"]) for m in production.objects("Cluster")}
    expected = {
        (s.namespace, s.name, "Cluster" if s.managed_database else "StatefulSet" if s.stateful else "Deployment")
        for s in CATALOGUE
    }
    assert found == expected


def test_every_image_comes_from_the_one_registry_with_a_pinned_tag(production: Rendered, settings: Settings) -> None:
    registry = settings.images.registry
    for m in controllers(production):
        for container in containers(m):
            image = container["image"]
            repository, _, tag = image.rpartition(":")
            assert repository.rsplit("/", 1)[0] == registry, f"{_name(m)}: {image} is not from {registry}"
            assert tag and tag != "latest" and "@" not in image, f"{_name(m)}: {image} is not pinned"
            assert image in {settings.images.image(i) for i in BY_NAME[_name(m)].images}
        assert pod_spec(m)["containers"][0]["image"] == settings.images.image(BY_NAME[_name(m)].image)


# 2 ------------------------------------------------------------------------------------------


def test_every_container_has_requests_and_limits(production: Rendered) -> None:
    for m in controllers(production):
        for container in containers(m):
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{_name(m)}: {part} incomplete"


def test_probes_service_and_port_variable_use_the_one_declared_port(production: Rendered) -> None:
    for m in controllers(production):
        service = BY_NAME[_name(m)]
        expected = [service.port, *([service.exporter.port] if service.exporter else [])]
        svc = one(production, "Service", service.namespace, service.name)
        assert matches(m["spec"]["template"]["metadata"]["labels"], svc["spec"]["selector"])
        service_ports = [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]]
        pod_ports = []
        for container in pod_spec(m)["containers"]:
            (port,) = container["ports"]
            number = port["containerPort"]
            pod_ports.append(number)
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                action = container[probe].get("httpGet") or container[probe].get("tcpSocket")
                assert action["port"] == number, f"{service.name}/{container['name']}: {probe} on {action['port']}"
            assert env_of(container)["PORT"]["value"] == str(number)
            assert (port["name"], number, number) in service_ports
        assert pod_ports == expected, f"{service.name}: ports {pod_ports}"
        assert len(service_ports) == len(expected)
        if service.health_path:
            assert pod_spec(m)["containers"][0]["readinessProbe"]["httpGet"]["path"] == service.health_path


def test_callers_are_told_the_same_port_the_service_declares(production: Rendered, settings: Settings) -> None:
    for m in controllers(production):
        env = env_of(pod_spec(m)["containers"][0])
        for target in BY_NAME[_name(m)].talks_to:
            prefix = target.upper().replace("-", "_")
            assert env[f"{prefix}_PORT"]["value"] == str(BY_NAME[target].port)
            # The database's is its Cluster's read-write Service (test_postgres.py).
            assert env[f"{prefix}_HOST"]["value"] == host(BY_NAME[target], settings.apps)


# 3 ------------------------------------------------------------------------------------------


def test_every_gpu_pod_has_limit_runtime_class_toleration_affinity_and_arch(
    production: Rendered, settings: Settings
) -> None:
    gpu_pods = [
        m for m in controllers(production) if GPU_RESOURCE in pod_spec(m)["containers"][0]["resources"]["limits"]
    ]
    assert {_name(m) for m in gpu_pods} == {s.name for s in CATALOGUE if s.gpu}
    for m in gpu_pods:
        spec = pod_spec(m)
        wanted = settings.apps.services[_name(m)].gpu
        assert wanted is not None
        assert spec["containers"][0]["resources"]["limits"][GPU_RESOURCE] == str(wanted.count)
        assert spec["runtimeClassName"] == RUNTIME_CLASS
        assert any(
            t["key"] == GPU_TAINT_KEY and t["operator"] == "Exists" and t["effect"] == "NoSchedule"
            for t in spec["tolerations"]
        )
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        for term in terms:
            required = {e["key"]: e["values"] for e in term["matchExpressions"] if e["operator"] == "In"}
            assert required[GPU_TYPE_LABEL] == [wanted.model.label]
            assert required[ARCH_LABEL] == [GPU_MODELS[wanted.model.label].arch.value]
            # Some machine of the cluster satisfies the term.
            assert any(
                n.gpu is not None and n.gpu.model.label == wanted.model.label and n.arch.value in required[ARCH_LABEL]
                for n in settings.cluster.nodes
            )


def test_no_pod_without_a_gpu_asks_for_the_gpu_runtime(production: Rendered) -> None:
    for m in controllers(production):
        spec = pod_spec(m)
        if GPU_RESOURCE not in spec["containers"][0]["resources"]["limits"]:
            assert "runtimeClassName" not in spec
            assert not any(t.get("key") == GPU_TAINT_KEY for t in spec.get("tolerations", []))


def test_every_pod_runs_on_an_architecture_its_image_is_built_for(production: Rendered) -> None:
    for m in controllers(production):
        terms = pod_spec(m)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        for term in terms["nodeSelectorTerms"]:
            arches = next(e["values"] for e in term["matchExpressions"] if e["key"] == ARCH_LABEL)
            assert set(arches) <= {a.value for a in BY_NAME[_name(m)].pod_arches}


# 4 ------------------------------------------------------------------------------------------


def test_no_secret_value_is_empty_or_in_plain_text(production: Rendered) -> None:
    secrets = in_apps(production, "Secret")
    assert secrets
    for secret in secrets:
        assert "data" not in secret, f"{_name(secret)}: plain data"
        values = secret["stringData"]
        assert values, f"{_name(secret)}: empty"
        assert all(v == SECRET for v in values.values()), f"{_name(secret)}: a value is not a secret Output"


def test_each_workload_mounts_exactly_the_secrets_it_reads(production: Rendered) -> None:
    secrets = {(_namespace(s), _name(s)): s for s in in_apps(production, "Secret")}
    for m in controllers(production):
        service = BY_NAME[_name(m)]
        refs = {
            (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in pod_spec(m)["containers"][0].get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert {key for _, key in refs} == {SECRET_ENV[k] for k in service.env_secrets}
        file_secrets = service.secret_config.keys if service.secret_config else frozenset()
        sidecar_secrets = set(service.exporter.secrets.values()) if service.exporter else set()
        assert set(service.env_secrets) | file_secrets | sidecar_secrets == set(service.secrets), service.name
        for name, key in refs:
            assert key in secrets[service.namespace, name]["stringData"], f"{service.name}: {name}/{key} missing"
        assert "envFrom" not in pod_spec(m)["containers"][0]
        for sidecar in pod_spec(m)["containers"][1:]:
            assert service.exporter is not None
            sidecar_refs = {
                (e["name"], e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                for e in sidecar.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
            assert sidecar_refs == {
                (variable, f"{service.name}-secrets", SECRET_ENV[key])
                for variable, key in service.exporter.secrets.items()
            }


POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
SECRET_LOOKING = re.compile(r"\$\(([A-Za-z0-9_]*(PASSWORD|PASS|KEY|TOKEN|SECRET)[A-Za-z0-9_]*)\)", re.IGNORECASE)


def _pod_specs(production: Rendered) -> Iterator[tuple[str, Manifest]]:
    for m in production.manifests:
        if m["kind"] in POD_TEMPLATE_KINDS:
            yield f"{m['kind']} {_namespace(m)}/{_name(m)}", pod_spec(m)
        elif m["kind"] == "CronJob":
            yield f"CronJob {_namespace(m)}/{_name(m)}", m["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif m["kind"] == "Pod":
            yield f"Pod {_namespace(m)}/{_name(m)}", m["spec"]


def test_no_container_passes_a_secret_in_its_command_or_arguments(production: Rendered) -> None:
    """Kubernetes expands `$(VAR)` into the command line, which every process list on the node shows."""
    seen = 0
    for where, spec in _pod_specs(production):
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            seen += 1
            from_secrets = {e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
            for text in [*container.get("command", []), *container.get("args", [])]:
                named = {m.group(1) for m in SECRET_LOOKING.finditer(text)}
                expanded = {v for v in from_secrets if f"$({v})" in text}
                assert not named | expanded, f"{where}/{container['name']}: {text!r} puts a secret on the command line"
    assert seen >= len(CATALOGUE)


def test_redis_reads_its_password_from_a_redacted_config_secret_never_from_args(production: Rendered) -> None:
    namespace = REDIS.namespace
    config = one(production, "Secret", namespace, f"{REDIS.name}-config")
    assert config["stringData"] == {REDIS_CONFIG.file: SECRET}
    assert "data" not in config
    spec = pod_spec(one(production, "StatefulSet", namespace, REDIS.name))
    redis, exporter = spec["containers"]
    assert redis["args"] == ["redis-server", REDIS_CONFIG.path]
    assert "command" not in redis, "the image's entrypoint must run (it starts redis-server as given)"
    assert "REDIS_PASSWORD" not in env_of(redis), "redis-server reads its password from the file only"
    (mount,) = [m for m in redis["volumeMounts"] if m["mountPath"] == REDIS_CONFIG.directory]
    assert mount["readOnly"] is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == _name(config)
    assert volume["secret"]["items"] == [{"key": REDIS_CONFIG.file, "path": REDIS_CONFIG.file}]
    assert not any(m["name"] == mount["name"] for m in exporter.get("volumeMounts", []))
    # The exporter still logs in: it reads the password from the workload's Secret itself.
    password = env_of(exporter)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password == {"name": f"{REDIS.name}-secrets", "key": SECRET_ENV[SecretKey.REDIS_PASSWORD]}
    secrets = one(production, "Secret", namespace, password["name"])
    assert secrets["stringData"] == {"REDIS_PASSWORD": SECRET}


def test_the_redis_config_file_is_built_from_the_secret_and_stays_secret() -> None:
    import pulumi

    from components.apps.config import secret_config_text

    password = 'p@ss "w\\rd"\nslaveof evil 1 é'
    text_output = secret_config_text(REDIS_CONFIG, {SecretKey.REDIS_PASSWORD: pulumi.Output.secret(password)})
    assert pulumi.runtime.sync_await._sync_await(text_output.is_secret())
    text = pulumi.runtime.sync_await._sync_await(text_output.future())
    assert text is not None
    lines = text.splitlines()
    directives = dict(line.split(" ", 1) for line in lines)
    assert directives["port"] == str(REDIS.port)
    assert REDIS.storage is not None and directives["dir"] == REDIS.storage.mount_path
    assert directives["appendonly"] == "yes"
    # One quoted argument on one line: the newline cannot start a directive of its own.
    assert len(lines) == 4 and not any(line.startswith("slaveof") for line in lines)
    assert directives["requirepass"] == '"p@ss \\"w\\\\rd\\"\\x0aslaveof evil 1 \\xc3\\xa9"'


def test_every_pod_pulls_with_the_registry_secret(production: Rendered, settings: Settings) -> None:
    for m in controllers(production):
        (pull,) = pod_spec(m)["imagePullSecrets"]
        secret = one(production, "Secret", _namespace(m), pull["name"])
        assert secret["type"] == "kubernetes.io/dockerconfigjson"
        assert secret["stringData"] == {".dockerconfigjson": SECRET}


def test_no_secret_value_reaches_a_file_or_a_stack_output(production: Rendered) -> None:
    stand_ins = load_stack("production").stand_ins
    assert production.out_dir is not None
    texts = [p.read_text(errors="replace") for p in sorted(Path(production.out_dir).rglob("*")) if p.is_file()]
    texts.append(json.dumps(production.outputs))
    texts.append(json.dumps(production.resources))
    for key, value in stand_ins.items():
        probe = value.strip().splitlines()[1] if "\n" in value.strip() else value
        assert not any(probe in text for text in texts), f"the value of {key} is in the render"


def test_no_secret_value_reaches_the_render_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from render.__main__ import main

    assert main(["--stack", "production", "--out", str(tmp_path / "out")]) == 0
    log = "".join(capsys.readouterr())
    assert "sophia:apps:SophiaApps" in log
    for key, value in load_stack("production").stand_ins.items():
        probe = value.strip().splitlines()[1] if "\n" in value.strip() else value
        assert probe not in log, f"the value of {key} is in the log"


def test_the_pull_secret_document_is_built_from_the_token_and_stays_secret() -> None:
    import pulumi

    from components.apps.namespaces import docker_config_json

    token = pulumi.Output.secret("dckr_pat_0123456789abcdef")
    document = docker_config_json("docker.io", "scoobyjava15", token)
    assert pulumi.runtime.sync_await._sync_await(document.is_secret())
    text = pulumi.runtime.sync_await._sync_await(document.future())
    assert text is not None
    auths = json.loads(text)["auths"]
    assert list(auths) == ["https://index.docker.io/v1/"]
    assert auths["https://index.docker.io/v1/"]["password"] == "dckr_pat_0123456789abcdef"


# 5 ------------------------------------------------------------------------------------------


def test_app_namespaces_enforce_pod_security_restricted(production: Rendered) -> None:
    namespaces = {_name(m): m for m in production.objects("Namespace")}
    for name in APP_NAMESPACES:
        labels = namespaces[name]["metadata"]["labels"]
        for mode in ("enforce", "audit", "warn"):
            assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", f"{name}: {mode}"


def test_app_pods_comply_with_pod_security_restricted(production: Rendered) -> None:
    for m in controllers(production):
        spec = pod_spec(m)
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True and pod.get("runAsUser", 0) != 0
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
        assert not any("hostPath" in v for v in spec.get("volumes", []))
        for container in containers(m):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert "add" not in context["capabilities"]
            assert not context.get("privileged")
            assert context["readOnlyRootFilesystem"] is BY_NAME[_name(m)].read_only_root
            assert "ports" not in container or all("hostPort" not in p for p in container["ports"])


# 6 ------------------------------------------------------------------------------------------


def test_every_app_namespace_denies_all_traffic_by_default(production: Rendered) -> None:
    for namespace in APP_NAMESPACES:
        deny = one(production, "NetworkPolicy", namespace, "default-deny")
        assert deny["spec"]["podSelector"] == {}
        assert sorted(deny["spec"]["policyTypes"]) == ["Egress", "Ingress"]
        assert not deny["spec"].get("ingress") and not deny["spec"].get("egress")
        dns = one(production, "NetworkPolicy", namespace, "allow-dns")
        (rule,) = dns["spec"]["egress"]
        assert {(p["protocol"], p["port"]) for p in rule["ports"]} == {("UDP", 53), ("TCP", 53)}
        assert rule["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}


def _peers(rules: list[Manifest], side: str) -> set[tuple[str, str, int]]:
    found = set()
    for rule in rules:
        for peer in rule.get(side, []):
            if "ipBlock" in peer:
                continue
            namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            labels = peer["podSelector"].get("matchLabels", {})
            who = labels.get(NAME, "/".join(f"{k}={v}" for k, v in sorted(labels.items())))
            found |= {(namespace, who, p["port"]) for p in rule["ports"]}
    return found


def test_network_policies_allow_exactly_the_catalogue_connections(production: Rendered) -> None:
    prometheus = PROMETHEUS_POD_LABELS[NAME]
    for s in CATALOGUE:
        if s.managed_database:
            continue  # its pods are CloudNativePG's; test_postgres.py holds their policy
        policy = one(production, "NetworkPolicy", s.namespace, s.name)["spec"]
        assert policy["podSelector"]["matchLabels"] == {NAME: s.name}
        expected_in = {(c.namespace, c.name, s.port) for c in callers(s)}
        if s.public_path:
            expected_in.add(("kube-system", "traefik", s.port))
        if s.scraped:
            expected_in.add((MONITORING_NAMESPACE, prometheus, s.exporter.port if s.exporter else s.port))
        assert _peers(policy.get("ingress", []), "from") == expected_in, s.name
        expected_out = {(BY_NAME[t].namespace, t, BY_NAME[t].port) for t in s.talks_to}
        assert _peers(policy.get("egress", []), "to") == expected_out, s.name
        public = [r for r in policy.get("egress", []) if any("ipBlock" in p for p in r["to"])]
        if s.public_https:
            (rule,) = public
            assert [p["port"] for p in rule["ports"]] == [HTTPS_PORT]
            assert set(rule["to"][0]["ipBlock"]["except"]) == set(NOT_PUBLIC)
        else:
            assert public == [], f"{s.name} may reach the internet"


def test_frontend_reaches_backend_and_backend_reaches_data_and_mcp(production: Rendered) -> None:
    backend = one(production, "NetworkPolicy", "sophia-apps", "sophia-backend")["spec"]
    assert ("sophia-apps", "sophia-frontend", 8000) in _peers(backend["ingress"], "from")
    out = _peers(backend["egress"], "to")
    assert {("sophia-data", "postgres", 5432), ("sophia-data", "redis", 6379), ("sophia-mcp", "ai-memory", 9000)} <= out


def test_every_workload_has_a_pdb_that_never_blocks_a_drain(production: Rendered) -> None:
    for m in controllers(production):
        pdb = one(production, "PodDisruptionBudget", _namespace(m), _name(m))["spec"]
        assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb
        assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        assert matches(m["spec"]["template"]["metadata"]["labels"], pdb["selector"]["matchLabels"])


def test_every_replicated_service_has_a_cpu_and_memory_hpa(production: Rendered, settings: Settings) -> None:
    hpas = {(_namespace(h), _name(h)): h for h in in_apps(production, "HorizontalPodAutoscaler")}
    for m in controllers(production):
        replicas = settings.apps.services[_name(m)].replicas
        hpa = hpas.get((_namespace(m), _name(m)))
        if replicas.max <= 1:
            assert hpa is None and m["spec"]["replicas"] == 1
            continue
        assert hpa is not None, f"{_name(m)} is replicated but has no HPA"
        assert m["apiVersion"] == "apps/v1" and "replicas" not in m["spec"], "the HPA owns the replica count"
        spec = hpa["spec"]
        assert (spec["minReplicas"], spec["maxReplicas"]) == (replicas.min, replicas.max)
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": m["kind"], "name": _name(m)}
        assert {x["resource"]["name"] for x in spec["metrics"]} == {"cpu", "memory"}
        assert all(x["resource"]["target"]["type"] == "Utilization" for x in spec["metrics"])
        assert hpa["apiVersion"] == "autoscaling/v2"


def test_a_service_with_a_fixed_replica_count_above_one_still_gets_its_hpa(tmp_path: Path) -> None:
    document = production_document()
    document["config"]["sophia-infra:apps"]["services"]["sophia-frontend"]["replicas"] = {"min": 2, "max": 2}
    rendered, results = render(stack_from(tmp_path, document), tmp_path / "out")
    assert [r.name for r in results if r.violations] == []
    hpa = one(rendered, "HorizontalPodAutoscaler", "sophia-apps", "sophia-frontend")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 2)


def test_deployments_roll_out_with_max_unavailable_zero(production: Rendered) -> None:
    for m in in_apps(production, "Deployment"):
        strategy = m["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate"
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0
        # The surge the settings count GPUs for (components.rollout).
        assert strategy["rollingUpdate"]["maxSurge"] == MAX_SURGE >= 1


def test_pods_spread_across_nodes(production: Rendered) -> None:
    for m in controllers(production):
        (spread,) = pod_spec(m)["topologySpreadConstraints"]
        assert spread["topologyKey"] == "kubernetes.io/hostname"
        assert spread["maxSkew"] == 1
        assert matches(m["spec"]["template"]["metadata"]["labels"], spread["labelSelector"]["matchLabels"])


def test_every_service_is_scraped_through_a_service_monitor(production: Rendered) -> None:
    assert {
        (_namespace(m), _name(m)) for m in production.objects("ServiceMonitor") if _namespace(m) in APP_NAMESPACES
    } == {(s.namespace, s.name) for s in CATALOGUE if s.scraped}
    # The database is scraped through a PodMonitor of its Cluster's pods (test_postgres.py).
    assert {s.name for s in CATALOGUE if not s.scraped} <= {"sophia-frontend", "postgres"}


def test_services_with_metrics_are_scraped_through_a_service_monitor(production: Rendered) -> None:
    monitors = {(_namespace(m), _name(m)): m for m in production.objects("ServiceMonitor")}
    by_urn = {r["urn"]: r for r in production.resources}
    for s in CATALOGUE:
        monitor = monitors.get((s.namespace, s.name))
        if not s.scraped:
            assert monitor is None
            continue
        assert monitor is not None, f"{s.name} has metrics but no ServiceMonitor"
        (endpoint,) = monitor["spec"]["endpoints"]
        service = one(production, "Service", s.namespace, s.name)
        ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        if s.exporter is not None:
            assert ports[endpoint["port"]] == s.exporter.port
            assert endpoint["path"] == s.exporter.metrics_path
        else:
            assert ports[endpoint["port"]] == s.port
            assert endpoint["path"] == s.metrics_path
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        resource = next(r for r in production.resources if r["inputs"] == monitor)
        releases = [
            by_urn[d] for d in resource["dependencies"] if by_urn.get(d, {}).get("type", "").endswith("Release")
        ]
        assert releases, f"{s.name}: its ServiceMonitor does not wait for the release that installs the CRD"


# 7 ------------------------------------------------------------------------------------------


def test_stateful_services_keep_their_data_on_local_path_volumes(production: Rendered, settings: Settings) -> None:
    for s in CATALOGUE:
        if not s.stateful:
            continue
        assert s.storage is not None
        if s.managed_database:
            cluster = one(production, "Cluster", s.namespace, s.name)["spec"]
            assert cluster["storage"] == {"size": settings.apps.services[s.name].storage, "storageClass": "local-path"}
            continue
        sts = one(production, "StatefulSet", s.namespace, s.name)["spec"]
        (claim,) = sts["volumeClaimTemplates"]
        assert claim["spec"]["storageClassName"] == "local-path"
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert claim["spec"]["resources"]["requests"]["storage"] == settings.apps.services[s.name].storage
        assert sts["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
        mounts = {v["name"]: v["mountPath"] for v in sts["template"]["spec"]["containers"][0]["volumeMounts"]}
        assert mounts[claim["metadata"]["name"]] == s.storage.mount_path
        assert not any(v["name"] == claim["metadata"]["name"] for v in sts["template"]["spec"].get("volumes", []))
    for m in in_apps(production, "Deployment"):
        assert not any("persistentVolumeClaim" in v for v in pod_spec(m).get("volumes", []))


def test_postgres_has_a_memory_backed_dev_shm_above_the_runtime_default(production: Rendered) -> None:
    """Postgres' dynamic shared memory lives in /dev/shm; the runtime's 64Mi fails parallel queries.

    CloudNativePG mounts a memory-backed /dev/shm itself, sized by ephemeralVolumesSizeLimit.shm."""
    spec = one(production, "Cluster", POSTGRES.namespace, POSTGRES.name)["spec"]
    size = memory_bytes(spec["ephemeralVolumesSizeLimit"]["shm"])
    # tmpfs pages count against the container's memory limit: the volume must fit inside it.
    assert 64 * 2**20 < size < memory_bytes(spec["resources"]["limits"]["memory"])


def test_exporter_sidecars_share_no_volume_with_the_service_they_watch(production: Rendered) -> None:
    sidecar_pods = [m for m in controllers(production) if len(pod_spec(m)["containers"]) > 1]
    assert sidecar_pods
    for m in sidecar_pods:
        main, *sidecars = pod_spec(m)["containers"]
        service_volumes = {v["name"] for v in main["volumeMounts"]}
        for sidecar in sidecars:
            mounts = {v["mountPath"]: v["name"] for v in sidecar["volumeMounts"]}
            assert "/tmp" in mounts, f"{_name(m)}/{sidecar['name']}: no writable /tmp"
            shared = set(mounts.values()) & service_volumes
            assert not shared, f"{_name(m)}/{sidecar['name']}: shares {sorted(shared)} with {main['name']}"


# 8 ------------------------------------------------------------------------------------------


def test_every_ingress_has_tls_from_cert_manager(production: Rendered) -> None:
    ingresses = production.objects("Ingress")
    assert ingresses
    for ingress in ingresses:
        annotations = ingress["metadata"].get("annotations", {})
        assert annotations.get("cert-manager.io/cluster-issuer"), f"{_name(ingress)}: no cert-manager issuer"
        assert ingress["spec"]["ingressClassName"] == "traefik"
        tls_hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
        assert all(t.get("secretName") for t in ingress["spec"]["tls"])
        assert {r["host"] for r in ingress["spec"]["rules"]} <= tls_hosts


def test_the_public_entry_routes_api_to_backend_and_the_rest_to_frontend(
    production: Rendered, settings: Settings
) -> None:
    ingress = one(production, "Ingress", "sophia-apps", "sophia")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == settings.network.domain
    routes = {
        p["path"]: (p["backend"]["service"]["name"], p["backend"]["service"]["port"]["number"])
        for p in rule["http"]["paths"]
    }
    assert routes == {"/api": ("sophia-backend", 8000), "/": ("sophia-frontend", 3000)}
    assert ingress["metadata"]["annotations"]["traefik.ingress.kubernetes.io/router.entrypoints"] == "websecure"


def test_traefik_reaches_the_acme_solver_where_the_ingress_is(production: Rendered) -> None:
    for ingress in production.objects("Ingress"):
        if _namespace(ingress) not in APP_NAMESPACES:
            continue
        allowed = False
        for policy in production.objects("NetworkPolicy"):
            spec = policy["spec"]
            if _namespace(policy) != _namespace(ingress) or not matches(
                dict(ACME_SOLVER_LABELS), spec["podSelector"].get("matchLabels", {})
            ):
                continue
            for rule in spec.get("ingress", []):
                from_traefik = any(
                    p["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
                    and p["podSelector"]["matchLabels"] == {NAME: "traefik"}
                    for p in rule["from"]
                )
                allowed |= from_traefik and {"protocol": "TCP", "port": ACME_SOLVER_PORT} in rule["ports"]
        assert allowed, f"{_namespace(ingress)}: HTTP-01 challenges cannot reach the solver"


def test_no_app_service_is_exposed_other_than_through_the_ingress(production: Rendered) -> None:
    for service in in_apps(production, "Service"):
        assert service["spec"]["type"] == "ClusterIP", f"{_name(service)} is {service['spec']['type']}"


# 9 (configuration that reaches the workloads) ----------------------------------------------------


def test_the_llm_gateway_config_is_generated_from_settings(production: Rendered, settings: Settings) -> None:
    config = json.loads(one(production, "ConfigMap", "sophia-apps", "llm-gateway")["data"]["gateway.json"])
    assert config["primary"] == {
        "provider": "portkey",
        "endpoint": "https://api.portkey.ai/v1",
        "api_key_env": "PORTKEY_API_KEY",
    }
    assert config["fallback"]["endpoint"] == "https://openrouter.ai/api/v1"
    assert config["models"] == list(settings.llm_gateway.models)
    assert {"task": "code_generation", "route_to": "claude-3-5-sonnet-20241022"} in config["routing_rules"]
    backend = one(production, "Deployment", "sophia-apps", "sophia-backend")
    assert env_of(pod_spec(backend)["containers"][0])["LLM_GATEWAY_CONFIG"]["value"].endswith("/gateway.json")


def test_mcp_config_lists_every_mcp_server_where_its_service_is(production: Rendered) -> None:
    for namespace in ("sophia-apps", "sophia-mcp"):
        config = json.loads(one(production, "ConfigMap", namespace, "mcp-servers")["data"]["servers.json"])
        assert {s["name"]: s["url"] for s in config["servers"]} == {
            s.name: f"http://{s.host}:{s.port}" for s in CATALOGUE if s.tier == "mcp"
        }


# ESC --------------------------------------------------------------------------------------------


def test_the_stack_imports_the_esc_environment() -> None:
    document = yaml.safe_load((PROJECT_DIR / "Pulumi.production.yaml").read_text())
    assert "sophia-ai/production" in document["environment"]


def test_esc_provides_exactly_the_secrets_the_program_requires() -> None:
    provided = esc_config_keys("sophia-ai/production")
    assert all(provided.values()), "every ESC value is an fn::secret"
    assert set(provided) == {spec.key.value for spec in SECRET_SPECS}
    used_by_workloads = {k.value for s in CATALOGUE for k in s.secrets}
    assert used_by_workloads <= set(provided)


@pytest.mark.parametrize("key", sorted(spec.key.value for spec in SECRET_SPECS))
def test_the_program_refuses_to_run_without_each_esc_secret(key: str) -> None:
    stack = load_stack("production")
    config = {k: v for k, v in stack.config.items() if k != f"sophia-infra:{key}"}
    with pytest.raises(ConfigError) as error:
        load_settings(stack.stack, config, stack.secret_keys)
    assert [p.key for p in error.value.problems] == [f"sophia-infra:{key}"]


@pytest.mark.parametrize("key", sorted(spec.key.value for spec in SECRET_SPECS))
def test_an_empty_esc_secret_is_refused(key: str) -> None:
    stack = load_stack("production")
    config = {**stack.config, f"sophia-infra:{key}": ""}
    with pytest.raises(ConfigError) as error:
        load_settings(stack.stack, config, stack.secret_keys)
    assert [str(p) for p in error.value.problems] == [
        f"sophia-infra:{key}: is empty or a placeholder; set the real value in the ESC environment"
    ]
