"""The Sophia layer as the e2e applies it: `__main__.py`'s own construction, on a provider for the test API server.

Two things differ from `__main__.py`, and only these:
- the `kubernetes.Provider` gets the test API server's kubeconfig instead of the K3s cluster's;
- what the platform would hand SophiaApps comes from the platform's own names (the production
  ClusterIssuer's name, the ingress class) and, for the CRDs that the monitoring, CloudNativePG and
  Barman Cloud releases install, CustomResourceDefinitions written from the project's own schemas
  of them (render/crds.py), so every custom resource is applied against a real CRD.

And one harness-only transform: the kinds whose readiness the provider awaits from a running pod
or an ingress controller (Deployments, StatefulSets, Services' endpoints, Ingress addresses) get
`pulumi.com/skipAwait: "true"`. With no scheduler and no kubelet no pod ever runs, so those awaits
could only time out. Everything else the provider does (diff, server-side apply, field managers,
replacement decisions, every other await, deletes) is unchanged; a CRD is still awaited until the
API server has established it, a Namespace's delete until the controller manager has finalized it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import pulumi
import pulumi_kubernetes as k8s

from components.apps.sophia import AppsArgs, SophiaApps
from components.kubernetes_provider import provider_args
from components.platform.backups import backup_target
from components.platform.cert_manager import Environment, issuer_name
from components.platform.charts import INGRESS_CLASS
from components.settings.stack import load_settings, stack_config
from render.crds import (
    BARMAN_OBJECT_STORE,
    CNPG_CLUSTER,
    CNPG_SCHEDULED_BACKUP,
    PODMONITOR,
    PROMETHEUS_RULE,
    SERVICE_MONITOR,
)

SKIP_AWAIT = "pulumi.com/skipAwait"
# What only a kubelet or an ingress controller could make ready.
AWAITS_A_NODE = frozenset(
    {
        "kubernetes:apps/v1:Deployment",
        "kubernetes:apps/v1:StatefulSet",
        "kubernetes:core/v1:Service",
        "kubernetes:networking.k8s.io/v1:Ingress",
    }
)


def crd_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON schema of render/crds.py as a CRD's structural OpenAPI v3 schema.

    Structural schemas forbid `additionalProperties: false` (the API server prunes unknown fields
    instead, and strict field validation turns that into an error), know no `const` and spell
    "integer or string" (a type list, or a quantity's anyOf) as `x-kubernetes-int-or-string`.
    """
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "additionalProperties" and value is False:
            continue
        if key == "type" and isinstance(value, list):
            if sorted(value) != ["integer", "string"]:
                raise ValueError(f"no structural spelling for type {value}")
            out["x-kubernetes-int-or-string"] = True
            continue
        if key == "const":
            raise ValueError("const has no structural spelling")
        if key == "anyOf" and sorted(str(branch.get("type")) for branch in value) == ["integer", "string"]:
            # A quantity: spelled as controller-gen spells resource.Quantity, the pattern on the whole.
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            out["x-kubernetes-int-or-string"] = True
            for branch in value:
                if "pattern" in branch:
                    out["pattern"] = branch["pattern"]
            continue
        if key in ("properties",):
            out[key] = {name: crd_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = crd_schema(value)
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        kinds = {type(v) for v in out["enum"]}
        if kinds != {str}:
            raise ValueError(f"enum of {kinds}")
        out["type"] = "string"
    return out


@dataclass(frozen=True)
class CustomKind:
    """A custom resource kind the Sophia layer applies, and the project's own schema of it."""

    group: str
    version: str
    kind: str
    plural: str
    schema: Mapping[str, Any]


# Every custom kind SophiaApps creates; the releases that install their CRDs are not part of the e2e.
CUSTOM_KINDS: Final = (
    CustomKind("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors", SERVICE_MONITOR),
    CustomKind("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors", PODMONITOR),
    CustomKind("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules", PROMETHEUS_RULE),
    CustomKind("postgresql.cnpg.io", "v1", "Cluster", "clusters", CNPG_CLUSTER),
    CustomKind("postgresql.cnpg.io", "v1", "ScheduledBackup", "scheduledbackups", CNPG_SCHEDULED_BACKUP),
    CustomKind("barmancloud.cnpg.io", "v1", "ObjectStore", "objectstores", BARMAN_OBJECT_STORE),
)


def custom_resource_definition(
    custom: CustomKind, opts: pulumi.ResourceOptions
) -> k8s.apiextensions.v1.CustomResourceDefinition:
    """The CRD of a custom kind, its spec from the project's own schema of it (render/crds.py)."""
    spec = crd_schema(custom.schema["properties"]["spec"])
    name = f"{custom.plural}.{custom.group}"
    return k8s.apiextensions.v1.CustomResourceDefinition(
        name,
        metadata=k8s.meta.v1.ObjectMetaArgs(name=name),
        spec=k8s.apiextensions.v1.CustomResourceDefinitionSpecArgs(
            group=custom.group,
            scope="Namespaced",
            names=k8s.apiextensions.v1.CustomResourceDefinitionNamesArgs(
                kind=custom.kind,
                list_kind=f"{custom.kind}List",
                plural=custom.plural,
                singular=custom.kind.lower(),
            ),
            versions=[
                k8s.apiextensions.v1.CustomResourceDefinitionVersionArgs(
                    name=custom.version,
                    served=True,
                    storage=True,
                    schema=k8s.apiextensions.v1.CustomResourceValidationArgs(
                        # Already in the API's own spelling, which the SDK sends as it is.
                        open_apiv3_schema=cast(
                            Any, {"type": "object", "required": ["spec"], "properties": {"spec": spec}}
                        )
                    ),
                )
            ],
        ),
        opts=opts,
    )


def skip_await(args: pulumi.ResourceTransformArgs) -> pulumi.ResourceTransformResult | None:
    """Adds the skipAwait annotation to the objects whose readiness only a node could bring."""
    if not args.custom or args.type_ not in AWAITS_A_NODE:
        return None
    props = dict(args.props)
    metadata = props.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        # An unresolved metadata cannot be annotated; failing beats an await that cannot end.
        raise TypeError(f"{args.type_} {args.name}: metadata is {type(metadata).__name__}, not a mapping")
    annotations = metadata.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        raise TypeError(f"{args.type_} {args.name}: annotations are {type(annotations).__name__}, not a mapping")
    metadata = {**metadata, "annotations": {**annotations, SKIP_AWAIT: "true"}}
    props["metadata"] = metadata
    return pulumi.ResourceTransformResult(props, args.opts)


def sophia_program(kubeconfig: str) -> Callable[[], None]:
    def program() -> None:
        pulumi.runtime.register_resource_transform(skip_await)
        settings = load_settings(pulumi.get_stack(), *stack_config())
        provider = k8s.Provider(
            "sophia",
            provider_args(pulumi.Output.secret(kubeconfig), "e2e/sophia"),
        )
        crds = [custom_resource_definition(c, pulumi.ResourceOptions(provider=provider)) for c in CUSTOM_KINDS]
        apps = SophiaApps(
            "sophia",
            AppsArgs(
                apps=settings.apps,
                llm_gateway=settings.llm_gateway,
                images=settings.images,
                secrets=settings.secrets,
                domain=settings.network.domain,
                cluster_issuer=issuer_name(Environment.PRODUCTION),
                ingress_class=INGRESS_CLASS,
                # What custom resources wait for: in production the releases that install their CRDs.
                monitoring=crds[0],
                database_operator=tuple(crds[3:]),
                backups=backup_target(settings.cluster, settings.secrets),
            ),
            opts=pulumi.ResourceOptions(provider=provider),
        )
        pulumi.export("url", apps.url)

    return program
