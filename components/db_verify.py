"""Verify that an imported PostgreSQL database holds exactly the data of its source.

The legacy Airflow database (``airflow_search`` on an-db1001) is copied into the CloudNativePG
cluster by ``bootstrap.initdb.import`` (pg_dump/pg_restore; with ``type: microservice`` it lands
in ``initdb.database``, ``app`` unless set, owned by ``initdb.owner``).  The stack may only cut
over once ``verify_script`` exits 0.  It runs wherever both databases are reachable (a Kubernetes
Job or the legacy host) and compares, over every user table of every non-system schema:

* the set of tables (a table on one side only is a difference),
* the row count of each table,
* an order-independent checksum of each table's rows,
* the set of sequences and each sequence's ``last_value`` and ``is_called``.

While the checksums run it prints, every ``progress_seconds`` (30), a timestamped line on
stderr: relations and bytes (``pg_table_size``) checksummed per side, the rate and the time
left (the Job's log; counts and sizes only, never a secret).

It prints a per-object report on stdout and exits 0 only if everything matches, 1 on any
difference, 2 on usage or connection errors (or when a query fails: we never say "match" about
a table we could not read).

The checksum of a table is the sum, as numeric (no overflow), of the first 64 bits of
``md5(ROW(r.*)::text)`` of each row: an order-independent multiset hash, so no ORDER BY, no
dependence on collations or primary keys, one (parallel-capable) sequential scan per table.  A
changed, lost or duplicated row goes unnoticed with probability about 2^-64, on top of the
row count.  (Summing both md5 halves costs a second md5 per row: PostgreSQL inlines the
subquery and evaluates the expression twice, and an OFFSET 0 fence disables parallel scans.)
md5 rather than the faster ``hashtextextended``: the legacy server and the CNPG one
(PostgreSQL 15) may run different major versions, and md5 is specified (RFC 1321) while
``hashtextextended`` is an internal function with no cross-version promise
(kerberos-postgres-study.md §5).  ``row::text`` depends on session
settings, so both sessions pin TimeZone, DateStyle, IntervalStyle, extra_float_digits,
bytea_output, lc_monetary and search_path (regclass columns print schema-qualified or not
depending on it).  ``ROW(r.*)`` and not ``r``: a column named ``r`` would shadow the alias.
Known false alarm (fail-safe): float columns print differently on a PostgreSQL <= 11 server,
and any two servers with different encodings hash text differently; the report's header shows
both servers' versions and encodings.

Each side runs in one REPEATABLE READ, READ ONLY transaction (a consistent snapshot) and both
sides run in parallel.  The per-table queries are generated from the catalog and run with
psql's ``\\gexec``, so there is one psql session per side.  Before that, a probe checks that
the user can read every table and sequence (else exit 2 naming them).  Interrupted (SIGTERM
when the Job is deleted, Ctrl-C), the script sends SIGINT to its psql processes, which cancel
their queries on the servers, and removes its temp dir.  The legacy database must be frozen
(scheduler stopped) while it runs: any write in between is, correctly, a difference.

Not compared: schema objects other than tables and sequences (indexes, constraints, views,
functions, grants), materialized views (recomputed by REFRESH), foreign tables, large objects,
and tables owned by an extension.  Partitioned tables are compared through their partitions.

Report (stdout)::

    source: airflow_search@an-db1001.eqiad.wmnet:5432/airflow_search (PostgreSQL 13.x, UTF8)
    target: app@postgresql-airflow-search-rw:5432/app (PostgreSQL 15.x, UTF8)
    OK        table    public.dag_run          source: rows=15000 checksum=…  target: rows=15000 checksum=…
    DIFFERENT table    public.log              source: rows=120000 …  target: rows=119999 …  (row count differs)
    EXTRA     table    scratch.leftover        source: -  target: rows=0 …  (only on the target)
    DIFFERENT sequence public.log_id_seq       source: last_value=120000 …  target: last_value=119990 …
    summary: 7 tables, 4 sequences compared, 3 differences
    RESULT: DIFFERENT

Secrets: the two passwords arrive on stdin (line 1: source, line 2: target), are written with
the shell builtin ``printf`` into two 0600 pgpass files in a ``mktemp -d`` directory removed on
exit, and reach psql only through ``PGPASSFILE``; never argv, never the environment, never the
script text.  Host, port, database and user go through ``PGHOST``/``PGPORT``/``PGDATABASE``/
``PGUSER`` rather than ``-d``, which would parse a database name containing ``=`` as a
connection string.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from typing import Sequence

from components import remote

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

# Session settings that make ROW(r.*)::text identical on both servers for identical data.
SESSION_SETTINGS = (
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
    ("search_path", "pg_catalog"),
    ("statement_timeout", "0"),
)

# Relations we compare: user schemas only (user schemas cannot start with pg_), no temporary
# tables of other sessions, no objects owned by an extension (the extension creates them).
_USER_RELATIONS = """FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind {relkind} AND c.relpersistence <> 't'
  AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"
"""

# Key: independent of quote_ident's keyword list (which differs between versions).
# Name: for people; control characters replaced so one object is one report line.
_KEY = "md5(n.nspname::text) || md5(c.relname::text)"
_NAME = "regexp_replace(format('%I.%I', n.nspname, c.relname), '[[:cntrl:]]', '?', 'g')"

CHECKSUM_SQL = (
    "".join(f"SET {name} = '{value}';\n" for name, value in SESSION_SETTINGS)
    + "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n"
    # one output line per table: table <TAB> key <TAB> name <TAB> rows <TAB> checksum
    + "SELECT format('SELECT %L, %L, %L, count(*),"
    " coalesce(sum((''x'' || left(md5(ROW(r.*)::text), 16))::bit(64)::bigint), 0) FROM %I.%I AS r',"
    f" 'table', {_KEY}, {_NAME}, n.nspname, c.relname)\n"
    + _USER_RELATIONS.format(relkind="= 'r'")
    + "\\gexec\n"
    # one output line per sequence: sequence <TAB> key <TAB> name <TAB> last_value <TAB> is_called
    + "SELECT format('SELECT %L, %L, %L, last_value, is_called FROM %I.%I',"
    f" 'sequence', {_KEY}, {_NAME}, n.nspname, c.relname)\n"
    + _USER_RELATIONS.format(relkind="= 'S'")
    + "\\gexec\n"
    + "COMMIT;\n"
)

SERVER_INFO_SQL = (
    "SELECT 'PostgreSQL ' || current_setting('server_version') || ', ' || pg_encoding_to_char(encoding)"
    " FROM pg_database WHERE datname = current_database()"
)
# Checked before the (long) checksum run: a relation we cannot read would make it fail later,
# and we never report a match for data we did not see.
UNREADABLE_SQL = (
    f"SELECT {_NAME}\n"
    + _USER_RELATIONS.format(relkind="IN ('r', 'S')").replace(
        "ORDER BY",
        "  AND NOT (has_schema_privilege(n.oid, 'USAGE') AND CASE c.relkind WHEN 'S'"
        " THEN has_sequence_privilege(c.oid, 'SELECT') ELSE has_table_privilege(c.oid, 'SELECT') END)\nORDER BY",
    )
)

PROBE_SQL = SERVER_INFO_SQL + ";\n" + UNREADABLE_SQL + ";\n"

# What the progress lines measure against: kind <TAB> key <TAB> bytes on disk, one line per
# table and sequence (the keys of the checksum output), read before the checksums start.
SIZES_SQL = (
    "SELECT CASE c.relkind WHEN 'r' THEN 'table' ELSE 'sequence' END, "
    f"{_KEY}, CASE c.relkind WHEN 'r' THEN pg_table_size(c.oid) ELSE 0 END\n"
    + _USER_RELATIONS.format(relkind="IN ('r', 'S')")
    + ";\n"
)

PROGRESS_SECONDS = 30  # a progress line on stderr this often

# argv: source sizes, source output, target sizes, target output (the output files so far);
# -v elapsed=SECONDS.  One line: relations and bytes done per side, rate, time left (the slower
# side's, each estimated per relation and per byte at its rate so far, the larger of the two).
PROGRESS_AWK = r"""
BEGIN { FS = "\t" }
FILENAME == ARGV[1] { size[1, $1 FS $2] = $3; total[1]++; bytes[1] += $3; next }
FILENAME == ARGV[2] { k = $1 FS $2; if ((1, k) in size) { done[1]++; dbytes[1] += size[1, k] } next }
FILENAME == ARGV[3] { size[2, $1 FS $2] = $3; total[2]++; bytes[2] += $3; next }
FILENAME == ARGV[4] { k = $1 FS $2; if ((2, k) in size) { done[2]++; dbytes[2] += size[2, k] } next }
function hb(n) {
    if (n < 1000) return sprintf("%d B", n)
    if (n < 1e6) return sprintf("%.1f kB", n / 1e3)
    if (n < 1e9) return sprintf("%.1f MB", n / 1e6)
    if (n < 1e12) return sprintf("%.1f GB", n / 1e9)
    return sprintf("%.1f TB", n / 1e12)
}
function hs(t) {
    t = int(t + 0.5)
    if (t < 60) return sprintf("%d s", t)
    if (t < 3600) return sprintf("%d min %02d s", int(t / 60), t % 60)
    return sprintf("%d h %02d min", int(t / 3600), int((t % 3600) / 60))
}
# -1: unknown (nothing done yet)
function left(i,    a, b) {
    if (done[i] + 0 >= total[i] + 0) return 0
    if (elapsed <= 0 || done[i] + 0 == 0) return -1
    a = (total[i] - done[i]) * elapsed / done[i]
    if (dbytes[i] > 0) { b = (bytes[i] - dbytes[i]) * elapsed / dbytes[i]; if (b > a) a = b }
    return a
}
END {
    l1 = left(1); l2 = left(2)
    if (l1 < 0 || l2 < 0) eta = "time left unknown yet"
    else eta = "about " hs(l1 > l2 ? l1 : l2) " left"
    rate = elapsed > 0 ? (dbytes[1] + dbytes[2]) / elapsed : 0
    printf "progress: source %d of %d relations (%s of %s), target %d of %d (%s of %s) checksummed; %s/s; %s\n", \
        done[1], total[1], hb(dbytes[1] + 0), hb(bytes[1] + 0), done[2], total[2], hb(dbytes[2] + 0), hb(bytes[2] + 0), \
        hb(rate), eta
}
"""

# Joins the two outputs (source file first) on kind+key; the report goes to stdout.
# Exit 0: all match; 1: a difference.  POSIX awk (mawk in Debian and in the CNPG images).
COMPARE_AWK = r"""
BEGIN { FS = "\t"; n = 0; bad = 0; tables = 0; sequences = 0 }
FILENAME == ARGV[1] { k = $1 FS $2; src[k] = $4 FS $5; kind[k] = $1; name[k] = $3; order[++n] = k; next }
{ k = $1 FS $2; tgt[k] = $4 FS $5; if (!(k in kind)) { kind[k] = $1; name[k] = $3; order[++n] = k } }
function show(kd, v,    f) {
    if (v == "") return "-"
    split(v, f, FS)
    if (kd == "table") return "rows=" f[1] " checksum=" f[2]
    return "last_value=" f[1] " is_called=" f[2]
}
END {
    print "source: " ENVIRON["DB_VERIFY_SOURCE"]
    print "target: " ENVIRON["DB_VERIFY_TARGET"]
    w = 4
    for (i = 1; i <= n; i++) if (length(name[order[i]]) > w) w = length(name[order[i]])
    fmt = "%-9s %-8s %-" w "s  source: %s  target: %s%s\n"
    for (i = 1; i <= n; i++) {
        k = order[i]; kd = kind[k]; s = (k in src) ? src[k] : ""; t = (k in tgt) ? tgt[k] : ""
        if (kd == "table") tables++; else sequences++
        if (s == "") { status = "EXTRA"; why = "only on the target" }
        else if (t == "") { status = "MISSING"; why = "not on the target" }
        else if (s == t) { status = "OK"; why = "" }
        else {
            status = "DIFFERENT"; split(s, a, FS); split(t, b, FS)
            if (kd == "table") why = (a[1] != b[1]) ? "row count differs" : "same row count, contents differ"
            else why = (a[1] != b[1]) ? "last_value differs" : "is_called differs"
        }
        if (status != "OK") bad++
        printf fmt, status, kd, name[k], show(kd, s), show(kd, t), (why == "" ? "" : "  (" why ")")
    }
    printf "summary: %d tables, %d sequences compared, %d differences\n", tables, sequences, bad
    if (bad > 0) { print "RESULT: DIFFERENT"; exit 1 }
    print "RESULT: MATCH"
    exit 0
}
"""

HEREDOC_END = "DB_VERIFY_EOF"


def _file(name: str, text: str) -> str:
    """Shell text writing a constant file into the work dir (quoted heredoc: no expansion)."""
    assert HEREDOC_END not in text and text.endswith("\n")
    return f"cat > \"$workdir/{name}\" <<'{HEREDOC_END}'\n{text}{HEREDOC_END}\n"


_BODY = r"""
die() { echo "db_verify: $*" >&2; exit 2; }
one_line() { tr -s '\r\n\t' '   ' < "$1" | sed -e 's/^psql: error: //' -e 's/ *$//'; }

command -v psql >/dev/null || die "psql is not installed or not in PATH"
command -v awk >/dev/null || die "awk is not installed or not in PATH"

# stdin: line 1 the source password, line 2 the target password (the last line may lack its newline)
SOURCE_PASSWORD="" TARGET_PASSWORD=""
IFS= read -r SOURCE_PASSWORD || [[ -n "$SOURCE_PASSWORD" ]] \
    || die "usage: expected two lines on stdin: the source password, then the target password (got none)"
IFS= read -r TARGET_PASSWORD || [[ -n "$TARGET_PASSWORD" ]] \
    || die "usage: expected two lines on stdin: the source password, then the target password (got one)"

# anything in the caller's environment that would override what we pass (PGPASSWORD beats
# PGPASSFILE; PGHOSTADDR beats PGHOST; a service file can set anything)
unset PGPASSWORD PGSERVICE PGSERVICEFILE PGHOSTADDR PGOPTIONS PGREQUIRESSL PGTARGETSESSIONATTRS PGCLIENTENCODING
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-10}" PGAPPNAME=airflow-db-verify

workdir="$(mktemp -d "${TMPDIR:-/tmp}/db-verify.XXXXXXXX")"
# shellcheck disable=SC2317  # invoked by the EXIT trap below (shellcheck cannot follow traps)
cleanup() {
    # interrupted (Job deleted, Ctrl-C): SIGINT makes psql cancel its running query on the
    # server too, so no checksum scan keeps running on the legacy database
    local pid
    if [[ -n ${monitor_pid:-} ]]; then kill -TERM "$monitor_pid" 2>/dev/null || true; fi
    for pid in $(jobs -p); do kill -INT "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf -- "$workdir"
}
trap cleanup EXIT
trap 'exit 2' HUP INT TERM

# pgpass: any host/port/db/user, this password; libpq un-escapes \\ and \: in the password field.
# printf is a bash builtin: the password is written without ever being an argument of a process.
write_pgpass() {
    local escaped="${2//\\/\\\\}"
    escaped="${escaped//:/\\:}"
    printf '*:*:*:*:%s\n' "$escaped" > "$1"
    chmod 0600 "$1"
}
write_pgpass "$workdir/source.pgpass" "$SOURCE_PASSWORD"
write_pgpass "$workdir/target.pgpass" "$TARGET_PASSWORD"
unset SOURCE_PASSWORD TARGET_PASSWORD

# on source|target <psql arguments...>: becomes psql (exec), so only call it in a subshell,
# $(on ...) or (on ...) &.  The exec makes $! psql's own PID, so cleanup's SIGINT reaches psql
# (a subshell in between would ignore it: async commands start with SIGINT ignored).
on() {
    if [[ "$1" == source ]]; then
        export PGHOST="$SOURCE_HOST" PGPORT="$SOURCE_PORT" PGDATABASE="$SOURCE_DB" PGUSER="$SOURCE_USER" \
            PGSSLMODE="$SOURCE_SSLMODE" PGPASSFILE="$workdir/source.pgpass"
    else
        export PGHOST="$TARGET_HOST" PGPORT="$TARGET_PORT" PGDATABASE="$TARGET_DB" PGUSER="$TARGET_USER" \
            PGSSLMODE="$TARGET_SSLMODE" PGPASSFILE="$workdir/target.pgpass"
    fi
    shift
    exec psql -X -w -q -A -t -F $'\t' -v ON_ERROR_STOP=1 "$@"
}

label() {  # printable "user@host:port/db"
    local l="$2@$1:$3/$4"
    printf '%s' "${l//[[:cntrl:]]/?}"
}
SOURCE_LABEL="$(label "$SOURCE_HOST" "$SOURCE_USER" "$SOURCE_PORT" "$SOURCE_DB")"
TARGET_LABEL="$(label "$TARGET_HOST" "$TARGET_USER" "$TARGET_PORT" "$TARGET_DB")"

probe() {  # probe source|target LABEL: print the server's description, or die (connection, privileges)
    local side="$1" label="$2" out list
    out="$(on "$side" -f "$workdir/probe.sql" 2> "$workdir/$side.err" < /dev/null)" \
        || die "cannot connect to the $side database $label: $(one_line "$workdir/$side.err")"
    local -a lines
    mapfile -t lines <<< "$out"
    if (( ${#lines[@]} > 1 )); then
        printf -v list '%s, ' "${lines[@]:1}"
        die "the $side user cannot read ${list%, } ($label); grant SELECT or verify as the owner"
    fi
    printf '%s' "${lines[0]}"
}
"""

_PROBE = r"""
source_info="$(probe source "$SOURCE_LABEL")" || exit 2
target_info="$(probe target "$TARGET_LABEL")" || exit 2
"""

_RUN = r"""
stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }
for side in source target; do
    (on "$side" -f "$workdir/sizes.sql") > "$workdir/$side.sizes" 2> "$workdir/$side.err" < /dev/null \
        || die "cannot read the table sizes of the $side database: $(one_line "$workdir/$side.err")"
done
progress() {  # one progress line on stderr (never a secret: counts and sizes)
    local line
    line="$(awk -v elapsed="$((SECONDS - checksums_started))" -f "$workdir/progress.awk" "$workdir/source.sizes" \
        "$workdir/source.out" "$workdir/target.sizes" "$workdir/target.out" 2>/dev/null)" || line="progress: unknown"
    printf 'db_verify: %s %s\n' "$(stamp)" "$line" >&2
}
checksums_started=$SECONDS
printf 'db_verify: %s checksumming every table and sequence on both sides; a progress line every %ss\n' \
    "$(stamp)" "$PROGRESS_SECONDS" >&2
: > "$workdir/source.out"
: > "$workdir/target.out"
(on source -f "$workdir/checksum.sql") > "$workdir/source.out" 2> "$workdir/source.err" < /dev/null &
source_pid=$!
(on target -f "$workdir/checksum.sql") > "$workdir/target.out" 2> "$workdir/target.err" < /dev/null &
target_pid=$!
# the monitor: its sleep holds no stdout/stderr, so nothing waits on it once it is killed
( while sleep "$PROGRESS_SECONDS" > /dev/null 2>&1; do progress; done ) &
monitor_pid=$!
source_rc=0; wait "$source_pid" || source_rc=$?
target_rc=0; wait "$target_pid" || target_rc=$?
kill -TERM "$monitor_pid" 2>/dev/null || true
wait "$monitor_pid" 2>/dev/null || true
monitor_pid=
(( source_rc != 0 || target_rc != 0 )) || progress
printf 'db_verify: %s checksums done in %s s\n' "$(stamp)" "$((SECONDS - checksums_started))" >&2
(( source_rc == 0 )) || die "checksum queries failed on the source database $SOURCE_LABEL: $(one_line "$workdir/source.err")"
(( target_rc == 0 )) || die "checksum queries failed on the target database $TARGET_LABEL: $(one_line "$workdir/target.err")"

compare_rc=0
DB_VERIFY_SOURCE="$SOURCE_LABEL ($source_info)" DB_VERIFY_TARGET="$TARGET_LABEL ($target_info)" \
    awk -f "$workdir/compare.awk" "$workdir/source.out" "$workdir/target.out" || compare_rc=$?
case "$compare_rc" in
    0) exit 0 ;;
    1) echo "db_verify: the target database differs from the source, see the report on stdout" >&2; exit 1 ;;
    *) die "comparing the results failed (awk exit $compare_rc)" ;;
esac
"""


def _port(value: int | str) -> str:
    port = int(value)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {value!r}")
    return str(port)


def _name(what: str, value: str) -> str:
    if not value or "\0" in value:
        raise ValueError(f"{what} must be a non-empty string without NUL bytes")
    return value


def verify_script(
    source_host: str,
    source_port: int | str,
    source_db: str,
    source_user: str,
    target_host: str,
    target_port: int | str,
    target_db: str,
    target_user: str,
    *,
    source_sslmode: str = "prefer",
    target_sslmode: str = "prefer",
    progress_seconds: int | float = PROGRESS_SECONDS,
) -> str:
    """The bash script comparing ``source_db`` with ``target_db``; passwords on stdin.

    + stdin: ``<source password>\\n<target password>\\n``
    + stdout: the report (no secrets); stderr: diagnostics
    + exit: 0 everything matches, 1 any difference, 2 usage/connection/query error

    Read-only on both sides, so a second run changes nothing (it only re-checks).

    Example::

        verify_script("an-db1001.eqiad.wmnet", 5432, "airflow_search", "airflow_search",
                      "postgresql-airflow-search-rw", 5432, "app", "app", source_sslmode="require")
    """
    if isinstance(progress_seconds, bool) or not isinstance(progress_seconds, (int, float)) \
            or not 0.1 <= progress_seconds <= 3600:
        raise ValueError(f"progress_seconds must be a number in 0.1..3600, got {progress_seconds!r}")
    for sslmode in (source_sslmode, target_sslmode):
        if sslmode not in SSLMODES:
            raise ValueError(f"sslmode must be one of {SSLMODES}, not {sslmode!r}")
    settings = {
        "SOURCE_HOST": _name("source_host", source_host),
        "SOURCE_PORT": _port(source_port),
        "SOURCE_DB": _name("source_db", source_db),
        "SOURCE_USER": _name("source_user", source_user),
        "SOURCE_SSLMODE": source_sslmode,
        "TARGET_HOST": _name("target_host", target_host),
        "TARGET_PORT": _port(target_port),
        "TARGET_DB": _name("target_db", target_db),
        "TARGET_USER": _name("target_user", target_user),
        "TARGET_SSLMODE": target_sslmode,
    }
    settings["PROGRESS_SECONDS"] = repr(float(progress_seconds))
    assignments = "".join(f"{key}={shlex.quote(value)}\n" for key, value in settings.items())
    return (
        remote.header("verify an imported PostgreSQL database against its source; read-only")
        + assignments
        + _BODY
        + _file("probe.sql", PROBE_SQL)
        + _file("checksum.sql", CHECKSUM_SQL)
        + _file("compare.awk", COMPARE_AWK.lstrip())
        + _file("sizes.sql", SIZES_SQL)
        + _file("progress.awk", PROGRESS_AWK.lstrip())
        + _PROBE
        + _RUN
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m components.db_verify --source-host ... < passwords``: run the same script."""
    parser = argparse.ArgumentParser(
        prog="python -m components.db_verify",
        description="Compare a PostgreSQL database with its imported copy. Passwords on stdin: "
                    "line 1 source, line 2 target. Exit 0 match, 1 difference, 2 error.",
    )
    for side in ("source", "target"):
        parser.add_argument(f"--{side}-host", required=True)
        parser.add_argument(f"--{side}-port", type=int, default=5432)
        parser.add_argument(f"--{side}-db", required=True)
        parser.add_argument(f"--{side}-user", required=True)
        parser.add_argument(f"--{side}-sslmode", default="prefer", choices=SSLMODES)
    parser.add_argument("--print-script", action="store_true", help="print the script instead of running it")
    args = parser.parse_args(argv)
    script = verify_script(
        args.source_host, args.source_port, args.source_db, args.source_user,
        args.target_host, args.target_port, args.target_db, args.target_user,
        source_sslmode=args.source_sslmode, target_sslmode=args.target_sslmode,
    )
    if args.print_script:
        sys.stdout.write(script)
        return 0
    # the script text holds no secret, so it may be an argument; stdin (the passwords) passes through
    return subprocess.run(["bash", "-c", script, "db_verify"], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
