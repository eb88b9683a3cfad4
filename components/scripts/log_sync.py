"""The Python helper of the log steps on the legacy Airflow VM (components/scripts/legacy_logs.sh ships
this file as the value log_sync_py and runs it with python3 -: the code on stdin, after the
script has read the keys from its own stdin).  python3 >= 3.7, standard library only (Debian 10 and later).

    upload LOGS_DIR CONFIG RESULT BIG_LIST BUCKET HOST HTTPS REGION CA THREADS INTERVAL THRESHOLD
        the sync: walks the tree once (never following symlinks, as s3cmd), lists the bucket under each
        top-level entry in parallel, then THREADS threads, each with its own kept-alive connection,
        compare each file (size, then MD5 against the ETag of a single-part object) and PUT what
        differs (SigV4, Content-MD5: the RGW refuses a corrupt body).  The keys are read from the
        s3cmd CONFIG.  A progress line on stderr every INTERVAL seconds.  Files above THRESHOLD bytes
        are listed in BIG_LIST for s3cmd.  Writes one result line to RESULT: "files bytes entries
        symlinks special uploaded uploaded_bytes failed big big_bytes seconds".
    compare LOGS_DIR LISTING BUCKET
        the verification: the tree against an s3cmd ls -r LISTING, key by key (size only:
        multipart ETags are not MD5s); the table on stdout, exit 1 when a local file has no object
        of its size.

Both run as the SSH user, without sudo, as the runbook's operator did: a directory it cannot list
or a regular file it cannot read stops them, before any request, with one line on stderr naming
the path and the fix (exit 3, UNREADABLE); nothing is skipped silently.

No backquote, and no dollar sign before a name, brace or parenthesis, anywhere in this file: the
generated script holds it single-quoted, where shellcheck (SC2016) would take them for an
expansion that does not happen (tests/test_log_migration_script.py checks).
"""

import base64
import grp
import hashlib
import hmac
import http.client
import mimetypes
import os
import pwd
import queue
import re
import shlex
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
UNREADABLE = 3  # exit status: a path of the tree this user cannot read (one line on stderr says which)


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


def shown(name):
    """A path as text for a message: undecodable bytes and control characters escaped."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", "surrogateescape")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


class Unreadable(Exception):
    """A path of the tree this user cannot read: the log steps read it without sudo."""

    def __init__(self, path):
        super().__init__(path)
        self.path = path


def unreadable_line(logs_dir, path):
    """One line: the path, who owns it, and what lets the SSH user read it."""
    full = path if os.path.isabs(path) else os.path.join(os.fsencode(logs_dir), path)
    full = os.path.normpath(full)
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = "uid %d" % os.getuid()
    try:
        st = os.lstat(full)
    except OSError:
        return "cannot read %s as %s: the log steps read the tree as the SSH user, without sudo; give %s " \
            "read access to it (e.g. through the group that owns the tree), then re-run" % (shown(full), user, user)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    is_dir = stat.S_ISDIR(st.st_mode)
    mode = stat.S_IMODE(st.st_mode)
    group_can = (mode & 0o050) == 0o050 if is_dir else bool(mode & 0o040)
    fix = "add %s to the group %s (usermod -aG %s %s)" % (user, group, group, user)
    if not group_can:
        fix = "let the group %s read it (chmod -R g+rX %s) and %s" % (
            group, shlex.quote(shown(full)), fix)
    return ("cannot read %s (%s, owner %s:%s, mode %04o) as %s: the log steps read the tree as the SSH user, "
            "without sudo, as the runbook does; %s, then re-run"
            % (shown(full), "a directory" if is_dir else "a file", owner, group, mode, user, fix))


def enter(logs_dir):
    try:
        os.chdir(logs_dir)
    except PermissionError:
        raise Unreadable(logs_dir)


def walk(check_read):
    """Every regular file under the current directory (the logs directory), never following
    symlinks (as s3cmd): (files [(relative path bytes, size, top-level entry)], top-level entries,
    symlinks, special files).  A directory this user cannot list or search raises Unreadable, and
    so does a regular file it cannot read when check_read (the sync opens every file)."""

    def listing_failed(err):
        if isinstance(err, PermissionError):
            raise Unreadable(err.filename)
        raise err

    def add(root, name, top):
        path = os.path.join(root, name) if root else name
        try:
            st = os.lstat(path)
        except PermissionError:
            raise Unreadable(root or b".")
        if stat.S_ISREG(st.st_mode):
            if check_read and not os.access(path, os.R_OK):
                raise Unreadable(path)
            files.append((path, st.st_size, top))
            return False
        if stat.S_ISLNK(st.st_mode):
            counts[0] += 1
        elif stat.S_ISDIR(st.st_mode):
            return True
        else:
            counts[1] += 1
        return False

    files = []
    entries = set()
    counts = [0, 0]  # symlinks, special files
    try:
        tops = sorted(os.listdir(b"."))
    except PermissionError:
        raise Unreadable(b".")
    for top in tops:
        is_dir = add(b"", top, top)
        if files and files[-1][0] == top:
            entries.add(top)
        if not is_dir:
            continue
        entries.add(top)
        if not os.access(top, os.R_OK | os.X_OK):
            raise Unreadable(top)
        for root, dirs, names in os.walk(top, onerror=listing_failed):
            for d in dirs:
                path = os.path.join(root, d)
                if os.path.islink(path):
                    counts[0] += 1
                elif not os.access(path, os.R_OK | os.X_OK):
                    raise Unreadable(path)
            for n in names:
                add(root, n, top)
    return files, entries, counts[0], counts[1]


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


def upload(logs_dir, config, result_file, big_list, bucket, host, https, region, ca_file, workers, interval, threshold):
    workers, interval, threshold = int(workers), float(interval), int(threshold)
    name = os.environ.get("script_name", "log-sync")
    keys = {}
    with open(config) as f:
        for line in f:
            k, sep, v = line.rstrip("\n").partition(" = ")
            if sep:
                keys[k] = v
    enter(logs_dir)

    def say(text):
        sys.stderr.write("%s: %s\n" % (name, text))
        sys.stderr.flush()

    s3 = S3(host, https == "True", region, ca_file, keys["access_key"], keys["secret_key"])
    del keys

    # the walk: every regular file (never following symlinks, as s3cmd); a path this user cannot
    # read stops the sync here, before any request (raises Unreadable)
    files, entries, symlinks, special = walk(check_read=True)
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
            # as it was when read); a big one is hashed, then its first 'length' bytes are sent
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


def compare(logs_dir, listing, bucket):
    enter(logs_dir)
    found, _, symlinks, special = walk(check_read=False)
    local = {os.fsdecode(path): size for path, size, _ in found}
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

    head = ("prefix", "local files", "local bytes", "objects", "object bytes", "missing", "wrong size",
            "only on target", "status")
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


def main():
    name = os.environ.get("script_name", "log-sync")
    command, args = sys.argv[1], sys.argv[2:]
    try:
        if command == "upload":
            upload(*args)
        elif command == "compare":
            compare(*args)
        else:
            sys.exit("%s: unknown command %r" % (name, command))
    except Unreadable as err:
        sys.stderr.write("%s: %s\n" % (name, unreadable_line(args[0], err.path)))
        sys.exit(UNREADABLE)


if __name__ == "__main__":
    main()
