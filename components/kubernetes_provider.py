"""How every Kubernetes provider of the program talks to its cluster. Imports nothing of the program."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s


def provider_args(kubeconfig: pulumi.Input[str], cluster_identifier: str) -> k8s.ProviderArgs:
    return k8s.ProviderArgs(
        kubeconfig=kubeconfig,
        # The kubeconfig is unknown at preview whenever the first server's steps re-run (an upgrade, a
        # label change); without an identifier pulumi-kubernetes would then plan to replace the provider
        # and every object it manages. It is replaced only when the cluster itself is another one.
        cluster_identifier=cluster_identifier,
        enable_server_side_apply=True,
        # A changed Secret or ConfigMap is patched in place rather than deleted and created again under
        # its fixed name, so a pod that starts meanwhile never finds it missing.
        enable_secret_mutable=True,
        enable_config_map_mutable=True,
    )
