"""A throwaway MIT Kerberos realm on loopback, for running the generated scripts for real.

``kdb5_util create -s`` builds the database in a temp dir and ``krb5kdc -n`` serves it on a
free 127.0.0.1 port (UDP and TCP) under Popen, stopped by PID.  Nothing reads /etc/krb5.conf
or /etc/krb5kdc: KRB5_CONFIG and KRB5_KDC_PROFILE point into the temp dir
(shared/reference/kerberos-postgres-study.md §1).  A realm with its KDC is up in ~40 ms.

Use it from a test module with ``from tests.integration.fixtures_kdc import kdc  # noqa: F401``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import pytest

REALM = "WIKIMEDIA"
# sudo's secure_path on Debian: the scripts find kadmin.local and python3 as they do on the KDC host
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS = ("kdb5_util", "krb5kdc", "kadmin.local", "kinit", "klist", "python3", "base64", "mktemp")
START_TIMEOUT_S = 10.0


def _free_port() -> int:
    """A loopback port free for both TCP and UDP right now (the KDC binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free loopback port for the KDC")


def krb5_conf(realm: str, port: int, directory: Path, default_realm: str | None = None) -> str:
    return f"""\
[libdefaults]
    default_realm = {default_realm or realm}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
    default_ccache_name = FILE:{directory}/ccache
[realms]
    {realm} = {{
        kdc = 127.0.0.1:{port}
    }}
"""


def kdc_conf(realm: str, port: int, directory: Path) -> str:
    return f"""\
[kdcdefaults]
    kdc_listen = 127.0.0.1:{port}
    kdc_tcp_listen = 127.0.0.1:{port}
[realms]
    {realm} = {{
        database_name = {directory}/principal
        key_stash_file = {directory}/stash
        acl_file = {directory}/kadm5.acl
        default_principal_flags = +preauth
    }}
[logging]
    kdc = FILE:{directory}/kdc.log
"""


@dataclass
class Kdc:
    """A realm's files in ``directory`` and, once started, its KDC process."""

    directory: Path
    realm: str
    port: int
    env: dict[str, str]
    process: subprocess.Popen | None = None
    timings: dict[str, float] = field(default_factory=dict)

    # --- running things in the realm's environment -------------------------------------
    def run(self, argv: list[str], *, env: Mapping[str, str] | None = None, user: str | None = None,
            cwd: Path | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run ``argv`` in the realm's environment (plus ``env``), stdout and stderr as bytes."""
        full_env = {**self.env, **(env or {})}
        if user is not None:
            # runuser drops the environment it is not told about: hand it over through env(1)
            argv = ["runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in full_env.items()), *argv]
        return subprocess.run(argv, env=full_env, cwd=cwd or self.directory, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout, check=False)

    def run_script(self, script: str, *, name: str = "kerberos-keytab", env: Mapping[str, str] | None = None,
                   user: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run the generated script as the Command would on the KDC host: ``bash -c SCRIPT NAME``."""
        return self.run(["bash", "-c", script, name], env=env, user=user, cwd=cwd)

    def kadmin(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(["kadmin.local", "-r", self.realm, *args])

    def kvno(self, principal: str) -> int:
        """The principal's current key version in the database."""
        out = self.kadmin("getprinc", principal)
        assert out.returncode == 0, f"getprinc {principal}: {out.stderr.decode()}"
        versions = {line.split(",")[0].split()[-1] for line in out.stdout.decode().splitlines()
                    if line.startswith("Key: vno ")}
        assert len(versions) == 1, f"{principal} has keys of several versions: {versions}"
        return int(versions.pop())

    def kinit(self, keytab: Path, principal: str) -> subprocess.CompletedProcess:
        """``kinit -k -t KEYTAB PRINCIPAL`` against the running KDC, into a throwaway ccache."""
        ccache = self.directory / f"ccache-{secrets.token_hex(4)}"
        return self.run(["kinit", "-k", "-t", str(keytab), principal], env={"KRB5CCNAME": f"FILE:{ccache}"})

    # --- lifecycle ---------------------------------------------------------------------
    def create(self) -> None:
        (self.directory / "krb5.conf").write_text(krb5_conf(self.realm, self.port, self.directory))
        (self.directory / "kdc.conf").write_text(kdc_conf(self.realm, self.port, self.directory))
        (self.directory / "kadm5.acl").write_text("")
        started = time.monotonic()
        # the master password goes on stdin (kdb5_util prompts twice), never in argv
        master = secrets.token_urlsafe(16)
        done = subprocess.run(["kdb5_util", "create", "-s", "-r", self.realm], env=self.env, cwd=self.directory,
                              input=f"{master}\n{master}\n".encode(), capture_output=True, timeout=30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"kdb5_util create failed ({done.returncode}): {done.stderr.decode()}")
        self.timings["create_s"] = time.monotonic() - started

    def start(self) -> None:
        started = time.monotonic()
        log = open(self.directory / "krb5kdc.out", "wb")
        # -n: stay in the foreground, so Popen owns the process and can stop it by PID
        self.process = subprocess.Popen(["krb5kdc", "-n", "-r", self.realm], env=self.env, cwd=self.directory,
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = started + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"krb5kdc exited with {self.process.returncode}: {self._logs()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"krb5kdc not listening on 127.0.0.1:{self.port} after {START_TIMEOUT_S}s: "
                                       f"{self._logs()}")
                time.sleep(0.005)
        self.timings["start_s"] = time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def _logs(self) -> str:
        parts = []
        for name in ("krb5kdc.out", "kdc.log"):
            path = self.directory / name
            if path.exists():
                parts.append(f"{name}: {path.read_text(errors='replace')[-2000:]}")
        return "\n".join(parts)


def make_realm(directory: Path, realm: str = REALM, *, start: bool = True) -> Kdc:
    """Create (and by default start) a realm in ``directory``; the caller stops it."""
    missing = [tool for tool in TOOLS if shutil.which(tool, path=SYSTEM_PATH) is None]
    if missing:
        # not a skip: the integration tests must fail where the KDC cannot run
        raise RuntimeError(f"missing {missing}: install krb5-kdc krb5-admin-server krb5-user (tools/system-packages.sh)")
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KRB5")}
    env.update(
        PATH=SYSTEM_PATH,
        LC_ALL="C",
        KRB5_CONFIG=str(directory / "krb5.conf"),
        KRB5_KDC_PROFILE=str(directory / "kdc.conf"),
        KRB5CCNAME=f"FILE:{directory}/ccache",
        KRB5RCACHEDIR=str(directory),
        # the scripts' mktemp -d lands here, so a test can see that they clean up
        TMPDIR=str(directory / "scratch"),
    )
    (directory / "scratch").mkdir()
    kdc = Kdc(directory=directory, realm=realm, port=port, env=env)
    kdc.create()
    if start:
        try:
            kdc.start()
        except BaseException:
            kdc.stop()
            raise
    return kdc


@pytest.fixture
def kdc(tmp_path: Path) -> Iterator[Kdc]:
    """A fresh realm WIKIMEDIA with its KDC running on loopback; stopped after the test."""
    realm = make_realm(tmp_path / "realm")
    try:
        yield realm
    finally:
        realm.stop()


# --- reading keytabs (independent of the script's own normalizer) --------------------------

@dataclass(frozen=True)
class KeytabEntry:
    principal: str
    timestamp: int
    kvno: int
    enctype: int
    key: bytes


def parse_keytab(data: bytes) -> tuple[int, list[KeytabEntry]]:
    """(version, entries) of an MIT keytab file; raises ValueError on anything malformed."""
    import struct

    if len(data) < 2:
        raise ValueError("shorter than a keytab header")
    (version,) = struct.unpack_from(">H", data, 0)
    pos, entries = 2, []
    while pos < len(data):
        (size,) = struct.unpack_from(">i", data, pos)
        pos += 4
        if size < 0:
            pos += -size
            continue
        end = pos + size
        if size == 0 or end > len(data):
            raise ValueError(f"bad record size {size} at byte {pos - 4}")
        p = pos

        def counted() -> bytes:
            nonlocal p
            (length,) = struct.unpack_from(">H", data, p)
            value = bytes(data[p + 2:p + 2 + length])
            p += 2 + length
            return value

        (ncomp,) = struct.unpack_from(">H", data, p)
        p += 2
        realm = counted().decode()
        components = [counted().decode() for _ in range(ncomp)]
        _name_type, timestamp, vno8 = struct.unpack_from(">IIB", data, p)
        p += 9
        (enctype,) = struct.unpack_from(">H", data, p)
        p += 2
        key = counted()
        kvno = struct.unpack_from(">I", data, p)[0] if end - p >= 4 else vno8
        if p > end:
            raise ValueError(f"entry at byte {pos - 4} overruns its record")
        entries.append(KeytabEntry("/".join(components) + "@" + realm, timestamp, kvno, enctype, key))
        pos = end
    return version, entries


# --- the keytab script against this realm ------------------------------------------------------

def local_tools(kdc: Kdc, **paths: str):
    """components.kerberos.KdcTools for running the keytab script on this machine without sudo
    (``use_sudo=False``, as root or as the realm's owner): the real tools, kadmin.local finding
    the realm through the environment the script inherits, and a spool in the realm's directory."""
    from components import kerberos

    return kerberos.KdcTools(**{"spool_root": str(kdc.directory / "spool"), **paths})


def root_kadmin_wrapper(kdc: Kdc, path: Path) -> Path:
    """A root-owned stand-in for /usr/sbin/kadmin.local at ``path`` that runs the real one on this
    realm.  Through sudo the environment is reset (env_reset), so KRB5_CONFIG/KRB5_KDC_PROFILE
    cannot come from the caller: the wrapper sets them.  That is its only difference from the
    production tool; arguments, exit status and output are the real kadmin.local's."""
    real = shutil.which("kadmin.local", path=SYSTEM_PATH)
    path.write_text(f"""#!/bin/sh
# test stand-in for {real}: the real tool on the test realm (sudo drops the caller's environment)
KRB5_CONFIG={kdc.env['KRB5_CONFIG']}
KRB5_KDC_PROFILE={kdc.env['KRB5_KDC_PROFILE']}
export KRB5_CONFIG KRB5_KDC_PROFILE
exec {real} "$@"
""")
    os.chown(path, 0, 0)
    path.chmod(0o755)
    return path


def keytab_script_for(kdc: Kdc, principals: list[str], realm: str = REALM, *, timeout_seconds: int = 600,
                      **tools: str) -> str:
    """components.kerberos.keytab_script as the Command would hold it for a root SSH user
    (``use_sudo=False``), with ``local_tools(kdc, **tools)``: run it with ``kdc.run_script``."""
    from components import kerberos

    return kerberos.keytab_script(realm, principals, use_sudo=False, timeout_seconds=timeout_seconds,
                                  tools=local_tools(kdc, **tools))
