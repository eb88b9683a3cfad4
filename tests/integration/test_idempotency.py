"""Every generated script, run twice against its real service: the second run changes nothing.

A Pulumi Command re-runs its script whenever its inputs change (and an operator re-runs a
failed ``pulumi up``), so each script must converge: check, then act.  Each check here runs
the exact script text twice, as the Command does (``bash -c SCRIPT NAME``, secrets on stdin),
and compares the service's own state before and after the second run:

===========================  ==============================================================
kerberos ``keytab_script``   same principals, same kvno, byte-identical stdout (the keytab),
                             the KDC database files byte-identical
rgw ``rgw_user_script``      "unchanged", exactly one key pair, user metadata version and mtime
                             unchanged
log ``sync_script``          uploads nothing: ETag, LastModified and size of every object (of
                             a 2,000-file tree) unchanged
log ``verify_script``        read-only: the bucket listing unchanged, same report
``stop_legacy_script``       stand-in puppet/systemctl that keep state: no second
                             ``--disable``, no second ``stop``
db_verify ``verify_script``  read-only: no row inserted, updated or deleted on either database
                             (pg_stat_database), every table's checksum unchanged
Kubernetes side              no script: declarative objects (Pulumi's diff decides) and the
                             database-phase Job, which runs db_verify's script (above)
===========================  ==============================================================

The scenario functions assert and return an :class:`Outcome`; ``bench/idempotency.py`` runs the
same functions outside pytest and prints the table (:func:`markdown_table`).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest

from components import config, db_verify, kerberos, log_migration as lm, migration, remote, rgw_user
from tests.conftest import stack_config
from tests.integration import fixtures_pg as pg
from tests.integration.fixtures_kdc import Kdc, kdc, keytab_script_for, parse_keytab  # noqa: F401
from tests.integration.fixtures_logtree import make_tree
from tests.integration.fixtures_rgw import RgwCluster, S3Keys, checksum_env, rgw  # noqa: F401
from tests.test_log_migration_script import RUNNING, FakeServices
from tests.test_migration_phases import phase_overrides, run_phase
from tools import mockrun

REALM = "WIKIMEDIA"
PRINCIPALS = kerberos.principals("analytics-search", "airflow-search.discovery.wmnet", REALM)
KDC_DATABASE = ("principal", "principal.kadm5")  # the DB2 database and its policy database
TREE_FILES = 2000  # enough for 4 parallel jobs (500 files a job) and a --files-from chunk
PARALLELISM = 4
SOURCE_DB = SOURCE_USER = "airflow_search"
TARGET_DB = TARGET_USER = "app"
DAG_RUNS = 200  # 1,600 task instances: small, the point is "no write", not speed
MUTATING = {"puppet": (["agent", "--disable"],), "systemctl": (["stop"], ["start"], ["restart"], ["enable"], ["disable"])}

T = TypeVar("T")


@dataclass
class Outcome:
    """One row of the idempotency table."""

    script: str
    first: str
    second: str
    changed: str  # what the second run changed (the point: nothing)
    seconds: tuple[float, float] | None  # first run, second run


def timed(run: Callable[[], T]) -> tuple[T, float]:
    started = time.monotonic()
    result = run()
    return result, time.monotonic() - started


def markdown_table(outcomes: list[Outcome]) -> str:
    lines = ["| script | first run result | second run result | what changed on the second run | seconds per run (1st / 2nd) |",
             "|---|---|---|---|---|"]
    for o in outcomes:
        seconds = f"{o.seconds[0]:.2f} / {o.seconds[1]:.2f}" if o.seconds else "–"
        lines.append(f"| {o.script} | {o.first} | {o.second} | {o.changed} | {seconds} |")
    return "\n".join(lines)


# --- Kerberos -------------------------------------------------------------------------------

def kdc_state(kdc: Kdc) -> dict:
    listed = kdc.kadmin("listprincs")
    assert listed.returncode == 0, listed.stderr.decode()
    return {
        "principals": sorted(listed.stdout.decode().split()),
        "kvno": {p: kdc.kvno(p) for p in PRINCIPALS},
        "database": {name: hashlib.sha256((kdc.directory / name).read_bytes()).hexdigest() for name in KDC_DATABASE},
    }


def keytab_twice(kdc: Kdc) -> Outcome:
    script = keytab_script_for(kdc, PRINCIPALS)
    first, t1 = timed(lambda: kdc.run_script(script))
    assert first.returncode == 0, f"first run: {first.stderr.decode()}"
    created = first.stderr.decode().count("created: ")
    assert created == len(PRINCIPALS), f"the first run creates the principals: {first.stderr.decode()}"
    before = kdc_state(kdc)
    second, t2 = timed(lambda: kdc.run_script(script))
    assert second.returncode == 0, f"second run: {second.stderr.decode()}"
    after = kdc_state(kdc)
    assert "created: " not in second.stderr.decode(), f"nothing is created again: {second.stderr.decode()}"
    assert second.stdout == first.stdout, "the second run prints the byte-identical keytab"
    assert after["principals"] == before["principals"], "same principals in the realm"
    assert after["kvno"] == before["kvno"] == {p: 1 for p in PRINCIPALS}, "no key rotated (kvno)"
    assert after["database"] == before["database"], "the KDC database files are byte-identical"
    _, entries = parse_keytab(base64.b64decode(first.stdout, validate=True))
    return Outcome(
        "kerberos `keytab_script`",
        f"created {created} principals; keytab of {len(entries)} keys (kvno 1)",
        f"{second.stderr.decode().count('exists: ')} principals exist; byte-identical keytab",
        "nothing: same principals and kvno, KDC database files byte-identical",
        (t1, t2),
    )


# --- RGW user -------------------------------------------------------------------------------

def rgw_user_twice(rgw: RgwCluster, uid: str) -> Outcome:
    keys = S3Keys.generate()
    script = rgw_user.rgw_user_script(uid, uid)
    first, t1 = timed(lambda: rgw.run_script(script, keys.stdin()))
    first.check()
    assert first.stdout == f"user {uid}: created\n", first.stdout
    before = rgw.radosgw_admin_json("metadata", "get", f"user:{uid}")
    second, t2 = timed(lambda: rgw.run_script(script, keys.stdin()))
    second.check()
    after = rgw.radosgw_admin_json("metadata", "get", f"user:{uid}")
    assert second.stdout == f"user {uid}: unchanged\n", second.stdout
    assert second.stderr == "", second.stderr
    pairs = [(k["access_key"], k["secret_key"]) for k in after["data"]["keys"]]
    assert pairs == [(keys.access_key, keys.secret_key)], "still exactly the one supplied key pair"
    assert after == before, "the user's metadata (version, mtime, keys, caps) is unchanged"
    return Outcome(
        "rgw `rgw_user_script`", "`created`", "`unchanged`",
        f"nothing: one key pair, metadata version {after['ver']['ver']} and mtime unchanged",
        (t1, t2),
    )


# --- log migration --------------------------------------------------------------------------

def make_s3_user(rgw: RgwCluster, uid: str) -> S3Keys:
    keys = S3Keys.generate()
    # keys through CEPH_ARGS (ceph's env_to_vec), never argv, as the RGW user script does
    rgw.run("radosgw-admin", "user", "create", f"--uid={uid}", f"--display-name={uid}",
            extra_env={"CEPH_ARGS": f"--access-key={keys.access_key} --secret-key={keys.secret_key}"})
    return keys


@dataclass
class LogBucket:
    rgw: RgwCluster
    keys: S3Keys
    logs: Path
    bucket: str
    tmpdir: Path  # the scripts' TMPDIR
    files: int

    @classmethod
    def make(cls, rgw: RgwCluster, root: Path, uid: str, bucket: str, files: int = TREE_FILES) -> "LogBucket":
        keys = make_s3_user(rgw, uid)
        with checksum_env():
            rgw.s3_client(keys).create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": rgw.region})
        (root / "tmp").mkdir(parents=True)
        tree = make_tree(root / "logs", files=files, seed=7)
        return cls(rgw, keys, tree.root, bucket, root / "tmp", len(tree.files))

    def run(self, script: str):
        return self.rgw.run_script(script, self.keys.stdin(), extra_env={"TMPDIR": str(self.tmpdir)})

    def sync_script(self) -> str:
        return lm.sync_script(str(self.logs), self.bucket, self.rgw.http_endpoint, self.rgw.region, PARALLELISM)

    def verify_script(self) -> str:
        return lm.verify_script(str(self.logs), self.bucket, self.rgw.http_endpoint, self.rgw.region)

    def objects(self) -> dict[str, tuple[str, object, int]]:
        """key -> (ETag, LastModified, Size) of every object."""
        out = {}
        with checksum_env():
            for page in self.rgw.s3_client(self.keys).get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
                for obj in page.get("Contents", []):
                    out[obj["Key"]] = (obj["ETag"], obj["LastModified"], obj["Size"])
        return out


def _uploaded(summary: str) -> tuple[int, int]:
    m = re.search(r"uploaded (\d+) \((\d+) bytes\), copied (\d+) server-side", summary)
    assert m, f"no upload counts in the summary: {summary!r}"
    return int(m.group(1)) + int(m.group(3)), int(m.group(2))


def sync_twice(lb: LogBucket) -> Outcome:
    assert lb.objects() == {}, "the sync starts from an empty bucket"
    first, t1 = timed(lambda: lb.run(lb.sync_script()))
    first.check()
    before = lb.objects()
    assert len(before) == lb.files, f"{len(before)} objects for {lb.files} files"
    uploaded, size = _uploaded(first.stdout)
    assert uploaded == lb.files, first.stdout
    second, t2 = timed(lambda: lb.run(lb.sync_script()))
    second.check()
    after = lb.objects()
    assert _uploaded(second.stdout) == (0, 0), f"the second run uploads nothing: {second.stdout}"
    rewritten = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert rewritten == [], f"objects written by the second run (ETag/LastModified/size): {rewritten[:5]}"
    return Outcome(
        "log migration `sync_script`", f"uploaded {uploaded:,} files ({size / 1e6:.1f} MB)", "uploaded 0",
        f"nothing: ETag, LastModified and size of all {len(after):,} objects unchanged",
        (t1, t2),
    )


def _total_row(report: str) -> list[str]:
    row = next(line.split() for line in report.splitlines() if line.startswith("TOTAL "))
    return row


def verify_twice(lb: LogBucket) -> Outcome:
    before = lb.objects()
    assert len(before) >= lb.files, "verify runs against a synced bucket"
    first, t1 = timed(lambda: lb.run(lb.verify_script()))
    first.check()
    second, t2 = timed(lambda: lb.run(lb.verify_script()))
    second.check()
    after = lb.objects()
    assert second.stdout == first.stdout, "the same report twice"
    total = _total_row(first.stdout)
    assert total[1] == total[3] == str(lb.files) and total[-1] == "ok", f"TOTAL row: {total}"
    assert after == before, "the bucket listing (keys, ETags, LastModified, sizes) is unchanged"
    return Outcome(
        "log migration `verify_script`", f"ok: {lb.files:,} files = {int(total[3]):,} objects",
        "the same report", "nothing (read-only): bucket listing unchanged", (t1, t2),
    )


# --- stop the legacy services ---------------------------------------------------------------

def mutating_calls(calls: list[tuple[str, list[str]]]) -> list[str]:
    return [" ".join([tool, *argv]) for tool, argv in calls
            if any(argv[:len(prefix)] == prefix for prefix in MUTATING[tool])]


def stop_legacy_twice(root: Path) -> Outcome:
    svc = FakeServices(root, dict(RUNNING))
    script = lm.stop_legacy_script("search")
    first, t1 = timed(lambda: svc.run(script))
    assert first.returncode == 0, first.stderr
    made = mutating_calls([(tool, argv) for tool in ("puppet", "systemctl") for argv in svc.calls(tool)])
    assert len(made) == 4, f"the first run disables puppet and stops each of the three units: {made}"
    units, lock = svc.units(), (root / "agent_disabled.lock").read_bytes()
    svc.reset_calls()
    second, t2 = timed(lambda: svc.run(script))
    assert second.returncode == 0, second.stderr
    again = mutating_calls([(tool, argv) for tool in ("puppet", "systemctl") for argv in svc.calls(tool)])
    assert again == [], f"the second run makes no stop/disable call: {again}"
    assert svc.units() == units and (root / "agent_disabled.lock").read_bytes() == lock, "units and lock unchanged"
    assert "already disabled" in second.stdout and "none was running" in second.stdout, second.stdout
    reads = len(svc.calls())
    return Outcome(
        "log migration `stop_legacy_script` (stand-in puppet/systemctl)",
        "puppet agent disabled; 3 units stopped",
        "already disabled; none was running",
        f"nothing: 0 stop/disable calls ({reads} read-only calls)", (t1, t2),
    )


# --- database verifier ----------------------------------------------------------------------

@dataclass
class PgPair:
    """Source and target databases (Airflow-shaped, identical data) on one throwaway cluster,
    each owned by a login role with a SCRAM password; scripts connect over TCP with it."""

    cluster: pg.PgCluster
    source_password: str
    target_password: str

    def script(self) -> str:
        c = self.cluster
        return db_verify.verify_script(c.host, c.port, SOURCE_DB, SOURCE_USER, c.host, c.port, TARGET_DB, TARGET_USER)

    def stdin(self) -> str:
        return f"{self.source_password}\n{self.target_password}\n"

    def run(self, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", self.script(), "db-verify"], input=self.stdin(), capture_output=True,
                              text=True, timeout=120, env=env, check=False)

    def wait_idle(self, timeout: float = 10) -> None:
        """Until no session is left on either database: a backend flushes its statistics
        before it leaves pg_stat_activity (PostgreSQL 15 shutdown hooks), so the counters read
        afterwards include every finished session."""
        deadline = time.monotonic() + timeout
        while self.cluster.psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname IN "
                                f"({pg.sql_literal(SOURCE_DB)}, {pg.sql_literal(TARGET_DB)})").strip() != "0":
            assert time.monotonic() < deadline, "sessions on the verified databases did not end"
            time.sleep(0.02)

    def stats(self) -> dict[str, dict[str, int]]:
        self.wait_idle()
        rows = self.cluster.psql(
            "SELECT datname, tup_inserted, tup_updated, tup_deleted, tup_returned + tup_fetched FROM pg_stat_database"
            f" WHERE datname IN ({pg.sql_literal(SOURCE_DB)}, {pg.sql_literal(TARGET_DB)}) ORDER BY 1")
        out = {}
        for line in rows.splitlines():
            name, ins, upd, dele, read = line.split("|")
            out[name] = {"inserted": int(ins), "updated": int(upd), "deleted": int(dele), "read": int(read)}
        return out

    def checksums(self) -> dict[str, str]:
        """db.table -> md5 of its rows in order; db.sequence -> last_value/is_called."""
        out = {}
        for db in (SOURCE_DB, TARGET_DB):
            for table in self.cluster.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
                                           db=db).split():
                q = f"SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM public.{pg.sql_ident(table)} t"
                out[f"{db}.{table}"] = self.cluster.psql(q, db=db).strip()
            for seq in self.cluster.psql("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1",
                                         db=db).split():
                out[f"{db}.{seq}"] = self.cluster.psql(f"SELECT last_value || '/' || is_called FROM public.{pg.sql_ident(seq)}",
                                                       db=db).strip()
        return out


def start_pg_pair(dag_runs: int = DAG_RUNS) -> PgPair:
    cluster = pg.start_cluster("idempotency")
    try:
        # random per run: tests/integration/test_secret_leaks_scripts.py searches for them
        pair = PgPair(cluster, f"LEAKSENTINEL-pg-source-{secrets.token_hex(10)}",
                      f"LEAKSENTINEL-pg-target-{secrets.token_hex(10)}")
        pg.create_owned_database(cluster, db=SOURCE_DB, owner=SOURCE_USER, password=pair.source_password)
        pg.create_owned_database(cluster, db=TARGET_DB, owner=TARGET_USER, password=pair.target_password)
        for db, owner in ((SOURCE_DB, SOURCE_USER), (TARGET_DB, TARGET_USER)):
            # deterministic generation: the two databases hold the same rows (a faithful "import")
            pg.generate_airflow_data(cluster, db=db, owner=owner, dag_runs=dag_runs)
    except BaseException:
        cluster.destroy()
        raise
    return pair


def db_verify_twice(pair: PgPair) -> Outcome:
    checksums = pair.checksums()
    stats = [pair.stats()]
    runs, seconds = [], []
    for _ in range(2):
        run, t = timed(pair.run)
        assert run.returncode == 0, f"verify exited {run.returncode}: {run.stderr}\n{run.stdout}"
        assert run.stdout.splitlines()[-1] == "RESULT: MATCH", run.stdout
        runs.append(run)
        seconds.append(t)
        stats.append(pair.stats())
    for i, label in ((1, "first"), (2, "second")):
        for db in (SOURCE_DB, TARGET_DB):
            delta = {k: stats[i][db][k] - stats[i - 1][db][k] for k in stats[i][db]}
            assert delta["read"] > 0, f"the {label} run's reads on {db} show in pg_stat_database (the probe works)"
            assert (delta["inserted"], delta["updated"], delta["deleted"]) == (0, 0, 0), \
                f"the {label} run wrote to {db}: {delta}"
    assert pair.checksums() == checksums, "every table's rows and every sequence are unchanged"
    assert runs[1].stdout == runs[0].stdout, "the same report twice"
    read = stats[2][SOURCE_DB]["read"] - stats[1][SOURCE_DB]["read"]
    tables = sum(1 for line in runs[0].stdout.splitlines() if line.startswith("OK "))
    return Outcome(
        "db_verify `verify_script`", f"MATCH ({tables} tables and sequences)", "MATCH, the same report",
        f"nothing (read-only): 0 rows inserted/updated/deleted on both databases ({read:,} rows read on the source), "
        f"{len(checksums)} table/sequence checksums unchanged", (seconds[0], seconds[1]),
    )


# --- the Kubernetes side ----------------------------------------------------------------------

def _containers_with_commands(node, path: str = "") -> Iterator[str]:
    if isinstance(node, mockrun.SecretLeaf):
        node = node.value
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("command", "args") and isinstance(value, list):
                yield f"{path}.{key}"
            yield from _containers_with_commands(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _containers_with_commands(value, f"{path}[{i}]")


def kubernetes_side() -> Outcome:
    """Only the database-phase Job runs a script of ours in the cluster, and it is db_verify's.
    (The Helm chart's own hooks are the chart's; CloudNativePG runs its postInitSQL once, at
    bootstrap.)"""
    mon = run_phase("database")
    found = {reg.name: list(_containers_with_commands(reg.inputs)) for reg in mon.registered()
             if reg.type.startswith("kubernetes:") and reg.type != "kubernetes:helm.sh/v3:Release"}
    found = {name: paths for name, paths in found.items() if paths}
    assert list(found) == ["search-db-verification-job"], f"Kubernetes objects that run a command: {found}"
    overrides, secret_overrides = phase_overrides("database")
    bag, secret_keys = stack_config("search", overrides=overrides, secret_overrides=secret_overrides)
    cfg, _ = config.load(bag, is_secret=lambda k: k in secret_keys, read_secret=lambda k: "x")
    container = mon.named("search-db-verification-job").inputs["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VERIFY_SCRIPT"] == migration.verify_job_script(cfg), "the Job runs db_verify's verify_script"
    assert env["VERIFY_SCRIPT"].startswith(remote.header("verify an imported PostgreSQL database against its source; read-only"))
    return Outcome(
        "Kubernetes side", "–", "–",
        "none: no script of ours but the database-phase Job, which runs db_verify `verify_script` (row above); "
        "the rest is declarative objects, diffed by Pulumi", None,
    )


# --- the tests ------------------------------------------------------------------------------

_PG_PAIR = pytest.StashKey[PgPair]()


@pytest.fixture(scope="session")
def pg_pair(request: pytest.FixtureRequest) -> PgPair:
    """One cluster per pytest process, shared by every module that imports this fixture (as the
    RGW fixture does); stopped at the end of the session."""
    pair = request.config.stash.get(_PG_PAIR, None)
    if pair is None:
        pair = start_pg_pair()
        request.config.stash[_PG_PAIR] = pair
        request.config.add_cleanup(pair.cluster.destroy)
    return pair


@pytest.fixture(scope="module")
def log_bucket(rgw: RgwCluster, tmp_path_factory: pytest.TempPathFactory) -> LogBucket:
    return LogBucket.make(rgw, tmp_path_factory.mktemp("idempotency-logs"), "idempotency-logs",
                          "logs.airflow-idempotency.test-eqiad")


def test_keytab_script_second_run_prints_the_same_keytab_and_rotates_nothing(kdc):
    keytab_twice(kdc)


def test_rgw_user_script_second_run_is_unchanged_with_one_key_pair(rgw):
    rgw_user_twice(rgw, "idempotency-user")


def test_log_sync_second_run_uploads_nothing(log_bucket):
    sync_twice(log_bucket)


def test_log_verify_is_read_only(log_bucket):
    if len(log_bucket.objects()) < log_bucket.files:  # run alone: sync first
        log_bucket.run(log_bucket.sync_script()).check()
    verify_twice(log_bucket)


def test_stop_legacy_second_run_makes_no_stop_or_disable_call(tmp_path):
    stop_legacy_twice(tmp_path / "svc")


def test_db_verify_writes_nothing_on_either_database(pg_pair):
    db_verify_twice(pg_pair)


def test_kubernetes_side_runs_no_script_but_the_database_verifier():
    kubernetes_side()


def test_markdown_table_has_a_row_per_outcome():
    table = markdown_table([Outcome("a", "b", "c", "d", (1.0, 0.5)), Outcome("k", "–", "–", "none", None)])
    assert table.splitlines()[2] == "| a | b | c | d | 1.00 / 0.50 |" and table.endswith("| k | – | – | none | – |")
