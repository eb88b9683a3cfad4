"""Every generated script that handles a secret, run for real with sentinel secrets: no secret
in any process's argv or environment, on stderr, or in any file written while it ran.

Scripts: ``rgw_user_script`` (S3 keys on stdin), the log migration's ``sync_script`` and
``verify_script`` (S3 keys on stdin), db_verify's ``verify_script`` (two passwords on stdin) and
the Kerberos ``keytab_script`` (its stdout IS the secret: the keytab, base64).  Each runs as the
Command runs it, ``bash -c SCRIPT NAME`` with the secrets on stdin, while :class:`ProcWatcher`
polls every process's ``/proc/PID/cmdline`` and ``/proc/PID/environ`` (all readable: we are
root).  After it: stdout (except the keytab's), stderr and every file created or modified
under /tmp during the run (ctime newer than a marker file, tests/test_secret_leaks.py) are
searched for every sentinel in plain, base64 (any alignment, both alphabets), hex, URL-encoded
and JSON-escaped forms.  Zero hits.

By design, one environment holds a key: ``rgw_user_script`` hands the S3 key pair to the one
``radosgw-admin`` process that needs it in ``CEPH_ARGS`` (ceph's env_to_vec; components/
rgw_user.py), because radosgw-admin reads keys only from its arguments.  /proc/PID/environ
is readable only by the process's owner (root, on the RGW admin host) where /proc/PID/cmdline
is world-readable.  So ``CEPH_ARGS`` of a process in the script's own process tree is the one
exemption, and the RGW test proves the watcher did see it there (else the exemption, and the
environ check, would be untested).

On-disk copies that are the service's own business, and why no directory is excluded:

* RGW keeps the user's keys in RADOS, here a memstore OSD: in memory, nothing on disk; its
  request log (searched) names the user, never a key.
* PostgreSQL stores a SCRAM verifier (salted hash), never the password: its data directory is
  searched like everything else (and the password is asserted absent from it).
* The KDC database holds the keys encrypted with the master key: searched too, no raw key.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from components import kerberos, log_migration as lm, rgw_user
from tests.integration.fixtures_kdc import kdc, keytab_script_for, parse_keytab  # noqa: F401
from tests.integration.fixtures_logtree import make_tree
from tests.integration.fixtures_rgw import ArgvWatcher, S3Keys, checksum_env, rgw  # noqa: F401
from tests.integration.test_idempotency import PRINCIPALS, REALM, PgPair, pg_pair  # noqa: F401
from tests.test_secret_leaks import Marker, Sentinels

TMP = Path("/tmp")
BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")


def sentinel_keys() -> S3Keys:
    """An S3 key pair that is a sentinel and still passes the scripts' key checks (letters/digits)."""
    return S3Keys(access_key="LEAKSENTINEL" + secrets.token_hex(6).upper(),
                  secret_key="LEAKSENTINELsecret" + secrets.token_hex(11))


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time) of a process from /proc/PID/stat, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()  # the command name may hold spaces and parens
    return int(fields[1]), int(fields[19])


class ProcWatcher(ArgvWatcher):
    """fixtures_rgw's ArgvWatcher (a thread polling every process's argv into ``seen``) that
    also records each process image's environment, with its ancestors, for a check after the
    run: the keytab script's secret is known only once it has run, and whether a process
    belongs to the script's tree is decided once the script's PID is known."""

    def __init__(self) -> None:
        super().__init__(forbidden=())
        # (pid, start time, raw cmdline) -> (ancestor pids, raw environ or None if unreadable)
        self.images: dict[tuple[int, int, bytes], tuple[tuple[int, ...], bytes | None]] = {}

    def _ancestors(self, pid: int) -> tuple[int, ...]:
        chain = []
        while pid > 1 and len(chain) < 64:
            st = _stat(pid)
            if st is None:
                break
            pid = st[0]
            chain.append(pid)
        return tuple(chain)

    def _scan(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    raw = f.read()
            except OSError:  # ended meanwhile
                continue
            st = _stat(pid)
            if st is None or not raw:  # gone, or a kernel thread
                continue
            self.seen.add(raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace"))
            key = (pid, st[1], raw)
            if key in self.images:
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    environ: bytes | None = f.read()
            except OSError:
                environ = None
            self.images[key] = ((pid, *self._ancestors(pid)), environ)


@dataclass
class WatchedRun:
    returncode: int
    stdout: bytes
    stderr: bytes
    root_pid: int
    watcher: ProcWatcher
    changed: list[Path]

    def check(self) -> "WatchedRun":
        assert self.returncode == 0, f"exit {self.returncode}: {self.stderr.decode(errors='replace')[-3000:]}"
        return self

    def in_tree(self, lineage: tuple[int, ...]) -> bool:
        return self.root_pid in lineage

    def process_leaks(self, sentinels: Sentinels) -> tuple[list[str], list[str]]:
        """(leaks, exempted): argv hits anywhere; environ hits anywhere except CEPH_ARGS of a
        process in the script's own tree, which is by design (module docstring)."""
        leaks, exempted = [], []
        for (pid, _, raw), (lineage, environ) in self.watcher.images.items():
            program = raw.split(b"\0", 1)[0].decode(errors="replace")
            hits = sentinels.hits(raw.replace(b"\0", b" "))  # bytes: a raw key matches too
            if hits:
                leaks.append(f"argv of {program} (pid {pid}): {hits}")
            for entry in (environ or b"").split(b"\0"):
                hits = sentinels.hits(entry)
                if not hits:
                    continue
                name = entry.split(b"=", 1)[0].decode(errors="replace")
                if name == "CEPH_ARGS" and self.in_tree(lineage):
                    exempted.append(f"{program} (pid {pid}) {name}: {hits}")
                else:
                    leaks.append(f"environ of {program} (pid {pid}, in the script's tree: "
                                 f"{self.in_tree(lineage)}) {name}: {hits}")
        return leaks, exempted

    def file_leaks(self, sentinels: Sentinels) -> dict[str, list[str]]:
        return sentinels.hits_in_files(self.changed)


def run_watched(script: str, name: str, stdin: bytes, env: Mapping[str, str], *, cwd: Path | None = None,
                timeout: float = 120) -> WatchedRun:
    """``bash -c SCRIPT NAME`` with ``stdin``, its processes watched; then the files under /tmp
    created or modified meanwhile."""
    marker = Marker()
    try:
        with ProcWatcher() as watcher:
            proc = subprocess.Popen(["bash", "-c", script, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=dict(env), cwd=cwd)
            try:
                out, err = proc.communicate(stdin, timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise
        changed = marker.changed_files([TMP])
    finally:
        marker.remove()
    return WatchedRun(proc.returncode, out, err, proc.pid, watcher, changed)


def assert_no_leak(run: WatchedRun, sentinels: Sentinels, what: str, *, stdout: bool = True) -> list[str]:
    """Zero hits in argv, environ (but the CEPH_ARGS exemption), stderr, stdout (unless it is
    the secret) and changed files; returns the exempted environ hits."""
    leaks, exempted = run.process_leaks(sentinels)
    assert leaks == [], f"{what}: a secret in a process's argv or environment: {leaks}"
    assert sentinels.hits(run.stderr) == [], f"{what}: stderr shows {sentinels.hits(run.stderr)}"
    if stdout:
        assert sentinels.hits(run.stdout) == [], f"{what}: stdout shows {sentinels.hits(run.stdout)}"
    files = run.file_leaks(sentinels)
    assert files == {}, f"{what}: files written during the run hold secrets: {files}"
    assert len(run.watcher.images) > 10, f"{what}: the watcher saw the machine's processes"
    return exempted


def s3_sentinels(keys: S3Keys) -> Sentinels:
    return Sentinels({"S3 access key": keys.access_key, "S3 secret key": keys.secret_key})


# --- RGW user -------------------------------------------------------------------------------

def test_rgw_user_script_keys_only_in_the_ceph_args_of_its_own_radosgw_admin(rgw):
    keys = sentinel_keys()
    uid = "leak-rgw-user"
    run = run_watched(rgw_user.rgw_user_script(uid, uid), "rgw-user", keys.stdin().encode(), rgw.env).check()
    assert run.stdout == f"user {uid}: created\n".encode()
    exempted = assert_no_leak(run, s3_sentinels(keys), "rgw_user_script")
    assert any("radosgw-admin" in e and "CEPH_ARGS" in e for e in exempted), (
        "the watcher saw the keys in the CEPH_ARGS of the script's radosgw-admin (by design): "
        "without that sighting the environ check proves nothing"
    )
    assert any(argv.startswith("radosgw-admin user info --uid=") for argv in run.watcher.seen), \
        "the watcher saw the script's radosgw-admin calls"
    info = rgw.user_info(uid)
    assert [(k["access_key"], k["secret_key"]) for k in info["keys"]] == [(keys.access_key, keys.secret_key)], \
        "the keys reached the RGW (in RADOS: memstore, not on disk)"


# --- log migration --------------------------------------------------------------------------

def test_log_sync_and_verify_leave_no_key_anywhere(rgw, tmp_path):
    keys = sentinel_keys()
    uid, bucket = "leak-log-migration", "logs.airflow-leaktest.test-eqiad"
    # the user exists before the run (its keys through CEPH_ARGS, as the RGW user script does)
    rgw.run("radosgw-admin", "user", "create", f"--uid={uid}", f"--display-name={uid}",
            extra_env={"CEPH_ARGS": f"--access-key={keys.access_key} --secret-key={keys.secret_key}"})
    with checksum_env():
        rgw.s3_client(keys).create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": rgw.region})
    tree = make_tree(tmp_path / "logs", files=60, seed=31)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**rgw.env, "TMPDIR": str(scratch)}
    args = (str(tree.root), bucket, rgw.http_endpoint, rgw.region)
    sentinels = s3_sentinels(keys)

    sync = run_watched(lm.sync_script(*args, 2), "log-sync", keys.stdin().encode(), env).check()
    assert b"uploaded 60 " in sync.stdout, sync.stdout
    assert assert_no_leak(sync, sentinels, "sync_script") == [], "no environment holds a key, not even by design"
    assert any("s3cmd -c " in argv for argv in sync.watcher.seen), "the watcher saw s3cmd"

    verify = run_watched(lm.verify_script(*args), "log-verify", keys.stdin().encode(), env).check()
    assert verify.stdout.splitlines()[-2].split()[-1] == b"ok", verify.stdout
    assert assert_no_leak(verify, sentinels, "verify_script") == []
    assert list(scratch.iterdir()) == [], "the scratch dirs (with the s3cmd config) are gone"


# --- database verifier ----------------------------------------------------------------------

def test_db_verify_passwords_reach_psql_only_through_a_removed_pgpass(pg_pair):
    pair: PgPair = pg_pair
    sentinels = Sentinels({"source password": pair.source_password, "target password": pair.target_password})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "TMPDIR"}  # mktemp: /tmp
    run = run_watched(pair.script(), "db-verify", pair.stdin().encode(), env).check()
    assert run.stdout.splitlines()[-1] == b"RESULT: MATCH", run.stdout
    assert assert_no_leak(run, sentinels, "db_verify verify_script") == []
    assert any("psql -X -w " in argv for argv in run.watcher.seen), "the watcher saw psql"
    assert not list(TMP.glob("db-verify.*")), "the pgpass dir is removed"
    # PostgreSQL keeps a SCRAM verifier, not the password: nothing to exclude from the search
    assert pair.cluster.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'").startswith("SCRAM-SHA-256$")
    data_files = [p for p in pair.cluster.root.rglob("*") if p.is_file()]
    assert sentinels.hits_in_files(data_files) == {}, "no password in the cluster's directory"


# --- Kerberos keytab ------------------------------------------------------------------------

def keytab_sentinels(stdout: bytes) -> Sentinels:
    """The keytab's base64 and every key in it (raw, hex, base64): a leftover keytab file, or a
    key printed anywhere, shows one of them."""
    _, entries = parse_keytab(base64.b64decode(stdout, validate=True))
    values: dict[str, str | bytes] = {"keytab base64": stdout.decode()}
    values.update({f"key of {e.principal} (enctype {e.enctype})": e.key for e in entries})
    return Sentinels(values)


def test_keytab_appears_only_on_stdout(kdc, tmp_path):
    # kadmin.local lives ~10 ms: a shim that lingers 0.3 s with the same arguments makes sure the
    # watcher's sampling sees each call (the check below proves the watcher is not blind)
    shims = tmp_path / "shims"
    shims.mkdir()
    real = shutil.which("kadmin.local", path=kdc.env["PATH"])
    (shims / "kadmin.local").write_text(f'#!/bin/bash\nsleep 0.3\nexec -a kadmin.local {real} "$@"\n')
    (shims / "kadmin.local").chmod(0o755)
    env = dict(kdc.env)
    script = keytab_script_for(kdc, PRINCIPALS, kadmin_local=str(shims / "kadmin.local"))
    run = run_watched(script, "kerberos-keytab", b"", env,
                      cwd=kdc.directory).check()
    assert BASE64.fullmatch(run.stdout), "stdout is the keytab's base64 and nothing else"
    sentinels = keytab_sentinels(run.stdout)
    assert len(sentinels.values) == 1 + 2 * len(PRINCIPALS), "two keys (aes256, aes128) per principal"
    assert assert_no_leak(run, sentinels, "keytab_script", stdout=False) == []
    assert any(f"{shims}/kadmin.local -r WIKIMEDIA " in argv for argv in run.watcher.seen), \
        "the watcher saw the script's kadmin.local calls"
    assert list(Path(kdc.env["TMPDIR"]).iterdir()) == [], "the keytab's temp dir is removed"
    # the KDC database changed during the run (three principals added) and was searched: its keys
    # are encrypted with the master key, so no raw key is found there
    assert kdc.directory / "principal" in run.changed
