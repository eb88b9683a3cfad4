"""All benchmarks in one command (not tests): medians of several runs, as a markdown table.

    .venv/bin/python bench/all.py [--runs 3] [--skip-log-migration] [--skip-integration]

Measures, on this machine:
* the offline preview of each stack (whole command, as a user runs it);
* the fleet preview (every stack in one process) against one stack;
* the unit tier (./dev test --unit) and the integration suite (pytest wall time);
* the log migration against the runbook's plain `s3cmd sync -r` (bench/log_migration.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def timed(cmd: list[str], env: dict | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def median_of(runs: int, cmd: list[str]) -> tuple[float, float, float]:
    times = [timed(cmd) for _ in range(runs)]
    return statistics.median(times), min(times), max(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-log-migration", action="store_true")
    parser.add_argument("--skip-integration", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tools import stackconfig

    rows = []
    stacks = stackconfig.stacks(ROOT)
    per_stack = {}
    for stack in stacks:
        per_stack[stack] = median_of(args.runs, [PY, "-m", "tools.preview", "-s", stack, "--no-inputs"])
    one = statistics.median(m for m, _, _ in per_stack.values())
    rows.append(("preview, one stack (median over stacks)", one, min(v[1] for v in per_stack.values()), max(v[2] for v in per_stack.values())))
    fleet = median_of(args.runs, [PY, "-m", "tools.preview", "--all", "--no-inputs"])
    rows.append((f"preview, all {len(stacks)} stacks in one run", *fleet))
    # the unit tier as the README names it (./dev test --unit)
    rows.append(("unit tier (./dev test --unit)", *median_of(args.runs, [str(ROOT / "dev"), "test", "--unit", "-q", "-p", "no:cacheprovider"])))
    if not args.skip_integration:
        rows.append(("integration suite (real KDC, RGW, PostgreSQL, s3cmd)", *median_of(args.runs, [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/integration"])))
    print(f"| benchmark ({args.runs} runs) | median s | min s | max s |\n|---|---|---|---|")
    for name, med, lo, hi in rows:
        print(f"| {name} | {med:.2f} | {lo:.2f} | {hi:.2f} |")
    print(f"\nfleet/one-stack ratio: {fleet[0] / one:.2f} (target <= 3)")
    print("\n| stack | preview median s |\n|---|---|")
    for stack, (med, _, _) in per_stack.items():
        print(f"| {stack} | {med:.2f} |")
    if not args.skip_log_migration:
        print()
        sys.stdout.flush()
        subprocess.run([PY, str(ROOT / "bench" / "log_migration.py"), "--runs", str(args.runs)], cwd=ROOT, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
