"""The docs hold to the code: computed figures as the code computes them, runbooks with steps, every alert.

Measured figures live only in docs/benchmarks.md, dated, written by `make bench`; every figure the
program computes that the docs quote is in one generated block (render/figures.py) compared here
with what the code computes now, so neither can drift silently.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from render import figures
from render.context import CheckResult
from render.model import Rendered
from render.stack import PROJECT_DIR

DOCS = sorted((PROJECT_DIR / "docs").glob("*.md"))
README = PROJECT_DIR / "README.md"
OPERATIONS = PROJECT_DIR / "docs" / "operations.md"
MEASURED = PROJECT_DIR / "docs" / "benchmarks.md"
"""The one file of measurements: written by `make bench`, dated, with the machine and its load."""


def _sections(path: Path, level: str) -> dict[str, str]:
    """Each heading of `level` (`##`, `###`) and the text under it, up to the next heading as deep or deeper."""
    text = path.read_text()
    parts = re.split(rf"(?m)^({re.escape(level)} .*)$", text)
    return {parts[i].removeprefix(level + " "): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _runbooks() -> dict[str, str]:
    runbooks = _sections(OPERATIONS, "##")["Runbooks"]
    return {m[1]: m[2] for m in re.finditer(r"(?ms)^### (.*?)\n(.*?)(?=^### |\Z)", runbooks)}


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"(?ms)^```.*?^```", "", path.read_text())  # headings, not comments in code blocks
    return {_slug(m[1]) for m in re.finditer(r"(?m)^#{1,6} (.*)$", text)}


def test_the_readme_is_short_and_each_long_doc_has_a_table_of_contents() -> None:
    assert len(README.read_text().splitlines()) <= 200
    for path in DOCS:
        lines = path.read_text().splitlines()
        if len(lines) > 100:
            assert "## Contents" in lines, f"{path.name} has {len(lines)} lines and no table of contents"


def test_every_link_to_a_heading_finds_it() -> None:
    for path in [README, *DOCS]:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", path.read_text()):
            linked = (path.parent / target).resolve() if target else path
            assert linked.is_file(), f"{path.name}: link to {target}, which does not exist"
            assert anchor in _anchors(linked), f"{path.name}: #{anchor} is no heading of {linked.name}"
        for target in re.findall(r"\]\(([^)#\s:]+\.md)\)", path.read_text()):
            assert (path.parent / target).is_file(), f"{path.name}: link to {target}, which does not exist"


def test_every_runbook_is_a_heading_with_numbered_steps() -> None:
    runbooks = _runbooks()
    for needed in (
        "Add a machine",
        "Remove a machine",
        "Upgrade K3s",
        "Rotate the SSH key",
        "Rotate a secret",
        "Restore etcd from a snapshot",
        "Restore PostgreSQL",
    ):
        assert needed in runbooks, f"no runbook {needed!r}"
    for title, body in runbooks.items():
        steps = [int(m[1]) for m in re.finditer(r"(?m)^(\d+)\. ", body)]
        assert steps and steps == list(range(1, len(steps) + 1)), f"{title}: steps {steps}"


def test_every_alert_the_stack_deploys_says_what_it_means_and_what_to_do(production: Rendered) -> None:
    deployed = {
        rule["alert"]
        for rule_set in production.objects("PrometheusRule")
        for group in rule_set["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert deployed, "the production stack deploys no alert"
    alerts = _sections(OPERATIONS, "##")["Alerts: what each means and what to do"]
    documented = dict(re.findall(r"(?ms)^### (\S+)\n(.*?)(?=^### |\Z)", alerts))
    assert set(documented) == deployed
    for name, body in documented.items():
        assert re.search(r"(?m)^1\. ", body), f"{name}: no numbered step of what to do"


def test_the_figures_the_docs_quote_are_what_the_code_computes_now(
    production: Rendered, development_render: tuple[Rendered, list[CheckResult]]
) -> None:
    """On failure: `python -m render.figures --write` rewrites the block from the code."""
    renders = {"production": production.resources, "development": development_render[0].resources}
    assert list(renders) == sorted(renders, key=lambda n: (n != "production", n)), "the order figures writes"
    assert figures.quoted(figures.DOC.read_text()) == figures.block(renders)


def test_no_resource_count_or_critical_path_is_quoted_outside_the_figures(
    production: Rendered, development_render: tuple[Rendered, list[CheckResult]]
) -> None:
    """A count in prose must be one the figures block holds; a critical path only there, or measured."""
    computed = set()
    for resources in (production.resources, development_render[0].resources):
        computed |= {len(resources), figures.kubernetes_layer_count(resources)}
    for path in [README, *DOCS]:
        if path == MEASURED:
            continue
        text = path.read_text()
        block = figures.quoted(text)
        if block:
            text = text.replace(block, "")
        for count in re.findall(r"\b(\d+) resources\b", text):
            assert int(count) in computed, f"{path.name}: '{count} resources' is not a count the code computes"
        for line in text.splitlines():
            if "critical path" in line.lower():
                assert not re.search(r"\b\d+ s\b", line), f"{path.name}: a critical path figure in prose: {line}"


@pytest.mark.parametrize("path", [README, *(p for p in DOCS if p != MEASURED)], ids=lambda p: p.name)
def test_no_dated_measurement_outside_benchmarks(path: Path) -> None:
    """Dated prose ("measured on 29 November") belongs to benchmarks.md, which make bench rewrites."""
    text = path.read_text()
    e2e = _sections(PROJECT_DIR / "docs" / "testing.md", "##").get(
        "The e2e: the real engine against a real API server", ""
    )
    # The mutation score is a figure of the tests at one commit, not of a machine's speed: issue 21
    # asks for it in testing.md with the command, the commit, the day and how long the run took.
    mutation = _sections(PROJECT_DIR / "docs" / "testing.md", "###").get("The score and how it was measured", "")
    if path.name == "testing.md":
        text = text.replace(e2e, "")  # as the e2e's owner wrote it; moved unchanged
        text = text.replace(mutation, "")
    months = "January|February|March|April|May|June|July|August|September|October|November|December"
    assert not re.search(rf"\b(measured|took)\b[^.]*\b\d{{1,2}} ({months}) 20\d\d", text), path.name
    assert not re.search(r"\bload average\b[^.]*\d", text), path.name


E2E_SECTION = "The e2e: the whole program, for real"
VERSIONS_ENV = PROJECT_DIR / "tests" / "e2e" / "engine" / "versions.env"


def test_the_readme_names_exactly_the_versions_and_commits_the_e2e_builds() -> None:
    """versions.env is what build.sh builds; the README's table must name each version and commit it pins."""
    pins = dict(re.findall(r"(?m)^([A-Z_]+)=(\S+)$", VERSIONS_ENV.read_text()))
    section = _sections(README, "##")[E2E_SECTION]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    versions = [k for k in pins if k.endswith("_VERSION") and not k.endswith("_STAGING_VERSION")]
    commits = [k for k in pins if k.endswith("_COMMIT")]
    assert {"PULUMI_CLI_VERSION", "COMMAND_VERSION", "RANDOM_VERSION", "PYTHON_HOST_VERSION"} <= set(versions)
    for key in [*versions, "PROMETHEUS_RELEASE"]:
        assert pins[key].removeprefix("v") in table, f"README's e2e table lacks {key}={pins[key]}"
    for key in commits:
        assert pins[key][:8] in table, f"README's e2e table lacks {key} {pins[key][:8]}"
