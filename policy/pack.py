"""The pack's policies, built from `policy.rules` without serving anything (tests build them too)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policy.rules import DEFAULT_CONFIG, RULES, STACK_RULES, PolicyConfig, Rule, StackRule

PACK_NAME = "sophia-infra"

# Which policies read which config keys (the rest take none).
_REGISTRY_POLICIES = frozenset({"images-from-the-configured-registry"})
_NAMESPACE_POLICIES = frozenset(
    {
        "app-namespaces-enforce-restricted",
        "app-pods-are-restricted",
        *(rule.name for rule in STACK_RULES),
    }
)


def plain(value: Any) -> Any:
    """The engine's inputs as plain data, as the render records them: what the rules read.

    `pulumi_policy` hands a validation proxies that raise on reading an unknown value; the rules
    decide for themselves what an unknown value means, so they get the data underneath, unknown
    values as their sentinel strings. The engine's numbers are protobuf doubles (a port arrives as
    9000.0); a whole number is made an int again, as the Kubernetes provider reads it.
    """
    for attribute in ("_DictProxy__target", "_ListProxy__target"):
        if hasattr(value, attribute):
            value = getattr(value, attribute)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def config_from(raw: Mapping[str, Any]) -> PolicyConfig:
    registry = raw.get("registry")
    namespaces = raw.get("appNamespaces")
    return PolicyConfig(
        registry=registry if isinstance(registry, str) and registry else DEFAULT_CONFIG.registry,
        app_namespaces=frozenset(str(n) for n in namespaces)
        if isinstance(namespaces, list) and namespaces
        else DEFAULT_CONFIG.app_namespaces,
    )


def _schema(rule: Rule | StackRule) -> PolicyConfigSchema | None:
    if rule.name in _REGISTRY_POLICIES:
        return PolicyConfigSchema(
            properties={"registry": {"type": "string", "default": DEFAULT_CONFIG.registry}},
        )
    if rule.name in _NAMESPACE_POLICIES:
        return PolicyConfigSchema(
            properties={
                "appNamespaces": {
                    "type": "array",
                    "items": {"type": "string"},
                    "default": sorted(DEFAULT_CONFIG.app_namespaces),
                }
            },
        )
    return None


def _validation(rule: Rule) -> Any:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        config = config_from(args.get_config())
        for message in rule.judge(args.resource_type, plain(args.props), config):
            report_violation(message, None)

    validate.__name__ = f"validate_{rule.name.replace('-', '_')}"
    return validate


def _stack_validation(rule: StackRule) -> Any:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        config = config_from(args.get_config())
        resources = [(r.resource_type, plain(r.props)) for r in args.resources]
        for message in rule.judge(resources, config):
            report_violation(message, None)

    validate.__name__ = f"validate_{rule.name.replace('-', '_')}"
    return validate


def policies() -> list[Policy]:
    """One mandatory policy per rule: a violation stops `pulumi up` before anything changes."""
    resource_policies: list[Policy] = [
        ResourceValidationPolicy(
            name=rule.name,
            description=rule.description,
            validate=_validation(rule),
            enforcement_level=EnforcementLevel.MANDATORY,
            config_schema=_schema(rule),
        )
        for rule in RULES
    ]
    stack_policies: list[Policy] = [
        StackValidationPolicy(
            name=rule.name,
            description=rule.description,
            validate=_stack_validation(rule),
            enforcement_level=EnforcementLevel.MANDATORY,
            config_schema=_schema(rule),
        )
        for rule in STACK_RULES
    ]
    return resource_policies + stack_policies
