"""The pull-request comment: `pulumi preview`, with the plan's components that it changes marked.

    python -m render.preview_comment --stack <org>/production --render build/production --out comment.md
    python -m render.preview_comment --events events.jsonl --render build/production --out comment.md

The first runs the real preview through the Automation API (the CLI on PATH, the policy pack, the
diff), streaming its output as the CLI prints it, and collects the engine's events on the way: one
preview gives both the text people read and the steps the diagram is marked from. The second
replays engine events recorded as JSON lines (the format the CLI's event log and the Automation API
use), for tests and for looking at a recorded preview again.

A step whose operation is anything but `same`, `read` or `refresh` changes its resource; the
components drawn in build/<stack>/plan.md (render/plan.py) that hold such a resource are marked.
A component that the preview deletes is not in the render of the pull request, so it is listed
below the diagram instead. The exit status is the preview's: a failed preview (a policy violation,
a program error) still writes its comment, so the reviewer sees why.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pulumi.automation import EngineEvent

from render.plan import STACK_TYPE, Node, UnitKey, mermaid, nodes_of, plan, short, unit_of
from render.stack import PROJECT_DIR

UNCHANGED = frozenset({"same", "read", "refresh"})
REPLACEMENT = frozenset({"replace", "create-replacement", "delete-replaced", "discard-replaced"})
COMMENT_LIMIT = 65_536
"""GitHub refuses an issue or pull-request comment body longer than this many characters."""


@dataclass(frozen=True)
class Step:
    op: str
    urn: str
    type: str
    parent: str | None


@dataclass
class Preview:
    """What the comment is made of: the steps, the policy violations, the summary and the output."""

    steps: list[Step] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    changes: dict[str, int] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)
    errors: int = 0
    """Error diagnostics and mandatory policy violations: either fails the preview."""

    def take(self, event: EngineEvent) -> None:
        pre = event.resource_pre_event
        if pre is not None:
            meta = pre.metadata
            state = meta.new or meta.old
            self.steps.append(Step(str(meta.op.value), meta.urn, meta.type, (state.parent or None) if state else None))
        policy = event.policy_event
        if policy is not None:
            where = f" ({policy.resource_urn.rsplit('::', 1)[-1]})" if policy.resource_urn else ""
            self.violations.append(f"{policy.enforcement_level}: {policy.policy_name}{where}: {policy.message.strip()}")
            self.errors += policy.enforcement_level == "mandatory"
        diagnostic = event.diagnostic_event
        if diagnostic is not None and diagnostic.severity == "error":
            self.errors += 1
        if event.summary_event is not None:
            self.changes = {str(k): int(v) for k, v in event.summary_event.resource_changes.items()}


def name_of(urn: str) -> str:
    """A resource's name from its URN (`urn:pulumi:<stack>::<project>::<type chain>::<name>`)."""
    return urn.split("::", 3)[3] if urn.count("::") >= 3 else urn


def changed_units(steps: Iterable[Step]) -> dict[UnitKey, Counter[str]]:
    """Each unit whose resources the preview changes, with how many of them per operation."""
    steps = list(steps)
    by_urn = {s.urn: Node(s.urn, s.type, name_of(s.urn), s.parent) for s in steps}
    ops: dict[str, set[str]] = {}
    for s in steps:
        if s.op not in UNCHANGED and s.type != STACK_TYPE:
            ops.setdefault(s.urn, set()).add(s.op)
    result: dict[UnitKey, Counter[str]] = {}
    for urn, done in sorted(ops.items()):
        key = unit_of(urn, by_urn)
        if key is None:
            continue
        # A replacement is three steps of one resource (replace, create-, delete-replaced): one change.
        op = "replace" if done & REPLACEMENT else "/".join(sorted(done))
        result.setdefault(key, Counter())[op] += 1
    return result


def _unit_name(key: UnitKey) -> str:
    kind, type_, name = key
    return f"{short(type_)} {name}" + (" (its own objects)" if kind == "own" else "")


def comment(stack: str, resources: Sequence[dict[str, object]], preview: Preview, succeeded: bool) -> str:
    """The comment's Markdown: verdict, summary, the marked diagram, what changes, violations, output."""
    the_plan = plan(nodes_of(resources))
    changed = changed_units(preview.steps)
    counts = ", ".join(f"{n} {op}" for op, n in sorted(preview.changes.items()) if n) or "no steps reported"
    lines = [
        f"## `pulumi preview` of `{stack}`: {'succeeded' if succeeded else 'FAILED'}",
        "",
        f"Resources: {counts}.",
        "",
        "The components of this pull request's render (`build/<stack>/plan.md`); those the preview changes are"
        " highlighted.",
        "",
        "```mermaid",
        mermaid(the_plan, changed).rstrip("\n"),
        "```",
        "",
    ]
    if changed:
        lines += ["| component | what changes |", "| --- | --- |"]
        for key, ops in sorted(changed.items()):
            shown = ", ".join(f"{n} to {op}" for op, n in sorted(ops.items()))
            missing = "" if key in the_plan.units else " (not in this render: removed)"
            lines.append(f"| {_unit_name(key)}{missing} | {shown} |")
        lines.append("")
    else:
        lines += ["No component changes.", ""]
    if preview.violations:
        lines += ["### Policy violations", "", *(f"- {v}" for v in preview.violations), ""]
    output = "\n".join(preview.output).rstrip("\n")
    head = "\n".join(lines)
    fence = "````"  # the output may hold ``` itself
    frame = f"<details><summary>The preview's output</summary>\n\n{fence}text\n{{}}\n{fence}\n\n</details>\n"
    room = COMMENT_LIMIT - len(head) - len(frame) - 200
    if len(output) > room:
        cut = len(output) - room
        output = f"[the first {cut} characters are left out: the whole output is in the job's log]\n" + output[cut:]
    return head + "\n" + frame.format(output)


def run_preview(stack_name: str, policy_pack: Path, preview: Preview) -> bool:
    """`pulumi preview --diff --policy-pack <pack>` of the project through the Automation API."""
    from pulumi.automation import select_stack
    from pulumi.automation.errors import CommandError

    def line(text: str) -> None:
        print(text, flush=True)
        preview.output.append(text)

    def error_line(text: str) -> None:
        print(text, file=sys.stderr, flush=True)
        preview.output.append(text)

    stack = select_stack(stack_name, work_dir=str(PROJECT_DIR))
    try:
        stack.preview(
            diff=True,
            policy_packs=[str(policy_pack)],
            suppress_outputs=True,
            on_output=line,
            on_error=error_line,
            on_event=preview.take,
        )
    except CommandError:
        return False  # what went wrong is in the output already, from the CLI's stdout and stderr
    return True


def replay(events: Path, preview: Preview) -> None:
    for text in events.read_text().splitlines():
        if text.strip():
            preview.take(EngineEvent.from_json(json.loads(text)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m render.preview_comment", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stack", help="run the preview of this stack (<org>/<stack>)")
    source.add_argument("--events", type=Path, help="replay engine events recorded as JSON lines instead")
    parser.add_argument("--render", type=Path, required=True, help="the render of the pull request: build/<stack>")
    parser.add_argument("--out", type=Path, required=True, help="where the comment's Markdown goes")
    parser.add_argument("--policy-pack", type=Path, default=PROJECT_DIR / "policy")
    args = parser.parse_args(argv)
    document = json.loads((args.render / "resources.json").read_text())
    preview = Preview()
    if args.events:
        replay(args.events, preview)
        succeeded = preview.errors == 0
    else:
        succeeded = run_preview(args.stack, args.policy_pack, preview) and preview.errors == 0
    args.out.write_text(comment(args.stack or str(document["stack"]), document["resources"], preview, succeeded))
    return 0 if succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
