"""The log-migration scripts (components/log_migration.py) as text, and run against stand-ins.

tests/integration/test_log_migration.py runs the same text against a real RGW.  Here:

* a stand-in ``s3cmd`` records every call (argv, config file and its mode, the files each call
  covers, start/end times) so the planner's promise, every regular file in exactly one call,
  keys relative to the logs dir, is checked on trees with hostile names, in milliseconds;
* stand-in ``puppet`` and ``systemctl`` (state in a JSON file) record their argv: the exact
  runbook calls, idempotency, the instance's own units only; a stand-in ``sudo`` records every
  call the stop script makes through it, each of which must be exactly one of the rendered
  sudoers rules, and the log steps must make none.

Set UPDATE_GOLDEN=1 to rewrite the golden scripts after an intended change (then review the diff).
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from components import log_migration as lm
from components import remote, sudoers
from tests.integration.fixtures_logtree import make_tree, mutate
from tests.goldens import golden

ACCESS = "AKIAEXAMPLE000000001"
SECRET = "sEcReTexample000000000000000000000000001"
KEYS = f"{ACCESS}\n{SECRET}\n"
LOGS = "/srv/airflow-search/logs"
BUCKET = "logs.airflow-search.dse-k8s-eqiad"
ENDPOINT = "https://rgw.eqiad.dpe.anycast.wmnet"
HOSTILE_NAMES = ["x y;$(id)", "it's `id`", 'q"uote', "new\nline", "star*", "$HOME", "-rf", " lead", "trail "]




# --- stand-in s3cmd ----------------------------------------------------------------------------

FAKE_S3CMD = textwrap.dedent('''\
    #!{python}
    """Records a call: argv, config (text and mode), covered keys; answers like s3cmd 2.3.0 --stats."""
    import json, os, stat, sys, time
    state = os.environ["FAKE_S3CMD_DIR"]
    began = time.time()
    args = sys.argv[1:]
    config = None
    flags, positional, files_from = [], [], None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            positional += args[i + 1:]
            break
        if a == "-c":
            config = args[i + 1]
            i += 2
            continue
        if a.startswith("--files-from="):
            files_from = a.split("=", 1)[1]
        elif a.startswith("-"):
            flags.append(a)
        else:
            positional.append(a)
        i += 1
    record = {{"argv": args, "pid": os.getpid(), "cwd": os.getcwd(), "flags": flags, "positional": positional,
              "config_mode": oct(stat.S_IMODE(os.stat(config).st_mode)) if config else None,
              "config": open(config).read() if config else None,
              "config_dir_mode": oct(stat.S_IMODE(os.stat(os.path.dirname(config)).st_mode)) if config else None}}
    keys = []
    if positional and positional[0] == "sync":
        for src in positional[1:-1]:
            name = src[2:] if src.startswith("./") else src
            if files_from:
                with open(files_from, encoding="utf-8") as f:
                    keys += [(name + "/" if name else "") + line.strip() for line in f]
            elif os.path.isfile(src) and not os.path.islink(src):
                keys.append(name)
            else:
                for root, dirs, files in os.walk(src):
                    for n in files:
                        p = os.path.join(root, n)
                        if os.path.isfile(p) and not os.path.islink(p):
                            keys.append(os.path.relpath(p, "."))
        record["keys"] = keys
        time.sleep(float(os.environ.get("FAKE_S3CMD_SLEEP", "0")))
    elif positional and positional[0] == "ls":
        sys.stdout.write(open(os.environ["FAKE_S3CMD_LISTING"]).read())
    record["began"], record["ended"] = began, time.time()
    with open(os.path.join(state, "calls.jsonl"), "a") as log:
        log.write(json.dumps(record) + "\\n")
    fail_on = os.environ.get("FAKE_S3CMD_FAIL_ON")
    if fail_on and any(fail_on in p for p in positional[1:-1]):
        sys.stderr.write("ERROR: S3 error: 503 (ServiceUnavailable)\\n")
        sys.exit(15)
    if positional and positional[0] == "sync":
        size = sum(os.path.getsize(k) for k in keys if os.path.exists(k))
        print("Done. Uploaded %d bytes in 1.0 seconds, 1.00 kB/s." % size)
        print("Stats: Number of files: %d (%d bytes) " % (len(keys), size))
        if keys:
            print("Stats: Number of files transferred: %d (%d bytes) " % (len(keys), size))
''')


class FakeS3cmd:
    def __init__(self, root: Path, python: str = sys.executable):
        """``python``: the stand-in's interpreter (/usr/bin/python3 when another user runs it)."""
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        tool = self.bin / "s3cmd"
        tool.write_text(FAKE_S3CMD.format(python=python))
        tool.chmod(0o755)
        marker = root / "id-ran"
        (self.bin / "id").write_text(f"#!/bin/sh\ntouch {shlex.quote(str(marker))}\n")
        (self.bin / "id").chmod(0o755)
        self.marker = marker
        # the log steps must never call sudo: a stand-in first on PATH records any call
        self.sudo_log = root / "sudo-calls"
        (self.bin / "sudo").write_text(f"#!/bin/sh\necho \"$*\" >> {shlex.quote(str(self.sudo_log))}\nexit 1\n")
        (self.bin / "sudo").chmod(0o755)
        self.tmp = root / "tmp"
        self.tmp.mkdir()
        self.env = {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE_S3CMD_DIR": str(root), "HOME": str(root),
                    "TMPDIR": str(self.tmp), "LANG": "C.UTF-8"}

    def popen(self, script: str, **env: str) -> subprocess.Popen:
        proc = subprocess.Popen(["bash", "-c", script, "log-migration"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**self.env, **env}, start_new_session=True)
        proc.stdin.write(KEYS)
        proc.stdin.close()
        return proc

    def run(self, script: str, stdin: str = KEYS, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", script, "log-migration"], input=stdin, capture_output=True,
                              text=True, env={**self.env, **env}, timeout=60)

    def calls(self) -> list[dict]:
        path = self.root / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def covered(self) -> Counter:
        return Counter(k for call in self.calls() for k in call.get("keys", []))


@pytest.fixture
def fake(tmp_path) -> FakeS3cmd:
    return FakeS3cmd(tmp_path / "fake")


def regular_files(root: Path) -> set[str]:
    out = set()
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath, n)
            if p.is_file() and not p.is_symlink():
                out.add(str(p.relative_to(root)))
    return out


# --- the scripts as text ---------------------------------------------------------------------------

def test_sync_script_matches_golden():
    golden("log_migration_sync_search.sh", lm.sync_script(LOGS, BUCKET, ENDPOINT, "dpe", 8))


def test_verify_script_matches_golden():
    golden("log_migration_verify_search.sh", lm.verify_script(LOGS, BUCKET, ENDPOINT, "dpe"))


def test_stop_legacy_script_matches_golden():
    # what the search stack runs: remoteSudo true, commandTimeoutMinutes 10
    golden("log_migration_stop_search.sh", lm.stop_legacy_script("search", logs_dir=LOGS, use_sudo=True, timeout_seconds=600))


@pytest.mark.processes
def test_scripts_follow_the_remote_conventions():
    for script, body in ((lm.sync_script(LOGS, BUCKET, ENDPOINT, "dpe", 8), "legacy_logs.sh"),
                         (lm.verify_script(LOGS, BUCKET, ENDPOINT, "dpe"), "legacy_logs.sh"),
                         (lm.stop_legacy_script("search", use_sudo=True), "legacy_stop.sh")):
        assert script.startswith(remote.header("x").splitlines()[0]), "scripts start with remote.header()"
        assert "set -euo pipefail" in script and "umask 077" in script, "strict mode and umask from the header"
        assert script.endswith(remote._body(body)), f"the body is components/scripts/{body} verbatim"
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)


@pytest.mark.parametrize("name", ["legacy_logs.sh", "legacy_stop.sh"])
def test_body_files_start_with_the_shebang_the_directive_and_what_the_program_fills_in(name):
    lines = remote.script_file(name).splitlines()
    assert lines[:2] == ["#!/bin/bash", "# shellcheck shell=bash"], f"{name}: shebang then the shellcheck directive"
    assert lines[2].startswith("# ") and any("Filled in by the program" in line for line in lines[2:20]), \
        f"{name}: a comment saying what the program fills in comes next"


def test_the_python_helper_survives_single_quoting_without_a_shellcheck_finding():
    """The script holds log_sync.py in single quotes: a backquote or a dollar sign before a name,
    brace or parenthesis there is shellcheck's SC2016 (an expansion that does not happen)."""
    text = remote.script_file("log_sync.py")
    assert "`" not in text, "log_sync.py holds a backquote"
    assert not re.search(r"\$[A-Za-z0-9_{(]", text), "log_sync.py holds a dollar sign before a name, brace or parenthesis"
    compile(text, "log_sync.py", "exec")


def test_log_steps_ship_the_helper_and_ask_sudo_for_nothing():
    for script in (lm.sync_script(LOGS, BUCKET, ENDPOINT, "dpe", 8), lm.verify_script(LOGS, BUCKET, ENDPOINT, "dpe")):
        assert f"log_sync_py={shlex.quote(remote.script_file('log_sync.py'))}\n" in script, "the helper, as a value"
        assert "\nsudo=" not in script and "${sudo" not in script, "no sudo array, no call through sudo in the log steps"


def test_script_functions_take_no_key():
    for fn in (lm.sync_script, lm.verify_script, lm.stop_legacy_script):
        params = set(inspect.signature(fn).parameters)
        assert not params & {"access_key", "secret_key", "keys"}, f"{fn.__name__} must not take keys: {params}"


def test_sync_never_deletes_on_the_target():
    script = lm.sync_script(LOGS, BUCKET, ENDPOINT, "dpe", 8)
    assert "--delete-removed" not in script.replace("--no-delete-removed", ""), "no --delete-removed anywhere"
    assert "delete_removed = False" in script, "the config says so too"
    assert re.search(r"s3cmd -c \"\$config\" --no-delete-removed", script), "the s3cmd call says --no-delete-removed"
    helper = remote.script_file("log_sync.py")
    assert '"DELETE"' not in helper and "'DELETE'" not in helper, "the uploader never deletes"


def test_s3_settings_match_the_platform():
    script = lm.sync_script(LOGS, BUCKET, ENDPOINT, "dpe", 8)
    assert "s3_host=rgw.eqiad.dpe.anycast.wmnet\n" in script, "host without scheme (s3cmd host_base)"
    assert "use_https=True\n" in script and "region=dpe\n" in script
    for line in ("host_base = %s", "host_bucket = %s", "bucket_location = %s", "signature_v2 = False"):
        assert line in script, f"s3cmd config line {line!r}"
    assert "%(bucket)s" not in script, "path-style: host_bucket has no %(bucket)s"


@pytest.mark.parametrize("endpoint, host, https", [
    ("https://rgw.eqiad.dpe.anycast.wmnet", "rgw.eqiad.dpe.anycast.wmnet", True),
    ("https://rgw.eqiad.dpe.anycast.wmnet/", "rgw.eqiad.dpe.anycast.wmnet", True),
    ("rgw.eqiad.dpe.anycast.wmnet", "rgw.eqiad.dpe.anycast.wmnet", True),
    ("http://127.0.0.1:8080", "127.0.0.1:8080", False),
    ("https://127.0.0.1:8443", "127.0.0.1:8443", True),
])
def test_endpoint_parsing(endpoint, host, https):
    assert lm.parse_endpoint(endpoint) == lm.Endpoint(host=host, https=https)


@pytest.mark.parametrize("endpoint", ["ftp://x", "https://h/path", "https://u:p@h", "https://h?x=1", "https://-bad",
                                      "https://h:99999", "https://a b"])
def test_bad_endpoints_are_refused(endpoint):
    with pytest.raises(ValueError, match="endpoint"):
        lm.parse_endpoint(endpoint)


@pytest.mark.parametrize("kwargs, match", [
    ({"bucket": "UPPER"}, "bucket"), ({"bucket": "a..b"}, "bucket"), ({"region": "d p e"}, "zonegroup"),
    ({"parallelism": 0}, "parallelism"), ({"parallelism": 65}, "parallelism"), ({"parallelism": True}, "parallelism"),
    ({"logs_dir": "relative/logs"}, "absolute"), ({"progress_seconds": 0}, "progress_seconds"),
    ({"progress_seconds": True}, "progress_seconds"), ({"multipart_threshold": 0}, "multipart_threshold"),
])
def test_bad_arguments_are_refused(kwargs, match):
    args = {"logs_dir": LOGS, "bucket": BUCKET, "endpoint": ENDPOINT, "region": "dpe", "parallelism": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        lm.sync_script(**args)


@pytest.mark.processes
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_paths_are_quoted(name):
    logs = f"/srv/{name}/logs"
    for script in (lm.sync_script(logs, BUCKET, ENDPOINT, "dpe", 8, ca_file=f"/etc/{name}.pem"),
                   lm.verify_script(logs, BUCKET, ENDPOINT, "dpe", ca_file=f"/etc/{name}.pem")):
        assert f"logs_dir={shlex.quote(logs)}\n" in script, "the logs dir is assigned once, shell-quoted"
        assert f"ca_file={shlex.quote(f'/etc/{name}.pem')}\n" in script, "the CA file is assigned once, shell-quoted"
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)


# --- sync, run against a stand-in S3 server (and the stand-in s3cmd for files over the threshold) ---

class FakeS3(ThreadingHTTPServer):
    """An S3 endpoint in memory: ListObjectsV2 (encoding-type=url, pages of 50 keys), PUT (checks
    Content-MD5 like the RGW), HEAD.  Records every request; `fail_on` answers a PUT whose key
    contains it with a 503 (retried by the uploader), or a 403 with `fail_for_good`; `delay` seconds per PUT; keeps the peak of concurrent PUTs."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), FakeS3Handler)
        self.objects: dict[bytes, tuple[bytes, dict]] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self.fail_on: bytes | None = None
        self.fail_for_good = False
        self.delay = 0.0
        self.lock = threading.Lock()
        self.in_flight = self.peak = 0
        self.connections = 0
        # a short poll: shutdown() waits for the loop's next poll (0.5 s by default, per test)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def puts(self) -> Counter:
        return Counter(urllib.parse.unquote_to_bytes(path.split("/", 2)[2]) for m, path, _ in self.requests if m == "PUT")


class FakeS3Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        server = self.server
        server.requests.append(("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        prefix = query.get("prefix", [""])[0].encode("utf-8", "surrogateescape")
        start = query.get("continuation-token", [""])[0].encode()
        keys = sorted(k for k in server.objects if k.startswith(prefix) and k > urllib.parse.unquote_to_bytes(start))
        page, more = keys[:50], len(keys) > 50
        items = "".join(f"<Contents><Key>{urllib.parse.quote(k)}</Key><Size>{len(server.objects[k][0])}</Size>"
                        f"<ETag>&quot;{hashlib.md5(server.objects[k][0]).hexdigest()}&quot;</ETag></Contents>" for k in page)
        token = f"<NextContinuationToken>{urllib.parse.quote(page[-1])}</NextContinuationToken>" if more else ""
        body = (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>{token}{items}</ListBucketResult>").encode()
        self._reply(200, body, {"Content-Type": "application/xml"})

    def do_HEAD(self):
        self.server.requests.append(("HEAD", self.path, {k.lower(): v for k, v in self.headers.items()}))
        key = urllib.parse.unquote_to_bytes(self.path.split("/", 2)[2])
        if key in self.server.objects:
            self._reply(200, b"", {k: v for k, v in self.server.objects[key][1].items() if k.startswith("x-amz-meta")})
        else:
            self._reply(404)

    def do_PUT(self):
        server = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server.requests.append(("PUT", self.path, {k.lower(): v for k, v in self.headers.items()}))
        with server.lock:
            server.in_flight += 1
            server.peak = max(server.peak, server.in_flight)
        try:
            time.sleep(server.delay)
            key = urllib.parse.unquote_to_bytes(self.path.split("/", 2)[2])
            if not self.headers.get("Authorization", "").startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS}/"):
                return self._reply(403, b"<Error><Code>AccessDenied</Code></Error>")
            if server.fail_on and server.fail_on in key:
                if server.fail_for_good:
                    return self._reply(403, b"<Error><Code>AccessDenied</Code><Message>not this key</Message></Error>")
                return self._reply(503, b"<Error><Code>ServiceUnavailable</Code><Message>slow down</Message></Error>")
            if base64.b64decode(self.headers["Content-MD5"]) != hashlib.md5(body).digest():
                return self._reply(400, b"<Error><Code>BadDigest</Code></Error>")
            server.objects[key] = (body, {k.lower(): v for k, v in self.headers.items()})
            self._reply(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})
        finally:
            with server.lock:
                server.in_flight -= 1


@pytest.fixture
def s3():
    server = FakeS3()
    yield server
    server.shutdown()
    server.server_close()


def sync(logs: Path, s3: FakeS3, parallelism: int = 4, **kwargs) -> str:
    return lm.sync_script(str(logs), "logs.test", s3.endpoint, "dpe", parallelism, **kwargs)


@pytest.mark.processes
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_missing_logs_dir_fails_clearly_and_names_it(fake, s3, tmp_path, name):
    missing = tmp_path / name / "logs"
    proc = fake.run(sync(missing, s3))
    assert proc.returncode == 1, "a missing logs dir is an error"
    assert f"the logs directory {missing} does not exist" in proc.stderr, f"stderr names the dir: {proc.stderr!r}"
    assert proc.stdout == "", "nothing on stdout on failure"
    assert fake.calls() == [] and s3.requests == [], "nothing was sent"
    assert not fake.marker.exists(), "`id` inside the name was executed: quoting failed"


@pytest.mark.parametrize("stdin, match", [
    ("", "line 1"), (f"{ACCESS}\n", "line 2"), (f"{ACCESS}\n$HOME00000000000000000000\n", "secret key"),
    (f"short\n{SECRET}\n", "access key"),
])
@pytest.mark.processes
def test_bad_stdin_is_refused_before_any_request(fake, s3, tmp_path, stdin, match):
    (tmp_path / "logs").mkdir()
    proc = fake.run(sync(tmp_path / "logs", s3), stdin=stdin)
    assert proc.returncode == 1 and match in proc.stderr, f"refused with a message about the {match}: {proc.stderr!r}"
    assert fake.calls() == [] and s3.requests == [], "nothing was sent"
    assert list(fake.tmp.iterdir()) == [], "no scratch dir left"


def skewed_tree_with_hostile_names(root: Path, newline: bool = True) -> Path:
    logs = root / "logs"
    make_tree(logs, files=600, seed=3)
    for name in HOSTILE_NAMES if newline else [n for n in HOSTILE_NAMES if "\n" not in n]:
        d = logs / f"dag_id={name}" / "run_id=manual__x" / "task_id=t"
        d.mkdir(parents=True)
        (d / "attempt=1.log").write_bytes(b"x" * 10)
    (logs / "-rf").write_bytes(b"top-level file that looks like an option")
    (logs / "top level.log").write_bytes(b"a top-level file")
    (logs / ".hidden").mkdir()
    (logs / ".hidden" / "a.log").write_bytes(b"hidden entries are part of the tree too")
    (logs / "empty_dir").mkdir()
    os.symlink("/etc", logs / "link_to_etc")  # never followed
    os.symlink("../-rf", logs / "scheduler" / "link_to_file")
    big = logs / "dag_id=big_unlistable"  # too big for one job, but a name s3cmd --files-from would strip
    for i in range(150):
        (big / f"run_id={i}").mkdir(parents=True)
        (big / f"run_id={i}" / "attempt=1.log").write_bytes(b"y" * 5)
    (big / "run_id=0" / "trailing space.log ").write_bytes(b"z")
    return logs



def objects_of(s3: FakeS3) -> dict[str, bytes]:
    return {os.fsdecode(k): body for k, (body, _) in s3.objects.items()}


@pytest.mark.processes
@pytest.mark.parametrize("parallelism", [1, 3, 8])
def test_every_regular_file_is_uploaded_once_with_its_relative_key(fake, s3, tmp_path, parallelism):
    logs = skewed_tree_with_hostile_names(tmp_path)
    proc = fake.run(sync(logs, s3, parallelism))
    assert proc.returncode == 0, proc.stderr
    puts = s3.puts()
    assert {os.fsdecode(k) for k in puts} == regular_files(logs), "exactly the regular files, keyed by relative path"
    assert max(puts.values()) == 1, "each file is sent once"
    assert all(body == (logs / key).read_bytes() for key, body in objects_of(s3).items()), "bodies are the files"
    assert all(h["content-type"] == "text/plain" for m, p, h in s3.requests if m == "PUT" and p.endswith(".log")), \
        "a .log is text/plain, as the runbook's s3cmd made it"
    assert not fake.marker.exists(), "`id` inside a name was executed: quoting failed"
    assert fake.calls() == [], "no file is over the multipart threshold: s3cmd never runs"
    files = len(regular_files(logs))
    assert re.fullmatch(rf"synced {re.escape(str(logs))} to s3://logs\.test/: {files} files \(\d+ bytes\) in \d+ top-level "
                        rf"entries; uploaded {files} \(\d+ bytes\), copied 0 server-side \(0 bytes\); not uploaded: 3 "
                        rf"symlinks, 0 special files; {parallelism} parallel uploads, 0 files over \d+ bytes by s3cmd, \d+ s\n",
                        proc.stdout), f"one summary line on stdout: {proc.stdout!r}"
    assert s3.connections <= parallelism + 1, f"connections are kept alive ({s3.connections} for {files} files)"


@pytest.mark.processes
def test_a_second_run_uploads_nothing_then_only_what_changed(fake, s3, tmp_path):
    logs = tmp_path / "logs"
    tree = make_tree(logs, files=300, seed=5)
    assert fake.run(sync(logs, s3)).returncode == 0
    s3.requests.clear()
    again = fake.run(sync(logs, s3))
    assert again.returncode == 0, again.stderr
    assert s3.puts() == Counter() and "uploaded 0 (0 bytes)" in again.stdout, "nothing changed: nothing sent"
    changed, added = mutate(tree, fraction=0.02, new_files=3, seed=1)
    s3.requests.clear()
    third = fake.run(sync(logs, s3))
    assert third.returncode == 0, third.stderr
    assert {os.fsdecode(k) for k in s3.puts()} == set(changed) | set(added), "only the changed and new files"
    assert f"uploaded {len(changed) + len(added)} (" in third.stdout


@pytest.mark.processes
def test_uploads_run_in_parallel(fake, s3, tmp_path):
    logs = tmp_path / "logs"
    make_tree(logs, files=60, seed=2)
    s3.delay = 0.05
    proc = fake.run(sync(logs, s3, 4))
    assert proc.returncode == 0, proc.stderr
    assert s3.peak == 4, f"4 uploads at once, saw at most {s3.peak}"


@pytest.mark.processes
def test_keys_only_in_a_0600_config_that_is_removed(fake, s3, tmp_path):
    logs = tmp_path / "logs"
    make_tree(logs, files=50, seed=1)
    s3.delay = 0.02
    proc = fake.popen(sync(logs, s3, 2))
    seen = []
    while proc.poll() is None:
        for d in fake.tmp.glob("airflow-log-migration.*"):
            if (d / "s3cfg").exists():
                seen.append((oct(stat.S_IMODE(d.stat().st_mode)), oct(stat.S_IMODE((d / "s3cfg").stat().st_mode))))
        for pid in os.listdir("/proc"):
            if pid.isdigit() and _cmdline_has(pid, str(fake.tmp)):
                assert not _cmdline_has(pid, SECRET) and not _cmdline_has(pid, ACCESS), "a key on a command line"
        time.sleep(0.01)
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, err
    assert seen and set(seen) == {("0o700", "0o600")}, f"config 0600 in a 0700 dir: {set(seen)}"
    assert list(fake.tmp.iterdir()) == [], "the scratch dir (with the config) is removed"
    assert SECRET not in out + err and ACCESS not in out + err
    assert all(SECRET not in json.dumps(h) for _, _, h in s3.requests), "the secret key never travels"


@pytest.mark.processes
def test_a_failing_upload_fails_the_script_after_the_others(fake, s3, tmp_path):
    logs = tmp_path / "logs"
    tree = make_tree(logs, files=200, seed=4)
    victim = sorted(tree.files)[7]
    s3.fail_on = victim.encode()
    proc = fake.run(sync(logs, s3, 3))
    assert proc.returncode == 1, "one failed file fails the whole script"
    assert proc.stdout == "", "no success summary on stdout"
    assert f"PUT {victim}: HTTP 503 ServiceUnavailable slow down" in proc.stderr, proc.stderr
    assert "1 of 200 files failed to upload" in proc.stderr
    assert sum(1 for m, p, _ in s3.requests if m == "PUT" and victim in urllib.parse.unquote(p)) == 5, "retried 4 times"
    assert set(objects_of(s3)) == set(tree.files) - {victim}, "the other files were uploaded"


@pytest.mark.processes
def test_sigterm_stops_the_upload_and_removes_the_config(fake, s3, tmp_path):
    logs = tmp_path / "logs"
    make_tree(logs, files=200, seed=6)
    s3.delay = 0.2
    proc = fake.popen(sync(logs, s3, 3))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not s3.puts():
        time.sleep(0.05)
    assert s3.puts(), "the upload started"
    scratch = list(fake.tmp.glob("airflow-log-migration.*"))
    workers = [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline_has(pid, str(scratch[0]))]
    assert workers, "the uploader runs with the scratch config"
    os.kill(proc.pid, signal.SIGTERM)  # the script only, not its process group
    proc.wait(timeout=10)
    assert proc.returncode == 143, f"exit 128+TERM, got {proc.returncode}: {proc.stderr.read()}"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in workers):
        time.sleep(0.05)
    left = [pid for pid in workers if os.path.exists(f"/proc/{pid}") and _cmdline_has(pid, str(scratch[0]))]
    assert left == [], f"workers still running after TERM: {left}"
    assert not scratch[0].exists(), "the scratch dir (config with the keys) is removed"
    assert len(s3.puts()) < 200


def _cmdline_has(pid: str, text: str) -> bool:
    try:
        return text in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


@pytest.mark.processes
def test_scratch_dirs_of_killed_runs_are_removed_live_ones_kept(fake, s3, tmp_path):
    logs = tmp_path / "logs"
    make_tree(logs, files=20, seed=7)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = fake.tmp / "airflow-log-migration.STALE123"
    live = fake.tmp / "airflow-log-migration.LIVE1234"
    for d, pid in ((stale, dead.pid), (live, os.getpid())):
        d.mkdir(mode=0o700)
        (d / "pid").write_text(f"{pid}\n")
        (d / "s3cfg").write_text(f"secret_key = {SECRET}\n")
    proc = fake.run(sync(logs, s3, 2))
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists(), "the scratch dir of a killed run (dead pid) is removed"
    assert live.exists(), "the scratch dir of a running process is kept"
    assert f"removed the scratch dir {stale}" in proc.stderr


@pytest.mark.processes
def test_empty_logs_dir_syncs_nothing_and_succeeds(fake, s3, tmp_path):
    (tmp_path / "logs").mkdir()
    proc = fake.run(sync(tmp_path / "logs", s3, 4))
    assert proc.returncode == 0, proc.stderr
    assert s3.puts() == Counter() and "0 files (0 bytes) in 0 top-level entries" in proc.stdout


@pytest.mark.processes
def test_files_over_the_threshold_go_to_s3cmd_multipart(fake, s3, tmp_path):
    logs = tmp_path / "logs"
    make_tree(logs, files=40, seed=3)
    big = logs / "scheduler" / "huge scheduler.log"
    big.write_bytes(b"x" * 30_000)  # the tree's files are 1-20 KB
    proc = fake.run(sync(logs, s3, 2, multipart_threshold=25_000))
    assert proc.returncode == 0, proc.stderr
    assert "scheduler/huge scheduler.log" not in objects_of(s3), "the big file is not PUT whole"
    [call] = fake.calls()
    assert call["positional"] == ["sync", "./", "s3://logs.test/"] and "-r" in call["flags"], call["argv"]
    assert call["keys"] == ["scheduler/huge scheduler.log"], "the list names it relative to the logs dir"
    assert "--no-delete-removed" in call["flags"] and call["config_mode"] == "0o600"
    assert "1 files over 25000 bytes by s3cmd" in proc.stdout and "uploaded 41 (" in proc.stdout, proc.stdout


UNREADABLE_LINE = re.compile(
    r"log-migration: cannot read (?P<path>.+) \((?P<kind>a directory|a file), owner root:root, mode (?P<mode>0\d{3})\) "
    r"as nobody: the log steps read the tree as the SSH user, without sudo, as the runbook does; (?P<fix>.+), then re-run")


@pytest.mark.processes
@pytest.mark.parametrize("step", ["sync", "verify"])
@pytest.mark.parametrize("what", ["subdir", "file", "logs_dir"])
def test_a_path_the_ssh_user_cannot_read_fails_before_any_upload_in_one_line_naming_it_and_the_fix(s3, step, what):
    """The log steps run as the SSH user without sudo: s3cmd's own walk would skip what it cannot
    read; the helper fails instead, on one line naming the path, its owner and mode, and the fix
    (the sync before any request; the verify after its listing, before comparing)."""
    base = Path(tempfile.mkdtemp(prefix="log-migration-eacces-"))  # outside pytest's 0700 tmp dirs
    try:
        base.chmod(0o755)
        fake = FakeS3cmd(base / "fake", python="/usr/bin/python3")  # its stand-ins and call log usable by nobody
        for d in (base / "fake", fake.bin):
            d.chmod(0o777)
        fake.tmp.chmod(0o1777)
        logs = base / "logs"
        make_tree(logs, files=20, seed=8)
        scratch_parent = base / "tmp"
        scratch_parent.mkdir()
        scratch_parent.chmod(0o1777)
        listing_file = base / "listing.txt"
        listing_file.write_text("")
        listing_file.chmod(0o644)
        if what == "subdir":
            victim = logs / "dag_id=locked"
            victim.mkdir(mode=0o700)
            (victim / "a.log").write_text("x")
        elif what == "file":
            victim = logs / "scheduler" / "secret.log"
            victim.write_text("x")
            victim.chmod(0o600)
        else:
            victim = logs
            victim.chmod(0o700)
        script = sync(logs, s3, 2) if step == "sync" else lm.verify_script(str(logs), "logs.test", s3.endpoint, "dpe")
        proc = subprocess.run([shutil.which("runuser") or "/usr/sbin/runuser", "-u", "nobody", "--", "bash", "-c", script,
                               "log-migration"], input=KEYS, capture_output=True, text=True, timeout=60,
                              env={**fake.env, "TMPDIR": str(scratch_parent), "FAKE_S3CMD_LISTING": str(listing_file)})
        if step == "verify" and what == "file":
            # verify reads sizes only: an unreadable file is no obstacle (it is checked like any other)
            assert proc.returncode == 1 and "does not hold every file" in proc.stderr, proc.stderr
            return
        assert proc.returncode == 1, f"{what} unreadable: the {step} must fail: {proc.stderr}"
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, f"exactly one line on stderr, got {len(lines)}: {proc.stderr}"
        match = UNREADABLE_LINE.fullmatch(lines[0])
        assert match, f"the line names the path, owner, mode and the fix: {lines[0]}"
        assert match["path"] == str(victim), f"it names {victim}, not {match['path']}"
        assert match["kind"] == ("a file" if what == "file" else "a directory"), lines[0]
        assert "usermod -aG root nobody" in match["fix"], f"the fix adds the user to the owning group: {match['fix']}"
        assert f"chmod -R g+rX {victim}" in match["fix"], f"the group cannot read it either: the fix says chmod g+rX: {match['fix']}"
        assert s3.puts() == Counter(), "no upload starts from a partial walk"
        if step == "sync":
            assert s3.requests == [], "the walk comes before any request"
        assert list(scratch_parent.iterdir()) == [], "the scratch dir is removed"
        assert proc.stdout == "", "nothing on stdout"
        assert not fake.sudo_log.exists(), "the log steps never call sudo"
    finally:
        for path in base.rglob("*"):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        base.chmod(0o755)
        (base / "logs").chmod(0o755)
        shutil.rmtree(base)


def test_the_fix_names_only_the_group_when_the_group_can_already_read():
    namespace = uploader_namespace()
    base = Path(tempfile.mkdtemp(prefix="log-migration-hint-"))
    try:
        (base / "logs").mkdir(mode=0o750)
        (base / "logs").chmod(0o750)
        line = namespace["unreadable_line"](str(base / "logs"), b".")
        assert line.startswith(f"cannot read {base / 'logs'} (a directory, owner root:root, mode 0750) as root: "), line
        assert line.endswith("; add root to the group root (usermod -aG root root), then re-run"), \
            f"the group can read it: the group membership alone is the fix, no chmod: {line}"
    finally:
        shutil.rmtree(base)


# --- progress and the downtime lines ------------------------------------------------------------------

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@pytest.mark.processes
def test_progress_lines_on_stderr_with_counts_and_nothing_new_on_stdout(fake, s3, tmp_path):
    logs = tmp_path / "logs"
    tree = make_tree(logs, files=120, seed=9)
    total = tree.total_bytes()
    s3.delay = 0.02
    proc = fake.run(sync(logs, s3, 2, progress_seconds=0.3))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1 and proc.stdout.startswith("synced "), "stdout: the summary line only"
    lines = [line for line in proc.stderr.splitlines() if " progress: " in line]
    assert len(lines) >= 3, f"a progress line every 0.3 s for ~1.2 s: {proc.stderr}"
    pattern = (rf"log-migration: {STAMP} progress: (\d+) of 120 files \((.+) of (.+)\) done, (\d+) uploaded \((.+)\); "
               r"(\d+) files/s, (.+)/s; (about .+ left|time left unknown yet)")
    matches = [re.fullmatch(pattern, line) for line in lines]
    assert all(matches), lines
    done = [int(m.group(1)) for m in matches]
    assert done == sorted(done) and 0 < done[0] < 120, f"counts grow: {done}"
    assert all(m.group(3) == lm_human_bytes(total) for m in matches), "the total bytes of the tree"
    assert all(m.group(1) == m.group(4) for m in matches), "first pass: every file done was uploaded"
    assert re.search(rf"log-migration: {STAMP} sync started: 120 files", proc.stderr)
    assert "downtime" not in proc.stderr, "only the final pass announces the end of the downtime"


@pytest.mark.processes
def test_the_final_pass_says_when_the_downtime_can_end(fake, s3, tmp_path):
    logs = tmp_path / "logs"
    make_tree(logs, files=10, seed=9)
    proc = fake.run(sync(logs, s3, 2, final_pass=True))
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"^log-migration: {STAMP} downtime can end: the last log sync is done \(10 files uploaded\)",
                     proc.stderr, re.M), proc.stderr
    assert "downtime" not in proc.stdout
    s3.fail_on, s3.fail_for_good = b"scheduler", True  # a failure the uploader does not retry (no backoff to wait out)
    failed = fake.run(sync(logs, s3, 2, final_pass=True))
    assert failed.returncode == 0, "nothing to upload: the failing server is not asked"
    (logs / "scheduler" / "new.log").write_text("x")
    failed = fake.run(sync(logs, s3, 2, final_pass=True))
    assert failed.returncode == 1 and "downtime can end" not in failed.stderr, "never announced after a failure"


def uploader_namespace() -> dict:
    namespace: dict = {"__name__": "uploader_under_test"}
    exec(compile(remote.script_file("log_sync.py"), "log_sync.py", "exec"), namespace)  # the exact text the script runs
    return namespace


def lm_human_bytes(n: int) -> str:
    return uploader_namespace()["human_bytes"](n)


@pytest.mark.parametrize("args, want", [
    # elapsed, files done/total, bytes done/total, uploaded, uploaded bytes
    ((10, 100, 1000, 1_000_000, 10_000_000, 100, 1_000_000),
     "progress: 100 of 1000 files (1.0 MB of 10.0 MB) done, 100 uploaded (1.0 MB); 10 files/s, 100.0 kB/s; about 1 min 30 s left"),
    # by bytes the rest is slower (big files left): the larger estimate wins
    ((60, 900, 1000, 1_000_000, 10_000_000, 10, 20_000),
     "progress: 900 of 1000 files (1.0 MB of 10.0 MB) done, 10 uploaded (20.0 kB); 15 files/s, 16.7 kB/s; about 9 min 00 s left"),
    ((3600, 20, 40, 5_000, 10_000, 20, 5_000),
     "progress: 20 of 40 files (5.0 kB of 10.0 kB) done, 20 uploaded (5.0 kB); 0 files/s, 1 B/s; about 1 h 00 min left"),
    ((5, 0, 10, 0, 100, 0, 0),
     "progress: 0 of 10 files (0 B of 100 B) done, 0 uploaded (0 B); 0 files/s, 0 B/s; time left unknown yet"),
    ((5, 10, 10, 100, 100, 0, 0),
     "progress: 10 of 10 files (100 B of 100 B) done, 0 uploaded (0 B); 2 files/s, 20 B/s; about 0 s left"),
])
def test_progress_line_format_and_time_left(args, want):
    assert uploader_namespace()["progress_line"](*args) == want


def test_time_left_is_the_slower_of_the_two_estimates():
    time_left = uploader_namespace()["time_left"]
    assert time_left(10, 0, 100, 0, 1000) is None, "nothing done yet: unknown"
    assert time_left(10, 50, 100, 100, 1000) == 90, "by bytes: 900 bytes at 10 B/s"
    assert time_left(10, 10, 100, 900, 1000) == 90, "by files: 90 files at 1 file/s"
    assert time_left(10, 100, 100, 1000, 1000) == 0


# --- verify, against the stand-in s3cmd's `ls -r` ---------------------------------------------------

def listing(bucket: str, objects: dict[str, int]) -> str:
    return "".join(f"2026-01-01 00:00 {size:>12}  s3://{bucket}/{key}\n" for key, size in sorted(objects.items()))


def verify_run(fake: FakeS3cmd, logs: Path, objects: dict[str, int]) -> subprocess.CompletedProcess:
    listing_file = fake.root / "listing.txt"
    listing_file.write_text(listing("logs.test", objects))
    script = lm.verify_script(str(logs), "logs.test", "http://127.0.0.1:9", "dpe")
    return fake.run(script, FAKE_S3CMD_LISTING=str(listing_file))


def local_objects(logs: Path) -> dict[str, int]:
    return {k: (logs / k).stat().st_size for k in regular_files(logs)}


@pytest.mark.processes
def test_verify_passes_and_prints_a_row_per_prefix(fake, tmp_path):
    # `s3cmd ls` prints a key with a line break on two lines: no such name here (Airflow makes none)
    logs = skewed_tree_with_hostile_names(tmp_path, newline=False)
    objects = local_objects(logs)
    objects["dag_id=written_by_k8s/run_id=x/task_id=y/attempt=1.log"] = 77  # only on the target
    proc = verify_run(fake, logs, objects)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["prefix", "local"], f"a header first: {lines[0]}"
    sched = tree_row(lines, "scheduler")
    assert re.fullmatch(r"scheduler\s+(\d+)\s+(\d+)\s+\1\s+\2\s+0\s+0\s+0\s+ok", sched), sched
    k8s = tree_row(lines, "dag_id=written_by_k8s")
    assert re.fullmatch(r"dag_id=written_by_k8s\s+0\s+0\s+0\s+0\s+0\s+0\s+1\s+target only", k8s), \
        f"a prefix only on the target is reported, not a failure: {k8s}"
    assert tree_row(lines, "dag_id=x y;$(id)").endswith(" ok"), "hostile prefixes get their row"
    assert tree_row(lines, "TOTAL").endswith(" ok")
    assert lines[-1] == "not uploaded (as the runbook's s3cmd): 3 symlinks, 0 special files"
    [call] = fake.calls()
    assert call["positional"] == ["ls", "s3://logs.test/"] and "-r" in call["flags"]
    assert not fake.marker.exists()


def tree_row(lines: list[str], prefix: str) -> str:
    return next(line for line in lines if line.startswith(prefix + " "))


@pytest.mark.processes
@pytest.mark.parametrize("change", ["missing", "short"])
def test_verify_fails_and_names_the_prefix(fake, tmp_path, change):
    logs = tmp_path / "logs"
    make_tree(logs, files=200, seed=9)
    objects = local_objects(logs)
    victim = sorted(k for k in objects if k.startswith("scheduler/"))[0]
    if change == "missing":
        del objects[victim]
    else:
        objects[victim] -= 1
    proc = verify_run(fake, logs, objects)
    assert proc.returncode == 1, "a missing or short object fails the verification"
    row = next(line for line in proc.stdout.splitlines() if line.startswith("scheduler "))
    assert row.endswith("MISMATCH"), f"the table flags the prefix: {row}"
    detail = "1 missing, 0 wrong size" if change == "missing" else "0 missing, 1 wrong size"
    assert f"scheduler ({detail})" in proc.stderr, f"stderr names the prefix: {proc.stderr}"


@pytest.mark.processes
def test_verify_refuses_a_listing_it_cannot_parse(fake, tmp_path):
    logs = tmp_path / "logs"
    make_tree(logs, files=20, seed=10)
    listing_file = fake.root / "listing.txt"
    listing_file.write_text(listing("logs.test", local_objects(logs)) + "WARNING: something odd\n")
    script = lm.verify_script(str(logs), "logs.test", "http://127.0.0.1:9", "dpe")
    proc = fake.run(script, FAKE_S3CMD_LISTING=str(listing_file))
    assert proc.returncode == 1 and "cannot parse line" in proc.stderr, proc.stderr


# --- stop the legacy services: stand-in puppet, systemctl and sudo -----------------------------------

FAKE_PUPPET = textwrap.dedent('''\
    #!{python}
    import json, os, sys
    state = os.environ.get("FAKE_SVC_DIR") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(state, "calls.jsonl"), "a") as log:
        log.write(json.dumps({{"tool": "puppet", "argv": sys.argv[1:], "uid": os.getuid()}}) + "\\n")
    args = sys.argv[1:]
    if args[:2] == ["config", "print"] and args[2] == "agent_disabled_lockfile":
        print(os.path.join(state, "agent_disabled.lock"))
    elif args[:2] == ["config", "print"] and args[2] == "agent_catalog_run_lockfile":
        print(os.path.join(state, "agent_catalog_run.lock"))
    elif args[:2] == ["agent", "--disable"] and len(args) == 3:
        if not os.path.exists(os.path.join(state, "agent_disabled.lock")):  # as puppet: an existing lock is kept
            with open(os.path.join(state, "agent_disabled.lock"), "w") as f:
                json.dump({{"disabled_message": args[2]}}, f)
    else:
        sys.exit("fake puppet: unsupported %r" % args)
''')

FAKE_SYSTEMCTL = textwrap.dedent('''\
    #!{python}
    import fnmatch, json, os, sys
    state = os.environ.get("FAKE_SVC_DIR") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(state, "calls.jsonl"), "a") as log:
        log.write(json.dumps({{"tool": "systemctl", "argv": sys.argv[1:], "uid": os.getuid()}}) + "\\n")
    units_file = os.path.join(state, "units.json")
    units = json.load(open(units_file))
    args = sys.argv[1:]
    patterns = [a for a in args[1:] if not a.startswith("-")]
    matching = [u for u in sorted(units) if any(fnmatch.fnmatchcase(u, p) for p in patterns)]
    if args[0] == "list-units":
        for u in matching:
            if units[u] in ("active", "stuck"):
                print("%s loaded active running Airflow %s" % (u, u))
    elif args[0] == "show" and args[1:3] == ["--property=LoadState", "--value"] and len(args) == 4:
        print("loaded" if args[3] in units else "not-found")
    elif args[0] == "stop":
        if os.getuid() != 0:
            sys.exit("fake systemctl: stop needs root (Access denied)")
        for u in matching:
            if units[u] == "active":
                units[u] = "inactive"
        json.dump(units, open(units_file, "w"))
    else:
        sys.exit("fake systemctl: unsupported %r" % args)
''')

# a stand-in sudo first on PATH (the script's sudo array is "sudo -n"): records, then runs the call
FAKE_SUDO = textwrap.dedent('''\
    #!{python}
    import json, os, sys
    with open(os.path.join(os.environ["FAKE_SVC_DIR"], "sudo.jsonl"), "a") as log:
        log.write(json.dumps(sys.argv[1:]) + "\\n")
    if sys.argv[1:2] != ["-n"] or not sys.argv[2].startswith("/"):
        sys.exit("fake sudo: expected -n and an absolute path, got %r" % sys.argv[1:])
    os.execv(sys.argv[2], sys.argv[2:])
''')


class FakeServices:
    """Stand-in puppet and systemctl keeping state in ``root`` (units.json, the lock files,
    calls.jsonl), and a recording sudo.  ``tools`` are their paths, for ``stop_legacy_script``;
    ``run`` also takes a script built with the production paths (LegacyTools()), whose values
    it points at the stand-ins (the values block is the only place they are named)."""

    def __init__(self, root: Path, units: dict[str, str], python: str = sys.executable):
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        for name, text in (("puppet", FAKE_PUPPET), ("systemctl", FAKE_SYSTEMCTL), ("sudo", FAKE_SUDO)):
            (self.bin / name).write_text(text.format(python=python))
            (self.bin / name).chmod(0o755)
        (root / "units.json").write_text(json.dumps(units))
        self.env = {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE_SVC_DIR": str(root), "HOME": str(root)}
        self.tools = lm.LegacyTools(puppet=str(self.bin / "puppet"), systemctl=str(self.bin / "systemctl"))

    def script(self, instance: str = "search", **kwargs) -> str:
        return lm.stop_legacy_script(instance, tools=self.tools, **kwargs)

    def run(self, script: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        production = lm.LegacyTools()
        for name in ("puppet", "systemctl"):
            script = script.replace(f"\n{name}={getattr(production, name)}\n", f"\n{name}={getattr(self.tools, name)}\n")
        return subprocess.run(["bash", "-c", script, "stop-legacy"], capture_output=True, text=True,
                              env=self.env, timeout=30, cwd=cwd, stdin=subprocess.DEVNULL)

    def calls(self, tool: str | None = None) -> list[list[str]]:
        path = self.root / "calls.jsonl"
        calls = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [c["argv"] for c in calls if tool is None or c["tool"] == tool]

    def sudo_calls(self) -> list[list[str]]:
        """Every call made through sudo: the argv after ``-n``."""
        path = self.root / "sudo.jsonl"
        return [json.loads(line)[1:] for line in path.read_text().splitlines()] if path.exists() else []

    def units(self) -> dict[str, str]:
        return json.loads((self.root / "units.json").read_text())

    def reset_calls(self) -> None:
        (self.root / "calls.jsonl").unlink(missing_ok=True)
        (self.root / "sudo.jsonl").unlink(missing_ok=True)


RUNNING = {"airflow-scheduler@search.service": "active", "airflow-webserver@search.service": "active",
           "airflow-kerberos@search.service": "active", "airflow-dags-sync.service": "active",
           "ssh.service": "active"}
UNITS = ["airflow-webserver@search.service", "airflow-kerberos@search.service", "airflow-scheduler@search.service"]
# another instance on the same VM: the runbook's @* patterns would stop it too
OTHER_INSTANCE = {"airflow-scheduler@analytics_test.service": "active", "airflow-webserver@analytics_test.service": "active"}


@pytest.mark.processes
def test_stop_makes_the_runbook_calls_then_is_idempotent(tmp_path):
    svc = FakeServices(tmp_path / "svc", dict(RUNNING))
    script = svc.script()
    first = svc.run(script)
    assert first.returncode == 0, first.stderr
    assert ["agent", "--disable", "airflow scheduler migration to Kubernetes"] in svc.calls("puppet"), \
        "puppet agent --disable with the runbook's reason, as one argument"
    stops = [c for c in svc.calls("systemctl") if c[0] == "stop"]
    assert stops == [["stop", unit] for unit in UNITS], f"one systemctl stop per unit of the instance, exactly: {stops}"
    assert svc.units() == {**RUNNING, "airflow-scheduler@search.service": "inactive",
                           "airflow-webserver@search.service": "inactive",
                           "airflow-kerberos@search.service": "inactive"}, "only the airflow units stopped"
    assert first.stdout == ("airflow-search legacy services: puppet agent disabled; stopped "
                            "airflow-kerberos@search.service airflow-scheduler@search.service "
                            "airflow-webserver@search.service\n"), first.stdout
    lock = json.loads((tmp_path / "svc" / "agent_disabled.lock").read_text())
    assert lock == {"disabled_message": "airflow scheduler migration to Kubernetes"}

    svc.reset_calls()
    second = svc.run(script)
    assert second.returncode == 0, second.stderr
    assert not any(c[:2] == ["agent", "--disable"] for c in svc.calls("puppet")), "no second --disable"
    assert not any(c[0] == "stop" for c in svc.calls("systemctl")), "nothing to stop the second time"
    assert second.stdout == ("airflow-search legacy services: puppet agent was already disabled; "
                             "none was running\n"), second.stdout


@pytest.mark.processes
def test_stop_logs_when_the_downtime_started(tmp_path):
    svc = FakeServices(tmp_path / "svc", dict(RUNNING))
    first = svc.run(svc.script())
    assert re.search(rf"^stop-legacy: {STAMP} downtime started: the legacy services of airflow-search are stopped "
                     r"\(airflow-kerberos@search.service airflow-scheduler@search.service airflow-webserver@search.service\)$",
                     first.stderr, re.M), first.stderr
    second = svc.run(svc.script())
    assert re.search(rf"^stop-legacy: {STAMP} downtime started earlier: no legacy service of airflow-search was running$",
                     second.stderr, re.M), second.stderr


@pytest.mark.processes
def test_stop_touches_only_this_instances_units(tmp_path):
    svc = FakeServices(tmp_path / "svc", {**RUNNING, **OTHER_INSTANCE})
    proc = svc.run(svc.script())
    assert proc.returncode == 0, proc.stderr
    assert all(svc.units()[u] == "active" for u in OTHER_INSTANCE), f"another instance's units were stopped: {svc.units()}"
    listed = [c for c in svc.calls("systemctl") if c[0] == "list-units"]
    assert listed and all(c[-3:] == UNITS for c in listed), f"systemctl lists the three units by exact name: {listed}"


@pytest.mark.processes
def test_stop_changes_nothing_when_the_legacy_name_is_wrong(tmp_path):
    svc = FakeServices(tmp_path / "svc", dict(RUNNING))
    proc = svc.run(svc.script(logs_dir="/srv/airflow-serach/logs"))  # a typo in legacy.logsDir
    assert proc.returncode == 1
    assert ("systemd has no unit airflow-scheduler@serach.service (LoadState=not-found): "
            "is 'serach' the legacy instance's name? (from legacy.logsDir)") in proc.stderr, proc.stderr
    assert svc.calls("puppet") == [] and svc.sudo_calls() == [], "nothing was asked of puppet or sudo"
    assert svc.units() == RUNNING


@pytest.mark.parametrize("instance, logs_dir, name", [
    ("search", None, "search"),
    ("search", "/srv/airflow-search/logs", "search"),
    ("platform-eng", "/srv/airflow-platform_eng/logs", "platform_eng"),
    ("platform-eng", None, "platform_eng"),
    ("analytics-product", "/mnt/logs/analytics", "analytics_product"),
    ("search", "/srv/airflow-search/logs/", "search"),
])
def test_the_legacy_name_comes_from_the_logs_dir_else_the_instance(instance, logs_dir, name):
    assert lm.legacy_name(instance, logs_dir) == name, f"{instance} with logs dir {logs_dir}: the legacy name"


@pytest.mark.parametrize("logs_dir", ["/srv/airflow-a b/logs", "/srv/airflow-x@y/logs", "/srv/airflow-$(id)/logs"])
def test_a_logs_dir_that_names_no_unit_is_refused(logs_dir):
    with pytest.raises(ValueError, match="not a systemd instance name"):
        lm.legacy_name("search", logs_dir)


@pytest.mark.processes
def test_stop_keeps_another_operators_disable_reason(tmp_path):
    svc = FakeServices(tmp_path / "svc", dict(RUNNING))
    (tmp_path / "svc" / "agent_disabled.lock").write_text(json.dumps({"disabled_message": "T12345 kernel upgrade"}))
    proc = svc.run(svc.script())
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "svc" / "agent_disabled.lock").read_text()) == \
        {"disabled_message": "T12345 kernel upgrade"}, "the other reason is kept"
    assert "already disabled" in proc.stdout


@pytest.mark.processes
def test_stop_fails_when_a_unit_stays_active(tmp_path):
    svc = FakeServices(tmp_path / "svc", {**RUNNING, "airflow-scheduler@search.service": "stuck"})
    proc = svc.run(svc.script())
    assert proc.returncode == 1
    assert "still active after systemctl stop: airflow-scheduler@search.service" in proc.stderr, proc.stderr
    assert proc.stdout == ""


@pytest.mark.processes
def test_stop_waits_for_a_puppet_run_in_progress(tmp_path):
    svc = FakeServices(tmp_path / "svc", dict(RUNNING))
    run = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "svc" / "agent_catalog_run.lock").write_text(f"{run.pid}")
        proc = svc.run(svc.script(run_wait_seconds=1))
        assert proc.returncode == 1, "a run that does not end in time fails the step"
        assert f"puppet agent run (pid {run.pid}) is still in progress" in proc.stderr, proc.stderr
        assert not any(c[0] == "stop" for c in svc.calls("systemctl")), "services are not stopped under a running agent"
    finally:
        run.kill()
        run.wait()
    proc = svc.run(svc.script(run_wait_seconds=1))  # now a stale lock: the pid is gone
    assert proc.returncode == 0, proc.stderr
    assert [c for c in svc.calls("systemctl") if c[0] == "stop"] == [["stop", unit] for unit in UNITS]


@pytest.mark.parametrize("instance", ["Search", "x y", "-rf", "$(id)", ""])
def test_stop_refuses_bad_instance_names(instance):
    with pytest.raises(ValueError):
        lm.stop_legacy_script(instance)


# --- least privilege: the stop step's sudo calls are exactly the rendered rules -----------------------

def rules(timeout_seconds: int = 600, tools: lm.LegacyTools = lm.LegacyTools()) -> sudoers.HostRules:
    return lm.sudoers_rules("search", "pulumi-airflow", host="an-airflow1005.eqiad.wmnet", logs_dir=LOGS,
                            timeout_seconds=timeout_seconds, tools=tools)


@pytest.mark.processes
def test_the_rules_render_for_visudo_with_exact_commands_only():
    text = sudoers.render(rules())
    assert text.splitlines()[-5:] == [
        "    /usr/bin/timeout --kill-after\\=1s 600s /usr/bin/systemctl stop airflow-webserver@search.service, \\",
        "    /usr/bin/timeout --kill-after\\=1s 600s /usr/bin/systemctl stop airflow-kerberos@search.service, \\",
        "    /usr/bin/timeout --kill-after\\=1s 600s /usr/bin/systemctl stop airflow-scheduler@search.service",
        "Defaults!AIRFLOW_SEARCH_LEGACY command_timeout=600",
        "pulumi-airflow ALL = (root) NOPASSWD: AIRFLOW_SEARCH_LEGACY",
    ], text
    assert "Cmnd_Alias AIRFLOW_SEARCH_LEGACY = \\\n" in text
    assert ("    /usr/bin/timeout --kill-after\\=1s 600s /usr/bin/puppet agent --disable airflow scheduler migration to "
            "Kubernetes, \\\n") in text, "the disable reason, spaces as written (one argument)"
    visudo = shutil.which("visudo") or "/usr/sbin/visudo"
    check = subprocess.run([visudo, "-cf", "-"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, f"visudo refuses the rendered rules: {check.stdout}{check.stderr}\n{text}"


def test_the_rules_hold_no_wildcard_no_shell_and_no_free_argument():
    r = rules()
    assert r.command_timeout_seconds == 600, "sudo's command_timeout is the step's timeout"
    assert r.alias == "AIRFLOW_SEARCH_LEGACY" and r.runas == "root" and r.env_keep == ()
    for argv in r.commands:
        assert argv[:3] == ("/usr/bin/timeout", "--kill-after=1s", "600s"), f"a root-side timeout bounds {argv}"
        assert argv[3] in ("/usr/bin/puppet", "/usr/bin/systemctl"), f"only puppet and systemctl run as root: {argv}"
        assert not any(re.search(r"[*?\[\]]", a) for a in argv), f"no wildcard in {argv}"
        assert sudoers.command_line(argv).count(" ") == " ".join(argv).count(" "), "nothing to escape but the '='"
    tools = {argv[3:5] for argv in r.commands}
    assert tools == {("/usr/bin/puppet", "config"), ("/usr/bin/puppet", "agent"), ("/usr/bin/systemctl", "stop")}
    assert not any("--enable" in argv for argv in r.commands), "the program never re-enables puppet"


def test_the_rules_follow_the_step_timeout_the_tools_and_the_instance():
    custom = lm.LegacyTools(puppet="/opt/puppetlabs/bin/puppet", systemctl="/bin/systemctl", timeout="/bin/timeout")
    r = lm.sudoers_rules("platform-eng", "deploy", host="an-airflow1004.eqiad.wmnet", timeout_seconds=1200, tools=custom)
    assert r.commands[0] == ("/bin/timeout", "--kill-after=1s", "1200s", "/opt/puppetlabs/bin/puppet", "config", "print",
                             "agent_disabled_lockfile")
    assert r.commands[-1] == ("/bin/timeout", "--kill-after=1s", "1200s", "/bin/systemctl", "stop",
                              "airflow-scheduler@platform_eng.service")
    assert r.command_timeout_seconds == 1200 and r.alias == "AIRFLOW_PLATFORM_ENG_LEGACY" and r.user == "deploy"


@pytest.mark.parametrize("path", ["puppet", "/usr/bin/../bin/puppet", "/usr/bin/pup pet", "/usr/bin/*"])
def test_tool_paths_must_be_plain_absolute_paths(path):
    with pytest.raises(ValueError, match="plain absolute path"):
        lm.LegacyTools(puppet=path)


@pytest.mark.processes
def test_every_sudo_call_of_the_stop_script_is_exactly_one_rule(tmp_path):
    """Run the stop script built with use_sudo (as the search stack) against the stand-ins: each
    call through the recording sudo must equal one rule's command (sudo matches the arguments
    exactly), and together they use every rule on a first run."""
    svc = FakeServices(tmp_path / "svc", dict(RUNNING))
    allowed = rules(tools=svc.tools).commands
    script = svc.script(logs_dir=LOGS, use_sudo=True, timeout_seconds=600)
    first = svc.run(script)
    assert first.returncode == 0, first.stderr
    made = svc.sudo_calls()
    for call in made:
        assert [tuple(call) == rule for rule in allowed].count(True) == 1, f"{call} is not exactly one sudoers rule"
    assert sorted(map(tuple, made)) == sorted(allowed), "a first run uses every rule, each once"
    assert not any(c[0] in ("list-units", "show") for c in svc.calls("systemctl") if c in [m[4:] for m in made]), \
        "listing units needs no privilege"
    svc.reset_calls()
    second = svc.run(script)
    assert second.returncode == 0, second.stderr
    again = svc.sudo_calls()
    assert all(tuple(call) in allowed for call in again), again
    assert [c[4:] for c in again] == [["config", "print", "agent_disabled_lockfile"],
                                      ["config", "print", "agent_catalog_run_lockfile"]], \
        f"a second run reads puppet's lock paths only: {again}"


@pytest.mark.processes
def test_without_sudo_the_same_calls_run_directly(tmp_path):
    """remoteSudo false (the SSH user is root): the same bounded calls, no sudo."""
    svc = FakeServices(tmp_path / "svc", dict(RUNNING))
    proc = svc.run(svc.script(use_sudo=False))
    assert proc.returncode == 0, proc.stderr
    assert svc.sudo_calls() == [], "no sudo when the stack says remoteSudo: false"
    assert "\nsudo=()\n" in svc.script(use_sudo=False) and "\nsudo=(sudo -n)\n" in svc.script(use_sudo=True)


@pytest.mark.processes
def test_the_search_stacks_stop_step_asks_sudo_for_exactly_its_manual_steps_rules(tmp_path):
    """What the program registers and what the operator installs come from one place: the stop
    script of the search stack (remoteSudo true), run against the stand-ins, asks sudo for exactly
    the commands of migration.legacy_sudoers_rules(cfg), with the production tool paths."""
    from components import migration
    from tests.conftest import stack_cfg

    cfg = stack_cfg("search")
    script, r = migration.stop_legacy_script(cfg), migration.legacy_sudoers_rules(cfg)
    assert cfg.remote_sudo and "\nsudo=(sudo -n)\n" in script, "the search stack says remoteSudo: true"
    assert r.user == cfg.ssh_user and r.command_timeout_seconds == cfg.command_timeout_minutes * 60
    svc = FakeServices(tmp_path / "svc", dict(RUNNING))
    proc = svc.run(script)  # the production tool paths pointed at the stand-ins
    assert proc.returncode == 0, proc.stderr
    production = {svc.tools.puppet: "/usr/bin/puppet", svc.tools.systemctl: "/usr/bin/systemctl"}
    made = [tuple(production.get(a, a) for a in call) for call in svc.sudo_calls()]
    assert sorted(made) == sorted(r.commands), f"sudo calls {made} differ from the rules {r.commands}"


@pytest.mark.processes
def test_stop_removes_the_scratch_dirs_of_killed_runs_and_leaves_none_of_its_own(tmp_path):
    svc = FakeServices(tmp_path / "svc", dict(RUNNING))
    scratch_parent = tmp_path / "tmp"
    scratch_parent.mkdir()
    svc.env["TMPDIR"] = str(scratch_parent)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale, live = scratch_parent / "airflow-legacy-stop.STALE123", scratch_parent / "airflow-legacy-stop.LIVE1234"
    for d, pid in ((stale, dead.pid), (live, os.getpid())):
        d.mkdir(mode=0o700)
        (d / "pid").write_text(f"{pid}\n")
    proc = svc.run(svc.script())
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists(), "the scratch dir of a killed run (its pid gone) is removed"
    assert live.exists(), "the scratch dir of a running process is kept"
    assert sorted(p.name for p in scratch_parent.iterdir()) == [live.name], "this run's own scratch dir is gone"
