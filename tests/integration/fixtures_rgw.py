"""A real single-node Ceph cluster with an S3 gateway (radosgw), on loopback, for integration tests.

One mon, one memstore OSD (pool size 1), no mgr, ``auth none``, and radosgw with the beast
frontend on ``127.0.0.1``: HTTPS (a throw-away CA, like production's https endpoint) and plain
HTTP, each on a free port.  The realm, the zonegroup ``dpe`` (api_name ``dpe``,
master, default) and its zone are committed in a period, so S3 region ``dpe`` and
``LocationConstraint=dpe`` are real, as in production.  Everything (config, data, pid files,
logs, admin sockets) lives in one temp dir; ``CEPH_CONF`` points at it.  Ceph 16 (Debian 12)
comes up in about 1.4 s on 2 cores (median of 7 starts, TLS, zonegroup and admin user included;
stop 0.4 s); the daemons run in the foreground as our own children and are stopped by their PIDs.

Reuse from any test module::

    from tests.integration.fixtures_rgw import rgw  # noqa: F401  (registers the fixture)

    def test_something(rgw):            # rgw: RgwCluster
        rgw.endpoint                    # "https://127.0.0.1:PORT" (production talks https)
        rgw.ca_file                     # PEM of the CA that signed it (boto3 verify=, s3cmd --ca-certs=)
        rgw.http_endpoint               # "http://127.0.0.1:PORT", for tools that cannot take a CA
        rgw.env                         # environment for radosgw-admin / scripts (CEPH_CONF, PATH...)
        rgw.admin                       # S3Keys of a pre-made admin user (caps users/buckets/metadata/usage)
        rgw.s3_client(rgw.admin)        # boto3 client with the program's aws.Provider settings
        with checksum_env(): ...        # AWS_*_CHECKSUM_*=when_required, as the provider runs
        S3Keys.generate()               # a key pair shaped like the program's pulumi-random keys
        rgw.user_info(uid)              # `radosgw-admin user info` as a dict (None: no such user)
        run = rgw.run_script(script, stdin="...", forbidden_in_argv=[secret])
        run.returncode, run.stdout, run.stderr, run.argv_leaks, run.argvs_seen

The fixture is session-scoped and the cluster is cached on the pytest config, so every module
that imports ``rgw`` shares ONE cluster per pytest process (importing a fixture into two modules
otherwise defines it twice).  Tests must therefore use their own uids and bucket names.
Ceph missing is a failure, not a skip (tools/system-packages.sh installs it).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import string
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ZONEGROUP = "dpe"  # S3 region of the production RGW (runbook: s3cmd --region=dpe)
REALM = "dpe"
ZONE = "dpe-test"
# what the program's aws.Provider runs with (components/buckets.py CHECKSUM_ENV); boto3 honours them too
CHECKSUM_ENV = {
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
}
ADMIN_UID = "fixture-admin"
ADMIN_CAPS = "users=*;buckets=*;metadata=*;usage=*"
REQUIRED_BINARIES = ("monmaptool", "ceph-mon", "ceph-osd", "ceph", "radosgw", "radosgw-admin")


class RgwClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class S3Keys:
    access_key: str
    secret_key: str

    def stdin(self) -> str:
        """The two-line stdin contract of the RGW user script: access key, then secret key."""
        return f"{self.access_key}\n{self.secret_key}\n"

    @staticmethod
    def generate() -> "S3Keys":
        """Keys shaped like the program's pulumi-random ones (20 upper/digits, 40 alphanumerics)."""
        upper = string.ascii_uppercase + string.digits
        alnum = string.ascii_letters + string.digits
        return S3Keys(
            access_key="".join(secrets.choice(upper) for _ in range(20)),
            secret_key="".join(secrets.choice(alnum) for _ in range(40)),
        )


@dataclass
class ScriptRun:
    returncode: int
    stdout: str
    stderr: str
    # every distinct /proc/*/cmdline seen while the script ran (NUL separators shown as spaces)
    argvs_seen: set[str] = field(default_factory=set)
    # those argvs that contained one of the forbidden strings
    argv_leaks: list[str] = field(default_factory=list)

    def check(self) -> "ScriptRun":
        if self.returncode != 0:
            raise AssertionError(f"script exited {self.returncode}; stderr:\n{self.stderr}")
        return self


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_port_range(width: int) -> int:
    """First port of a ``width``-wide range with nothing listening right now (ceph skips busy ones anyway)."""
    for _ in range(50):
        start = 20000 + secrets.randbelow(30000)
        busy = False
        for port in range(start, start + width):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    busy = True
                    break
        if not busy:
            return start
    raise RgwClusterError("no free port range for ceph messengers")


def _all_cmdlines() -> Iterable[str]:
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:  # the process ended meanwhile
            continue
        if raw:
            yield raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


class ArgvWatcher:
    """Polls every process's argv in a thread; collects argvs containing any forbidden string."""

    def __init__(self, forbidden: Sequence[str]):
        self.forbidden = [f for f in forbidden if f]
        self.seen: set[str] = set()
        self.leaks: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _scan(self) -> None:
        for cmdline in _all_cmdlines():
            if cmdline in self.seen:
                continue
            self.seen.add(cmdline)
            if any(f in cmdline for f in self.forbidden):
                self.leaks.append(cmdline)

    def _run(self) -> None:
        # a radosgw-admin run lasts >= 30 ms; a 2 ms pause leaves the CPU to the cluster
        while not self._stop.wait(0.002):
            self._scan()

    def __enter__(self) -> "ArgvWatcher":
        self._scan()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class RgwCluster:
    """A running single-node cluster; build with :meth:`start`, end with :meth:`stop`."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "ceph.conf"
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(_free_port())
        self.mon_port, self.rgw_port, self.rgw_http_port = sorted(ports)
        self.endpoint = f"https://127.0.0.1:{self.rgw_port}"
        self.http_endpoint = f"http://127.0.0.1:{self.rgw_http_port}"
        self.ca_file = root / "ca.pem"
        self.region = ZONEGROUP
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(root),
            "LANG": "C.UTF-8",
            "CEPH_CONF": str(self.conf),
        }
        self.admin: S3Keys | None = None
        self.start_seconds: float | None = None
        self._daemons: dict[str, subprocess.Popen] = {}

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    def start(cls, root: Path, memstore_bytes: int = 4 << 30) -> "RgwCluster":
        missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
        if missing:
            raise RgwClusterError(f"Ceph binaries missing: {missing}; run tools/system-packages.sh")
        cluster = cls(root)
        began = time.monotonic()
        try:
            cluster._write_tls()
            cluster._write_conf(memstore_bytes)
            cluster._start_mon()
            cluster._start_osd()
            cluster._make_zonegroup()
            cluster._start_rgw()
            cluster.admin = cluster._make_admin_user()
        except BaseException:
            cluster.stop()
            raise
        cluster.start_seconds = time.monotonic() - began
        return cluster

    def stop(self) -> None:
        """SIGTERM each daemon we started (by PID, newest first), SIGKILL what is left after 10 s."""
        for name, proc in reversed(list(self._daemons.items())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            self._daemons.pop(name)

    # ---------------------------------------------------------------- helpers for tests
    def run(self, *argv: str, stdin: str | None = None, check: bool = True, timeout: float = 60,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a ceph tool (e.g. ``radosgw-admin``) against this cluster."""
        proc = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=timeout,
            env={**self.env, **(extra_env or {})},
        )
        if check and proc.returncode != 0:
            raise RgwClusterError(f"{argv[:3]} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        return proc

    def radosgw_admin_json(self, *args: str) -> dict:
        return json.loads(self.run("radosgw-admin", *args).stdout)

    def user_info(self, uid: str) -> dict | None:
        """``radosgw-admin user info`` as a dict, or None when the user does not exist (exit 22)."""
        proc = self.run("radosgw-admin", "user", "info", f"--uid={uid}", check=False)
        if proc.returncode == 22:
            return None
        if proc.returncode != 0:
            raise RgwClusterError(f"user info {uid} exited {proc.returncode}: {proc.stderr.strip()}")
        return json.loads(proc.stdout)

    def run_script(self, script: str, stdin: str = "", *, forbidden_in_argv: Sequence[str] = (),
                   timeout: float = 120, extra_env: dict[str, str] | None = None) -> ScriptRun:
        """Run ``bash -c SCRIPT`` in the cluster's environment, feeding ``stdin``.

        While it runs, every process's argv on the machine is polled; any argv containing one of
        ``forbidden_in_argv`` (e.g. a secret key) ends up in ``argv_leaks``.  ``argvs_seen`` lets
        a test prove the watcher did see the script's commands.
        """
        with ArgvWatcher(forbidden_in_argv) as watcher:
            proc = subprocess.run(
                ["bash", "-c", script, "rgw-test-script"], input=stdin, capture_output=True, text=True,
                timeout=timeout, env={**self.env, **(extra_env or {})},
            )
        return ScriptRun(proc.returncode, proc.stdout, proc.stderr, watcher.seen, watcher.leaks)

    def s3_client(self, keys: S3Keys):
        """A boto3 S3 client with exactly the settings of the program's aws.Provider.

        Endpoint override, region ``dpe``, path-style addressing; the checksum settings come from
        the AWS_*_CHECKSUM_* environment variables (as for the provider), so use it inside
        :func:`checksum_env`.
        """
        import boto3  # test-only dependency (requirements-dev.txt)
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=keys.access_key,
            aws_secret_access_key=keys.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
            verify=str(self.ca_file),
        )

    # ---------------------------------------------------------------- startup steps
    def _path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def _write_tls(self) -> None:
        """A self-signed certificate for 127.0.0.1; beast reads key and certificate from one PEM."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        self.ca_file.write_bytes(cert_pem)
        self._path("rgw.pem").write_bytes(key_pem + cert_pem)
        self._path("rgw.pem").chmod(0o600)

    def _write_conf(self, memstore_bytes: int) -> None:
        for d in ("run", "log", "mon.a", "osd.0", "rgw"):
            self._path(d).mkdir(parents=True, exist_ok=True)
        ms_port_min = _free_port_range(40)
        r = self.root
        self.conf.write_text(f"""\
[global]
fsid = {uuid.uuid4()}
mon host = v2:127.0.0.1:{self.mon_port}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind port min = {ms_port_min}
ms bind port max = {ms_port_min + 39}
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
run dir = {r}/run
admin socket = {r}/run/$name.asok
pid file = {r}/run/$name.pid
log file = {r}/log/$name.log
keyring = /dev/null
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd crush chooseleaf type = 0
# a single mon batches proposals for 1 s by default: pool creation would take seconds
paxos propose interval = 0.01
paxos min wait = 0.001
mon osd auto mark in = true
[mon.a]
mon data = {r}/mon.a
[osd.0]
osd data = {r}/osd.0
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
osd max object name len = 460
osd max object namespace len = 64
[client]
# radosgw's default (secure) cannot work with auth none
ms mon client mode = crc
[client.rgw.a]
rgw frontends = beast ssl_endpoint=127.0.0.1:{self.rgw_port} ssl_certificate={r}/rgw.pem endpoint=127.0.0.1:{self.rgw_http_port}
rgw data = {r}/rgw
rgw zonegroup = {ZONEGROUP}
rgw zone = {ZONE}
rgw realm = {REALM}
""")

    def _daemon(self, name: str, argv: list[str]) -> None:
        log = open(self._path("log", f"{name}.stderr"), "wb")
        with log:
            self._daemons[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def _wait(self, what: str, ready, timeout: float = 30, daemon: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if daemon and self._daemons[daemon].poll() is not None:
                raise RgwClusterError(f"{daemon} exited {self._daemons[daemon].returncode}: {self._tail(daemon)}")
            if ready():
                return
            time.sleep(0.05)
        raise RgwClusterError(f"timed out waiting for {what}: {self._tail(daemon) if daemon else ''}")

    def _tail(self, daemon: str) -> str:
        text = ""
        for p in (self._path("log", f"{daemon}.stderr"), self._path("log", f"{daemon}.log")):
            with contextlib.suppress(OSError):
                text += p.read_text(errors="replace")[-1500:]
        return text

    def _start_mon(self) -> None:
        monmap = self._path("monmap")
        fsid = next(line.split("=", 1)[1].strip() for line in self.conf.read_text().splitlines()
                    if line.startswith("fsid"))
        self.run("monmaptool", "--create", "--clobber", "--fsid", fsid,
                 "--addv", "a", f"[v2:127.0.0.1:{self.mon_port}]", str(monmap))
        self.run("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(monmap))
        self._daemon("mon.a", ["ceph-mon", "-f", "-i", "a"])
        self._wait("mon", lambda: self.run("ceph", "mon", "stat", check=False, timeout=10).returncode == 0,
                   daemon="mon.a")

    def _start_osd(self) -> None:
        osd_uuid = str(uuid.uuid4())
        osd_id = self.run("ceph", "osd", "new", osd_uuid).stdout.strip()
        if osd_id != "0":
            raise RgwClusterError(f"expected osd id 0, got {osd_id!r}")
        self.run("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
        self._daemon("osd.0", ["ceph-osd", "-f", "-i", "0"])

        def up() -> bool:
            proc = self.run("ceph", "osd", "dump", "--format=json", check=False, timeout=10)
            if proc.returncode != 0:
                return False
            osds = json.loads(proc.stdout)["osds"]
            return any(o["osd"] == 0 and o["up"] == 1 and o["in"] == 1 for o in osds)

        self._wait("osd.0 up and in", up, daemon="osd.0")

    def _make_zonegroup(self) -> None:
        admin = ("radosgw-admin",)
        self.run(*admin, "realm", "create", f"--rgw-realm={REALM}", "--default")
        self.run(*admin, "zonegroup", "create", f"--rgw-realm={REALM}", f"--rgw-zonegroup={ZONEGROUP}",
                 f"--api-name={ZONEGROUP}", "--master", "--default", f"--endpoints={self.endpoint}")
        self.run(*admin, "zone", "create", f"--rgw-zonegroup={ZONEGROUP}", f"--rgw-zone={ZONE}",
                 "--master", "--default", f"--endpoints={self.endpoint}")
        self.run(*admin, "period", "update", "--commit")

    def _start_rgw(self) -> None:
        self._daemon("rgw", ["radosgw", "-f", "-n", "client.rgw.a"])

        tls = ssl.create_default_context(cafile=str(self.ca_file))

        def answers() -> bool:
            try:
                for url, context in ((self.endpoint, tls), (self.http_endpoint, None)):
                    with urllib.request.urlopen(url + "/", timeout=2, context=context) as resp:
                        if resp.status != 200:
                            return False
                return True
            except (urllib.error.URLError, ConnectionError, OSError):
                return False

        self._wait("radosgw to answer S3", answers, daemon="rgw")

    def _make_admin_user(self) -> S3Keys:
        keys = S3Keys.generate()
        # keys via CEPH_ARGS (ceph's env_to_vec), never argv: tests poll /proc for secrets
        self.run("radosgw-admin", "user", "create", f"--uid={ADMIN_UID}", "--display-name=test fixture admin",
                 f"--caps={ADMIN_CAPS}",
                 extra_env={"CEPH_ARGS": f"--access-key={keys.access_key} --secret-key={keys.secret_key}"})
        return keys


@contextlib.contextmanager
def checksum_env(sdk_defaults: bool = False):
    """Set AWS_{REQUEST,RESPONSE}_CHECKSUM_* = when_required, as the program's provider runs with
    (or, with ``sdk_defaults``, unset them).  boto3 reads them when a client is made: make it inside."""
    saved = {k: os.environ.get(k) for k in CHECKSUM_ENV}
    for k, v in CHECKSUM_ENV.items():
        if sdk_defaults:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_CLUSTER = pytest.StashKey[RgwCluster]()


@pytest.fixture(scope="session")
def rgw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> RgwCluster:
    """The session's single-node Ceph RGW (started on first use, stopped at the end of the session)."""
    config = request.config
    cluster = config.stash.get(_CLUSTER, None)
    if cluster is None:
        cluster = RgwCluster.start(tmp_path_factory.mktemp("ceph-rgw"))
        config.stash[_CLUSTER] = cluster
        config.add_cleanup(cluster.stop)
    return cluster
