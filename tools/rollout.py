"""Apply an upgrade in the runbook's order: the canary stack, then every other stack one
after another, stopping at the first failure.

    python -m tools.rollout                  # pulumi up: canary first, then the rest
    python -m tools.rollout --preview        # pulumi preview --diff, same order
    python -m tools.rollout --stacks search main   # only these (the canary still goes first)

Runs through Pulumi's Automation API, so it needs the Pulumi CLI; without it, it says so in
one line and exits 2.  The stack runner is injectable: tests check the order and the
stop-on-failure logic without the CLI.
"""

from __future__ import annotations

import sys

from tools import cli

if __name__ == "__main__":  # first thing: the guard (tools/cli.py) covers the imports below too
    sys.exit(cli.run_module("tools.rollout"))

import argparse
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, TextIO

import yaml

from tools import stackconfig

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
            log: TextIO = sys.stdout) -> Result:
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


def main(argv: list[str] | None = None, runner: Runner | None = None, stdout: TextIO = sys.stdout,
         stderr: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.rollout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", nargs="+", help="stacks to roll out (default: all)")
    parser.add_argument("--preview", action="store_true", help="pulumi preview --diff instead of up")
    cli.add_debug_flag(parser)
    args = parser.parse_args(argv)
    known = stackconfig.stacks(ROOT)
    stacks = args.stacks or known
    unknown = [s for s in stacks if s not in known]
    if unknown:
        stderr.write(f"error: unknown stack {unknown[0]!r} (known: {', '.join(known)})\n")
        return 2
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

