"""JSON schemas of the custom resources the program emits, written by hand from each CRD at the pinned version.

Minimal but strict: only the fields the platform may set, each with the CRD's type, enum or
required list, and `additionalProperties: false` wherever the CRD is structural, so a misspelled
field fails the render instead of being pruned by the API server. Read from:

- IPAddressPool, L2Advertisement: metallb/metallb@v0.16.1 charts/metallb/charts/crds/templates/crds.yaml
- ClusterIssuer: cert-manager/cert-manager@v1.21.1 deploy/crds/cert-manager.io_clusterissuers.yaml
- AppProject, Application: argoproj/argo-helm@argo-cd-10.1.1 charts/argo-cd/templates/crds/
- HelmChartConfig: k3s-io/helm-controller@21a911f8 pkg/crds/yaml/generated/helm.cattle.io_helmchartconfigs.yaml
  (only the fields every helm-controller K3s has shipped since v1.21 knows: valuesContent, failurePolicy)
- ServiceMonitor: prometheus-operator's CRD
  (example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml)
- PrometheusRule: prometheus-operator's CRD as kube-prometheus-stack 88.5.3 ships it
  (charts/kube-prometheus-stack/charts/crds/crds/crd-prometheusrules.yaml): groups need a name,
  rules an expr; alert, record, for, keep_firing_for, labels, annotations

kubernetes-validate knows only built-in kinds; a custom resource is checked against the schema
registered here for its `(apiVersion, kind)`, and one with no schema here is a violation.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"}
_NAMESPACE = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"}
_STRING = {"type": "string", "minLength": 1}
_STRINGS: Schema = {"type": "array", "items": {"type": "string", "minLength": 1}}
_STRING_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
_SELECTOR: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": _STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {"key": {"type": "string"}, "operator": {"type": "string"}, "values": _STRINGS},
            },
        },
    },
}


def _metadata(*, namespaced: bool) -> Schema:
    properties: Schema = {
        "name": _NAME,
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "finalizers": _STRINGS,
    }
    if namespaced:
        properties["namespace"] = _NAMESPACE
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "namespace"] if namespaced else ["name"],
        "properties": properties,
    }


def _object(api_version: str, kind: str, spec: Schema, *, namespaced: bool = True) -> Schema:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _metadata(namespaced=namespaced),
            "spec": spec,
        },
    }


IP_ADDRESS_POOL = _object(
    "metallb.io/v1beta1",
    "IPAddressPool",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["addresses"],
        "properties": {
            "addresses": {"type": "array", "minItems": 1, "items": _STRING},
            "autoAssign": {"type": "boolean"},
            "avoidBuggyIPs": {"type": "boolean"},
        },
    },
)

L2_ADVERTISEMENT = _object(
    "metallb.io/v1beta1",
    "L2Advertisement",
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "ipAddressPools": _STRINGS,
            "ipAddressPoolSelectors": {"type": "array", "items": _SELECTOR},
            "nodeSelectors": {"type": "array", "items": _SELECTOR},
            "interfaces": _STRINGS,
        },
    },
)

HELM_CHART_CONFIG = _object(
    "helm.cattle.io/v1",
    "HelmChartConfig",
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "valuesContent": {"type": "string"},
            "failurePolicy": {"enum": ["abort", "reinstall", "retry"]},
        },
    },
)

# cert-manager's webhook rejects an HTTP-01 ingress solver naming more than one of these.
_HTTP01_INGRESS_TARGETS = ("ingressClassName", "class", "name")
CLUSTER_ISSUER = _object(
    "cert-manager.io/v1",
    "ClusterIssuer",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["acme"],
        "properties": {
            "acme": {
                "type": "object",
                "additionalProperties": False,
                "required": ["server", "privateKeySecretRef"],
                "properties": {
                    "server": {"type": "string", "pattern": "^https://"},
                    "email": {"type": "string", "pattern": "^[^@\\s]+@[^@\\s]+$"},
                    "privateKeySecretRef": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {"name": _NAME, "key": {"type": "string"}},
                    },
                    "preferredChain": {"type": "string"},
                    "skipTLSVerify": {"type": "boolean"},
                    "solvers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "selector": {"type": "object"},
                                "http01": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["ingress"],
                                    "properties": {
                                        "ingress": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "properties": {
                                                "ingressClassName": _STRING,
                                                "class": _STRING,
                                                "name": _STRING,
                                                "serviceType": {"type": "string"},
                                            },
                                            "not": {
                                                "anyOf": [
                                                    {"required": [a, b]}
                                                    for i, a in enumerate(_HTTP01_INGRESS_TARGETS)
                                                    for b in _HTTP01_INGRESS_TARGETS[i + 1 :]
                                                ]
                                            },
                                        }
                                    },
                                },
                            },
                        },
                    },
                },
            }
        },
    },
    namespaced=False,
)

_DESTINATION: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"server": {"type": "string"}, "name": {"type": "string"}, "namespace": _NAMESPACE},
}
_GROUP_KIND: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["group", "kind"],
    "properties": {"group": {"type": "string"}, "kind": {"type": "string"}},
}

APP_PROJECT = _object(
    "argoproj.io/v1alpha1",
    "AppProject",
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "description": {"type": "string"},
            "sourceRepos": _STRINGS,
            "destinations": {"type": "array", "items": _DESTINATION},
            "clusterResourceWhitelist": {"type": "array", "items": _GROUP_KIND},
            "clusterResourceBlacklist": {"type": "array", "items": _GROUP_KIND},
            "namespaceResourceWhitelist": {"type": "array", "items": _GROUP_KIND},
            "namespaceResourceBlacklist": {"type": "array", "items": _GROUP_KIND},
            "sourceNamespaces": _STRINGS,
        },
    },
)

APPLICATION = _object(
    "argoproj.io/v1alpha1",
    "Application",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["destination", "project"],
        "properties": {
            "project": _STRING,
            "source": {
                "type": "object",
                "additionalProperties": False,
                "required": ["repoURL"],
                "properties": {
                    "repoURL": _STRING,
                    "path": {"type": "string"},
                    "targetRevision": {"type": "string"},
                },
            },
            "destination": _DESTINATION,
            "syncPolicy": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "automated": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "prune": {"type": "boolean"},
                            "selfHeal": {"type": "boolean"},
                            "allowEmpty": {"type": "boolean"},
                            "enabled": {"type": "boolean"},
                        },
                    },
                    "syncOptions": _STRINGS,
                    "retry": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "limit": {"type": "integer"},
                            "refresh": {"type": "boolean"},
                            "backoff": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "duration": {"type": "string"},
                                    "factor": {"type": "integer"},
                                    "maxDuration": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
)


_DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
_RELABEL_ACTIONS = [
    spelling
    for action in (
        "Replace",
        "Keep",
        "Drop",
        "HashMod",
        "LabelMap",
        "LabelDrop",
        "LabelKeep",
        "Lowercase",
        "Uppercase",
        "KeepEqual",
        "DropEqual",
    )
    for spelling in (action.lower(), action)
]
_RELABELINGS: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "action": {"enum": _RELABEL_ACTIONS},
            "modulus": {"type": "integer"},
            "regex": {"type": "string"},
            "replacement": {"type": "string"},
            "separator": {"type": "string"},
            "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
            "targetLabel": {"type": "string"},
        },
    },
}
SERVICE_MONITOR = _object(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["endpoints", "selector"],
        "properties": {
            "selector": _SELECTOR,
            "namespaceSelector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"any": {"type": "boolean"}, "matchNames": _STRINGS},
            },
            "jobLabel": {"type": "string"},
            "targetLabels": _STRINGS,
            "podTargetLabels": _STRINGS,
            "sampleLimit": {"type": "integer", "minimum": 0},
            "endpoints": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "targetPort": {"type": ["integer", "string"]},
                        "path": {"type": "string"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": {"type": "string", "pattern": _DURATION},
                        "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                        "honorLabels": {"type": "boolean"},
                        "honorTimestamps": {"type": "boolean"},
                        "enableHttp2": {"type": "boolean"},
                        "followRedirects": {"type": "boolean"},
                        "filterRunning": {"type": "boolean"},
                        "relabelings": _RELABELINGS,
                        "metricRelabelings": _RELABELINGS,
                    },
                },
            },
        },
    },
)

PROMETHEUS_RULE = _object(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": {"type": "string", "pattern": _DURATION},
                        "query_offset": {"type": "string", "pattern": _DURATION},
                        "limit": {"type": "integer"},
                        "partial_response_strategy": {
                            "type": "string",
                            "pattern": "^([Aa][Bb][Oo][Rr][Tt]|[Ww][Aa][Rr][Nn])?$",
                        },
                        "labels": _STRING_MAP,
                        "rules": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["expr"],
                                "properties": {
                                    "alert": {"type": "string"},
                                    "record": {"type": "string"},
                                    "expr": {"type": ["integer", "string"]},
                                    "for": {"type": "string", "pattern": _DURATION},
                                    "keep_firing_for": {"type": "string", "minLength": 1, "pattern": _DURATION},
                                    "labels": _STRING_MAP,
                                    "annotations": _STRING_MAP,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
)

CUSTOM_RESOURCE_SCHEMAS: dict[tuple[str, str], Schema] = {
    ("metallb.io/v1beta1", "IPAddressPool"): IP_ADDRESS_POOL,
    ("metallb.io/v1beta1", "L2Advertisement"): L2_ADVERTISEMENT,
    ("helm.cattle.io/v1", "HelmChartConfig"): HELM_CHART_CONFIG,
    ("cert-manager.io/v1", "ClusterIssuer"): CLUSTER_ISSUER,
    ("argoproj.io/v1alpha1", "AppProject"): APP_PROJECT,
    ("argoproj.io/v1alpha1", "Application"): APPLICATION,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
}
