"""CustomResourceDefinitions for the e2e, written from the project's own schemas of them (render/crds.py).

Who installs each CRD on a real cluster decides who installs it here: the platform's charts (their
stand-ins in tests/e2e/charts.py put these CRDs in the chart's `crds/`), and K3s itself for
helm.cattle.io (the e2e's API server fixture, standing in for K3s, creates it before any stack).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from render.crds import (
    APP_PROJECT,
    APPLICATION,
    BARMAN_OBJECT_STORE,
    CLUSTER_ISSUER,
    CNPG_CLUSTER,
    CNPG_SCHEDULED_BACKUP,
    HELM_CHART_CONFIG,
    IP_ADDRESS_POOL,
    L2_ADVERTISEMENT,
    PODMONITOR,
    PROMETHEUS_RULE,
    SERVICE_MONITOR,
)

JSON = dict[str, Any]


def crd_schema(schema: Mapping[str, Any]) -> JSON:
    """A JSON schema of render/crds.py as a CRD's structural OpenAPI v3 schema.

    Structural schemas forbid `additionalProperties: false` (the API server prunes unknown fields
    instead, and strict field validation turns that into an error), know no `const` and spell
    "integer or string" (a type list, or a quantity's anyOf) as `x-kubernetes-int-or-string`.
    """
    out: JSON = {}
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
    """A custom resource kind the program applies, and the project's own schema of it."""

    group: str
    version: str
    kind: str
    plural: str
    schema: Mapping[str, Any]

    @property
    def namespaced(self) -> bool:
        return "namespace" in self.schema["properties"]["metadata"]["properties"]

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    def manifest(self) -> JSON:
        """The CustomResourceDefinition, its `spec` schema from render/crds.py."""
        spec = crd_schema(self.schema["properties"]["spec"])
        return {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": self.crd_name},
            "spec": {
                "group": self.group,
                "scope": "Namespaced" if self.namespaced else "Cluster",
                "names": {
                    "kind": self.kind,
                    "listKind": f"{self.kind}List",
                    "plural": self.plural,
                    "singular": self.kind.lower(),
                },
                "versions": [
                    {
                        "name": self.version,
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {"type": "object", "required": ["spec"], "properties": {"spec": spec}}
                        },
                    }
                ],
            },
        }


IP_ADDRESS_POOLS: Final = CustomKind("metallb.io", "v1beta1", "IPAddressPool", "ipaddresspools", IP_ADDRESS_POOL)
L2_ADVERTISEMENTS: Final = CustomKind("metallb.io", "v1beta1", "L2Advertisement", "l2advertisements", L2_ADVERTISEMENT)
CLUSTER_ISSUERS: Final = CustomKind("cert-manager.io", "v1", "ClusterIssuer", "clusterissuers", CLUSTER_ISSUER)
APP_PROJECTS: Final = CustomKind("argoproj.io", "v1alpha1", "AppProject", "appprojects", APP_PROJECT)
APPLICATIONS: Final = CustomKind("argoproj.io", "v1alpha1", "Application", "applications", APPLICATION)
SERVICE_MONITORS: Final = CustomKind(
    "monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors", SERVICE_MONITOR
)
POD_MONITORS: Final = CustomKind("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors", PODMONITOR)
PROMETHEUS_RULES: Final = CustomKind(
    "monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules", PROMETHEUS_RULE
)
CNPG_CLUSTERS: Final = CustomKind("postgresql.cnpg.io", "v1", "Cluster", "clusters", CNPG_CLUSTER)
CNPG_SCHEDULED_BACKUPS: Final = CustomKind(
    "postgresql.cnpg.io", "v1", "ScheduledBackup", "scheduledbackups", CNPG_SCHEDULED_BACKUP
)
BARMAN_OBJECT_STORES: Final = CustomKind(
    "barmancloud.cnpg.io", "v1", "ObjectStore", "objectstores", BARMAN_OBJECT_STORE
)
HELM_CHART_CONFIGS: Final = CustomKind("helm.cattle.io", "v1", "HelmChartConfig", "helmchartconfigs", HELM_CHART_CONFIG)

K3S_KINDS: Final = (HELM_CHART_CONFIGS,)
"""What K3s installs itself (its helm-controller's CRDs) before anything of ours runs."""
