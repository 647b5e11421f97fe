"""CloudNativePG: the PostgreSQL operator, and its Barman Cloud plugin for backups to object storage.

The plugin must run in the operator's namespace (the operator finds plugins by their Service
there) and gets its TLS certificates from cert-manager, so its release waits for cert-manager's.
The PostgreSQL cluster itself is Sophia's (components.apps.postgres); it waits for both releases,
which install the Cluster, ScheduledBackup and ObjectStore CRDs.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components import namespaces
from components.platform.charts import CLOUDNATIVE_PG, PLUGIN_BARMAN_CLOUD
from components.platform.common import namespace, release, resources
from components.pod_security import PodSecurity

NAMESPACE = namespaces.CNPG


class CloudNativePG(pulumi.ComponentResource):
    """The operator and the plugin (type token `sophia:platform:CloudNativePG`)."""

    operator: k8s.helm.v3.Release
    plugin: k8s.helm.v3.Release

    def __init__(
        self,
        name: str,
        cert_manager: pulumi.Resource,
        chart_mirror: str | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`chart_mirror`: `platform.chartMirror`, the Helm repository to pull both charts from instead of theirs."""
        super().__init__("sophia:platform:CloudNativePG", name, None, opts)
        # Both charts run non-root, read-only, without capabilities and with RuntimeDefault seccomp.
        ns = namespace(NAMESPACE, PodSecurity.RESTRICTED, self)
        self.operator = release(
            "cnpg",
            CLOUDNATIVE_PG,
            ns=ns,
            values={"resources": resources("100m", "128Mi", "500m", "512Mi")},
            mirror=chart_mirror,
            parent=self,
        )
        self.plugin = release(
            "barman-cloud",
            PLUGIN_BARMAN_CLOUD,
            ns=ns,
            values={"resources": resources("50m", "64Mi", "500m", "256Mi")},
            mirror=chart_mirror,
            parent=self,
            depends_on=[self.operator, cert_manager],
        )
        self.register_outputs({"namespace": NAMESPACE})
