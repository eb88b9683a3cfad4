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
* one s3cmd process uploads one file at a time, and spends ~0.9 ms of CPU per file (request
  building in Python, libmagic): the sync is one ``python3`` process (standard library only;
  s3cmd itself needs python3) that walks the tree once, lists the bucket under each top-level
  entry in parallel, then has ``parallelism`` threads over kept-alive connections compare each
  file (same size and MD5 = the ETag of a single-part object: not re-uploaded, as s3cmd) and PUT
  what differs, headers and body in one send (TCP_NODELAY), SigV4 with ``UNSIGNED-PAYLOAD`` and a
  Content-MD5 the RGW checks.  ``Content-Type`` from the extension table, ``text/plain`` for a
  ``.log`` (what libmagic gave the runbook's s3cmd); ``x-amz-meta-s3cmd-attrs`` with the MD5, so
  an s3cmd run later still recognises the objects.  bench/README.md has the numbers;
* files above ``multipart_threshold`` (5 GiB, one PUT's limit) are left to ``s3cmd sync
  --files-from`` (multipart), as are their s3cmd semantics;
* progress: a timestamped line on stderr every ``progress_seconds`` (files and bytes done,
  uploads, rate, time left); the final pass ends with "downtime can end", the stop step logs
  "downtime started".  stdout keeps its one summary line;
* a failed file (after 4 retries on connection errors and 5xx) fails the script after the
  others were tried, naming it; nothing is ever deleted on the target.

s3cmd facts relied on for the big files and ``verify`` (s3cmd 2.3.0, checked against the real
RGW in tests/integration/test_log_migration.py): ``sync`` without ``--delete-removed`` never
deletes; unchanged files are not re-uploaded; a killed multipart upload leaves invisible parts,
never a short object; a config value starting with ``$`` is read from the environment, so the
keys are checked to be letters/digits/``+/``.  Each PUT is atomic, so a killed sync leaves no
partial object and a re-run resumes.

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
PROGRESS_SECONDS = 30  # a progress line on stderr this often
# above this, a file goes to s3cmd, which uploads it in parts (multipart_chunk_size_mb 15)
MULTIPART_THRESHOLD = 5 * 1024 ** 3  # S3's limit for one PUT

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

# The uploader (python3 >= 3.7, standard library only: Debian 10 and later).  argv: the s3cmd
# config (the keys are read from it), the result file, the list of files left to s3cmd, bucket,
# host[:port], use_https, region, CA file, threads, progress interval, multipart threshold.
# Walks the tree once (never following symlinks, as s3cmd; an unreadable directory fails),
# lists the bucket under each top-level entry in parallel, then `threads` threads, each with
# its own kept-alive connection, compare each file (size, then MD5 against the ETag of a
# single-part object) and PUT what differs (SigV4, Content-MD5: the RGW refuses a corrupt
# body).  A progress line on stderr every interval.  Writes one result line:
# "files bytes entries symlinks special uploaded uploaded_bytes failed big big_bytes seconds".
_UPLOADER_PY = r'''
import base64
import hashlib
import hmac
import http.client
import mimetypes
import os
import queue
import socket
import ssl
import stat
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

CHUNK = 1 << 20
SINGLE_PUT_LIMIT = 5 << 30  # S3's limit for one PUT
RETRIES = 4


def human_bytes(n):
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1000.0


def human_seconds(s):
    s = int(round(s))
    if s < 60:
        return "%d s" % s
    if s < 3600:
        return "%d min %02d s" % (s // 60, s % 60)
    return "%d h %02d min" % (s // 3600, (s % 3600) // 60)


def time_left(elapsed, files_done, files_total, bytes_done, bytes_total):
    # None until something is done; else the slower of the two estimates (per file, per byte),
    # each at this run's rate so far
    if elapsed <= 0 or files_done <= 0:
        return None
    estimates = [(files_total - files_done) * elapsed / files_done]
    if bytes_done > 0:
        estimates.append((bytes_total - bytes_done) * elapsed / bytes_done)
    return max(0.0, max(estimates))


def progress_line(elapsed, files_done, files_total, bytes_done, bytes_total, uploaded, uploaded_bytes):
    left = time_left(elapsed, files_done, files_total, bytes_done, bytes_total)
    rate = files_done / elapsed if elapsed > 0 else 0.0
    byte_rate = bytes_done / elapsed if elapsed > 0 else 0.0
    return ("progress: %d of %d files (%s of %s) done, %d uploaded (%s); %.0f files/s, %s/s; %s"
            % (files_done, files_total, human_bytes(bytes_done), human_bytes(bytes_total), uploaded,
               human_bytes(uploaded_bytes), rate, human_bytes(byte_rate),
               "time left unknown yet" if left is None else "about %s left" % human_seconds(left)))


def stamp():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Response:
    def __init__(self, status, headers, data):
        self.status, self.headers, self.data = status, headers, data

    def getheader(self, name):
        return self.headers.get(name.lower())


class Connection:
    """A kept-alive HTTP/1.1 connection: one send per small request (headers and body
    together, TCP_NODELAY: no Nagle stall between them), a minimal response reader."""

    def __init__(self, host, port, context, server_name):
        sock = socket.create_connection((host, port), timeout=300)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = context.wrap_socket(sock, server_hostname=server_name) if context else sock
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionResetError("the server closed the connection")
        self.buf += data

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def exchange(self, head, body_file, length, method):
        if isinstance(body_file, bytes):
            self.sock.sendall(head + body_file)
        else:
            self.sock.sendall(head)
            sent = 0
            while body_file is not None and sent < length:
                block = body_file.read(min(CHUNK, length - sent))
                if not block:
                    raise EOFError("the file became shorter while being uploaded")
                self.sock.sendall(block)
                sent += len(block)
        status_line = self._line().decode("latin-1")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        while True:
            line = self._line()
            if not line:
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if method == "HEAD" or status in (204, 304):
            data = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                n = int(self._line().split(b";")[0], 16)
                if n == 0:
                    while self._line():
                        pass
                    break
                parts.append(self._take(n))
                self._take(2)
            data = b"".join(parts)
        elif "content-length" in headers:
            data = self._take(int(headers["content-length"]))
        else:
            raise http.client.HTTPException("a response without a length")
        if headers.get("connection", "").lower() == "close":
            self.close()
            self.sock = None
        return Response(status, headers, data)


class S3:
    def __init__(self, host, https, region, ca_file, access_key, secret_key):
        self.host, self.https, self.region = host, https, region
        name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        self.address = (name, int(port) if port else (443 if https else 80))
        self.access_key, self.secret_key = access_key, secret_key
        self.context = ssl.create_default_context(cafile=ca_file or None) if https else None
        self.idle = queue.LifoQueue()
        self.signing = {}

    def conn(self, fresh=False):
        """A kept-alive connection from the pool (shared by the listing and the upload threads)."""
        if not fresh:
            try:
                return self.idle.get_nowait()
            except queue.Empty:
                pass
        return Connection(self.address[0], self.address[1], self.context, self.address[0])

    def key(self, day):
        k = self.signing.get(day)
        if k is None:
            k = ("AWS4" + self.secret_key).encode()
            for part in (day, self.region, "s3", "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self.signing = {day: k}
        return k

    def request(self, method, path, query, headers, body=None, length=0):
        """One request, retried on connection errors and 5xx; returns (status, response, data)."""
        qs = "&".join("%s=%s" % (urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~"))
                      for k, v in sorted(query.items()))
        for attempt in range(RETRIES + 1):
            amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            day = amz_date[:8]
            h = dict(headers)
            h["host"] = self.host
            h["x-amz-date"] = amz_date
            h["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
            names = sorted(h)
            canonical = "\n".join([method, path, qs, "".join("%s:%s\n" % (n, h[n].strip()) for n in names),
                                   ";".join(names), "UNSIGNED-PAYLOAD"])
            scope = "%s/%s/s3/aws4_request" % (day, self.region)
            to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
            signature = hmac.new(self.key(day), to_sign.encode(), hashlib.sha256).hexdigest()
            h["authorization"] = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
                self.access_key, scope, ";".join(names), signature)
            if method == "PUT":
                h["content-length"] = str(length)
            head = "%s %s HTTP/1.1\r\n%s\r\n" % (
                method, path + ("?" + qs if qs else ""), "".join("%s: %s\r\n" % (n, v) for n, v in h.items()))
            c = None
            try:
                c = self.conn(fresh=attempt > 0)
                if body is not None and not isinstance(body, bytes):
                    body.seek(0)
                r = c.exchange(head.encode("latin-1"), body, length, method)
            except EOFError:
                if c is not None:
                    c.close()
                raise
            except (OSError, ValueError, IndexError, http.client.HTTPException) as err:
                if c is not None:
                    c.close()
                if isinstance(err, ssl.SSLCertVerificationError) or attempt == RETRIES:
                    raise
                time.sleep(0.2 * 2 ** attempt)
                continue
            if c.sock is not None:
                self.idle.put(c)
            if r.status >= 500 and attempt < RETRIES:
                time.sleep(0.2 * 2 ** attempt)
                continue
            return r.status, r, r.data
        raise AssertionError("unreachable")


def error_text(status, data):
    code = message = ""
    try:
        root = ET.fromstring(data)
        for el in root:
            tag = el.tag.rsplit("}", 1)[-1]
            if tag == "Code":
                code = el.text or ""
            elif tag == "Message":
                message = el.text or ""
    except ET.ParseError:
        pass
    return "HTTP %d %s %s" % (status, code, message)


def s3_quote(key):
    return urllib.parse.quote(key, safe="/-_.~")


def main():
    (config, result_file, big_list, bucket, host, https, region, ca_file,
     workers, interval, threshold) = sys.argv[1:12]
    workers, interval, threshold = int(workers), float(interval), int(threshold)
    name = os.environ.get("script_name", "log-sync")
    keys = {}
    with open(config) as f:
        for line in f:
            k, sep, v = line.rstrip("\n").partition(" = ")
            if sep:
                keys[k] = v

    def say(text):
        sys.stderr.write("%s: %s\n" % (name, text))
        sys.stderr.flush()

    s3 = S3(host, https == "True", region, ca_file, keys["access_key"], keys["secret_key"])
    del keys

    # the walk: every regular file (never following symlinks, as s3cmd); an unreadable
    # directory fails the sync rather than being skipped
    def raise_error(err):
        raise err

    files = []  # (key bytes, size, top-level entry)
    entries = set()
    symlinks = special = 0
    for top in sorted(os.listdir(b".")):
        st = os.lstat(top)
        if stat.S_ISREG(st.st_mode):
            files.append((top, st.st_size, top))
            entries.add(top)
        elif stat.S_ISLNK(st.st_mode):
            symlinks += 1
        elif not stat.S_ISDIR(st.st_mode):
            special += 1
        else:
            entries.add(top)
            for root, dirs, names in os.walk(top, onerror=raise_error):
                symlinks += sum(1 for d in dirs if os.path.islink(os.path.join(root, d)))
                for n in names:
                    path = os.path.join(root, n)
                    st = os.lstat(path)
                    if stat.S_ISREG(st.st_mode):
                        files.append((path, st.st_size, top))
                    elif stat.S_ISLNK(st.st_mode):
                        symlinks += 1
                    else:
                        special += 1
    total_bytes = sum(f[1] for f in files)

    def listable(path):  # s3cmd reads --files-from as stripped text lines
        try:
            text = path.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return "\n" not in text and "\r" not in text and text == text.strip()

    # files above the threshold go to s3cmd (multipart, as the runbook's s3cmd uploads them)
    big = [f for f in files if f[1] > threshold and listable(f[0])]
    small = [f for f in files if not (f[1] > threshold and listable(f[0]))]
    with open(big_list, "wb") as f:
        f.write(b"".join(p + b"\n" for p, _, _ in big))
    too_big = [p for p, size, _ in small if size > SINGLE_PUT_LIMIT]
    if too_big:
        say("cannot upload %d files above 5 GiB whose names s3cmd cannot take: %s"
            % (len(too_big), ", ".join(repr(p)[2:-1] for p in too_big[:5])))
        sys.exit(1)

    lock = threading.Lock()
    state = {"done": 0, "done_bytes": 0, "up": 0, "up_bytes": 0, "failed": []}
    small_total, small_bytes = len(small), sum(f[1] for f in small)

    def pool(tasks, fn):
        q = queue.Queue()
        for t in tasks:
            q.put(t)

        def worker():
            while True:
                try:
                    t = q.get_nowait()
                except queue.Empty:
                    return
                try:
                    fn(t)
                except Exception as err:  # noqa: BLE001 - recorded, reported, fails the sync
                    with lock:
                        state["failed"].append((t, "%s: %s" % (type(err).__name__, err)))

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(workers, max(1, len(tasks))))]
        for t in threads:
            t.start()
        return threads

    # 1. list what the bucket holds under each top-level entry, in parallel
    remote = {}

    def list_entry(top):
        token = None
        found = {}
        while True:
            query = {"list-type": "2", "encoding-type": "url", "prefix": top.decode("utf-8", "surrogateescape")}
            if os.path.isdir(top):
                query["prefix"] += "/"
            if token:
                query["continuation-token"] = token
            # a prefix is a string parameter: undecodable bytes cannot be listed, they are uploaded
            status, _, data = s3.request("GET", "/" + bucket, query, {})
            if status != 200:
                raise RuntimeError("listing s3://%s/%s: %s" % (bucket, query["prefix"], error_text(status, data)))
            root = ET.fromstring(data)
            token = None
            truncated = False
            for el in root:
                tag = el.tag.rsplit("}", 1)[-1]
                if tag == "Contents":
                    item = {c.tag.rsplit("}", 1)[-1]: c.text or "" for c in el}
                    found[urllib.parse.unquote_to_bytes(item["Key"])] = (int(item["Size"]), item["ETag"].strip('"'))
                elif tag == "IsTruncated":
                    truncated = el.text == "true"
                elif tag == "NextContinuationToken":
                    token = el.text
            if not truncated or not token:
                break
        with lock:
            remote.update(found)

    listable_tops = []
    for top in sorted(entries):
        try:
            top.decode("utf-8")
            listable_tops.append(top)
        except UnicodeDecodeError:
            pass
    for t in pool(listable_tops, list_entry):
        t.join()
    if state["failed"]:
        for t, err in state["failed"][:10]:
            say("FAILED: %s" % err)
        sys.exit(1)

    # 2. compare (size, then MD5 as the ETag of a single-part object) and upload what differs
    def upload(item):
        path, size, _ = item
        with open(path, "rb") as f:
            # a small file is read once and sent as read (a log still being written to is sent
            # as it was when read); a big one is hashed, then its first `length` bytes are sent
            body = f.read(CHUNK + 1)
            md5 = hashlib.md5(body)
            if len(body) > CHUNK:
                while True:
                    block = f.read(CHUNK)
                    md5.update(block)
                    if len(block) < CHUNK:
                        break
                body = f
            length = f.tell()
            digest = md5.hexdigest()
            have = remote.get(path)
            same = have is not None and have[0] == length and have[1] == digest
            if not same and have is not None and have[0] == length and "-" in have[1]:
                # multipart (s3cmd): its attrs header holds the MD5
                status, r, _ = s3.request("HEAD", "/" + bucket + "/" + s3_quote(path), {}, {})
                attrs = (r.getheader("x-amz-meta-s3cmd-attrs") or "") if status == 200 else ""
                same = ("md5:" + digest) in attrs.split("/")
            if not same:
                text = path.decode("utf-8", "surrogateescape")
                st = os.fstat(f.fileno())
                headers = {
                    "content-md5": base64.b64encode(md5.digest()).decode(),
                    "content-type": mimetypes.guess_type(text)[0] or "text/plain",
                    "x-amz-meta-s3cmd-attrs": "md5:%s/mode:%d/mtime:%d/size:%d" % (
                        digest, st.st_mode, int(st.st_mtime), length),
                }
                status, _, data = s3.request("PUT", "/" + bucket + "/" + s3_quote(path), {}, headers, body, length)
                if status != 200:
                    raise RuntimeError("PUT %s: %s" % (text, error_text(status, data)))
        with lock:
            state["done"] += 1
            state["done_bytes"] += length
            if not same:
                state["up"] += 1
                state["up_bytes"] += length

    started = time.monotonic()
    threads = pool(small, upload)
    say("%s sync started: %d files (%s); %d over %s left to s3cmd (multipart); %d threads"
        % (stamp(), small_total, human_bytes(small_bytes), len(big), human_bytes(threshold), len(threads)))
    next_line = started + interval
    while True:
        alive = [t for t in threads if t.is_alive()]
        if not alive:
            break
        alive[0].join(timeout=max(0.0, min(0.25, next_line - time.monotonic())))
        if time.monotonic() >= next_line:
            with lock:
                snap = (state["done"], state["done_bytes"], state["up"], state["up_bytes"])
            say("%s %s" % (stamp(), progress_line(time.monotonic() - started, snap[0], small_total,
                                                  snap[1], small_bytes, snap[2], snap[3])))
            next_line += interval
    for t, err in state["failed"][:10]:
        say("FAILED: %s" % err)
    if len(state["failed"]) > 10:
        say("... and %d more failures" % (len(state["failed"]) - 10))
    with open(result_file, "w") as f:
        f.write("%d %d %d %d %d %d %d %d %d %d %.1f\n" % (
            len(files), total_bytes, len(entries), symlinks, special, state["up"], state["up_bytes"],
            len(state["failed"]), len(big), sum(f[1] for f in big), time.monotonic() - started))
    sys.exit(1 if state["failed"] else 0)


if __name__ == "__main__":
    main()
'''

_SYNC_BODY = r"""
cd -- "$logs_dir"
started=$SECONDS
script_name=$0
export script_name

# the uploader and s3cmd run in the background so that a TERM/INT/HUP trap runs at once
worker=
on_signal() {
    trap - TERM INT HUP
    printf '%s: interrupted; stopping the upload (a re-run resumes)\n' "$0" >&2
    if [[ -n $worker ]]; then
        kill -TERM "$worker" 2>/dev/null || true
        # bounded: a worker that ignores the TERM is KILLed after 2 s, never waited for forever
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$worker" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$worker" 2>/dev/null || true
        wait "$worker" 2>/dev/null || true
    fi
    reap_step
    exit "$1"
}
trap 'on_signal 143' TERM
trap 'on_signal 130' INT
trap 'on_signal 129' HUP

rc=0
python3 - "$config" "$scratch/result" "$scratch/big.list" "$bucket" "$s3_host" "$use_https" "$region" \
    "$ca_file" "$parallelism" "$progress_seconds" "$multipart_threshold" <<'PY' &
@UPLOADER@
PY
worker=$!
wait "$worker" || rc=$?
worker=
result=
[[ -f $scratch/result ]] && IFS= read -r result < "$scratch/result"
[[ -n $result ]] || fail "the upload of $logs_dir failed (exit $rc, see above); nothing was deleted, re-run to resume"
read -r planned_files planned_bytes entries symlinks special uploaded uploaded_bytes failed big big_bytes seconds <<<"$result"

# files above the multipart threshold: s3cmd, as the runbook (copy only, never delete)
copied=0 copied_bytes=0 big_failed=0
if [[ $big -gt 0 ]]; then
    printf '%s: %s uploading %s files over %s bytes (%s bytes) with s3cmd (multipart)\n' \
        "$0" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$big" "$multipart_threshold" "$big_bytes" >&2
    s3rc=0
    s3cmd -c "$config" --no-delete-removed --no-progress --stats \
        --no-mime-magic --default-mime-type=text/plain \
        sync -r --files-from="$scratch/big.list" -- ./ "s3://$bucket/" \
        < /dev/null > "$scratch/s3cmd.out" 2> "$scratch/s3cmd.err" &
    worker=$!
    wait "$worker" || s3rc=$?
    worker=
    while IFS= read -r line; do printf '%s: s3cmd: %s\n' "$0" "$line" >&2; done < "$scratch/s3cmd.err"
    if [[ $s3rc -ne 0 ]]; then
        printf '%s: s3cmd sync of the %s big files FAILED: exit %s\n' "$0" "$big" "$s3rc" >&2
        big_failed=$big
    fi
    re_sent='^Stats: Number of files transferred: ([0-9]+) \(([0-9]+) bytes\)'
    re_copied='^Stats: Number of files copied: ([0-9]+) \(([0-9]+) bytes\)'
    while IFS= read -r line; do
        if [[ $line =~ $re_sent ]]; then
            uploaded=$((uploaded + BASH_REMATCH[1]))
            uploaded_bytes=$((uploaded_bytes + BASH_REMATCH[2]))
        elif [[ $line =~ $re_copied ]]; then
            copied=$((copied + BASH_REMATCH[1]))
            copied_bytes=$((copied_bytes + BASH_REMATCH[2]))
        fi
    done < "$scratch/s3cmd.out"
fi

summary="synced $logs_dir to s3://$bucket/: $planned_files files ($planned_bytes bytes) in $entries top-level entries;"
summary+=" uploaded $uploaded ($uploaded_bytes bytes), copied $copied server-side ($copied_bytes bytes);"
summary+=" not uploaded: $symlinks symlinks, $special special files;"
summary+=" $parallelism parallel uploads, $big files over $multipart_threshold bytes by s3cmd, $((SECONDS - started)) s"
if [[ $rc -ne 0 || $failed -gt 0 || $big_failed -gt 0 ]]; then
    printf '%s\n' "$summary" >&2
    fail "$((failed + big_failed)) of $planned_files files failed to upload (see above); nothing was deleted, re-run to resume"
fi
if [[ $final_pass == 1 ]]; then
    printf '%s: %s downtime can end: the last log sync is done (%s files uploaded); verify and the Kubernetes scheduler follow\n' \
        "$0" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$uploaded" >&2
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
                ca_file: str | None = None, *, progress_seconds: float = PROGRESS_SECONDS,
                multipart_threshold: int = MULTIPART_THRESHOLD, final_pass: bool = False) -> str:
    """Copy every regular file under ``logs_dir`` to ``s3://bucket/<relative path>``.

    stdin: access key and secret key, one a line.  stdout: one summary line.  stderr: a
    progress line every ``progress_seconds`` (files and bytes done, rate, time left), and with
    ``final_pass`` a timestamped "downtime can end" line once everything is uploaded.  Exit
    non-zero when anything failed (the files that were uploaded stay; a re-run resumes).
    ``endpoint``: see the module docstring; ``ca_file``: a PEM bundle for https (default: the
    system store, which holds the WMF CA on production hosts).  ``parallelism``: concurrent
    uploads (threads, each with its own kept-alive connection).  Files above
    ``multipart_threshold`` bytes go to s3cmd, which uploads them in 15 MB parts.
    """
    if not isinstance(parallelism, int) or isinstance(parallelism, bool) or not 1 <= parallelism <= MAX_PARALLELISM:
        raise ValueError(f"parallelism must be an integer in 1..{MAX_PARALLELISM}, got {parallelism!r}")
    if isinstance(progress_seconds, bool) or not isinstance(progress_seconds, (int, float)) or not 0.1 <= progress_seconds <= 3600:
        raise ValueError(f"progress_seconds must be a number in 0.1..3600, got {progress_seconds!r}")
    if not isinstance(multipart_threshold, int) or isinstance(multipart_threshold, bool) or multipart_threshold < 1:
        raise ValueError(f"multipart_threshold must be a positive integer, got {multipart_threshold!r}")
    return (
        remote.header("airflow logs to S3: " + ("final sync" if final_pass else "sync"))
        + _assignments(logs_dir, bucket, endpoint, region, ca_file)
        + f"\nparallelism={parallelism}\nprogress_seconds={float(progress_seconds)!r}\n"
        + f"multipart_threshold={multipart_threshold}\nfinal_pass={1 if final_pass else 0}\n"
        + _PRELUDE
        + _SYNC_BODY.replace("@UPLOADER@", _UPLOADER_PY.strip())
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
    printf '%s: %s downtime started: the legacy services of airflow-%s are stopped (%s)\n' \
        "$0" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$instance" "${before% }" >&2
    printf 'airflow-%s legacy services: %s; stopped %s\n' "$instance" "$puppet_state" "${before% }"
else
    printf '%s: %s downtime started earlier: no legacy service of airflow-%s was running\n' \
        "$0" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$instance" >&2
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
