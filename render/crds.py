"""JSON schemas for the custom resources the program emits, written from each CRD.

kubernetes-validate knows only built-in kinds; a custom resource is checked against the schema
registered here for its `(apiVersion, kind)`, and one with no schema here is a violation.
"""

from __future__ import annotations

from typing import Any

CUSTOM_RESOURCE_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {}


# monitoring.coreos.com/v1 ServiceMonitor, from prometheus-operator's CRD
# (example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml): the fields this
# program may set, each with the CRD's type, enum or pattern; anything else is rejected.
_DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
_STRINGS: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
_STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
_LABEL_SELECTOR: dict[str, Any] = {
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
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": _STRINGS,
                },
            },
        },
    },
}
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
CUSTOM_RESOURCE_SCHEMAS[("monitoring.coreos.com/v1", "ServiceMonitor")] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"},
                "namespace": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"},
                "labels": _STRING_MAP,
                "annotations": _STRING_MAP,
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["endpoints", "selector"],
            "properties": {
                "selector": _LABEL_SELECTOR,
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
    },
}


# The platform's custom resources (components/platform); each schema and the CRD it was read from
# are in render/platform_crds.py.
from render import platform_crds  # noqa: E402 - the shared registry above comes first

for _key, _schema in platform_crds.PLATFORM_SCHEMAS.items():
    CUSTOM_RESOURCE_SCHEMAS[_key] = _schema
