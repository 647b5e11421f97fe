"""The production stack's Kubernetes layer as the e2e applies it: `__main__.py`'s own construction
(components.kubernetes_layer), on a provider for the test API server.

One thing differs from `__main__.py`, and only this: the `kubernetes.Provider` gets the test API
server's kubeconfig instead of the K3s cluster's (no machines, no SSH: the pulumi-command provider is
not served by the Go module proxy). The charts come from the stand-in repository through the
program's own `platform.chartMirror` setting, which the e2e sets as an operator would.

And one harness-only transform: the kinds whose readiness the provider awaits from a running pod
or an ingress controller (Deployments, StatefulSets, Services' endpoints, Ingress addresses) get
`pulumi.com/skipAwait: "true"`. With no scheduler and no kubelet no pod ever runs, so those awaits
could only time out. Everything else the provider does (diff, server-side apply, field managers,
Helm releases, replacement decisions, every other await, deletes) is unchanged; a release is still
awaited until Helm has installed its CRDs and the API server established them, a Namespace's delete
until the controller manager has finalized it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pulumi
import pulumi_kubernetes as k8s

from components.kubernetes_layer import kubernetes_layer
from components.kubernetes_provider import provider_args
from components.settings.stack import load_settings, stack_config

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
CLUSTER_IDENTIFIER = "e2e/sophia"


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


def kubernetes_program(kubeconfig: str) -> Callable[[], None]:
    def program() -> None:
        pulumi.runtime.register_resource_transform(skip_await)
        settings = load_settings(pulumi.get_stack(), *stack_config())
        provider = k8s.Provider("sophia", provider_args(pulumi.Output.secret(kubeconfig), CLUSTER_IDENTIFIER))
        layer = kubernetes_layer(settings, provider)
        pulumi.export("loadBalancerAddress", layer.platform.load_balancer_address)
        pulumi.export("argocdUrl", layer.platform.argocd_url)
        pulumi.export("grafanaUrl", layer.platform.grafana_url)
        pulumi.export("url", layer.apps.url)

    return program
