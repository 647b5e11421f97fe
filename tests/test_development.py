"""A second stack, `development`: one machine, the same program, its own ESC environment.

It shows `pulumi up` per stack rather than saying it: everything that differs between the stacks is
in Pulumi.<stack>.yaml and esc/, so the development render passes every check production's does and
names nothing of production.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from components.settings.secrets import SECRET_SPECS
from render.context import CheckResult
from render.model import Rendered
from render.stack import PROJECT_DIR, esc_config_keys
from tests.support import settings_from

STACK_FILES = sorted(PROJECT_DIR.glob("Pulumi.*.yaml"))


def test_there_are_two_stacks_of_one_program() -> None:
    assert [p.name for p in STACK_FILES] == ["Pulumi.development.yaml", "Pulumi.production.yaml"]


def test_every_check_passes_on_the_development_stack(development_render: tuple[Rendered, list[CheckResult]]) -> None:
    rendered, results = development_render
    assert rendered.stack == "development"
    assert {r.name: r.violations[:5] for r in results if r.violations} == {}


def test_the_development_cluster_is_one_machine_that_runs_everything(
    development_render: tuple[Rendered, list[CheckResult]],
) -> None:
    rendered, _ = development_render
    assert list(rendered.node_steps) == ["sophia-dev"]
    steps = [s.step for s in rendered.node_steps["sophia-dev"]]
    assert steps == ["preflight", "prepare", "install", "ready", "admit", "agent-token", "kubeconfig", "server-token"]
    workloads = {m["metadata"]["name"] for m in rendered.manifests if m["kind"] in ("Deployment", "StatefulSet")}
    assert workloads == {"sophia-backend", "sophia-frontend", "ai-memory", "redis"}
    # PostgreSQL's pods are the CloudNativePG operator's, from its Cluster.
    assert [m["metadata"]["name"] for m in rendered.manifests if m["kind"] == "Cluster"] == ["postgres"]


def test_the_development_render_names_nothing_of_production(
    tmp_path: Path, development_render: tuple[Rendered, list[CheckResult]]
) -> None:
    """No production machine, address, host key or host name reaches the other stack: none is in the code."""
    rendered, _ = development_render
    assert rendered.out_dir is not None
    production = yaml.safe_load((PROJECT_DIR / "Pulumi.production.yaml").read_text())["config"]
    nodes = production["sophia-infra:cluster"]["nodes"]
    needles = [n["name"] for n in nodes] + [n["host"] for n in nodes] + [n["hostKey"].split()[1] for n in nodes]
    needles += [block.split("/")[0] for block in production["sophia-infra:network"]["loadBalancerAddresses"]]
    found = {
        (str(path.relative_to(rendered.out_dir)), needle)
        for path in rendered.out_dir.rglob("*")
        if path.is_file()
        for needle in needles
        if re.search(rf"(?<![\w.-]){re.escape(needle)}(?![\w-])", path.read_text())
    }
    assert found == set()
    domain = settings_from(tmp_path, yaml.safe_load((PROJECT_DIR / "Pulumi.development.yaml").read_text()))
    hosts = {h for m in rendered.objects("Ingress") for h in (r["host"] for r in m["spec"]["rules"])}
    assert hosts and all(h == domain.network.domain or h.endswith("." + domain.network.domain) for h in hosts)


@pytest.mark.parametrize("stack_file", STACK_FILES, ids=lambda p: p.name)
def test_each_stack_imports_its_own_esc_environment_with_exactly_the_secrets_the_program_requires(
    stack_file: Path,
) -> None:
    stack = stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")
    document = yaml.safe_load(stack_file.read_text())
    assert document["environment"] == [f"sophia-ai/{stack}"]
    provided = esc_config_keys(f"sophia-ai/{stack}")
    assert all(provided.values()), "every ESC value is an fn::secret"
    # The optional secrets are the backup bucket's keys, which a stack needs exactly when it has backups.
    has_backups = "backups" in document["config"]["sophia-infra:cluster"]
    assert set(provided) == {spec.key.value for spec in SECRET_SPECS if has_backups or not spec.optional}
