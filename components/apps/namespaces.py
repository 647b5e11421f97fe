"""An app namespace: Pod Security `restricted`, deny-all NetworkPolicy, DNS, the image pull secret."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_kubernetes as k8s

from components.apps.network import dns_rule
from components.pod_security import PodSecurity, pod_security_labels

PULL_SECRET: Final = "registry-pull"
POD_SECURITY: Final = pod_security_labels(PodSecurity.RESTRICTED)
# Docker Hub's credentials are keyed by its v1 index URL, as `docker login` writes them; the
# kubelet also uses them for `docker.io/...` references.
DOCKER_HUB_HOSTS: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_SERVER: Final = "https://index.docker.io/v1/"


def docker_config_json(registry_host: str, username: str, token: pulumi.Output[str]) -> pulumi.Output[str]:
    """`.dockerconfigjson` for one registry; as secret as the token it is made of."""
    server = DOCKER_HUB_SERVER if registry_host in DOCKER_HUB_HOSTS else registry_host

    def document(secret: str) -> str:
        auth = base64.b64encode(f"{username}:{secret}".encode()).decode()
        return json.dumps({"auths": {server: {"username": username, "password": secret, "auth": auth}}})

    # Secret even if a caller ever passed a plain token: the document holds it twice.
    secret: pulumi.Output[str] = pulumi.Output.secret(token.apply(document))
    return secret


@dataclass(frozen=True)
class AppNamespaceArgs:
    name: str
    tier: str
    registry_host: str
    registry_user: str
    registry_token: pulumi.Output[str]


class AppNamespace(pulumi.ComponentResource):
    """One app namespace and what every pod in it relies on (type token `sophia:apps:AppNamespace`)."""

    namespace: k8s.core.v1.Namespace
    pull_secret: k8s.core.v1.Secret

    def __init__(self, name: str, args: AppNamespaceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sophia:apps:AppNamespace", name, None, opts)
        labels = {"app.kubernetes.io/part-of": "sophia-ai", "sophia.ai/tier": args.tier}
        self.namespace = k8s.core.v1.Namespace(
            args.name,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=args.name, labels={**labels, **POD_SECURITY}),
            opts=pulumi.ResourceOptions(parent=self),
        )
        inside = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])

        def metadata(object_name: str) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(name=object_name, namespace=args.name, labels=labels)

        self.default_deny = k8s.networking.v1.NetworkPolicy(
            f"{args.name}-default-deny",
            metadata=metadata("default-deny"),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(), policy_types=["Ingress", "Egress"]
            ),
            opts=inside,
        )
        self.allow_dns = k8s.networking.v1.NetworkPolicy(
            f"{args.name}-allow-dns",
            metadata=metadata("allow-dns"),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(), policy_types=["Egress"], egress=[dns_rule()]
            ),
            opts=inside,
        )
        self.pull_secret = k8s.core.v1.Secret(
            f"{args.name}-{PULL_SECRET}",
            metadata=metadata(PULL_SECRET),
            type="kubernetes.io/dockerconfigjson",
            string_data={
                ".dockerconfigjson": docker_config_json(args.registry_host, args.registry_user, args.registry_token)
            },
            opts=inside,
        )
        self.register_outputs({"name": args.name})
