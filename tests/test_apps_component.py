"""SophiaApps and Workload as components: under the mock engine, with a provider of the test's own."""

from __future__ import annotations

import textwrap
from dataclasses import replace

import pulumi
import pytest

from components.apps.workload import Metrics, Sidecar, Workload, WorkloadArgs
from components.settings.apps import Amounts, Autoscaling, Replicas, Resources
from render.engine import Recording, run_program
from render.stack import load_stack

PROGRAM = """
import pulumi
import pulumi_kubernetes as k8s

from components.apps.sophia import AppsArgs, SophiaApps
from components.settings.stack import load_settings, stack_config

settings = load_settings(pulumi.get_stack(), *stack_config())
provider = k8s.Provider("test-cluster", kubeconfig="{}")
SophiaApps(
    "sophia",
    AppsArgs(
        apps=settings.apps,
        llm_gateway=settings.llm_gateway,
        images=settings.images,
        secrets=settings.secrets,
        domain=settings.network.domain,
        cluster_issuer="test-issuer",
        ingress_class="traefik",
    ),
    opts=pulumi.ResourceOptions(provider=provider),
)
"""


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    program = tmp_path_factory.mktemp("program") / "__main__.py"
    program.write_text(textwrap.dedent(PROGRAM))
    return run_program(load_stack("production"), program)


def test_without_a_monitoring_release_no_service_monitor_is_made(recording: Recording) -> None:
    types = {r.type for r in recording.registrations}
    assert "kubernetes:apps/v1:Deployment" in types
    assert not any("ServiceMonitor" in t for t in types)
    policies = [r for r in recording.registrations if r.type == "kubernetes:networking.k8s.io/v1:NetworkPolicy"]
    assert policies
    for policy in policies:
        for rule in policy.inputs["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                assert peer.get("namespaceSelector", {}).get("matchLabels") != {
                    "kubernetes.io/metadata.name": "monitoring"
                }, "Prometheus is let in though nothing scrapes"


def test_every_kubernetes_object_uses_the_given_provider_and_is_a_child(recording: Recording) -> None:
    by_urn = {r.urn: r for r in recording.registrations}
    (provider,) = [r.urn for r in recording.registrations if r.type == "pulumi:providers:kubernetes"]
    (apps,) = [r.urn for r in recording.registrations if r.type == "sophia:apps:SophiaApps"]
    objects = [r for r in recording.registrations if r.type.startswith("kubernetes:")]
    assert objects
    for r in objects:
        assert r.provider == provider, r.urn
        ancestor = r.parent
        while ancestor is not None and ancestor != apps:
            ancestor = by_urn[ancestor].parent
        assert ancestor == apps, f"{r.urn} is not inside SophiaApps"


def test_the_ingress_names_the_issuer_it_is_given(recording: Recording) -> None:
    (ingress,) = [r for r in recording.registrations if r.type == "kubernetes:networking.k8s.io/v1:Ingress"]
    assert ingress.inputs["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "test-issuer"


def _args(**changes: object) -> WorkloadArgs:
    resources = Resources(Amounts("100m", "128Mi"), Amounts("200m", "256Mi"))
    base = WorkloadArgs(
        name="svc",
        namespace="ns",
        image="registry.example/ns/svc:1",
        port=8000,
        resources=resources,
        replicas=Replicas(1, 1),
        autoscaling=Autoscaling(70, 80),
        arches=("amd64",),
        pull_secret="registry-pull",
        uid=10001,
        secret_env={"TOKEN": pulumi.Output.secret("x" * 20)},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def _sidecar(**changes: object) -> Sidecar:
    resources = Resources(Amounts("50m", "64Mi"), Amounts("100m", "128Mi"))
    base = Sidecar(
        name="exporter", image="registry.example/ns/exp:1", port=9100, port_name="metrics", resources=resources
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (_args(sidecars=(_sidecar(port=8000),)), "ports must differ"),
        (_args(sidecars=(_sidecar(port_name="http"),)), "ports must differ"),
        (_args(sidecars=(_sidecar(secret_env={"PASS": "OTHER"}),)), "secrets ['OTHER'] are not the workload's"),
        (_args(args=("serve", "--token", "$(TOKEN)")), "svc: secrets ['TOKEN'] in the arguments"),
        (
            _args(sidecars=(_sidecar(secret_env={"PASS": "TOKEN"}, args=("--password=$(PASS)",)),)),
            "svc/exporter: secrets ['PASS'] in the arguments",
        ),
        (
            _args(metrics=Metrics("/metrics", "nope", pulumi.CustomResource.__new__(pulumi.CustomResource))),
            "unknown port",
        ),
    ],
    ids=[
        "same port number",
        "same port name",
        "sidecar secret not the workload's",
        "secret in the main container's arguments",
        "secret in a sidecar's arguments",
        "metrics on an unknown port",
    ],
)
def test_a_workload_refuses_inconsistent_arguments(args: WorkloadArgs, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Workload._check(args)


def test_consistent_arguments_pass_the_check() -> None:
    Workload._check(_args(sidecars=(_sidecar(secret_env={"PASS": "TOKEN"}),)))
    # A secret only the sidecar reads; plain variables in the arguments are fine.
    Workload._check(
        _args(
            args=("serve", "--port", "$(PORT)"),
            sidecar_secrets={"ONLY_SIDECAR": pulumi.Output.secret("y" * 20)},
            sidecars=(_sidecar(secret_env={"PASS": "ONLY_SIDECAR"}),),
        )
    )
