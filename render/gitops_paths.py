"""Invariant 9, online: every Argo CD Application's path exists on the branch it follows.

The offline render cannot see the GitOps repository, so this is the one check that needs the
network: `python -m render.gitops_paths --stack production` clones the repository's tree (no file
contents) and looks each path up. Exit 0 when every path is a non-empty directory on the branch,
1 otherwise (one line per missing path), 2 when the configuration itself is wrong.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from components.settings.stack import ConfigError, load_settings
from render.stack import load_stack


class RepositoryError(Exception):
    """The repository or the branch cannot be read."""


def _git(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RepositoryError(result.stderr.strip() or f"git {args[0]} failed")
    return result.stdout


def missing_paths(repo_url: str, branch: str, paths: Sequence[str]) -> list[str]:
    """The paths that are not a non-empty directory on `branch` of `repo_url`."""
    with tempfile.TemporaryDirectory(prefix="gitops-") as directory:
        checkout = Path(directory) / "repo"
        _git(
            "clone",
            "--quiet",
            "--depth=1",
            "--filter=blob:none",
            "--no-checkout",
            f"--branch={branch}",
            repo_url,
            str(checkout),
        )
        missing = []
        for path in paths:
            listed = _git("ls-tree", "-r", "--name-only", "HEAD", "--", f"{path.rstrip('/')}/", cwd=checkout)
            if not listed.strip():
                missing.append(path)
        return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m render.gitops_paths", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="production")
    parser.add_argument("--stack-file", type=Path)
    args = parser.parse_args(argv)
    try:
        stack = load_stack(args.stack, stack_file=args.stack_file)
        gitops = load_settings(stack.stack, stack.config, stack.secret_keys).gitops
    except ConfigError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    if not gitops.applications:
        print("no Argo CD Application declared")
        return 0
    try:
        missing = set(missing_paths(gitops.repo_url, gitops.branch, [a.path for a in gitops.applications]))
    except RepositoryError as error:
        print(f"error: {gitops.repo_url} ({gitops.branch}): {error}", file=sys.stderr)
        return 1
    for i, app in enumerate(gitops.applications):
        if app.path in missing:
            print(f"sophia-infra:gitops.applications[{i}].path: {app.path!r} is not a directory on {gitops.branch}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
