"""The Git repository Argo CD follows."""

from __future__ import annotations

import re
from dataclasses import dataclass

from components.settings.reader import Value

REPO_URL = re.compile(r"^https://[a-z0-9.-]+(:[0-9]+)?/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?(\.git)?$")
REPO_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
BRANCH = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
ARGOCD_PROJECT = "sophia"
"""The one Argo CD AppProject Applications may use (the platform creates it; a policy holds every
Application to it, since Argo CD's `default` project is fenced to allow nothing)."""


@dataclass(frozen=True)
class GitOpsApplication:
    """An Argo CD Application: one path of the repository synced into one namespace."""

    name: str
    path: str
    namespace: str


@dataclass(frozen=True)
class GitOpsSettings:
    repo_url: str
    branch: str
    applications: tuple[GitOpsApplication, ...]


def _read_application(value: Value) -> GitOpsApplication:
    section = value.section()
    app = GitOpsApplication(
        name=section.required("name").dns_label(),
        path=section.required("path").string(pattern=REPO_PATH, what="a relative path in the repository"),
        namespace=section.required("namespace").dns_label(),
    )
    section.close()
    return app


def read_gitops(value: Value) -> GitOpsSettings:
    section = value.section()
    repo_url = section.required("repoUrl").string(pattern=REPO_URL, what="an https URL of a Git repository")
    branch_value = section.optional("branch")
    branch = branch_value.string(pattern=BRANCH, what="a branch name") if branch_value else "main"
    apps_value = section.optional("applications")
    applications = apps_value.list_of(_read_application, maximum=100) if apps_value else ()
    section.close()
    names = [a.name for a in applications]
    for i, app in enumerate(applications):
        if app.name and names.count(app.name) > 1:
            section.problems.add(f"{section.path}.applications[{i}].name", f"duplicate name {app.name!r}")
    return GitOpsSettings(repo_url, branch, applications)
