"""How long reading and validating a stack's config takes (issue 11: at most 50 ms per preview).

    .venv/bin/python bench/config_load.py [--runs 5]

Fresh interpreter per run (the preview pays the imports once): the time to import the config
layer (pydantic included), read the stack file (tools.stackconfig.load, no passphrase) and
validate it (components.config.load), for every stack.  Prints the median per stack and the
worst, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from components import config
from tools import stackconfig
t1 = time.perf_counter()
sc = stackconfig.load(sys.argv[1], None)
t2 = time.perf_counter()
config.load(sc.config, is_secret=lambda k: k in sc.secret_keys, read_secret=lambda k: "x")
t3 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "read": t2 - t1, "validate": t3 - t2}))
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tools import stackconfig

    rows = []
    for stack in stackconfig.stacks():
        samples = []
        for _ in range(args.runs):
            out = subprocess.run([sys.executable, "-c", CHILD, stack], cwd=ROOT, capture_output=True, text=True, check=True)
            samples.append(json.loads(out.stdout))
        med = {k: statistics.median(s[k] for s in samples) * 1000 for k in samples[0]}
        rows.append((stack, med))
        print(f"{stack:18s} imports {med['imports']:6.1f} ms  read {med['read']:5.1f} ms  validate {med['validate']:5.1f} ms")
    worst = max(m["read"] + m["validate"] for _, m in rows)
    print(f"read+validate, worst stack: {worst:.1f} ms; config-layer imports (median): "
          f"{statistics.median(m['imports'] for _, m in rows):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
