"""The one way anything is published: a Traefik Ingress on the TLS entry point, with a certificate
cert-manager obtains through the Ingress's `cert-manager.io/cluster-issuer` annotation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

TLS_ENTRY_POINT = "websecure"
"""Traefik's HTTPS entry point (K3s's Traefik chart); plain HTTP is redirected to it."""


@dataclass(frozen=True)
class Route:
    """Requests under `path` (a prefix) go to `service`:`port` in the Ingress's namespace."""

    path: str
    service: str
    port: int


def tls_ingress(
    name: str,
    *,
    namespace: pulumi.Input[str],
    host: str,
    routes: Sequence[Route],
    cluster_issuer_name: str,
    ingress_class: str,
    opts: pulumi.ResourceOptions,
    labels: Mapping[str, str] | None = None,
) -> k8s.networking.v1.Ingress:
    """An HTTPS-only Ingress on `host`; its certificate lives in the Secret `<name>-tls`.

    Longer prefixes are listed first, so `/api` is never shadowed by `/`. cert-manager's HTTP-01
    solver brings its own Ingress for port 80; plain HTTP never reaches the services.
    """
    return k8s.networking.v1.Ingress(
        name,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=name,
            namespace=namespace,
            labels=dict(labels) if labels else None,
            annotations={
                "cert-manager.io/cluster-issuer": cluster_issuer_name,
                "traefik.ingress.kubernetes.io/router.entrypoints": TLS_ENTRY_POINT,
                "traefik.ingress.kubernetes.io/router.tls": "true",
            },
        ),
        spec=k8s.networking.v1.IngressSpecArgs(
            ingress_class_name=ingress_class,
            tls=[k8s.networking.v1.IngressTLSArgs(hosts=[host], secret_name=f"{name}-tls")],
            rules=[
                k8s.networking.v1.IngressRuleArgs(
                    host=host,
                    http=k8s.networking.v1.HTTPIngressRuleValueArgs(
                        paths=[
                            k8s.networking.v1.HTTPIngressPathArgs(
                                path=route.path,
                                path_type="Prefix",
                                backend=k8s.networking.v1.IngressBackendArgs(
                                    service=k8s.networking.v1.IngressServiceBackendArgs(
                                        name=route.service,
                                        port=k8s.networking.v1.ServiceBackendPortArgs(number=route.port),
                                    )
                                ),
                            )
                            for route in sorted(routes, key=lambda r: len(r.path), reverse=True)
                        ]
                    ),
                )
            ],
        ),
        opts=opts,
    )
