"""`make render`: the whole desired state of a stack, offline, written out and validated.

Exit codes: 0 valid; 1 validation failed (one violation a line); 2 configuration error
(one `error: <key path>: <message>` line a problem, and nothing written).
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

from components.settings.stack import ConfigError, load_settings
from render.context import CheckResult, Context
from render.engine import run_program
from render.model import Rendered, build
from render.stack import PROJECT_DIR, StackConfig, StackFileError, load_stack
from render.write import write


def _judge_scripts_ahead(stack: StackConfig) -> None:
    """shellcheck the node scripts the settings call for while the program runs (checks.judge_ahead)."""
    try:
        settings = load_settings(stack.stack, stack.config, stack.secret_keys)
    except ConfigError:
        return  # the program reports it
    from components.cluster.node_config import node_scripts
    from render.checks import judge_ahead

    # The steps' scripts, as the render writes them under nodes/. The restore tool is no step: it
    # travels inside the install script, and its source file is shellchecked by the test suite.
    scripts = [
        value if value.endswith("\n") else value + "\n"
        for node in settings.cluster.nodes
        for field, value in vars(node_scripts(settings.cluster, node)).items()
        if field != "restore" and isinstance(value, str) and value.startswith("#!")
    ]
    judge_ahead(scripts)


def render(stack: StackConfig, out: Path) -> tuple[Rendered, list[CheckResult]]:
    """Render `stack` into `out` (replaced whole, never left half-written) and check it.

    Raises ConfigError, before anything is written, when the configuration is wrong.
    """
    _judge_scripts_ahead(stack)
    recording = run_program(stack)
    # Not imported at the top: a configuration error needs none of the schema libraries.
    from render.checks import run_checks

    rendered = build(stack.stack, recording)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        write(rendered, staging)
        results = run_checks(Context(rendered, stack, staging))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    rendered.out_dir = out
    return rendered, results


def _top_components(rendered: Rendered) -> dict[str, str]:
    """Each resource's top-level component (the child of the stack it sits under), by URN."""
    by_urn = {r.urn: r for r in rendered.registrations}
    top: dict[str, str] = {}
    for r in rendered.registrations:  # parents come before their children
        parent = by_urn.get(r.parent) if r.parent else None
        if parent is None or parent.type == "pulumi:pulumi:Stack":
            top[r.urn] = "(stack)" if r.custom else f"{r.type} {r.name}"
        else:
            top[r.urn] = top[parent.urn]
    return top


def summary(rendered: Rendered, results: list[CheckResult]) -> str:
    top = _top_components(rendered)
    counts = Counter((top[r.urn], r.type) for r in rendered.registrations if r.type != "pulumi:pulumi:Stack")
    width = max((len(c) for c, _ in counts), default=10)
    lines = [f"{'component':<{width}}  {'type':<52} {'count':>5}"]
    for (component, type_), n in sorted(counts.items()):
        lines.append(f"{component:<{width}}  {type_:<52} {n:>5}")
    lines.append(f"{'total':<{width}}  {'':<52} {sum(counts.values()):>5}")
    lines.append("")
    for result in results:
        verdict = "ok" if not result.violations else f"FAILED ({len(result.violations)})"
        lines.append(f"check: {result.name}: {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    # The program allocates hundreds of thousands of short-lived objects and the process ends right
    # after: the cycle collector's passes were a tenth of a render's time and freed nothing needed.
    gc.disable()
    try:
        return _main(argv)
    finally:
        gc.enable()


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m render", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="production")
    parser.add_argument("--out", type=Path, help="default: build/<stack>")
    parser.add_argument("--stack-file", type=Path, help="a Pulumi.<stack>.yaml elsewhere (tests, benchmarks)")
    args = parser.parse_args(argv)
    out: Path = args.out or PROJECT_DIR / "build" / args.stack
    try:
        stack = load_stack(args.stack, stack_file=args.stack_file)
        rendered, results = render(stack, out)
    except ConfigError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except StackFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary(rendered, results))
    violations = [f"violation: {r.name}: {v}" for r in results for v in r.violations]
    for line in violations:
        print(line, file=sys.stderr)
    print(f"\nrendered {len(rendered.resources)} resources into {out}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
