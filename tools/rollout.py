"""Apply an upgrade in the runbook's order: the canary stack, then every other stack one
after another, stopping at the first failure.

    python -m tools.rollout                  # pulumi up: canary first, then the rest
    python -m tools.rollout --preview        # pulumi preview --diff, same order
    python -m tools.rollout --stacks search main   # only these (the canary still goes first)
    python -m tools.rollout --dry-run [--base REV] # no CLI: the order and each stack's offline diff

Runs through Pulumi's Automation API, so it needs the Pulumi CLI; without it, it says so in
one line and exits 2.  The stack runner is injectable: tests check the order and the
stop-on-failure logic without the CLI.

``--dry-run`` needs no CLI and changes nothing: it prints the order (canary first) and, per
stack, the offline diff of what the rollout would apply: the stack's offline render
(tools/preview.py, secrets as placeholders) at ``--base`` (default ``HEAD~1``: the commit the
fleet runs before this change is rolled out) against the working tree, with
tools/preview_diff.py's renderer and diff.  Offline there is no state to compare with (it
lives in the S3 backend), so the previous commit stands for what runs; name the last deployed
revision with ``--base`` when several commits wait.  ``pulumi preview --diff`` (``--preview``)
is the diff against the real state.
"""

from __future__ import annotations

import sys

from tools import cli

if __name__ == "__main__":  # first thing: the guard (tools/cli.py) covers the imports below too
    sys.exit(cli.run_module("tools.rollout"))

import argparse
import io
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, TextIO

import yaml

from tools import preview_diff, stackconfig

ROOT = Path(__file__).resolve().parent.parent

# runner(stack, preview) -> None; raises on failure
Runner = Callable[[str, bool], None]


class RolloutError(Exception):
    pass


@dataclass
class Result:
    done: list[str] = field(default_factory=list)
    failed: str | None = None
    error: str | None = None
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed is None


def canary_stack(root: Path = ROOT) -> str:
    project = yaml.safe_load((root / "Pulumi.yaml").read_text(encoding="utf-8"))
    config = project.get("config") if isinstance(project, dict) else None
    spec = config.get("canaryStack") if isinstance(config, dict) else None
    value = spec.get("value", spec.get("default")) if isinstance(spec, dict) else spec
    if not isinstance(value, str) or not value:
        raise RolloutError("Pulumi.yaml names no canary stack (config: canaryStack); the rollout starts with it")
    return value


def rollout_order(stacks: Sequence[str], canary: str) -> list[str]:
    """The canary first (always, even if not asked for: it must take the version first),
    then the others in a stable order."""
    rest = sorted(s for s in dict.fromkeys(stacks) if s != canary)
    return [canary, *rest]


def rollout(stacks: Sequence[str], canary: str, runner: Runner, preview: bool = False,
            log: TextIO | None = None) -> Result:
    log = sys.stdout if log is None else log
    result = Result()
    order = rollout_order(stacks, canary)
    for i, stack in enumerate(order):
        log.write(f"==> {'preview' if preview else 'up'} {stack} ({i + 1}/{len(order)})\n")
        try:
            runner(stack, preview)
        except Exception as exc:  # noqa: BLE001 - any failure stops the rollout
            result.failed, result.error = stack, str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            result.skipped = order[i + 1:]
            log.write(f"!!! {stack} failed: {result.error}\n")
            if result.skipped:
                log.write(f"    not attempted: {', '.join(result.skipped)}\n")
            return result
        result.done.append(stack)
    return result


def automation_runner(root: Path = ROOT) -> Runner:
    """pulumi up/preview through the Automation API (needs the pulumi CLI on PATH)."""
    if shutil.which("pulumi") is None:
        raise RolloutError("the Pulumi CLI is not installed here; rollout runs `pulumi up` per stack through the Automation API (use ./dev preview offline)")
    from pulumi import automation as auto

    def run(stack: str, preview: bool) -> None:
        st = auto.select_stack(stack_name=stack, work_dir=str(root))
        if preview:
            st.preview(diff=True, on_output=print)
        else:
            st.up(on_output=print)

    return run


# render_tree(tree, out, stacks) -> failure or None: those stacks of the checkout at ``tree`` into out/<stack>/
TreeRenderer = Callable[[Path, Path, Sequence[str]], "preview_diff.RenderFailure | None"]


def dry_run(stacks: Sequence[str], canary: str, base: str, stdout: TextIO, root: Path = ROOT,
            render_tree: TreeRenderer | None = None) -> int:
    """Print the rollout order and each stack's offline diff (``base`` render against the
    working tree); nothing is applied.  Raises RolloutError for an unknown revision or a
    working tree that does not render."""
    render_tree = render_tree or preview_diff.render_tree
    rev = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"], cwd=root,
                         capture_output=True, text=True)
    if rev.returncode != 0:
        raise RolloutError(f"no git revision {base!r} to compare with (--base)")
    order = rollout_order(stacks, canary)
    with tempfile.TemporaryDirectory(prefix="rollout-dry-run-") as tmp:
        tmp_path = Path(tmp)
        base_tree, base_out, head_out = tmp_path / "base-src", tmp_path / "base", tmp_path / "head"
        base_tree.mkdir()
        preview_diff.checkout(base, base_tree)
        head_error = render_tree(root, head_out, order)  # only the stacks of the rollout
        if head_error:
            raise RolloutError(f"the working tree does not render: {cli.one_line(head_error.line)}")
        base_error = render_tree(base_tree, base_out, order) if (base_tree / "tools" / "preview.py").is_file() \
            else preview_diff.RenderFailure(2, "no offline preview at that revision")
        stdout.write(f"rollout order ({len(order)} stacks, canary first): {', '.join(order)}\n")
        stdout.write(f"offline diff: each stack's render at {base} against the working tree "
                     "(secrets as placeholders; `pulumi preview --diff` compares with the real state)\n")
        if base_error:
            stdout.write(f"note: base {base} did not render ({cli.one_line(base_error.line)}); "
                         "showing the working tree as additions\n")
        changed_stacks = []
        for i, stack in enumerate(order):
            diff = io.StringIO()
            changed = preview_diff.diff_dirs(base_out / stack, head_out / stack, diff)
            canary_mark = ", canary" if stack == canary else ""
            summary = f"{changed} rendered file(s) differ" if changed else "no change"
            stdout.write(f"==> dry run {stack} ({i + 1}/{len(order)}{canary_mark}): {summary}\n")
            stdout.write(diff.getvalue())
            if changed:
                changed_stacks.append(stack)
    stdout.write(f"dry run: {len(changed_stacks)} of {len(order)} stack(s) change"
                 f"{': ' + ', '.join(changed_stacks) if changed_stacks else ''}; nothing was applied\n")
    return 0


def main(argv: list[str] | None = None, runner: Runner | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None, render_tree: TreeRenderer | None = None) -> int:
    stdout, stderr = (sys.stdout if stdout is None else stdout), (sys.stderr if stderr is None else stderr)  # the streams of the moment, not of the import
    parser = argparse.ArgumentParser(prog="python -m tools.rollout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", nargs="+", help="stacks to roll out (default: all)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--preview", action="store_true", help="pulumi preview --diff instead of up")
    mode.add_argument("--dry-run", action="store_true",
                      help="no Pulumi CLI, nothing applied: the order and each stack's offline diff against --base")
    parser.add_argument("--base", default="HEAD~1",
                        help="with --dry-run: the git revision the fleet runs now (default HEAD~1)")
    cli.add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.base != "HEAD~1" and not args.dry_run:
        raise cli.UsageError("python -m tools.rollout: --base goes with --dry-run")
    known = stackconfig.stacks(ROOT)
    stacks = args.stacks or known
    unknown = [s for s in stacks if s not in known]
    if unknown:
        stderr.write(f"error: unknown stack {unknown[0]!r} (known: {', '.join(known)})\n")
        return 2
    if args.dry_run:
        return dry_run(stacks, canary_stack(ROOT), args.base, stdout, ROOT, render_tree)
    try:
        run = runner or automation_runner()
    except RolloutError as exc:
        stderr.write(f"error: {exc}\n")
        return 2
    result = rollout(stacks, canary_stack(ROOT), run, args.preview, stdout)
    if result.ok:
        stdout.write(f"rolled out: {', '.join(result.done)}\n")
        return 0
    return 1

