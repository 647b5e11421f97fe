"""The CrossGuard policies (policy/rules.py) run over every resource of the render."""

from __future__ import annotations

import json

from policy.rules import DEFAULT_CONFIG, RULES, STACK_RULES, PolicyConfig
from render.context import Context


def stack_policy_config(context: Context) -> PolicyConfig:
    """The pack's config for this stack: its own image registry (the pack's default is production's)."""
    try:
        registry = json.loads(context.stack.config["sophia-infra:images"])["registry"]
    except (KeyError, TypeError, ValueError):
        return DEFAULT_CONFIG
    return PolicyConfig(registry=str(registry), app_namespaces=DEFAULT_CONFIG.app_namespaces)


def policies_pass(context: Context) -> list[str]:
    """Every mandatory policy of the pack passes on every resource, as `pulumi preview --policy-pack` would judge."""
    config = stack_policy_config(context)
    resources = context.rendered.resources
    per_resource = [
        f"{resource['type']} {resource['name']}: {rule.name}: {message}"
        for resource in resources
        for rule in RULES
        for message in rule.judge(resource["type"], resource["inputs"], config)
    ]
    whole_stack = [(r["type"], r["inputs"]) for r in resources]
    return per_resource + [
        f"{rule.name}: {message}" for rule in STACK_RULES for message in rule.judge(whole_stack, config)
    ]
