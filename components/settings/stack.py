"""Stack configuration, parsed and validated once into frozen, typed settings.

`load_settings` is the only reader of configuration in the program. It either returns a complete
`Settings` or raises one `ConfigError` listing every problem, each naming its full key; nothing is
registered with Pulumi before it returns.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import pulumi.runtime.config as pulumi_config

from components.settings.apps import AppsSettings, check_apps, read_apps
from components.settings.cluster import ClusterSettings, read_cluster
from components.settings.errors import ConfigError, Problem
from components.settings.gitops import GitOpsSettings, read_gitops
from components.settings.images import ImageSettings, read_images
from components.settings.llm_gateway import LlmGatewaySettings, read_llm_gateway
from components.settings.network import NetworkSettings, read_network
from components.settings.platform import PlatformSettings, check_gitops_ownership, read_platform
from components.settings.reader import MISSING, Problems, Value
from components.settings.secrets import MISSING_SECRET, SECRET_SPECS, SecretKey, Secrets, read_secrets

NAMESPACE = "sophia-infra"

T = TypeVar("T")

# The top-level keys of the `sophia-infra` namespace besides the secrets; one reader each below.
SECTION_KEYS = ("cluster", "network", "images", "gitops", "apps", "llmGateway", "platform")

__all__ = ["NAMESPACE", "ConfigError", "Problem", "Settings", "load_settings", "stack_config"]


@dataclass(frozen=True)
class Settings:
    stack: str
    cluster: ClusterSettings
    network: NetworkSettings
    images: ImageSettings
    gitops: GitOpsSettings
    apps: AppsSettings
    llm_gateway: LlmGatewaySettings
    platform: PlatformSettings
    secrets: Secrets


def stack_config() -> tuple[dict[str, str], frozenset[str]]:
    """Every config value the engine handed the program, and which of them are secret."""
    raw = {**pulumi_config.get_config_env(), **pulumi_config.CONFIG.get()}
    secret_keys = frozenset(pulumi_config._SECRET_KEYS.get()) | frozenset(pulumi_config.get_config_secret_keys_env())
    return {k: str(v) for k, v in raw.items()}, secret_keys


def _structured(text: str) -> object:
    """Config objects and lists reach the program as JSON text; plain strings as themselves."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _check_addresses(cluster: ClusterSettings, network: NetworkSettings, problems: Problems) -> None:
    for block_index, block in enumerate(network.load_balancer_pool):
        for node in cluster.nodes:
            for address in (node.host, node.private_ip):
                if address and _is_ip(address) and address in block:
                    problems.add(
                        f"{NAMESPACE}:network.loadBalancerAddresses[{block_index}]",
                        f"{block.text} includes {address}, the address of node {node.name}",
                    )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_backup_keys(cluster: ClusterSettings, raw: Mapping[str, str], problems: Problems) -> None:
    """The backup storage's keys are needed exactly when the storage is configured (a key that is
    there but wrong was reported by read_secrets already)."""
    if cluster.backups is None:
        return
    for key in (SecretKey.BACKUP_ACCESS_KEY_ID, SecretKey.BACKUP_SECRET_ACCESS_KEY):
        path = f"{NAMESPACE}:{key.value}"
        if path not in raw:
            problems.add(path, f"{MISSING_SECRET}; {NAMESPACE}:cluster.backups is set")


def load_settings(stack: str, raw: Mapping[str, str], secret_keys: frozenset[str]) -> Settings:
    """Parse and validate the whole stack configuration, or raise one ConfigError with every problem."""
    problems = Problems()
    secret_names = {spec.key.value for spec in SECRET_SPECS}
    for key in sorted(raw):
        ns, _, name = key.partition(":")
        if ns == NAMESPACE and name not in SECTION_KEYS and name not in secret_names:
            problems.add(key, "unknown key")

    def section(name: str, read: Callable[[Value], T]) -> T:
        path = f"{NAMESPACE}:{name}"
        text = raw.get(path)
        value = Value(path, MISSING if text is None else _structured(text), problems)
        if text is None:
            problems.add(path, "is required")
        return read(value)

    cluster = section("cluster", read_cluster)
    network = section("network", read_network)
    images = section("images", read_images)
    gitops = section("gitops", read_gitops)
    apps = section("apps", read_apps)
    llm_gateway = section("llmGateway", read_llm_gateway)
    platform = section("platform", read_platform)
    secrets = read_secrets(NAMESPACE, raw, secret_keys, problems)
    _check_addresses(cluster, network, problems)
    _check_backup_keys(cluster, raw, problems)
    check_apps(NAMESPACE, apps, cluster, images, problems, gpu_sharing=platform.gpu_sharing.replicas)
    check_gitops_ownership(NAMESPACE, gitops, problems)
    problems.raise_if_any()
    return Settings(stack, cluster, network, images, gitops, apps, llm_gateway, platform, secrets)
