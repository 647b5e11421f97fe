"""The production stack's Kubernetes layer as the e2e applies it: `__main__.py`'s own construction
(components.kubernetes_layer), on a provider for the test API server.

One thing differs from `__main__.py`, and only this: the `kubernetes.Provider` gets the test API
server's kubeconfig instead of the K3s cluster's (no machines, no SSH: the pulumi-command provider is
not served by the Go module proxy). The charts are the upstream packages from the e2e's mirror,
through the program's own `platform.chartMirror` setting, which the e2e sets as an operator would.

And one harness-only transform: an Ingress gets `pulumi.com/skipAwait: "true"`, because its address
is written by a running ingress controller (K3s's Traefik), which this cluster has not. Everything
else is awaited by the real provider as in production: Deployments, StatefulSets and DaemonSets until
their pods (placed by the scheduler on kwok's nodes, made Ready by kwok) are ready, Services until
their endpoints have those pods, Helm releases until Helm's own wait and hooks are done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pulumi
import pulumi_kubernetes as k8s

from components.kubernetes_layer import kubernetes_layer
from components.kubernetes_provider import provider_args
from components.settings.stack import load_settings, stack_config

SKIP_AWAIT = "pulumi.com/skipAwait"
# What only a running ingress controller could make ready.
AWAITS_AN_INGRESS_CONTROLLER = frozenset({"kubernetes:networking.k8s.io/v1:Ingress"})
CLUSTER_IDENTIFIER = "e2e/sophia"


def skip_await(args: pulumi.ResourceTransformArgs) -> pulumi.ResourceTransformResult | None:
    """Adds the skipAwait annotation to the objects whose readiness only an ingress controller could bring."""
    if not args.custom or args.type_ not in AWAITS_AN_INGRESS_CONTROLLER:
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
