"""Benchmark: the runbook's ``s3cmd sync -r ./*`` against the program's ``sync_script``.

    .venv/bin/python bench/log_migration.py [--runs 3] [--files 20000] [--parallelism 16] [--rclone]
        [--latency-ms 0,2] [--tools runbook,sync,rclone]

Each measurement gets a fresh single-node Ceph RGW (tests/integration/fixtures_rgw.py, memstore:
a fresh OSD, as an OSD slows down as its memstore fills) and a fresh copy of one synthetic
Airflow log tree (tests/integration/fixtures_logtree.py), then times, on the same cluster:

* first pass: empty bucket;
* no-change pass: nothing changed;
* second pass: 1% of the files appended to and 5 new files (the downtime pass).

The runbook's command runs as written (shell glob ``./*``) except that the keys come from a
0600 config file instead of ``--access_key/--secret_key`` (same work, no key in ``ps``).
Tools alternate their order from run to run; the table gives medians (min-max), files/s
and the CPU time of the client processes and of the Ceph daemons (RGW + OSD + mon), which
share the same cores here.  ``--rclone`` adds ``rclone copy`` (Debian's rclone, if installed)
as a reference row.  ``--latency-ms 0,2`` measures each tool twice: on the bare loopback (0) and
through ``bench/latency_proxy.py`` delaying every chunk 2 ms each way (a request/response costs
at least 4 ms more), as production's network does; the proxy's own CPU is reported.  Run on an otherwise idle machine: other load skews every figure.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components import log_migration as lm  # noqa: E402
from tests.integration.fixtures_logtree import LogTree, make_tree, mutate  # noqa: E402
from tests.integration.fixtures_rgw import RgwCluster, checksum_env  # noqa: E402

PASSES = ("first", "no-change", "1% changed")


@dataclass
class Timing:
    seconds: float
    client_cpu: float
    server_cpu: float
    proxy_cpu: float = 0.0


@dataclass
class Results:
    runs: dict[tuple[str, float], dict[str, list[Timing]]] = field(default_factory=dict)
    rgw_start: list[float] = field(default_factory=list)

    def add(self, tool: str, latency: float, pass_name: str, timing: Timing) -> None:
        self.runs.setdefault((tool, latency), {}).setdefault(pass_name, []).append(timing)


def pid_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def daemon_cpu(cluster: RgwCluster) -> float:
    # the fixture keeps its daemons' Popen objects
    return sum(pid_cpu(proc.pid) for proc in cluster._daemons.values())  # noqa: SLF001


class Proxy:
    """bench/latency_proxy.py in front of the RGW's http port (None: the bare loopback)."""

    def __init__(self, cluster: RgwCluster, delay_ms: float):
        self.proc = None
        self.endpoint = cluster.http_endpoint
        if delay_ms > 0:
            target = cluster.http_endpoint.split("://", 1)[1]
            self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("latency_proxy.py")),
                                          "--target", target, "--delay-ms", str(delay_ms)],
                                         stdout=subprocess.PIPE, text=True)
            self.endpoint = f"http://127.0.0.1:{self.proc.stdout.readline().strip()}"

    def cpu(self) -> float:
        return pid_cpu(self.proc.pid) if self.proc else 0.0

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cluster: RgwCluster, proxy: Proxy, argv: list[str], *, stdin: str = "", cwd: Path | None = None,
          env: dict[str, str] | None = None) -> Timing:
    cpu0, server0, proxy0, t0 = children_cpu(), daemon_cpu(cluster), proxy.cpu(), time.monotonic()
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, cwd=cwd,
                          env={**cluster.env, **(env or {})})
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return Timing(seconds, children_cpu() - cpu0, daemon_cpu(cluster) - server0, proxy.cpu() - proxy0)


def object_count(cluster: RgwCluster, bucket: str) -> int:
    client = cluster.s3_client(cluster.admin)
    count = 0
    with checksum_env():
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            count += len(page.get("Contents", []))
    return count


def runbook_config(cluster: RgwCluster, endpoint: str, path: Path) -> None:
    host = endpoint.split("://", 1)[1]
    path.write_text(
        "[default]\n"
        f"access_key = {cluster.admin.access_key}\nsecret_key = {cluster.admin.secret_key}\n"
        f"host_base = {host}\nhost_bucket = {host}\nbucket_location = {cluster.region}\n"
        "use_https = False\nsignature_v2 = False\n"
    )
    path.chmod(0o600)


def tool_commands(tool: str, cluster: RgwCluster, endpoint: str, logs: Path, bucket: str, work: Path,
                  parallelism: int):
    """(argv, stdin, cwd, env) of one pass of ``tool`` against ``endpoint`` (the RGW or the proxy)."""
    if tool == "runbook s3cmd":
        config = work / "s3cfg"
        runbook_config(cluster, endpoint, config)
        return ["bash", "-c", f's3cmd -c "$1" sync -r ./* "s3://$2/" >/dev/null', "runbook", str(config), bucket], \
            "", logs, None
    if tool.startswith("sync_script"):
        script = lm.sync_script(str(logs), bucket, endpoint, cluster.region, parallelism)
        return ["bash", "-c", script, "log-sync"], cluster.admin.stdin(), None, {"TMPDIR": str(work)}
    if tool.startswith("rclone"):
        env = {"RCLONE_CONFIG_RGW_TYPE": "s3", "RCLONE_CONFIG_RGW_PROVIDER": "Ceph",
               "RCLONE_CONFIG_RGW_ACCESS_KEY_ID": cluster.admin.access_key,
               "RCLONE_CONFIG_RGW_SECRET_ACCESS_KEY": cluster.admin.secret_key,
               "RCLONE_CONFIG_RGW_ENDPOINT": endpoint, "RCLONE_CONFIG_RGW_REGION": cluster.region,
               "RCLONE_CONFIG_RGW_FORCE_PATH_STYLE": "true"}
        # rclone 1.60 fails when AWS_CA_BUNDLE is set (ceph-rgw-s3-study.md): cluster.env has none
        return ["rclone", "copy", str(logs), f"rgw:{bucket}", "--transfers", "16", "--checkers", "16",
                "--checksum", "--fast-list", "--s3-no-head", "--s3-no-check-bucket"], "", None, env
    raise ValueError(tool)


def measure(tool: str, latency: float, base: LogTree, parallelism: int, results: Results, scratch: Path) -> None:
    work = Path(tempfile.mkdtemp(dir=scratch))
    logs = work / "logs"
    subprocess.run(["cp", "-a", str(base.root), str(logs)], check=True)
    files = len(base.files)
    (work / "ceph").mkdir()
    cluster = RgwCluster.start(work / "ceph")
    proxy = None
    try:
        proxy = Proxy(cluster, latency)
        results.rgw_start.append(cluster.start_seconds or 0.0)
        bucket = "logs.airflow-bench.test-eqiad"
        with checksum_env():
            cluster.s3_client(cluster.admin).create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": cluster.region})
        argv, stdin, cwd, env = tool_commands(tool, cluster, proxy.endpoint, logs, bucket, work, parallelism)
        for pass_name in PASSES:
            if pass_name == "1% changed":
                mutate(LogTree(root=logs, files=list(base.files)), fraction=0.01, new_files=5, seed=31)
            timing = timed(cluster, proxy, argv, stdin=stdin, cwd=cwd, env=env)
            results.add(tool, latency, pass_name, timing)
            count = object_count(cluster, bucket)
            want = files + (5 if pass_name == "1% changed" else 0)
            if count != want:
                raise SystemExit(f"{tool} {pass_name}: {count} objects in the bucket, want {want}")
            print(f"  {tool:28} {latency:g} ms {pass_name:11} {timing.seconds:7.1f} s  client CPU {timing.client_cpu:6.1f} s"
                  f"  Ceph CPU {timing.server_cpu:6.1f} s  proxy CPU {timing.proxy_cpu:5.1f} s", file=sys.stderr, flush=True)
    finally:
        if proxy:
            proxy.stop()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def fmt(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:.1f} ({min(values):.1f}–{max(values):.1f})" if len(values) > 1 else f"{med:.1f}"


def network(latency: float) -> str:
    return "bare loopback" if latency == 0 else f"+{latency:g} ms each way"


def table(results: Results, files: int) -> str:
    lines = ["| tool | network | pass | seconds, median (min–max) | files/s | speed-up vs runbook | client CPU s | "
             "Ceph CPU s | proxy CPU s |", "|---|---|---|---|---|---|---|---|---|"]
    for (tool, latency), passes in sorted(results.runs.items(), key=lambda kv: (kv[0][1], kv[0][0] != "runbook s3cmd")):
        runbook = results.runs.get(("runbook s3cmd", latency))
        for p in PASSES:
            timings = passes[p]
            med = statistics.median(t.seconds for t in timings)
            rate = f"{files / med:.0f}" if p == "first" else "–"
            speedup = f"{statistics.median(t.seconds for t in runbook[p]) / med:.2f}×" if runbook else "–"
            lines.append(f"| {tool} | {network(latency)} | {p} | {fmt([t.seconds for t in timings])} | {rate} | {speedup} | "
                         f"{statistics.median(t.client_cpu for t in timings):.1f} | "
                         f"{statistics.median(t.server_cpu for t in timings):.1f} | "
                         f"{statistics.median(t.proxy_cpu for t in timings):.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--rclone", action="store_true", help="add rclone copy as a reference row")
    parser.add_argument("--latency-ms", default="0", help="comma-separated delays each way; 0 = no proxy")
    parser.add_argument("--tools", default="runbook,sync", help="comma-separated subset of runbook,sync,rclone")
    args = parser.parse_args()
    names = {"runbook": "runbook s3cmd", "sync": f"sync_script (parallelism {args.parallelism})",
             "rclone": "rclone copy (16 transfers)"}
    wanted = args.tools.split(",") + (["rclone"] if args.rclone and "rclone" not in args.tools else [])
    tools = [names[t] for t in wanted]
    latencies = [float(x) for x in args.latency_ms.split(",")]
    if any("rclone" in t for t in tools):
        if not shutil.which("rclone"):
            raise SystemExit("--rclone: rclone is not installed (apt-get install rclone)")

    scratch = Path(tempfile.mkdtemp(prefix="bench-log-migration-"))
    try:
        base = scratch / "tree"
        t0 = time.monotonic()
        tree = make_tree(base, files=args.files, seed=0)
        print(f"tree: {len(tree.files)} files, {tree.total_bytes()} bytes in {time.monotonic() - t0:.1f} s; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
        results = Results()
        for run in range(args.runs):
            order = tools if run % 2 == 0 else list(reversed(tools))
            print(f"run {run + 1} of {args.runs}", file=sys.stderr, flush=True)
            for latency in latencies:
                for tool in order:
                    measure(tool, latency, tree, args.parallelism, results, scratch)
        print(f"\n{args.files} files ({tree.total_bytes() / 1e6:.0f} MB), {args.runs} runs, {os.cpu_count()} CPUs "
              f"shared with the RGW; RGW start {fmt(results.rgw_start)} s; load average at the end "
              f"{os.getloadavg()[0]:.2f}\n")
        print(table(results, len(tree.files)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
