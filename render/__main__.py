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
import time
from collections import Counter
from collections.abc import Callable
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


def _quiet(_: str) -> None:
    pass


def render(stack: StackConfig, out: Path, say: Callable[[str], None] = _quiet) -> tuple[Rendered, list[CheckResult]]:
    """Render `stack` into `out` and check it; `say` is told each phase as it starts.

    Everything is written into a new folder beside `out`, which replaces `out` only once the render
    is complete and checked: a render that stops on the way (a configuration error, a crash)
    leaves `out` as it was, never half-written. A render whose checks fail does replace it: it is
    what the configuration renders to now, and the violations name its files.
    Raises ConfigError, before anything is written, when the configuration is wrong.
    """
    say("running the program under the mock engine")
    _judge_scripts_ahead(stack)
    recording = run_program(stack)
    # Not imported at the top: a configuration error needs none of the schema libraries.
    from render.checks import CHECKS, run_checks

    rendered = build(stack.stack, recording)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        say(f"writing {len(rendered.resources)} resources' files into a new folder beside {out.name}/")
        write(rendered, staging)
        say(f"checking the render ({len(CHECKS)} checks: schemas, shellcheck, secrets, the policy pack, ...)")
        results = run_checks(Context(rendered, stack, staging))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    rendered.out_dir = out
    return rendered, results


def previous_render(out: Path) -> str:
    """What `out` holds after a render that stopped: the earlier render and when it was made, or nothing."""
    if not (out / "resources.json").is_file():
        return f"{out} holds no render"
    made = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(out.stat().st_mtime))
    return f"{out} still holds the previous render, made {made}: it does not show this configuration"


def _top_components(rendered: Rendered) -> dict[str, str]:
    """Each resource's top-level component (the child of the stack it sits under), by URN."""
    by_urn = {r.urn: r for r in rendered.registrations}
    top: dict[str, str] = {}
    for r in rendered.registrations:  # parents come before their children
        parent = by_urn.get(r.parent) if r.parent else None
        if r.type == "pulumi:pulumi:Stack" or parent is None or parent.type == "pulumi:pulumi:Stack":
            top[r.urn] = "(stack)" if r.custom or r.type == "pulumi:pulumi:Stack" else f"{r.type} {r.name}"
        else:
            top[r.urn] = top[parent.urn]
    return top


TOTAL_COUNTS = "the stack included, as `pulumi preview` counts"


def summary(rendered: Rendered, results: list[CheckResult]) -> str:
    top = _top_components(rendered)
    # The stack resource is a row of its own: the total is then the count `pulumi preview` shows.
    counts = Counter((top[r.urn], r.type) for r in rendered.registrations)
    width = max((len(c) for c, _ in counts), default=10)
    lines = [f"{'component':<{width}}  {'type':<52} {'count':>5}"]
    for (component, type_), n in sorted(counts.items()):
        lines.append(f"{component:<{width}}  {type_:<52} {n:>5}")
    lines.append(f"{'total':<{width}}  {'(' + TOTAL_COUNTS + ')':<52} {sum(counts.values()):>5}")
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

    def say(phase: str) -> None:
        # stdout, at once: the error lines on stderr stay the only thing there.
        print(f"render: {phase}", flush=True)

    try:
        say(f"reading {args.stack_file or f'Pulumi.{args.stack}.yaml'} (every ESC secret gets a stand-in value)")
        stack = load_stack(args.stack, stack_file=args.stack_file)
        rendered, results = render(stack, out, say)
    except ConfigError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        say(previous_render(out))
        return 2
    except StackFileError as error:
        print(f"error: {error}", file=sys.stderr)
        say(previous_render(out))
        return 2
    except BaseException:
        say(previous_render(out))
        raise
    print(summary(rendered, results))
    violations = [f"violation: {r.name}: {v}" for r in results for v in r.violations]
    for line in violations:
        print(line, file=sys.stderr)
    print(f"\nrendered {len(rendered.resources)} resources ({TOTAL_COUNTS}) into {out}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
