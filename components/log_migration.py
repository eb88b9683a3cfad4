"""Task and scheduler logs to S3 (runbook: "Sync all the scheduler and DAG task logs to S3").

The runbook, on the legacy Airflow VM, runs twice (a long first pass while the instance still
runs, then ``stop_legacy_script`` and a short second pass during the downtime)::

    cd /srv/airflow-<instance>/logs && s3cmd --access_key=.. --secret_key=.. \\
        --host=rgw.eqiad.dpe.anycast.wmnet --region=dpe --host-bucket=no \\
        sync -r ./* s3://logs.airflow-<instance>.dse-k8s-eqiad/

The scripts here keep its semantics (same keys: paths relative to the logs directory; copy
only, nothing is ever deleted on the target; symlinks are not followed, as s3cmd skips them)
and fix what measured badly (shared/reference/ceph-rgw-s3-study.md, bench/README.md):

* the keys were on s3cmd's command line (visible in ``ps``): they arrive on **stdin** (two
  lines: access key, secret key) and go into a 0600 s3cmd config in a ``mktemp -d`` scratch
  dir that an EXIT trap removes.  A run killed with SIGKILL cannot run its trap, so every run
  first removes the scratch dirs of earlier runs whose process is gone: "kill, then re-run"
  leaves no key on disk;
* one s3cmd process uploads one file at a time, about 5 ms each on an idle loopback RGW: the
  sync runs ``parallelism`` jobs over disjoint parts of the tree (``xargs -P``; fewer jobs for
  a tree under ``parallelism * min_files_per_job`` files).  A planner (python3, which s3cmd
  itself runs on) spreads whole top-level entries over the jobs by file count, largest first;
  an entry above total/jobs files (one busy DAG) is cut into chunks handed to s3cmd with
  ``--files-from``, so each s3cmd lists its prefix once (one s3cmd source per ``run_id=`` dir
  would cost one LIST request each: a 3x slower second pass, measured).  A job runs one
  s3cmd for its whole entries (the runbook's form: several sources) and one per chunk;
* s3cmd guesses each file's type with libmagic, ~40% of its CPU per small file; with
  ``--no-mime-magic --default-mime-type=text/plain`` a ``.log`` gets ``text/plain`` (what
  libmagic said for the runbook) from the extension table's fallback, at no cost;
* every job's exit status counts: one failing job fails the script (after the others end),
  and the script names the entries that job covered.

s3cmd facts relied on (s3cmd 2.3.0, checked against the real RGW in
tests/integration/test_log_migration.py): ``sync`` without ``--delete-removed`` never deletes;
unchanged files (same size and MD5) are not re-uploaded, so a re-run uploads nothing; a
killed run leaves no partial object (each PUT is atomic; files above 15 MB go multipart, and a
killed multipart upload leaves invisible parts, never a short object); ``--files-from``
entries are stripped lines, so paths with a newline or leading/trailing whitespace are never
put in a list (their entry is synced whole instead); a config value starting with ``$`` is
read from the environment, so the keys are checked to be letters/digits/``+/``.

Files that appear in a chunked entry after the planner ran are left to the next pass (the
second pass runs with the instance stopped); s3cmd's own "Number of files" is compared with
the plan and a shortfall is reported on stderr.

``verify_script`` compares the tree and the bucket key by key and prints, per top-level
prefix, the local file count and bytes against the matching objects' count and bytes (not
ETags: multipart ETags are not MD5s).  ``stop_legacy_script`` is the runbook's
``puppet agent --disable`` + ``systemctl stop``, made idempotent.

Endpoint: a URL (``https://rgw.eqiad.dpe.anycast.wmnet``, as ``rgwEndpoint`` in the stack
config) or a bare ``host[:port]`` (meaning https).  ``http://`` is accepted for the loopback
test RGW only.  s3cmd gets ``host_base = host_bucket = host[:port]`` (path-style, as
``--host-bucket=no``), ``bucket_location = <region>`` and signature v4.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from urllib.parse import urlsplit

from components import remote

SCRATCH_PREFIX = "airflow-log-migration"
PUPPET_DISABLE_REASON = "airflow scheduler migration to Kubernetes"
LEGACY_UNITS = ("airflow-webserver@*.service", "airflow-kerberos@*.service", "airflow-scheduler@*.service")
MAX_PARALLELISM = 64
MIN_FILES_PER_JOB = 500

_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# S3 bucket names as RGW accepts them (dots allowed: path-style addressing)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class Endpoint:
    host: str  # host[:port], what s3cmd's host_base takes (no scheme)
    https: bool


def parse_endpoint(endpoint: str) -> Endpoint:
    """``https://host[:port]``, ``http://host:port`` (tests) or bare ``host[:port]`` (https)."""
    text = endpoint if "://" in endpoint else f"https://{endpoint}"
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http"):
        raise ValueError(f"endpoint {endpoint!r}: scheme must be https (or http for a test RGW)")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"endpoint {endpoint!r}: give only scheme://host[:port]")
    host = parts.hostname or ""
    if not _HOST.match(host):
        raise ValueError(f"endpoint {endpoint!r}: {host!r} is not a host name or IPv4 address")
    try:
        port = parts.port
    except ValueError as err:
        raise ValueError(f"endpoint {endpoint!r}: {err}") from None
    return Endpoint(host=f"{host}:{port}" if port else host, https=parts.scheme == "https")


def _check(bucket: str, region: str) -> None:
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not an S3 bucket name")
    if not _REGION.match(region):
        raise ValueError(f"{region!r} is not an RGW zonegroup api_name")


# ---------------------------------------------------------------------------------------------
# shared by sync and verify: checks, the keys from stdin, the scratch dir and the s3cmd config

_PRELUDE = r"""
fail() { printf '%s: %s\n' "$0" "$*" >&2; exit 1; }

[[ -d $logs_dir ]] || fail "the logs directory $logs_dir does not exist or is not a directory"
command -v s3cmd >/dev/null || fail "s3cmd is not installed (apt-get install s3cmd)"
command -v python3 >/dev/null || fail "python3 is not installed"
if [[ -n $ca_file && ! -r $ca_file ]]; then fail "CA file $ca_file is not readable"; fi

# the keys arrive on stdin, two lines: access key, then secret key (never argv, never this text)
IFS= read -r access_key || fail "stdin: expected the S3 access key on line 1"
IFS= read -r secret_key || [[ -n $secret_key ]] || fail "stdin: expected the S3 secret key on line 2"
# s3cmd reads a config value starting with '$' from the environment, and a line break would
# end it: accept only the characters RGW keys are made of
[[ $access_key =~ ^[A-Za-z0-9]{16,128}$ ]] || fail "the access key must be 16-128 letters/digits"
[[ $secret_key =~ ^[A-Za-z0-9+/]{20,128}$ ]] || fail "the secret key must be 20-128 letters/digits/+/"

# A run killed with SIGKILL cannot run its EXIT trap and leaves its scratch dir (and the key
# file in it) behind: remove those of earlier runs whose process is gone.
scratch_parent=${TMPDIR:-/tmp}
for old in "$scratch_parent"/airflow-log-migration.*; do
    [[ -d $old && ! -L $old && -O $old && -f $old/pid ]] || continue
    old_pid=
    IFS= read -r old_pid < "$old/pid" || true
    [[ $old_pid =~ ^[0-9]+$ ]] || continue
    if [[ ! -e /proc/$old_pid ]]; then
        rm -rf -- "$old"
        printf '%s: removed the scratch dir %s of an interrupted run\n' "$0" "$old" >&2
    fi
done

scratch=$(mktemp -d "$scratch_parent/airflow-log-migration.XXXXXXXX")
# the key file first; a worker ended by a signal may still be closing its log as rm runs: retry
trap 'rm -f -- "$scratch/s3cfg"; rm -rf -- "$scratch" 2>/dev/null || { sleep 1; rm -rf -- "$scratch"; }' EXIT
# exit (running the EXIT trap) on TERM/INT/HUP too; the sync replaces these to stop its workers
trap 'reap_step; exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP
printf '%s\n' "$$" > "$scratch/pid"

# the s3cmd config (0600 under umask 077); printf is a builtin, so no key reaches an argv.
# host_bucket without a bucket placeholder = path-style addressing (the runbook's --host-bucket=no)
config=$scratch/s3cfg
{
    printf '[default]\n'
    printf 'access_key = %s\n' "$access_key"
    printf 'secret_key = %s\n' "$secret_key"
    printf 'host_base = %s\n' "$s3_host"
    printf 'host_bucket = %s\n' "$s3_host"
    printf 'bucket_location = %s\n' "$region"
    printf 'use_https = %s\n' "$use_https"
    printf 'check_ssl_certificate = True\n'
    printf 'check_ssl_hostname = True\n'
    printf 'ca_certs_file = %s\n' "$ca_file"
    printf 'signature_v2 = False\n'
    printf 'delete_removed = False\n'
    printf 'follow_symlinks = False\n'
} > "$config"
unset access_key secret_key
"""

# ---------------------------------------------------------------------------------------------
# sync

# The planner: walks the tree once (never following symlinks, as s3cmd), then writes the jobs.
# Job (worker) N runs N.calls s3cmd syncs in a row; call K's arguments are in N.K.args
# (NUL-separated: maybe --files-from=N.K.list, then the sources).  Prints
# "files bytes entries symlinks special jobs calls".
# Written for any python3 >= 3.7 (Debian 10 and later).
_PLANNER_PY = r"""
import os
import stat
import sys

scratch, parallelism, min_files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
jobs_dir = os.path.join(scratch, "jobs")
os.mkdir(jobs_dir)


def raise_error(err):
    raise err  # an unreadable directory must fail the sync, not be skipped (as s3cmd would)


entries = {}  # top-level name -> sorted paths relative to it (None: a top-level regular file)
total_bytes = symlinks = special = 0
for name in sorted(os.listdir(".")):
    st = os.lstat(name)
    if stat.S_ISREG(st.st_mode):
        entries[name] = None
        total_bytes += st.st_size
    elif stat.S_ISLNK(st.st_mode):
        symlinks += 1
    elif not stat.S_ISDIR(st.st_mode):
        special += 1
    else:
        files = []
        for root, dirs, names in os.walk(name, onerror=raise_error):
            symlinks += sum(1 for d in dirs if os.path.islink(os.path.join(root, d)))
            for n in names:
                path = os.path.join(root, n)
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode):
                    files.append(os.path.relpath(path, name))
                    total_bytes += st.st_size
                elif stat.S_ISLNK(st.st_mode):
                    symlinks += 1
                else:
                    special += 1
        entries[name] = sorted(files)


def size(name):
    return 1 if entries[name] is None else len(entries[name])


def listable(path):
    # s3cmd reads --files-from as text lines and strips them
    if "\n" in path or "\r" in path or path != path.strip():
        return False
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in the name (surrogateescape)
        return False
    return True


total = sum(size(n) for n in entries)
# each s3cmd start costs ~0.15 s of CPU: fewer jobs for a small tree
workers = max(1, min(parallelism, total // min_files))
limit = max(1, -(-total // workers))
items = []  # (files, name, chunk or None): chunks of big entries, whole entries
for name in entries:
    n = size(name)
    if n == 0:
        continue  # an empty directory has no object to hold it
    if n > limit and all(listable(p) for p in entries[name]):
        parts = -(-n // limit)
        for i in range(parts):
            chunk = entries[name][i * n // parts:(i + 1) * n // parts]
            items.append((len(chunk), name, chunk))
    else:
        items.append((n, name, None))

# exactly `workers` jobs: each item goes to the worker with the fewest files so far
# (largest first); a worker runs one s3cmd for its whole entries, one per chunk, in a row
bins = [[0, [], []] for _ in range(workers)]  # files, whole entry names, chunks
for n, name, chunk in sorted(items, key=lambda item: (-item[0], item[1])):
    b = min(bins, key=lambda b: b[0])
    b[0] += n
    if chunk is None:
        b[1].append(name)
    else:
        b[2].append((name, chunk))
jobs = calls_total = 0
for files, names, chunks in sorted(bins, key=lambda b: -b[0]):
    if not files:
        continue
    calls = [["--"] + ["./" + name for name in names]] if names else []
    for k, (name, chunk) in enumerate(chunks):
        list_file = os.path.join(jobs_dir, "%d.%d.list" % (jobs, k))
        with open(list_file, "w", encoding="utf-8") as f:
            f.write("".join(p + "\n" for p in chunk))
        calls.append(["--files-from=" + list_file, "--", "./" + name])
    for k, args in enumerate(calls):
        with open(os.path.join(jobs_dir, "%d.%d.args" % (jobs, k)), "wb") as f:
            f.write(b"".join(os.fsencode(a) + b"\0" for a in args))
    with open(os.path.join(jobs_dir, "%d.calls" % jobs), "w") as f:
        f.write("%d %d\n" % (len(calls), files))
    jobs += 1
    calls_total += len(calls)
print(total, total_bytes, len(entries), symlinks, special, jobs, calls_total)
"""

_SYNC_BODY = r"""
cd -- "$logs_dir"
started=$SECONDS
plan=$(python3 - "$scratch" "$parallelism" "$min_files_per_job" <<'PY'
@PLANNER@
PY
) || fail "cannot plan the sync of $logs_dir (see above)"
read -r planned_files planned_bytes entries symlinks special jobs calls <<<"$plan"

# a job runs its s3cmd syncs in a row; copy only (never delete on the target), as the runbook
run_job() {
    local job=$1 rc=0 calls files k args=()
    read -r calls files < "$scratch/jobs/$job.calls"
    for ((k = 0; k < calls; k++)); do
        mapfile -d '' -t args < "$scratch/jobs/$job.$k.args"
        s3cmd -c "$config" --no-delete-removed --no-progress --stats \
            --no-mime-magic --default-mime-type=text/plain \
            sync -r "${args[@]}" "s3://$bucket/" \
            < /dev/null >> "$scratch/jobs/$job.out" 2> "$scratch/jobs/$job.err" || rc=$?
        while IFS= read -r line; do
            printf '%s: job %s: %s\n' "$script_name" "$job" "$line" >&2
        done < "$scratch/jobs/$job.err"
        if [[ $rc -ne 0 ]]; then
            printf '%s: job %s (s3cmd sync %s) FAILED: exit %s\n' "$script_name" "$job" "${args[*]}" "$rc" >&2
            break
        fi
    done
    printf '%s\n' "$rc" > "$scratch/jobs/$job.rc"
    return 0  # xargs must run every job; the exit statuses are summed up below
}
export -f run_job
script_name=$0
export config bucket scratch script_name

# xargs runs in the background so that a TERM/INT/HUP trap runs at once: it stops xargs from
# starting more jobs, then ends the whole worker tree (xargs, job shells, s3cmd) by PID
workers=
stop_workers() {
    [[ -n $workers ]] || return 0
    kill -STOP "$workers" 2>/dev/null || true
    local pids=("$workers") i=0 child
    while [[ $i -lt ${#pids[@]} ]]; do
        for child in $(pgrep -P "${pids[$i]}" || true); do pids+=("$child"); done
        i=$((i + 1))
    done
    kill -TERM "${pids[@]}" 2>/dev/null || true
    kill -CONT "$workers" 2>/dev/null || true
    wait "$workers" 2>/dev/null || true
}
on_signal() {
    trap - TERM INT HUP
    printf '%s: interrupted; stopping the s3cmd jobs (a re-run resumes)\n' "$0" >&2
    stop_workers
    reap_step
    exit "$1"
}
trap 'on_signal 143' TERM
trap 'on_signal 130' INT
trap 'on_signal 129' HUP

if [[ $jobs -gt 0 ]]; then
    for ((job = 0; job < jobs; job++)); do printf '%s\0' "$job"; done > "$scratch/jobs/all"
    xargs -0 -n 1 -P "$parallelism" bash -c 'run_job "$1"' run_job < "$scratch/jobs/all" &
    workers=$!
    wait "$workers" || true
    workers=
fi

# sum up s3cmd's --stats lines; a job without its .rc file did not finish
failed=0 seen=0 uploaded=0 uploaded_bytes=0 copied=0 copied_bytes=0
re_files='^Stats: Number of files: ([0-9]+)'
re_sent='^Stats: Number of files transferred: ([0-9]+) \(([0-9]+) bytes\)'
re_copied='^Stats: Number of files copied: ([0-9]+) \(([0-9]+) bytes\)'
for ((job = 0; job < jobs; job++)); do
    rc=
    [[ -f $scratch/jobs/$job.rc ]] && IFS= read -r rc < "$scratch/jobs/$job.rc"
    if [[ $rc != 0 ]]; then
        failed=$((failed + 1))
        continue
    fi
    while IFS= read -r line; do
        if [[ $line =~ $re_files ]]; then
            seen=$((seen + BASH_REMATCH[1]))
        elif [[ $line =~ $re_sent ]]; then
            uploaded=$((uploaded + BASH_REMATCH[1]))
            uploaded_bytes=$((uploaded_bytes + BASH_REMATCH[2]))
        elif [[ $line =~ $re_copied ]]; then
            copied=$((copied + BASH_REMATCH[1]))
            copied_bytes=$((copied_bytes + BASH_REMATCH[2]))
        fi
    done < "$scratch/jobs/$job.out"
done

summary="synced $logs_dir to s3://$bucket/: $planned_files files ($planned_bytes bytes) in $entries top-level entries;"
summary+=" uploaded $uploaded ($uploaded_bytes bytes), copied $copied server-side ($copied_bytes bytes);"
summary+=" not uploaded: $symlinks symlinks, $special special files;"
summary+=" $calls s3cmd calls in $jobs parallel jobs, $((SECONDS - started)) s"
if [[ $failed -gt 0 ]]; then
    printf '%s\n' "$summary" >&2
    fail "$failed of $jobs s3cmd jobs failed (see above); nothing was deleted, re-run to resume"
fi
if [[ $seen -lt $planned_files ]]; then
    printf '%s: s3cmd saw %s files, the plan had %s (files removed while syncing?); run verify\n' \
        "$0" "$seen" "$planned_files" >&2
fi
printf '%s\n' "$summary"
"""


def _assignments(logs_dir: str, bucket: str, endpoint: str, region: str, ca_file: str | None) -> str:
    _check(bucket, region)
    if not logs_dir.startswith("/"):
        raise ValueError(f"logs_dir {logs_dir!r} must be an absolute path")
    ep = parse_endpoint(endpoint)
    return "\n".join([
        f"logs_dir={shlex.quote(logs_dir)}",
        f"bucket={shlex.quote(bucket)}",
        f"s3_host={shlex.quote(ep.host)}",
        f"use_https={'True' if ep.https else 'False'}",
        f"region={shlex.quote(region)}",
        f"ca_file={shlex.quote(ca_file or '')}",
    ])


def sync_script(logs_dir: str, bucket: str, endpoint: str, region: str, parallelism: int,
                ca_file: str | None = None, min_files_per_job: int = MIN_FILES_PER_JOB) -> str:
    """Copy every regular file under ``logs_dir`` to ``s3://bucket/<relative path>``.

    stdin: access key and secret key, one a line.  stdout: one summary line.  Exit non-zero
    when anything failed (the parts that succeeded stay uploaded; a re-run resumes).
    ``endpoint``: see the module docstring; ``ca_file``: a PEM bundle for https (default: the
    system store, which holds the WMF CA on production hosts).  A tree of fewer than
    ``parallelism * min_files_per_job`` files gets fewer jobs (each s3cmd start costs ~0.15 s
    of CPU, which would make the second pass of a small tree slower than one s3cmd).
    """
    if not isinstance(parallelism, int) or isinstance(parallelism, bool) or not 1 <= parallelism <= MAX_PARALLELISM:
        raise ValueError(f"parallelism must be an integer in 1..{MAX_PARALLELISM}, got {parallelism!r}")
    if not isinstance(min_files_per_job, int) or isinstance(min_files_per_job, bool) or min_files_per_job < 1:
        raise ValueError(f"min_files_per_job must be a positive integer, got {min_files_per_job!r}")
    return (
        remote.header("airflow logs to S3: sync")
        + _assignments(logs_dir, bucket, endpoint, region, ca_file)
        + f"\nparallelism={parallelism}\nmin_files_per_job={min_files_per_job}\n"
        + _PRELUDE
        + _SYNC_BODY.replace("@PLANNER@", _PLANNER_PY.strip())
    )


# ---------------------------------------------------------------------------------------------
# verify

# argv: the `s3cmd ls -r` output file, the bucket.  Walks "." (the logs dir) like the planner.
# Prints the table on stdout; exit 1 when a local file has no object of its size.
_VERIFY_PY = r"""
import os
import re
import stat
import sys

listing, bucket = sys.argv[1], sys.argv[2]


def raise_error(err):
    raise err


local = {}
symlinks = special = 0
for root, dirs, names in os.walk(".", onerror=raise_error):
    symlinks += sum(1 for d in dirs if os.path.islink(os.path.join(root, d)))
    for n in names:
        path = os.path.join(root, n)
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            local[os.path.relpath(path, ".")] = st.st_size
        elif stat.S_ISLNK(st.st_mode):
            symlinks += 1
        else:
            special += 1

# s3cmd ls -r: "YYYY-MM-DD HH:MM <size>  s3://<bucket>/<key>"
line_re = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d +(\d+)  s3://" + re.escape(bucket) + r"/(.*)$")
remote = {}
with open(listing, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
    for number, line in enumerate(f, 1):
        line = line[:-1] if line.endswith("\n") else line
        m = line_re.match(line)
        if not m:
            sys.exit("cannot parse line %d of the bucket listing: %r" % (number, line[:200]))
        remote[m.group(2)] = int(m.group(1))


def prefix(key):
    return key.split("/", 1)[0]


rows = {}  # prefix -> [local files, local bytes, objects, object bytes, missing, wrong size, target-only, its bytes]
for key, size in local.items():
    row = rows.setdefault(prefix(key), [0] * 8)
    row[0] += 1
    row[1] += size
    if key not in remote:
        row[4] += 1
    elif remote[key] != size:
        row[5] += 1
    else:
        row[2] += 1
        row[3] += remote[key]
for key, size in remote.items():
    if key not in local:
        row = rows.setdefault(prefix(key), [0] * 8)
        row[6] += 1
        row[7] += size

head = ("prefix", "local files", "local bytes", "objects", "object bytes", "missing", "wrong size", "only on target", "status")
def shown(name):
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


table = [head]
bad = []
totals = [0] * 8
for name in sorted(rows):
    row = rows[name]
    totals = [a + b for a, b in zip(totals, row)]
    if row[4] or row[5]:
        status = "MISMATCH"
        bad.append("%s (%d missing, %d wrong size)" % (shown(name), row[4], row[5]))
    elif row[0] == 0:
        status = "target only"
    else:
        status = "ok"
    table.append((shown(name),) + tuple(str(v) for v in row[:7]) + (status,))
table.append(("TOTAL",) + tuple(str(v) for v in totals[:7]) + ("MISMATCH" if bad else "ok",))
widths = [max(len(r[i]) for r in table) for i in range(len(head))]
for r in table:
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
print("not uploaded (as the runbook's s3cmd): %d symlinks, %d special files" % (symlinks, special))
if bad:
    sys.stderr.write("%d top-level prefixes differ: %s\n" % (len(bad), "; ".join(bad)))
    sys.exit(1)
"""

_VERIFY_BODY = r"""
cd -- "$logs_dir"
s3cmd -c "$config" ls -r "s3://$bucket/" < /dev/null > "$scratch/listing" 2> "$scratch/ls.err" || {
    rc=$?
    cat "$scratch/ls.err" >&2
    fail "s3cmd ls -r s3://$bucket/ failed (exit $rc)"
}
rc=0
python3 - "$scratch/listing" "$bucket" <<'PY' || rc=$?
@VERIFY@
PY
case $rc in
    0) ;;
    1) fail "s3://$bucket/ does not hold every file of $logs_dir (table above)" ;;
    *) fail "cannot compare $logs_dir with s3://$bucket/ (python3 exit $rc)" ;;
esac
"""


def verify_script(logs_dir: str, bucket: str, endpoint: str, region: str, ca_file: str | None = None) -> str:
    """Compare ``logs_dir`` with the bucket; table on stdout; exit 1 on a missing/short object.

    Key by key: every local regular file must have an object of the same size (no ETags:
    multipart ETags are not MD5s).  The table gives, per top-level prefix, the local files
    and bytes, the matching objects and bytes, and the objects only on the target (reported,
    not a failure: the Kubernetes scheduler may already have written logs there).
    """
    return (
        remote.header("airflow logs to S3: verify")
        + _assignments(logs_dir, bucket, endpoint, region, ca_file)
        + "\n"
        + _PRELUDE
        + _VERIFY_BODY.replace("@VERIFY@", _VERIFY_PY.strip())
    )


# ---------------------------------------------------------------------------------------------
# stop the legacy services (downtime starts here)

_STOP_BODY = r"""
fail() { printf '%s: %s\n' "$0" "$*" >&2; exit 1; }
command -v puppet >/dev/null || fail "puppet is not installed"
command -v systemctl >/dev/null || fail "systemctl is not installed"

# 1. puppet must not start the services again.  Already disabled (by us, or by someone else
#    with another reason, which stays as it is) is fine.
disabled_lock=$(puppet config print agent_disabled_lockfile </dev/null) || fail "puppet config print failed"
[[ -n $disabled_lock ]] || fail "puppet config print agent_disabled_lockfile printed nothing"
if [[ -e $disabled_lock ]]; then
    puppet_state="puppet agent was already disabled"
else
    puppet agent --disable "$reason" </dev/null >&2 || fail "puppet agent --disable failed"
    [[ -e $disabled_lock ]] || fail "puppet agent --disable did not create $disabled_lock"
    puppet_state="puppet agent disabled"
fi

# 2. a puppet run already in progress may still (re)start a service: wait for it to end
run_lock=$(puppet config print agent_catalog_run_lockfile </dev/null) || fail "puppet config print failed"
waited=0
while [[ -n $run_lock && -e $run_lock ]]; do
    run_pid=
    IFS= read -r run_pid < "$run_lock" || true
    if [[ ! $run_pid =~ ^[0-9]+$ || ! -e /proc/$run_pid ]]; then
        break  # a stale lock of a dead run
    fi
    if [[ $waited -ge $run_wait_seconds ]]; then
        fail "a puppet agent run (pid $run_pid) is still in progress after ${run_wait_seconds}s; stop it, then re-run"
    fi
    if [[ $waited -eq 0 ]]; then
        printf '%s: waiting for the puppet agent run in progress (pid %s)\n' "$0" "$run_pid" >&2
    fi
    sleep 1
    waited=$((waited + 1))
done

# 3. stop the services.  The unit patterns are quoted: systemctl, not the shell, matches them
#    against the loaded units (the runbook's unquoted @* would also match files in the cwd).
active_units() {
    local unit rest
    systemctl list-units --state=active,activating,deactivating,reloading --no-legend --plain --full "${units[@]}" </dev/null |
        while read -r unit rest; do
            [[ -n $unit ]] && printf '%s ' "$unit"
        done
}
before=$(active_units) || fail "systemctl list-units failed"
if [[ -n $before ]]; then
    systemctl stop "${units[@]}" </dev/null >&2 || fail "systemctl stop failed"
fi
after=$(active_units) || fail "systemctl list-units failed"
[[ -z $after ]] || fail "still active after systemctl stop: $after"

if [[ -n $before ]]; then
    printf 'airflow-%s legacy services: %s; stopped %s\n' "$instance" "$puppet_state" "${before% }"
else
    printf 'airflow-%s legacy services: %s; none was running\n' "$instance" "$puppet_state"
fi
"""


def stop_legacy_script(instance: str, run_wait_seconds: int = 300) -> str:
    """The runbook's ``puppet agent --disable "..."`` and ``systemctl stop airflow-{...}@*.service``.

    Idempotent: puppet already disabled (whatever the reason) and services already stopped are
    fine.  Waits up to ``run_wait_seconds`` for a puppet run in progress (it could restart a
    service), and checks that no matching unit is still active.  Runs as root (sudo).
    ``instance`` only names the instance in the summary: like the runbook, every
    airflow-{webserver,kerberos,scheduler}@ unit of the host stops.
    """
    if not re.match(r"^[a-z][a-z0-9-]{0,62}$", instance):
        raise ValueError(f"{instance!r} is not an instance name")
    if not isinstance(run_wait_seconds, int) or run_wait_seconds < 0:
        raise ValueError("run_wait_seconds must be a non-negative integer")
    return (
        remote.header("airflow legacy services: stop")
        + f"instance={shlex.quote(instance)}\n"
        + f"reason={shlex.quote(PUPPET_DISABLE_REASON)}\n"
        + f"units=({' '.join(shlex.quote(u) for u in LEGACY_UNITS)})\n"
        + f"run_wait_seconds={run_wait_seconds}\n"
        + _STOP_BODY
    )
