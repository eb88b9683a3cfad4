"""Offline preview diff: what a change does to every stack, without the Pulumi CLI.

    python -m tools.preview_diff [--base HEAD~1] [--exit-code] [--stacks STACK ...]

Renders every stack, or those of ``--stacks`` (tree, Helm values, manifests, Command scripts,
outputs: the files of `tools.preview --out`), on the base git revision and on the working tree, and prints the
unified diff, the way the platform's chart CI shows rendered diffs.  Stacks new in the
working tree show as full additions, removed ones as removals.  Secrets are placeholders on
both sides (no passphrase is used), so the diff never shows one.
"""

from __future__ import annotations

import sys

from tools import cli

if __name__ == "__main__":  # first thing: the guard (tools/cli.py) covers the imports below too
    sys.exit(cli.run_module("tools.preview_diff"))

import argparse
import difflib
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import NamedTuple, Sequence, TextIO

ROOT = Path(__file__).resolve().parent.parent


class RenderFailure(NamedTuple):
    code: int  # the preview's exit code: 2 an input problem, 1 a bug
    line: str  # its last line, without the "error: " prefix


def render_tree(tree: Path, out: Path, stacks: Sequence[str] | None = None) -> RenderFailure | None:
    """Render every stack of the checkout at ``tree``, or only ``stacks`` (those it has), into
    ``out``; the failure or None."""
    which = ["--all"]
    if stacks is not None:
        present = [s for s in stacks if (tree / f"Pulumi.{s}.yaml").is_file()]  # a new stack: none at the base
        if not present:
            out.mkdir(parents=True, exist_ok=True)
            return None
        # a revision before `tools.preview --stacks` renders them all (the same files, slower)
        if "--stacks" in (tree / "tools" / "preview.py").read_text(encoding="utf-8", errors="replace"):
            which = ["--stacks", *present]
    argv = [*which, "--no-inputs", "--out", str(out)]
    if tree.resolve() == ROOT.resolve():
        return _render_here(argv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    env["PYTHONPATH"] = str(tree)
    proc = subprocess.run(
        [sys.executable, "-m", "tools.preview", *argv],
        cwd=tree, env=env, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode == 0:
        return None
    return _failure(proc.returncode, proc.stderr or proc.stdout)


def _render_here(argv: list[str]) -> RenderFailure | None:
    """The working tree is this process's own code: `tools.preview` runs here, under its guard,
    as it would in a process of its own (no passphrase: placeholders), without a second
    interpreter and its imports."""
    import functools
    import io

    from tools import preview

    err = io.StringIO()
    passphrase = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    try:
        code = cli.run(functools.partial(preview.main, stdout=io.StringIO(), stderr=err), argv, stderr=err)
    finally:
        os.environ.update(passphrase)
    return None if code == 0 else _failure(code, err.getvalue())


def _failure(code: int, output: str) -> RenderFailure:
    text = output.strip()
    line = text.splitlines()[-1] if text else f"exit {code}"
    return RenderFailure(code, line.removeprefix("error: "))


def checkout(rev: str, dest: Path) -> None:
    """The tracked files of ``rev`` in ``dest`` (git archive: no worktree bookkeeping)."""
    data = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT, capture_output=True, check=True).stdout
    archive = dest.with_suffix(".tar")
    archive.write_bytes(data)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")


# tools/preview.py MANIFEST: the preview's list of what it wrote, not a rendered file
PREVIEW_MANIFEST = ".preview-manifest"


def files_of(base: Path) -> dict[str, str]:
    if not base.is_dir():
        return {}
    return {str(p.relative_to(base)): p.read_text(encoding="utf-8", errors="replace") for p in sorted(base.rglob("*"))
            if p.is_file() and p.name != PREVIEW_MANIFEST}


def diff_dirs(old: Path, new: Path, out: TextIO) -> int:
    """Print a unified diff of two render directories; the number of changed files."""
    a, b = files_of(old), files_of(new)
    changed = 0
    for name in sorted(set(a) | set(b)):
        before, after = a.get(name), b.get(name)
        if before == after:
            continue
        changed += 1
        if before is None:
            out.write(f"== Added in the working tree: {name}\n")
        elif after is None:
            out.write(f"== Removed in the working tree: {name}\n")
        lines = difflib.unified_diff(
            (before or "").splitlines(keepends=True), (after or "").splitlines(keepends=True),
            fromfile=f"base/{name}", tofile=f"head/{name}", n=8,
        )
        for line in lines:
            out.write(line if line.endswith("\n") else line + "\n")
    return changed


def main(argv: list[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    stdout, stderr = (sys.stdout if stdout is None else stdout), (sys.stderr if stderr is None else stderr)  # the streams of the moment, not of the import
    parser = argparse.ArgumentParser(prog="python -m tools.preview_diff", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="HEAD~1", help="git revision to compare with (default HEAD~1)")
    parser.add_argument("--exit-code", action="store_true", help="exit 1 when anything differs")
    parser.add_argument("--stacks", nargs="+", metavar="STACK", help="only these stacks (default: every stack)")
    cli.add_debug_flag(parser)
    args = parser.parse_args(argv)
    rev = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{args.base}^{{commit}}"], cwd=ROOT, capture_output=True, text=True)
    if rev.returncode != 0:
        stderr.write(f"error: no git revision {args.base!r} to compare with\n")
        return 2
    with tempfile.TemporaryDirectory(prefix="preview-diff-") as tmp:
        tmp_path = Path(tmp)
        base_tree = tmp_path / "base-src"
        base_tree.mkdir()
        checkout(args.base, base_tree)
        base_out, head_out = tmp_path / "base", tmp_path / "head"
        base_error = render_tree(base_tree, base_out, args.stacks) if (base_tree / "tools" / "preview.py").is_file() \
            else RenderFailure(2, "no offline preview at that revision")
        head_error = render_tree(ROOT, head_out, args.stacks)
        if head_error:
            stderr.write(f"error: the working tree does not render: {cli.one_line(head_error.line)}\n")
            return cli.BUG_EXIT if head_error.code == cli.BUG_EXIT else cli.INPUT_EXIT
        if base_error:
            stdout.write(f"note: base {args.base} did not render ({cli.one_line(base_error.line)}); showing the working tree as additions\n")
        changed = diff_dirs(base_out, head_out, stdout)
        stdout.write(f"== {changed} rendered file(s) differ between {args.base} and the working tree\n")
    return 1 if (args.exit_code and changed) else 0

