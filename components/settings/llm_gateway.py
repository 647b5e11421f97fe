"""The LLM gateway the Sophia backend calls: Portkey first, OpenRouter when it fails (seed 001)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from components.settings.apps import https_url
from components.settings.reader import Value

MODEL = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,127}$")
TASK = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class Provider(StrEnum):
    PORTKEY = "portkey"
    OPENROUTER = "openrouter"


@dataclass(frozen=True)
class Gateway:
    provider: Provider
    endpoint: str


@dataclass(frozen=True)
class RoutingRule:
    task: str
    model: str


@dataclass(frozen=True)
class LlmGatewaySettings:
    primary: Gateway
    fallback: Gateway
    models: tuple[str, ...]
    routing_rules: tuple[RoutingRule, ...]

    @property
    def endpoints(self) -> tuple[str, ...]:
        return (self.primary.endpoint, self.fallback.endpoint)


def _gateway(value: Value) -> Gateway:
    section = value.section()
    provider = section.required("provider").choice([p.value for p in Provider])
    endpoint = https_url(section.required("endpoint"))
    section.close()
    return Gateway(Provider(provider) if provider else Provider.PORTKEY, endpoint)


def _rule(value: Value) -> RoutingRule:
    section = value.section()
    rule = RoutingRule(
        section.required("task").string(pattern=TASK, what="a task name in snake_case"),
        section.required("model").string(pattern=MODEL, what="a model name"),
    )
    section.close()
    return rule


def read_llm_gateway(value: Value) -> LlmGatewaySettings:
    section = value.section()
    primary = _gateway(section.required("primary"))
    fallback_value = section.required("fallback")
    fallback = _gateway(fallback_value)
    models_value = section.required("models")
    models = models_value.list_of(lambda v: v.string(pattern=MODEL, what="a model name"), minimum=1, maximum=100)
    rules_value = section.required("routingRules")
    rules = rules_value.list_of(_rule, maximum=100)
    section.close()
    if primary.provider is fallback.provider and primary.endpoint:
        fallback_value.fail(f"must be another provider than the primary ({primary.provider.value})")
    for i, model in enumerate(models):
        if model and models[:i].count(model):
            models_value.problems.add(f"{models_value.path}[{i}]", f"duplicate model {model!r}")
    tasks = [r.task for r in rules]
    for i, rule in enumerate(rules):
        if rule.task and tasks[:i].count(rule.task):
            rules_value.problems.add(f"{rules_value.path}[{i}].task", f"duplicate task {rule.task!r}")
    return LlmGatewaySettings(primary, fallback, models, rules)
