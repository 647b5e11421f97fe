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
- PodMonitor: the same CRD set (crd-podmonitors.yaml): selector required, podMetricsEndpoints
- Cluster, ScheduledBackup (postgresql.cnpg.io/v1): cloudnative-pg/charts@cloudnative-pg-v0.29.0
  charts/cloudnative-pg/templates/crds/crds.yaml (operator 1.30.0)
- ObjectStore (barmancloud.cnpg.io/v1): cloudnative-pg/charts@plugin-barman-cloud-v0.7.0
  charts/plugin-barman-cloud/templates/crds/crds.yaml (its rule `!has(self.serverName)` on
  configuration: the server name belongs in the Cluster's plugin parameters)

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

# A plain string in the CRD: an AppProject matches it as a glob (`*`, `team-*`, `!kube-system`), as
# the `default` project Argo CD's server creates does (`*`; the e2e's API server refused the stricter
# namespace pattern this schema had). The settings hold Applications' namespaces to real names.
_DESTINATION: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"server": {"type": "string"}, "name": {"type": "string"}, "namespace": {"type": "string"}},
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

PODMONITOR = _object(
    "monitoring.coreos.com/v1",
    "PodMonitor",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["selector"],
        "properties": {
            "selector": _SELECTOR,
            "namespaceSelector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"any": {"type": "boolean"}, "matchNames": _STRINGS},
            },
            "jobLabel": {"type": "string"},
            "podTargetLabels": _STRINGS,
            "podMetricsEndpoints": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "portNumber": {"type": "integer", "minimum": 1, "maximum": 65535},
                        "path": {"type": "string"},
                        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                        "interval": {"type": "string", "pattern": _DURATION},
                        "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                        "honorLabels": {"type": "boolean"},
                        "relabelings": _RELABELINGS,
                        "metricRelabelings": _RELABELINGS,
                    },
                },
            },
        },
    },
)

# Kubernetes' quantity, as the CRDs spell it (int-or-string with this pattern).
_QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": _QUANTITY_PATTERN}]}
_RESOURCES: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "limits": {"type": "object", "additionalProperties": _QUANTITY},
        "requests": {"type": "object", "additionalProperties": _QUANTITY},
    },
}
_NAME_REF: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {"name": {"type": "string"}},
}
_KEY_REF: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["key", "name"],
    "properties": {"key": {"type": "string"}, "name": {"type": "string"}},
}
_PLUGIN: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "enabled": {"type": "boolean"},
        "isWALArchiver": {"type": "boolean"},
        "parameters": _STRING_MAP,
    },
}
_BOOTSTRAP_COMMON: dict[str, Schema] = {
    "database": {"type": "string"},
    "owner": {"type": "string"},
    "secret": _NAME_REF,
}
CNPG_CLUSTER = _object(
    "postgresql.cnpg.io/v1",
    "Cluster",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["instances"],
        "properties": {
            "instances": {"type": "integer", "minimum": 1},
            "imageName": {"type": "string"},
            "imagePullSecrets": {"type": "array", "items": _NAME_REF},
            "enableSuperuserAccess": {"type": "boolean"},
            "enablePDB": {"type": "boolean"},
            "storage": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "size": {"type": "string"},
                    "storageClass": {"type": "string"},
                    "resizeInUseVolumes": {"type": "boolean"},
                },
            },
            "resources": _RESOURCES,
            "ephemeralVolumesSizeLimit": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"shm": _QUANTITY, "temporaryData": _QUANTITY},
            },
            "inheritedMetadata": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"labels": _STRING_MAP, "annotations": _STRING_MAP},
            },
            "managed": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "roles": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string"},
                                "ensure": {"enum": ["present", "absent"]},
                                "login": {"type": "boolean"},
                                "superuser": {"type": "boolean"},
                                "createdb": {"type": "boolean"},
                                "createrole": {"type": "boolean"},
                                "inherit": {"type": "boolean"},
                                "replication": {"type": "boolean"},
                                "bypassrls": {"type": "boolean"},
                                "disablePassword": {"type": "boolean"},
                                "connectionLimit": {"type": "integer"},
                                "comment": {"type": "string"},
                                "inRoles": _STRINGS,
                                "validUntil": {"type": "string"},
                                "passwordSecret": _NAME_REF,
                            },
                        },
                    }
                },
            },
            "plugins": {"type": "array", "items": _PLUGIN},
            "bootstrap": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "initdb": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {**_BOOTSTRAP_COMMON, "dataChecksums": {"type": "boolean"}},
                    },
                    "recovery": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            **_BOOTSTRAP_COMMON,
                            "source": {"type": "string"},
                            "recoveryTarget": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    key: {"type": "string"}
                                    for key in (
                                        "backupID",
                                        "targetTime",
                                        "targetLSN",
                                        "targetName",
                                        "targetTLI",
                                        "targetXID",
                                    )
                                }
                                | {"exclusive": {"type": "boolean"}, "targetImmediate": {"type": "boolean"}},
                            },
                        },
                    },
                },
            },
            "externalClusters": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "plugin": _PLUGIN},
                },
            },
        },
    },
)
CNPG_SCHEDULED_BACKUP = _object(
    "postgresql.cnpg.io/v1",
    "ScheduledBackup",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["cluster", "schedule"],
        "properties": {
            "schedule": {"type": "string"},
            "cluster": _NAME_REF,
            "method": {"enum": ["barmanObjectStore", "volumeSnapshot", "plugin"]},
            "pluginConfiguration": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": _STRING_MAP},
            },
            "immediate": {"type": "boolean"},
            "suspend": {"type": "boolean"},
            "online": {"type": "boolean"},
            "target": {"enum": ["primary", "prefer-standby"]},
            "backupOwnerReference": {"enum": ["none", "self", "cluster"]},
        },
    },
)
_COMPRESSION = ["bzip2", "gzip", "lz4", "snappy"]
BARMAN_OBJECT_STORE = _object(
    "barmancloud.cnpg.io/v1",
    "ObjectStore",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["configuration"],
        "properties": {
            "configuration": {
                "type": "object",
                "additionalProperties": False,
                "required": ["destinationPath"],
                "properties": {
                    "destinationPath": {"type": "string"},
                    "endpointURL": {"type": "string"},
                    "endpointCA": _KEY_REF,
                    "s3Credentials": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "accessKeyId": _KEY_REF,
                            "secretAccessKey": _KEY_REF,
                            "region": _KEY_REF,
                            "sessionToken": _KEY_REF,
                            "inheritFromIAMRole": {"type": "boolean"},
                        },
                    },
                    "wal": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "compression": {"enum": [*_COMPRESSION, "xz", "zstd"]},
                            "encryption": {"enum": ["AES256", "aws:kms"]},
                            "maxParallel": {"type": "integer", "minimum": 1},
                        },
                    },
                    "data": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "compression": {"enum": _COMPRESSION},
                            "encryption": {"enum": ["AES256", "aws:kms"]},
                            "jobs": {"type": "integer", "minimum": 1},
                            "immediateCheckpoint": {"type": "boolean"},
                        },
                    },
                },
            },
            "retentionPolicy": {"type": "string", "pattern": "^[1-9][0-9]*[dwm]$"},
            "instanceSidecarConfiguration": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "resources": _RESOURCES,
                    "logLevel": {"enum": ["error", "warning", "info", "debug", "trace"]},
                    "retentionPolicyIntervalSeconds": {"type": "integer"},
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
    ("monitoring.coreos.com/v1", "PodMonitor"): PODMONITOR,
    ("postgresql.cnpg.io/v1", "Cluster"): CNPG_CLUSTER,
    ("postgresql.cnpg.io/v1", "ScheduledBackup"): CNPG_SCHEDULED_BACKUP,
    ("barmancloud.cnpg.io/v1", "ObjectStore"): BARMAN_OBJECT_STORE,
}
