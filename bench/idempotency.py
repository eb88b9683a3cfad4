"""The idempotency table: each generated script run twice against its real service.

    .venv/bin/python bench/idempotency.py [--files 2000]

Starts what tests/integration/test_idempotency.py uses (a throwaway MIT KDC, a single-node Ceph
RGW, one PostgreSQL 15 cluster with a source and a target database, stand-in puppet/systemctl),
runs the same scenario functions (each asserts that the second run changed nothing) and prints
a markdown table: script | first run result | second run result | what changed on the second
run | seconds per run.  Everything lives in a temp dir and is stopped (by PID) at the end.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration import test_idempotency as idem  # noqa: E402
from tests.integration.fixtures_kdc import make_realm  # noqa: E402
from tests.integration.fixtures_rgw import RgwCluster  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=idem.TREE_FILES, help="files in the synthetic log tree")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-idempotency-"))
    started: dict[str, float] = {}
    rgw = kdc = pair = None
    try:
        t = time.monotonic()
        kdc = make_realm(scratch / "kdc")
        started["KDC"] = time.monotonic() - t
        t = time.monotonic()
        (scratch / "rgw").mkdir()
        rgw = RgwCluster.start(scratch / "rgw")
        started["Ceph RGW"] = time.monotonic() - t
        t = time.monotonic()
        pair = idem.start_pg_pair()
        started["PostgreSQL (+ 2 databases)"] = time.monotonic() - t
        logs = idem.LogBucket.make(rgw, scratch / "logs", "bench-idempotency-logs",
                                   "logs.airflow-bench-idempotency.test-eqiad", files=args.files)
        outcomes = [
            idem.keytab_twice(kdc),
            idem.rgw_user_twice(rgw, "bench-idempotency-user"),
            idem.sync_twice(logs),
            idem.verify_twice(logs),
            idem.stop_legacy_twice(scratch / "svc"),
            idem.db_verify_twice(pair),
            idem.kubernetes_side(),
        ]
    finally:
        if pair is not None:
            pair.cluster.destroy()
        if rgw is not None:
            rgw.stop()
        if kdc is not None:
            kdc.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    print(idem.markdown_table(outcomes))
    print()
    print("Service start: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in started.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
