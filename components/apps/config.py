"""The generated configuration files of the Sophia services, from typed settings and the catalogue."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pulumi

from components.settings.apps import AppsSettings
from components.settings.catalogue import CATALOGUE, MCP_SERVERS, SECRET_ENV, SecretConfig, Tier
from components.settings.llm_gateway import Gateway, LlmGatewaySettings, Provider
from components.settings.secrets import SecretKey

# Which secret authenticates against each gateway; the file names the variable, never the value.
GATEWAY_KEYS = {Provider.PORTKEY: SecretKey.PORTKEY_API_KEY, Provider.OPENROUTER: SecretKey.OPENROUTER_API_KEY}


def _gateway(gateway: Gateway) -> dict[str, str]:
    return {
        "provider": gateway.provider.value,
        "endpoint": gateway.endpoint,
        "api_key_env": SECRET_ENV[GATEWAY_KEYS[gateway.provider]],
    }


def llm_gateway_json(settings: LlmGatewaySettings) -> str:
    """seed 001's gateway setup: Portkey first, OpenRouter on failure, the model list and task routes."""
    document = {
        "primary": _gateway(settings.primary),
        "fallback": _gateway(settings.fallback),
        "models": list(settings.models),
        "routing_rules": [{"task": r.task, "route_to": r.model} for r in settings.routing_rules],
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def mcp_servers_json(apps: AppsSettings) -> str:
    """Every MCP server, where to reach it, and what it runs on; the backend's map of the MCP tier."""
    services = {s.name: s for s in CATALOGUE if s.tier is Tier.MCP}
    servers = []
    for server in MCP_SERVERS:
        service = services[server.name]
        wanted = apps.services[server.name]
        servers.append(
            {
                "name": server.name,
                "url": f"http://{service.host}:{service.port}",
                "health": service.health_path,
                "gpu": wanted.gpu.model.label if wanted.gpu else None,
            }
        )
    return json.dumps({"servers": servers, "qdrant_url": apps.qdrant_url}, indent=2, sort_keys=True) + "\n"


def redis_quoted(value: str) -> str:
    r"""`value` as one double-quoted Redis config argument: no character can end the line or the argument.

    Redis splits config lines with sdssplitargs, which inside double quotes reads `\\`, `\"` and
    `\xHH`; everything outside printable ASCII is written as `\xHH` bytes of its UTF-8 encoding.
    """
    out = []
    for char in value:
        if char in '\\"':
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return '"' + "".join(out) + '"'


def secret_config_text(config: SecretConfig, secrets: Mapping[SecretKey, pulumi.Output[str]]) -> pulumi.Output[str]:
    """The file: plain directives, then each secret one quoted; a secret Output, as its values are."""
    parts: list[pulumi.Input[str]] = [f"{name} {value}\n" for name, value in config.directives]
    for name, key in config.secrets:
        parts += [f"{name} ", secrets[key].apply(redis_quoted), "\n"]
    return pulumi.Output.concat(*parts)


def secret_config_fingerprint(config: SecretConfig) -> str:
    """The file with its secrets left out: what may go into a checksum that rolls the pods."""
    lines = [f"{name} {value}" for name, value in config.directives]
    lines += [f"{name} <{key.value}>" for name, key in config.secrets]
    return "\n".join(lines) + "\n"
