"""Benchmark: offline preview time per stack (wall clock of the whole command, as a user runs it).

    .venv/bin/python bench/preview.py [--runs 5] [--passphrase]

Not a test: prints a markdown table of medians.
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
sys.path.insert(0, str(ROOT))

from tools import stackconfig  # noqa: E402


def time_preview(stack: str, passphrase: bool) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    if passphrase:
        env["PULUMI_CONFIG_PASSPHRASE"] = "examples-only-not-a-secret"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tools.preview", "-s", stack, "--no-inputs"], cwd=ROOT, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--passphrase", action="store_true", help="decrypt secrets (PBKDF2 1e6 rounds)")
    args = parser.parse_args()
    print(f"| stack | median s ({args.runs} runs) | min s | max s |\n|---|---|---|---|")
    for stack in stackconfig.stacks(ROOT):
        times = [time_preview(stack, args.passphrase) for _ in range(args.runs)]
        print(f"| {stack} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
