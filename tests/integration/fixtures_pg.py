"""Throwaway PostgreSQL 15 clusters and a deterministic Airflow-shaped data set.

A cluster lives entirely in its own ``mkdtemp`` directory (data, socket, log), listens on
127.0.0.1 only, on a free port, and is stopped by the PID in its own ``postmaster.pid``.
Local (socket) connections are ``trust`` so the fixture can administer it as ``postgres``;
TCP connections need a SCRAM password, so scripts under test that connect to 127.0.0.1
really have to get their password from the PGPASSFILE they write.

``initdb`` refuses to run as root (kerberos-postgres-study.md §5), hence ``runuser -u postgres``.
fsync, full_page_writes and synchronous_commit are off and wal_level is minimal: these clusters
hold test data only, and it makes generation and restore about 1.5x faster.

Secrets (role passwords) are sent to psql on stdin, never on a command line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

PG_BIN = Path("/usr/lib/postgresql/15/bin")

SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "shared_buffers": "'256MB'",
    "max_wal_size": "'4GB'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # with wal_level=minimal, COPY into a table created in the same transaction skips WAL
    "wal_level": "minimal",
    "max_wal_senders": "0",
    # no background ANALYZE competing for the 2 cores while a test measures
    "autovacuum": "off",
    "log_min_messages": "warning",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgCluster:
    """One running cluster; ``psql``/``run`` act as the superuser over the private socket."""

    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sockdir(self) -> Path:
        return self.root / "sock"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def client_env(self, user: str = "postgres", db: str = "postgres") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGHOST=str(self.sockdir), PGPORT=str(self.port), PGUSER=user, PGDATABASE=db,
                   PGCLIENTENCODING="UTF8")
        return env

    def psql(self, sql: str, db: str = "postgres", user: str = "postgres") -> str:
        """Run SQL (given on stdin) as ``user``; return unaligned, tuples-only stdout."""
        proc = subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
            input=sql, capture_output=True, text=True, env=self.client_env(user, db), check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"psql on port {self.port} db {db!r} failed: {proc.stderr.strip()}")
        return proc.stdout

    def run(self, argv: list[str], db: str = "postgres", user: str = "postgres") -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.client_env(user, db), check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} on port {self.port} failed: {proc.stderr.strip()}")
        return proc

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None

    def stop(self) -> None:
        pid = self.postmaster_pid()
        if pid is None:
            return
        stopped = subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.data),
             "-m", "fast", "-w", "-t", "20", "stop"],
            capture_output=True, check=False,
        )
        if stopped.returncode != 0:  # pg_ctl signals the PID from postmaster.pid; do it ourselves
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(name: str) -> PgCluster:
    """initdb + start a cluster in a fresh temp dir (owned by postgres, as initdb requires)."""
    root = Path(tempfile.mkdtemp(prefix=f"pgtest-{name}-"))
    shutil.chown(root, "postgres", "postgres")
    cluster = PgCluster(root=root, port=free_port())
    cluster.sockdir.mkdir()
    shutil.chown(cluster.sockdir, "postgres", "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        as_postgres + [str(PG_BIN / "initdb"), "-D", str(cluster.data), "-U", "postgres", "-N",
                       "-E", "UTF8", "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256"],
        capture_output=True, check=True,
    )
    settings = dict(SERVER_SETTINGS, port=str(cluster.port), unix_socket_directories=f"'{cluster.sockdir}'")
    with open(cluster.data / "postgresql.auto.conf", "a") as conf:
        conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
    started = subprocess.run(
        as_postgres + [str(PG_BIN / "pg_ctl"), "-D", str(cluster.data), "-l", str(root / "server.log"),
                       "-w", "-t", "30", "start"],
        capture_output=True, text=True, check=False,
    )
    if started.returncode != 0:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL {name} did not start: {started.stderr}\n{log}")
    return cluster


@contextlib.contextmanager
def running_cluster(name: str) -> Iterator[PgCluster]:
    cluster = start_cluster(name)
    try:
        yield cluster
    finally:
        cluster.destroy()


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def conninfo_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def create_owned_database(cluster: PgCluster, *, db: str, owner: str, password: str) -> None:
    """A login role with a SCRAM password and a database it owns (the password goes on stdin)."""
    cluster.psql(f"CREATE ROLE {sql_ident(owner)} LOGIN PASSWORD {sql_literal(password)};")
    cluster.psql(f"CREATE DATABASE {sql_ident(db)} OWNER {sql_ident(owner)};")
    # as on a fresh PG15 database, only the owner may create in public; make it the owner's
    cluster.psql(f"ALTER SCHEMA public OWNER TO {sql_ident(owner)};", db=db)


# --- Airflow-shaped data -------------------------------------------------------------------
# Columns follow Airflow 2.x's metadata tables (dag_run, task_instance, log, xcom, connection,
# variable) with their primary/foreign keys, serial sequences and the types whose text form
# depends on session settings: timestamptz (TimeZone, DateStyle), float8 (extra_float_digits),
# bytea (bytea_output), json, booleans and NULLs.  Every value is a function of generate_series
# counters only (no random(), no now()), so two generations are identical row for row.

AIRFLOW_SCHEMA = """
CREATE TABLE dag_run (
    id serial PRIMARY KEY,
    dag_id varchar(250) NOT NULL,
    queued_at timestamptz,
    execution_date timestamptz NOT NULL,
    start_date timestamptz,
    end_date timestamptz,
    state varchar(50),
    run_id varchar(250) NOT NULL,
    creating_job_id integer,
    external_trigger boolean,
    run_type varchar(50) NOT NULL,
    conf bytea,
    data_interval_start timestamptz,
    data_interval_end timestamptz,
    last_scheduling_decision timestamptz,
    dag_hash varchar(32),
    log_template_id integer,
    updated_at timestamptz,
    clear_number integer NOT NULL DEFAULT 0,
    CONSTRAINT dag_run_dag_id_run_id_key UNIQUE (dag_id, run_id),
    CONSTRAINT dag_run_dag_id_execution_date_key UNIQUE (dag_id, execution_date)
);
CREATE TABLE task_instance (
    task_id varchar(250) NOT NULL,
    dag_id varchar(250) NOT NULL,
    run_id varchar(250) NOT NULL,
    map_index integer NOT NULL DEFAULT -1,
    start_date timestamptz,
    end_date timestamptz,
    duration double precision,
    state varchar(20),
    try_number integer,
    max_tries integer DEFAULT -1,
    hostname varchar(1000),
    unixname varchar(1000),
    job_id integer,
    pool varchar(256) NOT NULL,
    pool_slots integer NOT NULL,
    queue varchar(256),
    priority_weight integer,
    operator varchar(1000),
    custom_operator_name varchar(1000),
    queued_dttm timestamptz,
    queued_by_job_id integer,
    pid integer,
    executor_config bytea,
    updated_at timestamptz,
    rendered_map_index varchar(250),
    external_executor_id varchar(250),
    trigger_id integer,
    trigger_timeout timestamp,
    next_method varchar(1000),
    next_kwargs json,
    task_display_name varchar(2000),
    CONSTRAINT task_instance_pkey PRIMARY KEY (dag_id, task_id, run_id, map_index),
    CONSTRAINT task_instance_dag_run_fkey FOREIGN KEY (dag_id, run_id)
        REFERENCES dag_run (dag_id, run_id) ON DELETE CASCADE
);
CREATE TABLE log (
    id serial PRIMARY KEY,
    dttm timestamptz,
    dag_id varchar(250),
    task_id varchar(250),
    map_index integer,
    event varchar(60),
    execution_date timestamptz,
    run_id varchar(250),
    owner varchar(500),
    owner_display_name varchar(500),
    extra text,
    try_number integer
);
CREATE TABLE xcom (
    dag_run_id integer NOT NULL,
    task_id varchar(250) NOT NULL,
    map_index integer NOT NULL DEFAULT -1,
    key varchar(512) NOT NULL,
    dag_id varchar(250) NOT NULL,
    run_id varchar(250) NOT NULL,
    value bytea,
    "timestamp" timestamptz NOT NULL,
    CONSTRAINT xcom_pkey PRIMARY KEY (dag_run_id, task_id, map_index, key),
    CONSTRAINT xcom_task_instance_fkey FOREIGN KEY (dag_id, task_id, run_id, map_index)
        REFERENCES task_instance (dag_id, task_id, run_id, map_index) ON DELETE CASCADE
);
CREATE TABLE connection (
    id serial PRIMARY KEY,
    conn_id varchar(250) NOT NULL UNIQUE,
    conn_type varchar(500) NOT NULL,
    description text,
    host varchar(500),
    schema varchar(500),
    login text,
    password text,
    port integer,
    is_encrypted boolean,
    is_extra_encrypted boolean,
    extra text
);
CREATE TABLE variable (
    id serial PRIMARY KEY,
    key varchar(250) UNIQUE,
    val text,
    description text,
    is_encrypted boolean
);
CREATE INDEX idx_dag_run_dag_id ON dag_run (dag_id);
CREATE INDEX idx_dag_run_running_dags ON dag_run (state, dag_id);
CREATE INDEX ti_dag_state ON task_instance (dag_id, state);
CREATE INDEX ti_state ON task_instance (state);
CREATE INDEX ti_job_id ON task_instance (job_id);
CREATE INDEX idx_log_dag ON log (dag_id);
CREATE INDEX idx_log_dttm ON log (dttm);
CREATE INDEX idx_xcom_key ON xcom (key);
CREATE INDEX idx_xcom_task_instance ON xcom (dag_id, task_id, run_id, map_index);
"""

TASKS_PER_RUN = 8


def airflow_data_sql(dag_runs: int) -> str:
    """SQL that fills the Airflow tables: ``dag_runs`` runs, 8 task instances, 1 log and 1 xcom each.

    About 9 kB per dag run including indexes: ``dag_runs=22_000`` gives ~200 MB.
    """
    n = int(dag_runs)
    return f"""
SET TimeZone = 'UTC';
BEGIN;
INSERT INTO dag_run (id, dag_id, queued_at, execution_date, start_date, end_date, state, run_id,
                     creating_job_id, external_trigger, run_type, conf, data_interval_start,
                     data_interval_end, last_scheduling_decision, dag_hash, log_template_id, updated_at,
                     clear_number)
SELECT i,
       'search_dag_' || (i % 40),
       d - interval '3 seconds',
       d,
       d + interval '1.5 seconds',
       CASE WHEN i % 97 = 0 THEN NULL ELSE d + (i % 3600) * interval '1 second' END,
       CASE WHEN i % 97 = 0 THEN 'running' WHEN i % 13 = 0 THEN 'failed' ELSE 'success' END,
       'scheduled__' || to_char(d, 'YYYY-MM-DD"T"HH24:MI:SS') || '+00:00',
       i * 3,
       i % 17 = 0,
       CASE WHEN i % 17 = 0 THEN 'manual' ELSE 'scheduled' END,
       CASE WHEN i % 5 = 0 THEN '\\x80057d942e'::bytea ELSE decode('80057d94288c04776964659447' || lpad(to_hex(i), 8, '0') || '752e', 'hex') END,
       d - interval '1 hour',
       d,
       d + interval '2 seconds',
       md5('dag' || i),
       1,
       d + interval '1 hour',
       i % 3
FROM (SELECT i, timestamptz '2021-01-01 00:00:00+00' + i * interval '15 minutes' AS d
      FROM generate_series(1, {n}) AS i) s;

INSERT INTO task_instance
SELECT 'task_' || t || CASE WHEN t = 3 THEN ' "quoted", \\back\\slash' ELSE '' END,
       r.dag_id,
       r.run_id,
       CASE WHEN t = 8 THEN r.id % 4 ELSE -1 END,
       r.start_date + t * interval '7 seconds',
       r.start_date + t * interval '7 seconds' + ((r.id * 7919 + t * 104729) % 100000) * interval '1 millisecond',
       ((r.id * 7919 + t * 104729) % 100000) / 997.0,
       CASE WHEN (r.id + t) % 31 = 0 THEN 'failed' WHEN (r.id + t) % 47 = 0 THEN NULL ELSE 'success' END,
       1 + (r.id + t) % 3,
       2,
       'airflow-search-scheduler-' || (r.id % 3) || '.airflow-search.svc.cluster.local',
       'analytics-search',
       r.id * 8 + t,
       'default_pool',
       1,
       'default',
       9 - t,
       CASE t % 3 WHEN 0 THEN 'SparkSubmitOperator' WHEN 1 THEN 'PythonOperator' ELSE 'HivePartitionSensor' END,
       NULL,
       r.start_date,
       r.id * 3,
       10000 + (r.id * 8 + t) % 50000,
       '\\x80057d942e'::bytea,
       r.updated_at,
       NULL,
       NULL,
       NULL,
       CASE WHEN t = 5 THEN (r.start_date + interval '1 day')::timestamp END,
       CASE WHEN t = 5 THEN 'execute_complete' END,
       CASE WHEN t = 5 THEN ('{{"__var": {{"event": "' || r.id || '"}}, "__type": "dict"}}')::json END,
       'Task ' || t || ' — ünïcødé'
FROM dag_run r CROSS JOIN generate_series(1, {TASKS_PER_RUN}) AS t;

INSERT INTO log (id, dttm, dag_id, task_id, map_index, event, execution_date, run_id, owner,
                 owner_display_name, extra, try_number)
SELECT row_number() OVER (ORDER BY ti.job_id),
       ti.end_date,
       ti.dag_id,
       ti.task_id,
       ti.map_index,
       CASE WHEN ti.state = 'failed' THEN 'failed' ELSE 'success' END,
       ti.start_date,
       ti.run_id,
       'analytics-search',
       NULL,
       '{{"host_name": "' || ti.hostname || '", "full_command": "[''airflow'', ''tasks'', ''run'', ''' ||
           ti.dag_id || ''', ''' || ti.task_id || ''', ''' || ti.run_id ||
           ''', ''--local'', ''--subdir'', ''DAGS_FOLDER/search/dags.py'']", "pid": ' || ti.pid || '}}',
       ti.try_number
FROM task_instance ti;

INSERT INTO xcom
SELECT r.id,
       ti.task_id,
       ti.map_index,
       'return_value',
       ti.dag_id,
       ti.run_id,
       convert_to('{{"partition": "date=' || to_char(ti.start_date, 'YYYY-MM-DD') ||
                  '/hour=' || to_char(ti.start_date, 'HH24') || '", "rows": ' || ti.pid ||
                  ', "path": "hdfs://analytics-hadoop/wmf/data/discovery/' || md5(ti.task_id || ti.run_id) ||
                  '"}}', 'UTF8'),
       ti.end_date
FROM task_instance ti JOIN dag_run r USING (dag_id, run_id);

INSERT INTO connection (id, conn_id, conn_type, description, host, schema, login, password, port,
                        is_encrypted, is_extra_encrypted, extra)
SELECT i, 'conn_' || i, CASE WHEN i % 2 = 0 THEN 'hive_cli' ELSE 'http' END, 'connection number ' || i,
       'an-coord100' || (i % 4) || '.eqiad.wmnet', 'default', 'analytics-search',
       'gAAAAAB' || md5('pw' || i) || md5('salt' || i), 10000 + i, true, i % 2 = 0,
       CASE WHEN i % 2 = 0 THEN 'gAAAAAB' || md5('extra' || i) END
FROM generate_series(1, 50) AS i;

INSERT INTO variable (id, key, val, description, is_encrypted)
SELECT i, 'search_var_' || i, 'gAAAAAB' || md5('val' || i), NULL, true
FROM generate_series(1, 200) AS i;

SELECT setval('dag_run_id_seq', {n});
SELECT setval('log_id_seq', {n * TASKS_PER_RUN});
SELECT setval('connection_id_seq', 50);
SELECT setval('variable_id_seq', 200);
COMMIT;
ANALYZE;
"""


def generate_airflow_data(cluster: PgCluster, *, db: str, owner: str, dag_runs: int) -> None:
    """Create and fill the Airflow tables in ``db`` as ``owner`` (owner of everything created)."""
    cluster.psql(f"SET ROLE {sql_ident(owner)};\n{AIRFLOW_SCHEMA}\n{airflow_data_sql(dag_runs)}", db=db)


def dump_restore(source: PgCluster, source_db: str, target: PgCluster, target_db: str, target_owner: str,
                 workdir: Path) -> None:
    """Copy a database the way CNPG's microservice import does: pg_dump, then pg_restore
    ``--no-owner --no-privileges`` as the target database's owner."""
    dump = workdir / "dump"
    # databases are named through PGDATABASE (pg_dump) or a quoted conninfo (pg_restore -d), as a
    # bare -d NAME containing "=" would be parsed as a connection string
    source.run([str(PG_BIN / "pg_dump"), "-Fd", "-j", "2", "-Z", "0", "-f", str(dump)], db=source_db)
    target.run([str(PG_BIN / "pg_restore"), "-j", "2", "--exit-on-error", "--no-owner", "--no-privileges",
                "-U", target_owner, "-d", f"dbname={conninfo_quote(target_db)}", str(dump)])
    shutil.rmtree(dump, ignore_errors=True)
    target.psql("ANALYZE;", db=target_db)


def database_size_mb(cluster: PgCluster, db: str) -> float:
    return int(cluster.psql(f"SELECT pg_database_size({sql_literal(db)});").strip()) / 1e6


@contextlib.contextmanager
def timed(label: str, timings: dict[str, float]) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        timings[label] = round(time.monotonic() - start, 2)
