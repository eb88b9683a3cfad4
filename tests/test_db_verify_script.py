"""The database verifier's script text, and its shell contract run against a recording fake psql.

The fake ``psql`` (first on PATH) records its argv, its environment and the pgpass file it was
pointed at, and answers with canned output, so quoting, the stdin contract, the pgpass file and
the report logic are checked in milliseconds.  tests/integration/test_db_verify.py runs the same
script against two real PostgreSQL 15 servers.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import stat
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from components import db_verify, remote
from components.db_verify import CHECKSUM_SQL, verify_script

HOSTILE = {
    "source_host": "db'; touch pwned-host; echo '",
    "source_db": "air flow $(touch pwned-db) `touch pwned-tick` dbname=postgres host=evil\nsecond line",
    "source_user": 'us"er\\ ${HOME} *',
    "target_host": "target-host; rm -rf ~",
    "target_db": "app' OR '1'='1",
    "target_user": "-U postgres",
}
SOURCE_PASSWORD = "s3cr:et\\pa ss 'q' \"d\" $(touch pwned-pw) *"
TARGET_PASSWORD = "another:one\\"

FAKE_PSQL = textwrap.dedent("""\
    #!/usr/bin/env python3
    import json, os, sys
    record = {"argv": sys.argv[1:], "env": dict(os.environ)}
    passfile = os.environ.get("PGPASSFILE")
    if passfile:
        st = os.stat(passfile)
        record["pgpass_mode"] = st.st_mode & 0o777
        record["pgpass"] = open(passfile).read()
    with open(os.environ["FAKE_PSQL_LOG"], "a") as log:
        log.write(json.dumps(record) + "\\n")
    script = sys.argv[sys.argv.index("-f") + 1] if "-f" in sys.argv else ""
    if script.endswith("probe.sql"):
        print("PostgreSQL 15.99, UTF8")
    elif script.endswith("sizes.sql"):
        canned = os.path.join(os.environ["FAKE_PSQL_DIR"], "sizes." + os.environ["PGPORT"])
        if os.path.exists(canned):
            sys.stdout.write(open(canned).read())
    elif script.endswith("checksum.sql"):
        import time
        canned = os.path.join(os.environ["FAKE_PSQL_DIR"], "out." + os.environ["PGPORT"])
        delay = float(os.environ.get("FAKE_PSQL_LINE_DELAY", "0"))
        if os.path.exists(canned):
            for line in open(canned):
                time.sleep(delay)
                sys.stdout.write(line)
                sys.stdout.flush()  # as psql does after each \\gexec query
""")


def script_for(**overrides) -> str:
    args = dict(source_host="src", source_port=1111, source_db="airflow_search", source_user="airflow_search",
                target_host="tgt", target_port=2222, target_db="app", target_user="app")
    args.update(overrides)
    return verify_script(**args)


@pytest.fixture
def fake(tmp_path):
    """Run a script with the fake psql; returns (run, records)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "psql").write_text(FAKE_PSQL)
    (bindir / "psql").chmod(0o755)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    log = tmp_path / "psql.log"
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    class Fake:
        tmpdir = scratch
        workdir = cwd

        @staticmethod
        def canned(port: int, lines: list[str]) -> None:
            (tmp_path / f"out.{port}").write_text("".join(line + "\n" for line in lines))

        @staticmethod
        def sizes(port: int, lines: list[str]) -> None:
            (tmp_path / f"sizes.{port}").write_text("".join(line + "\n" for line in lines))

        @staticmethod
        def run(script: str, stdin: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
            env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", TMPDIR=str(scratch),
                       FAKE_PSQL_LOG=str(log), FAKE_PSQL_DIR=str(tmp_path), **(extra_env or {}))
            return subprocess.run(["bash", "-c", script, "db_verify"], input=stdin, capture_output=True,
                                  text=True, env=env, cwd=cwd, timeout=30, check=False)

        @staticmethod
        def records() -> list[dict]:
            return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return Fake


class TestScriptText:
    def test_script_starts_with_the_common_header(self):
        assert script_for().startswith(remote.header(
            "verify an imported PostgreSQL database against its source; read-only"))
        assert "set -euo pipefail\numask 077\n" in script_for()

    def test_every_name_is_assigned_shell_quoted(self):
        text = script_for(**HOSTILE)
        for key, value in HOSTILE.items():
            assert f"{key.upper()}={shlex.quote(value)}\n" in text, f"{key} must be assigned with shlex.quote"
        assert "SOURCE_PORT=1111\n" in text and "TARGET_PORT=2222\n" in text

    def test_the_function_takes_no_secret_and_the_text_holds_none(self):
        params = inspect.signature(verify_script).parameters
        assert not [p for p in params if "pass" in p or "secret" in p], "passwords must come on stdin only"
        text = script_for()
        assert "PGPASSWORD=" not in text and "PGPASSWORD" in text.split("unset ", 1)[1].split("\n", 1)[0], \
            "PGPASSWORD is only ever unset (it would beat PGPASSFILE)"
        assert 'IFS= read -r SOURCE_PASSWORD' in text and 'IFS= read -r TARGET_PASSWORD' in text

    def test_names_go_to_psql_through_the_environment_not_dash_d(self):
        # psql -d NAME parses a NAME containing "=" as a connection string
        text = script_for()
        psql_lines = [line for line in text.splitlines() if "psql -X" in line]
        assert len(psql_lines) == 1 and not [line for line in psql_lines if " -d" in line or "-h " in line]
        assert "PGDATABASE=\"$SOURCE_DB\"" in text and "PGDATABASE=\"$TARGET_DB\"" in text

    def test_row_text_is_made_stable_and_each_side_reads_one_snapshot(self):
        for setting in ("SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, YMD'", "SET IntervalStyle = 'postgres'",
                        "SET extra_float_digits = '3'", "SET bytea_output = 'hex'", "SET lc_monetary = 'C'",
                        "SET search_path = 'pg_catalog'"):
            assert setting in CHECKSUM_SQL, f"the checksum session must pin: {setting}"
        assert "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;" in CHECKSUM_SQL
        # ROW(r.*), not r: a column named r would shadow the table alias
        assert "md5(ROW(r.*)::text)" in CHECKSUM_SQL and "r::text" not in CHECKSUM_SQL
        assert "hashtextextended" not in CHECKSUM_SQL, "md5 keeps the checksum valid across major versions"
        assert CHECKSUM_SQL.count("\\gexec") == 2, "tables and sequences: one generated query list each"

    def test_heredoc_bodies_cannot_end_early(self):
        for body in (db_verify.PROBE_SQL, CHECKSUM_SQL, db_verify.COMPARE_AWK, db_verify.SIZES_SQL,
                     db_verify.PROGRESS_AWK):
            assert db_verify.HEREDOC_END not in body
        assert script_for().count(f"<<'{db_verify.HEREDOC_END}'") == 5, "heredocs must be quoted (no expansion)"

    @pytest.mark.parametrize("bad", [
        {"source_port": 0}, {"target_port": 70000}, {"source_port": "5432; id"},
        {"source_db": ""}, {"target_user": "a\0b"}, {"source_sslmode": "prefer; id"},
    ])
    def test_invalid_arguments_are_refused(self, bad):
        with pytest.raises(ValueError):
            script_for(**bad)

    def test_the_python_entry_point_prints_the_same_script(self, capsys):
        rc = db_verify.main(["--source-host", "a", "--source-db", "b", "--source-user", "c",
                             "--target-host", "d", "--target-port", "6432", "--target-db", "e",
                             "--target-user", "f", "--target-sslmode", "require", "--print-script"])
        assert rc == 0
        assert capsys.readouterr().out == verify_script("a", 5432, "b", "c", "d", 6432, "e", "f",
                                                        target_sslmode="require")


class TestShellContract:
    @pytest.mark.processes
    def test_hostile_names_reach_psql_verbatim_and_nothing_is_executed(self, fake):
        result = fake.run(script_for(**HOSTILE), f"{SOURCE_PASSWORD}\n{TARGET_PASSWORD}\n")
        assert result.returncode == 0, result.stderr
        calls = fake.records()
        sides = {c["env"]["PGPORT"]: c["env"] for c in calls}
        assert (sides["1111"]["PGHOST"], sides["1111"]["PGDATABASE"], sides["1111"]["PGUSER"]) == \
            (HOSTILE["source_host"], HOSTILE["source_db"], HOSTILE["source_user"])
        assert (sides["2222"]["PGHOST"], sides["2222"]["PGDATABASE"], sides["2222"]["PGUSER"]) == \
            (HOSTILE["target_host"], HOSTILE["target_db"], HOSTILE["target_user"])
        assert list(fake.workdir.iterdir()) == [], "a name or password was executed by the shell"
        assert "\nsecond line" not in result.stdout, "control characters in names must not break report lines"

    @pytest.mark.processes
    def test_passwords_reach_psql_only_through_0600_pgpass_files(self, fake):
        result = fake.run(script_for(), f"{SOURCE_PASSWORD}\n{TARGET_PASSWORD}\n",
                          extra_env={"PGPASSWORD": "from-the-caller", "PGSERVICE": "x"})
        assert result.returncode == 0, result.stderr
        calls = fake.records()
        assert len(calls) == 6, "probe, sizes and checksum on each side"
        # libpq's pgpass format: \ and : escaped with a backslash
        expected = {"1111": "*:*:*:*:s3cr\\:et\\\\pa ss 'q' \"d\" $(touch pwned-pw) *\n",
                    "2222": "*:*:*:*:another\\:one\\\\\n"}
        for call in calls:
            port = call["env"]["PGPORT"]
            assert call["pgpass"] == expected[port], f"pgpass for port {port}"
            assert call["pgpass_mode"] == 0o600, f"pgpass for port {port} must be 0600"
            assert Path(call["env"]["PGPASSFILE"]).parent.parent == fake.tmpdir, "pgpass lives in a mktemp -d dir"
            assert "PGPASSWORD" not in call["env"] and "PGSERVICE" not in call["env"], \
                "the caller's PGPASSWORD/PGSERVICE would override the pgpass file"
            flat = json.dumps(call["argv"]) + json.dumps(call["env"])
            for secret in (SOURCE_PASSWORD, TARGET_PASSWORD):
                assert json.dumps(secret)[1:-1] not in flat, "a password reached psql's argv or environment"
        assert list(fake.tmpdir.iterdir()) == [], "the pgpass directory must be removed on exit"

    @pytest.mark.processes
    @pytest.mark.parametrize("stdin, missing", [("", "got none"), ("only-one\n", "got one")])
    def test_fewer_than_two_stdin_lines_is_a_usage_error(self, fake, stdin, missing):
        result = fake.run(script_for(), stdin)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.strip() == ("db_verify: usage: expected two lines on stdin: the source password, "
                                         f"then the target password ({missing})")
        assert fake.records() == [], "nothing may connect without both passwords"

    @pytest.mark.processes
    def test_the_last_line_may_lack_its_newline(self, fake):
        result = fake.run(script_for(), f"{SOURCE_PASSWORD}\n{TARGET_PASSWORD}")
        assert result.returncode == 0, result.stderr
        assert {c["pgpass"] for c in fake.records() if c["env"]["PGPORT"] == "2222"} == \
            {"*:*:*:*:another\\:one\\\\\n"}

    @pytest.mark.processes
    def test_report_flags_each_kind_of_difference(self, fake):
        row = "table\t{key}\t{name}\t{rows}\t{sum}"
        seq = "sequence\t{key}\t{name}\t{last}\t{called}"
        fake.canned(1111, [
            row.format(key="k1", name="public.same", rows=3, sum="aa"),
            row.format(key="k2", name="public.rows", rows=3, sum="bb"),
            row.format(key="k3", name="public.bytes", rows=3, sum="cc"),
            row.format(key="k4", name="public.gone", rows=0, sum="dd"),
            seq.format(key="s1", name="public.called", last=1, called="t"),
        ])
        fake.canned(2222, [
            row.format(key="k1", name="public.same", rows=3, sum="aa"),
            row.format(key="k2", name="public.rows", rows=2, sum="b2"),
            row.format(key="k3", name="public.bytes", rows=3, sum="c2"),
            row.format(key="k5", name="public.new", rows=1, sum="ee"),
            seq.format(key="s1", name="public.called", last=1, called="f"),
        ])
        result = fake.run(script_for(), "a\nb\n")
        assert result.returncode == 1, result.stderr
        status = {line.split()[2]: line for line in result.stdout.splitlines() if line.split()[1:2] in (["table"], ["sequence"])}
        assert status["public.same"].startswith("OK ")
        assert status["public.rows"].startswith("DIFFERENT") and "(row count differs)" in status["public.rows"]
        assert status["public.bytes"].startswith("DIFFERENT") and "contents differ" in status["public.bytes"]
        assert status["public.gone"].startswith("MISSING")
        assert status["public.new"].startswith("EXTRA")
        assert status["public.called"].startswith("DIFFERENT") and "is_called differs" in status["public.called"]
        assert "summary: 5 tables, 1 sequences compared, 5 differences" in result.stdout
        assert result.stdout.splitlines()[:2] == [
            "source: airflow_search@src:1111/airflow_search (PostgreSQL 15.99, UTF8)",
            "target: app@tgt:2222/app (PostgreSQL 15.99, UTF8)",
        ]
        *progress, last = result.stderr.strip().splitlines()
        assert last == "db_verify: the target database differs from the source, see the report on stdout"
        assert all(re.match(r"db_verify: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", line) for line in progress), progress

    @pytest.mark.processes
    def test_empty_databases_on_both_sides_match(self, fake):
        result = fake.run(script_for(), "a\nb\n")
        assert result.returncode == 0 and "summary: 0 tables, 0 sequences compared, 0 differences" in result.stdout
        assert stat.S_ISDIR(fake.tmpdir.stat().st_mode) and list(fake.tmpdir.iterdir()) == []


class TestProgress:
    """Progress lines on stderr while the checksums run (the Job's log); the report alone on stdout."""

    TABLES = [("k1", "public.dag_run", 1000), ("k2", "public.log", 2000), ("k3", "public.xcom", 3000),
              ("k4", "public.task_instance", 4000)]

    def _canned(self, fake):
        for port in (1111, 2222):
            fake.sizes(port, [f"table\t{k}\t{size}" for k, _, size in self.TABLES] + ["sequence\ts1\t0"])
            fake.canned(port, [f"table\t{k}\t{name}\t3\taa" for k, name, _ in self.TABLES]
                        + ["sequence\ts1\tpublic.log_id_seq\t5\tt"])

    @pytest.mark.processes
    def test_progress_lines_count_relations_and_bytes_and_end_at_all_done(self, fake):
        self._canned(fake)
        result = fake.run(script_for(progress_seconds=0.3), "pw-SOURCE-1\npw-TARGET-2\n",
                          extra_env={"FAKE_PSQL_LINE_DELAY": "0.25"})
        assert result.returncode == 0, result.stderr
        lines = result.stderr.splitlines()
        stamp = r"db_verify: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "
        assert re.fullmatch(stamp + r"checksumming every table and sequence on both sides; a progress line every 0.3s",
                            lines[0]), lines[0]
        progress = [re.fullmatch(stamp + r"progress: source (\d) of 5 relations \((.*?) of 10.0 kB\), target (\d) of 5 "
                                 r"\((.*?) of 10.0 kB\) checksummed; .*/s; (.*)", line) for line in lines[1:-1]]
        assert all(progress) and len(progress) >= 3, f"a progress line every 0.3 s: {lines}"
        counts = [int(m.group(1)) for m in progress]
        assert counts == sorted(counts) and counts[0] < 5, f"counts grow as the tables are done: {counts}"
        assert progress[-1].group(1, 2, 3, 4, 5) == ("5", "10.0 kB", "5", "10.0 kB", "about 0 s left"), lines[-2]
        assert re.fullmatch(stamp + r"checksums done in \d+ s", lines[-1]), lines[-1]
        assert [line.split()[0] for line in result.stdout.splitlines()] == \
            ["source:", "target:", "OK", "OK", "OK", "OK", "OK", "summary:", "RESULT:"], "stdout holds the report only"
        assert "pw-SOURCE-1" not in result.stderr and "pw-TARGET-2" not in result.stderr, "no password in the log"

    @pytest.mark.processes
    def test_a_failing_side_stops_the_monitor_and_exits_2(self, fake, tmp_path):
        self._canned(fake)
        (tmp_path / "out.2222").unlink()
        bindir = tmp_path / "bin"
        # the target's checksum run fails after a while: the monitor must not outlive the script
        (bindir / "psql").write_text(FAKE_PSQL + textwrap.dedent("""\
            if script.endswith("checksum.sql") and os.environ["PGPORT"] == "2222":
                import time
                time.sleep(0.5)
                sys.stderr.write("psql: error: server closed the connection\\n")
                sys.exit(2)
        """))
        started = time.monotonic()
        result = fake.run(script_for(progress_seconds=0.2), "a\nb\n", extra_env={"FAKE_PSQL_LINE_DELAY": "0.2"})
        assert result.returncode == 2 and "checksum queries failed on the target database" in result.stderr
        assert time.monotonic() - started < 10, "the monitor's sleep held the pipes open"
        assert result.stdout == ""
        assert list(fake.tmpdir.iterdir()) == []


def progress_awk(tmp_path: Path, elapsed: float, source: tuple, target: tuple) -> str:
    """source/target: (sizes, keys done); sizes = {key: bytes}."""
    files = []
    for side, (sizes, done) in (("source", source), ("target", target)):
        (tmp_path / f"{side}.sizes").write_text("".join(f"table\t{k}\t{b}\n" for k, b in sizes.items()))
        (tmp_path / f"{side}.out").write_text("".join(f"table\t{k}\tpublic.t\t1\t2\n" for k in done))
        files += [str(tmp_path / f"{side}.sizes"), str(tmp_path / f"{side}.out")]
    (tmp_path / "progress.awk").write_text(db_verify.PROGRESS_AWK.lstrip())
    out = subprocess.run(["awk", "-v", f"elapsed={elapsed}", "-f", str(tmp_path / "progress.awk"), *files],
                         capture_output=True, text=True, check=True)
    return out.stdout


SIZES = {"a": 1_000_000, "b": 1_000_000, "c": 8_000_000, "d": 0}


@pytest.mark.parametrize("elapsed, source_done, target_done, want", [
    # 2 of 4 relations in 10 s: 10 s more by count; 2 MB of 10 MB: 40 s more by bytes -> the larger
    (10, "ab", "abcd", "source 2 of 4 relations (2.0 MB of 10.0 MB), target 4 of 4 (10.0 MB of 10.0 MB) "
                       "checksummed; 1.2 MB/s; about 40 s left"),
    # the slower side decides: target 1 of 4 (1 MB) after 30 s -> 270 s by bytes
    (30, "abc", "a", "source 3 of 4 relations (10.0 MB of 10.0 MB), target 1 of 4 (1.0 MB of 10.0 MB) "
                     "checksummed; 366.7 kB/s; about 4 min 30 s left"),
    (5, "", "a", "source 0 of 4 relations (0 B of 10.0 MB), target 1 of 4 (1.0 MB of 10.0 MB) "
                 "checksummed; 200.0 kB/s; time left unknown yet"),
    (7200, "abcd", "abcd", "source 4 of 4 relations (10.0 MB of 10.0 MB), target 4 of 4 (10.0 MB of 10.0 MB) "
                           "checksummed; 2.8 kB/s; about 0 s left"),
    (3600, "d", "d", "source 1 of 4 relations (0 B of 10.0 MB), target 1 of 4 (0 B of 10.0 MB) "
                     "checksummed; 0 B/s; about 3 h 00 min left"),
])
@pytest.mark.processes
def test_progress_line_format_and_time_left(tmp_path, elapsed, source_done, target_done, want):
    line = progress_awk(tmp_path, elapsed, (SIZES, source_done), (SIZES, target_done))
    assert line == "progress: " + want + "\n"


def test_progress_interval_is_checked():
    for bad in (0, -1, True, "30", 10_000):
        with pytest.raises(ValueError, match="progress_seconds"):
            script_for(progress_seconds=bad)
    assert "PROGRESS_SECONDS=30.0\n" in script_for()
