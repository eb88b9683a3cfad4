"""Which stacks a change touches (for the CI preview job).

    python -m tools.touched_stacks --base <rev>

A changed Pulumi.<stack>.yaml touches that stack; a change to the program (Pulumi.yaml,
__main__.py, components/, requirements.txt) touches every stack.  Other files (tests, docs,
tools) touch none.  Prints one stack a line.
"""

from __future__ import annotations

import sys

from tools import cli

if __name__ == "__main__":  # first thing: the guard (tools/cli.py) covers the imports below too
    sys.exit(cli.run_module("tools.touched_stacks"))

import argparse
import re
import subprocess
from pathlib import Path
from typing import Iterable

from tools import stackconfig

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ("Pulumi.yaml", "__main__.py", "requirements.txt")


def touched(changed: Iterable[str], stacks: list[str]) -> list[str]:
    out: set[str] = set()
    for path in changed:
        m = re.fullmatch(r"Pulumi\.([A-Za-z0-9_.-]+)\.yaml", path)
        if m and m.group(1) in stacks:
            out.add(m.group(1))
        elif path in PROGRAM or path.startswith("components/"):
            return list(stacks)
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.touched_stacks")
    parser.add_argument("--base", required=True)
    cli.add_debug_flag(parser)
    args = parser.parse_args(argv)
    diff = subprocess.run(["git", "diff", "--name-only", args.base, "--"], cwd=ROOT, capture_output=True, text=True)
    if diff.returncode != 0:
        print(f"error: git diff against {args.base!r} failed", file=sys.stderr)
        return 2
    for stack in touched(diff.stdout.split(), stackconfig.stacks(ROOT)):
        print(stack)
    return 0

