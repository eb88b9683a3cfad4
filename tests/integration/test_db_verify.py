"""The database verifier, run for real: two PostgreSQL 15 clusters, ~200 MB of Airflow-shaped
data in the source, copied to the target the way CNPG's microservice import does it.

One module-scoped fixture pays for the clusters, the data and the copy.  Tests that break the
copy undo their change before returning, so every test starts from an identical pair.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from components.db_verify import verify_script
from tests.integration import fixtures_pg as pg

SOURCE_DB = SOURCE_USER = "airflow_search"
TARGET_DB = TARGET_USER = "app"
# hostile on purpose: pgpass escaping (\ and :), shell metacharacters, quotes, spaces
SOURCE_PASSWORD = "src:pa\\ss w'o\"rd $(touch /tmp/db-verify-pwned) `id` *"
TARGET_PASSWORD = "tgt-\\:" + "x" * 40 + ":secret"
# 15 000 dag runs -> 120 000 task instances, log rows and xcoms: about 200 MB on disk
DAG_RUNS = 15_000
TABLES = ("connection", "dag_run", "log", "task_instance", "variable", "xcom")
SEQUENCES = ("connection_id_seq", "dag_run_id_seq", "log_id_seq", "variable_id_seq")


@dataclass
class ImportedPair:
    source: pg.PgCluster
    target: pg.PgCluster
    timings: dict[str, float]

    def verify(self, stdin: str | None = None, *, env: dict[str, str] | None = None,
               source_db: str = SOURCE_DB, source_user: str = SOURCE_USER,
               target_db: str = TARGET_DB, target_user: str = TARGET_USER) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-c", self.script(source_db, source_user, target_db, target_user), "db_verify"],
            input=f"{SOURCE_PASSWORD}\n{TARGET_PASSWORD}\n" if stdin is None else stdin,
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )

    def script(self, source_db: str = SOURCE_DB, source_user: str = SOURCE_USER,
               target_db: str = TARGET_DB, target_user: str = TARGET_USER) -> str:
        return verify_script(self.source.host, self.source.port, source_db, source_user,
                             self.target.host, self.target.port, target_db, target_user)

    def on_source(self, sql: str) -> str:
        return self.source.psql(sql, db=SOURCE_DB)

    def on_target(self, sql: str) -> str:
        return self.target.psql(sql, db=TARGET_DB)


@pytest.fixture(scope="module")
def imported() -> Iterator[ImportedPair]:
    timings: dict[str, float] = {}
    with pg.timed("start two clusters (initdb + start)", timings), ThreadPoolExecutor(2) as pool:
        started = [pool.submit(pg.start_cluster, name) for name in ("source", "target")]
    clusters = [f.result() for f in started if f.exception() is None]
    try:
        assert len(clusters) == 2, f"a cluster did not start: {[f.exception() for f in started]}"
        source, target = clusters
        pg.create_owned_database(source, db=SOURCE_DB, owner=SOURCE_USER, password=SOURCE_PASSWORD)
        pg.create_owned_database(target, db=TARGET_DB, owner=TARGET_USER, password=TARGET_PASSWORD)
        with pg.timed(f"generate {DAG_RUNS} dag runs", timings):
            pg.generate_airflow_data(source, db=SOURCE_DB, owner=SOURCE_USER, dag_runs=DAG_RUNS)
        timings["source size MB"] = round(pg.database_size_mb(source, SOURCE_DB))
        with tempfile.TemporaryDirectory(prefix="db-verify-dump-") as work, pg.timed("pg_dump + pg_restore", timings):
            pg.dump_restore(source, SOURCE_DB, target, TARGET_DB, TARGET_USER, Path(work))
        timings["target size MB"] = round(pg.database_size_mb(target, TARGET_DB))
        pair = ImportedPair(source, target, timings)
        yield pair
    finally:
        for cluster in clusters:
            cluster.destroy()
        print(f"\ndb_verify timings: {json.dumps(timings)}", file=sys.stderr)


def report_line(stdout: str, kind: str, name: str) -> str:
    """The report line of one table or sequence (the report has exactly one per object)."""
    lines = [line for line in stdout.splitlines() if re.match(rf"^\S+\s+{kind}\s+{re.escape(name)}\s", line)]
    assert len(lines) == 1, f"expected one report line for {kind} {name}, got {lines!r} in:\n{stdout}"
    return lines[0]


def assert_only_difference(result: subprocess.CompletedProcess, kind: str, name: str, status: str,
                           also: tuple[str, ...] = ()) -> str:
    """Exit 1, ``name`` flagged ``status``, and nothing else flagged but the ``also`` objects."""
    assert result.returncode == 1, f"a difference in {kind} {name} must exit 1: {result.stderr}\n{result.stdout}"
    line = report_line(result.stdout, kind, name)
    assert line.startswith(status), f"{kind} {name} must be reported {status}: {line}"
    flagged = [line for line in result.stdout.splitlines() if re.match(r"^(DIFFERENT|MISSING|EXTRA)\s", line)]
    expected = [line] + [report_line(result.stdout, *other.split(" ", 1)) for other in also]
    assert sorted(flagged) == sorted(expected), f"only {kind} {name} {also} differ, but the report flags {flagged!r}"
    assert "RESULT: DIFFERENT" in result.stdout
    return line


class TestIdenticalCopy:
    def test_a_full_dump_restore_copy_matches_table_by_table(self, imported: ImportedPair):
        with pg.timed("verify, identical copy", imported.timings):
            result = imported.verify()
        assert result.returncode == 0, f"an identical copy must verify: {result.stderr}\n{result.stdout}"
        # stderr: the Job's progress log only, timestamped; its last progress line (printed once both
        # sides are done) counts every table and sequence of the real databases
        stamp = r"db_verify: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "
        lines = result.stderr.splitlines()
        assert lines and all(re.match(stamp, line) for line in lines), f"only progress on stderr: {result.stderr}"
        n = len(TABLES) + len(SEQUENCES)
        final = [line for line in lines if " progress: " in line][-1]
        assert re.search(rf"progress: source {n} of {n} relations \((.+) of \1\), target {n} of {n} \((.+) of \2\) "
                         r"checksummed; .*; about 0 s left$", final), final
        assert re.fullmatch(stamp + r"checksums done in \d+ s", lines[-1]), lines[-1]
        assert SOURCE_PASSWORD not in result.stderr and TARGET_PASSWORD not in result.stderr
        for table in TABLES:
            line = report_line(result.stdout, "table", f"public.{table}")
            assert line.startswith("OK"), f"table {table} must match: {line}"
        for sequence in SEQUENCES:
            line = report_line(result.stdout, "sequence", f"public.{sequence}")
            assert line.startswith("OK"), f"sequence {sequence} must match: {line}"
        assert "rows=120000" in report_line(result.stdout, "table", "public.xcom"), "the report shows row counts"
        assert "summary: 6 tables, 4 sequences compared, 0 differences" in result.stdout
        assert result.stdout.rstrip().endswith("RESULT: MATCH")


class TestDifferencesAreCaught:
    def test_b_one_deleted_row_fails_and_names_the_table(self, imported: ImportedPair):
        saved = imported.on_target("SELECT row_to_json(l) FROM log l WHERE id = 4242").strip()
        imported.on_target("DELETE FROM log WHERE id = 4242")
        try:
            with pg.timed("verify, one row deleted", imported.timings):
                result = imported.verify()
        finally:
            imported.on_target(f"INSERT INTO log SELECT * FROM json_populate_record(NULL::log, {pg.sql_literal(saved)})")
        line = assert_only_difference(result, "table", "public.log", "DIFFERENT")
        assert "rows=120000" in line and "rows=119999" in line and "row count differs" in line, line

    def test_c_one_changed_byte_in_one_xcom_value_fails(self, imported: ImportedPair):
        # XOR of one bit of one byte: applying it twice restores the value
        flip = ("UPDATE xcom SET value = set_byte(value, 20, get_byte(value, 20) # 1) "
                "WHERE dag_run_id = 777 AND task_id = 'task_4' AND map_index = -1 AND key = 'return_value'")
        assert imported.on_target(flip + " RETURNING 1").strip() == "1", "the xcom row to change must exist"
        try:
            result = imported.verify()
        finally:
            imported.on_target(flip)
        line = assert_only_difference(result, "table", "public.xcom", "DIFFERENT")
        assert "same row count, contents differ" in line, line

    def test_d_a_sequence_behind_the_source_fails(self, imported: ImportedPair):
        imported.on_target("SELECT setval('log_id_seq', 119990)")
        try:
            result = imported.verify()
        finally:
            imported.on_target("SELECT setval('log_id_seq', 120000)")
        line = assert_only_difference(result, "sequence", "public.log_id_seq", "DIFFERENT")
        assert "last_value=120000" in line and "last_value=119990" in line and "last_value differs" in line, line

    def test_e_a_table_only_on_the_target_fails_in_any_schema(self, imported: ImportedPair):
        imported.on_target(f"SET ROLE {TARGET_USER}; CREATE SCHEMA scratch; CREATE TABLE scratch.leftover (id int)")
        try:
            result = imported.verify()
        finally:
            imported.on_target("DROP SCHEMA scratch CASCADE")
        line = assert_only_difference(result, "table", "scratch.leftover", "EXTRA")
        assert "only on the target" in line, line

    def test_e_a_table_missing_on_the_target_fails_even_when_empty(self, imported: ImportedPair):
        imported.on_source(f"SET ROLE {SOURCE_USER}; "
                           "CREATE TABLE slot_pool (id serial PRIMARY KEY, pool varchar(256), slots integer)")
        try:
            result = imported.verify()
        finally:
            imported.on_source("DROP TABLE slot_pool")
        line = assert_only_difference(result, "table", "public.slot_pool", "MISSING",
                                      also=("sequence public.slot_pool_id_seq",))
        assert "not on the target" in line, line
        seq = report_line(result.stdout, "sequence", "public.slot_pool_id_seq")
        assert seq.startswith("MISSING"), f"the missing table's sequence is missing too: {seq}"


class TestErrorsAndSecrets:
    def test_a_table_the_user_cannot_read_is_an_error_not_a_match(self, imported: ImportedPair):
        # created by the superuser, not by the database owner the verifier logs in as
        imported.on_source("CREATE SCHEMA private; CREATE TABLE private.notes (id int); CREATE SEQUENCE private.s")
        try:
            result = imported.verify()
        finally:
            imported.on_source("DROP SCHEMA private CASCADE")
        assert result.returncode == 2, f"an unreadable table must not pass: {result.stderr}\n{result.stdout}"
        assert result.stdout == "", "no report when a side cannot be read completely"
        assert result.stderr.splitlines() == [
            f"db_verify: the source user cannot read private.notes, private.s "
            f"({SOURCE_USER}@127.0.0.1:{imported.source.port}/{SOURCE_DB}); grant SELECT or verify as the owner"
        ], result.stderr

    @pytest.mark.parametrize("side", ["source", "target"])
    def test_f_a_wrong_password_exits_2_with_one_clear_line_and_no_password(self, imported: ImportedPair, side):
        wrong = "Wr0ng:pa$$word-" + side
        stdin = (f"{wrong}\n{TARGET_PASSWORD}\n" if side == "source" else f"{SOURCE_PASSWORD}\n{wrong}\n")
        result = imported.verify(stdin)
        assert result.returncode == 2, f"a wrong {side} password is a connection error: {result.stderr}"
        assert result.stdout == "", f"no report when a side cannot be read: {result.stdout}"
        lines = result.stderr.splitlines()
        assert len(lines) == 1, f"one line of error: {lines!r}"
        assert lines[0].startswith(f"db_verify: cannot connect to the {side} database"), lines[0]
        assert "password authentication failed" in lines[0], lines[0]
        for secret in (wrong, SOURCE_PASSWORD, TARGET_PASSWORD):
            assert secret not in result.stderr + result.stdout, "a password leaked into the output"

    def test_f_an_unreachable_server_exits_2(self, imported: ImportedPair):
        script = verify_script("127.0.0.1", pg.free_port(), SOURCE_DB, SOURCE_USER,
                               imported.target.host, imported.target.port, TARGET_DB, TARGET_USER)
        result = subprocess.run(["bash", "-c", script, "db_verify"], input=f"{SOURCE_PASSWORD}\n{TARGET_PASSWORD}\n",
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert "cannot connect to the source database" in result.stderr and "Connection refused" in result.stderr

    def test_g_no_password_in_any_process_argv_or_environment_while_running(self, imported: ImportedPair, tmp_path):
        secrets = [SOURCE_PASSWORD.encode(), TARGET_PASSWORD.encode()]
        leaks: list[str] = []
        psql_seen = 0
        pgpass_modes: set[int] = set()
        scratch = tmp_path / "tmp"
        scratch.mkdir()
        env = dict(os.environ, TMPDIR=str(scratch))
        # output to files: a full pipe would block the script while we poll
        with open(tmp_path / "stdout", "wb") as out, open(tmp_path / "stderr", "wb") as err:
            proc = subprocess.Popen(["bash", "-c", imported.script(), "db_verify"], stdin=subprocess.PIPE,
                                    stdout=out, stderr=err, env=env)
        assert proc.stdin is not None
        proc.stdin.write(f"{SOURCE_PASSWORD}\n{TARGET_PASSWORD}\n".encode())
        proc.stdin.close()
        with pg.timed("verify while polling /proc", imported.timings):
            while proc.poll() is None:
                for entry in Path("/proc").iterdir():
                    if not entry.name.isdigit():
                        continue
                    try:
                        cmdline = (entry / "cmdline").read_bytes()
                        environ = (entry / "environ").read_bytes()
                    except OSError:  # the process ended meanwhile
                        continue
                    if Path(os.fsdecode(cmdline.split(b"\0", 1)[0])).name == "psql":
                        psql_seen += 1
                    for secret in secrets:
                        if secret in cmdline or secret in environ:
                            leaks.append(f"pid {entry.name}: {cmdline[:200]!r}")
                for pgpass in scratch.glob("db-verify.*/*.pgpass"):
                    try:
                        pgpass_modes.add(pgpass.stat().st_mode & 0o777)
                    except FileNotFoundError:
                        pass
                time.sleep(0.01)
        proc.wait()
        assert proc.returncode == 0, (tmp_path / "stderr").read_text()
        assert "RESULT: MATCH" in (tmp_path / "stdout").read_text()
        assert psql_seen > 0, "the poll never saw psql running, so it proved nothing"
        assert leaks == [], f"a password appeared in a process's argv or environment: {leaks}"
        assert pgpass_modes == {0o600}, f"the pgpass files must be 0600, saw {sorted(map(oct, pgpass_modes))}"
        assert list(scratch.iterdir()) == [], "the mktemp -d directory with the pgpass files must be removed"


    def test_an_interrupted_run_cancels_its_queries_and_removes_the_pgpass_files(self, imported: ImportedPair,
                                                                                  tmp_path):
        env = dict(os.environ, TMPDIR=str(tmp_path))
        proc = subprocess.Popen(["bash", "-c", imported.script(), "db_verify"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        assert proc.stdin is not None
        proc.stdin.write(f"{SOURCE_PASSWORD}\n{TARGET_PASSWORD}\n".encode())
        proc.stdin.close()
        activity = ("SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = 'airflow-db-verify' AND state = 'active'")
        deadline = time.monotonic() + 20
        while imported.source.psql(activity).strip() == "0":  # wait for the checksum scans
            assert proc.poll() is None and time.monotonic() < deadline, "the checksum queries never started"
            time.sleep(0.02)
        proc.terminate()  # what deleting the Job does to its process
        assert proc.wait(timeout=10) == 2, "an interrupted run is not a result"
        assert list(tmp_path.iterdir()) == [], "the pgpass directory must be removed when interrupted"
        deadline = time.monotonic() + 5
        while (imported.source.psql(activity).strip(), imported.target.psql(activity).strip()) != ("0", "0"):
            assert time.monotonic() < deadline, "the checksum queries kept running on a server after the interrupt"
            time.sleep(0.05)


class TestNames:
    def test_hostile_database_and_user_names_are_passed_verbatim(self, imported: ImportedPair):
        # "=" would turn a -d argument into a connection string; quotes and $( ) test the shell quoting
        db = "air flow'; $(touch /tmp/db-verify-pwned) dbname=postgres \"x\""
        user = "us'er $(id) \\ \"q\""
        try:
            # generated independently on both sides: this also shows the generator is deterministic
            for cluster in (imported.source, imported.target):
                pg.create_owned_database(cluster, db=db, owner=user, password=SOURCE_PASSWORD)
                pg.generate_airflow_data(cluster, db=db, owner=user, dag_runs=20)
            result = imported.verify(f"{SOURCE_PASSWORD}\n{SOURCE_PASSWORD}\n", source_db=db, source_user=user,
                                     target_db=db, target_user=user)
        finally:
            for cluster in (imported.source, imported.target):
                cluster.psql(f"DROP DATABASE IF EXISTS {pg.sql_ident(db)}; DROP ROLE IF EXISTS {pg.sql_ident(user)};")
        assert result.returncode == 0, f"{result.stderr}\n{result.stdout}"
        assert "rows=160" in report_line(result.stdout, "table", "public.xcom")
        assert not Path("/tmp/db-verify-pwned").exists(), "a name was executed by the shell"
