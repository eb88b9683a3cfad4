"""A real OpenSSH server on loopback, real non-root accounts, and a client that runs a command
exactly the way pulumi-command's ``remote.Command`` does.

Use it from a test module the way the other integration fixtures are used::

    from tests.integration.fixtures_sshd import (  # noqa: F401
        Sshd, sshd, ssh_accounts, run_like_provider, other_user_watch)

    def test_x(sshd, ssh_accounts):
        account = ssh_accounts.create(prefix="kdc")
        account.allow(sudoers_text)                      # checked with visudo -cf, mode 0440
        result = run_like_provider(sshd, account, command, stdin="...")
        assert result.rc == 0, result.stderr

What the provider does, read in pulumi-command v1.2.1 (the version requirements.txt pins) and
golang.org/x/crypto v0.48.0 (the version its provider/go.mod pins):

* ``provider/pkg/provider/remote/connection.go``
  - L88-94: with ``hostKey`` set, the key is parsed with ``ssh.ParseAuthorizedKey`` (so
    ``<type> <base64> [comment]``), checked with ``ssh.FixedHostKey`` and the host key
    algorithms are limited to that key's type (``HostKeyAlgorithms = []string{publicKey.Type()}``);
    without it ``ssh.InsecureIgnoreHostKey()`` (L95-98);
  - L106-118: the private key becomes one ``ssh.PublicKeys`` signer (L138-145: an agent at
    ``SSH_AUTH_SOCK`` is added too, not reproduced here);
  - L150-187, L199-201: ``ssh.Dial`` is retried up to ``dialErrorLimit`` times, a host key
    mismatch included.
* x/crypto ``ssh/handshake.go`` L841: the host key callback runs inside the key exchange, and
  ``ssh/client.go`` L108-114 authenticates only after it (``waitSession`` then
  ``clientAuthenticate``): a wrong key is refused before any authentication or channel.
  ``ssh/client.go`` L258-265 ``fixedHostKey.check`` compares the marshalled keys byte for byte.
  ``ssh/client_auth.go`` L72: the client tries the ``none`` method first.
* ``provider/pkg/provider/remote/commandOutputs.go`` ``run``:
  - L31-40: one new session on a freshly dialled client; only the session is closed
    (``defer session.Close()``), **the client is never closed** in ``run``: the TCP connection,
    and sshd's per-connection process running as the SSH user, last as long as the provider;
  - L42-49: each ``environment`` entry is ``session.Setenv`` = an ``env`` channel request with
    want-reply (x/crypto ``ssh/session.go`` L167-177); sshd refuses a name not in ``AcceptEnv``,
    Setenv returns ``ssh: setenv failed`` and the Command **fails before anything runs**
    (``could not set environment variable``, L110-126).  L51-70: the previous stdout/stderr
    (``addPreviousOutputInEnv``) are set the same way but a refusal only warns;
  - L73-75: ``session.Stdin = strings.NewReader(stdin)`` only when stdin is non-empty; no
    ``RequestPty`` anywhere;
  - L95: ``session.Run(cmd)`` = an ``exec`` request with want-reply (``ssh/session.go``
    L278-294, L309-315), then x/crypto copies stdin into the channel and closes its write side
    (``CloseWrite`` = EOF, ``ssh/session.go`` L479-501); with no Stdin it copies an empty
    ``bytes.Buffer`` (L484-485), i.e. **EOF at once**.  ``Wait`` (L399-418, ``wait`` L420-470) returns
    once the channel has closed and stdout/stderr are read to EOF; an ``exit-signal`` without
    status becomes 128+signal;
  - L100-102: a failure's error holds the command text and the combined output.

``run_like_provider`` does the same with paramiko: one TCP connection, key exchange with the
host key algorithm pinned to the pinned key's type, host key compared **before** authenticating,
``none`` then ``publickey``, ``open_session()``, ``env`` requests with want-reply (a refusal
fails like the provider), ``exec_command`` (never ``get_pty``), stdin written by a thread while
stdout and stderr are read (x/crypto copies concurrently) then ``shutdown_write()``, both
streams read to EOF, the exit status.  Unlike the provider it closes the connection at the end
(``keep_connection=True`` keeps it, as the provider does).

sshd here: its own ed25519 host key, ``UsePAM no`` (accounts get the password field ``*``:
without PAM sshd refuses an account whose password field starts with ``!``, which is what
``useradd`` writes: "User ... not allowed because account is locked"; ``UsePAM yes`` works in
this container too and pam_loginuid then tags the session, but sudo needs neither: it runs its
own PAM stack), public keys only, ``AuthorizedKeysFile`` in a root-owned 0755 directory
under ``/run`` (``StrictModes yes`` checks every directory up to ``/``: ``/tmp`` is
world-writable and would be refused), ``AcceptEnv LANG LC_*`` as in Debian's default
sshd_config, and ``AllowUsers pt-*`` so only accounts made here can log in.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from paramiko.common import cMSG_CHANNEL_REQUEST

SSHD = "/usr/sbin/sshd"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_PREFIX = "pt-"  # every account made here; sshd's AllowUsers admits only these
START_TIMEOUT_S = 10.0
DEFAULT_TIMEOUT_S = 30.0
SUDOERS_DIR = Path("/etc/sudoers.d")
# sudo skips files in its includedir whose name contains a "." (sudoers(5) "Including other files"):
# a file is written under such a name, then renamed into place
_SUDOERS_TMP = ".pt-tmp"


class HostKeyMismatch(paramiko.SSHException):
    """The server's host key is not the pinned one (x/crypto: ``ssh: host key mismatch``)."""

    def __init__(self, expected: str, got: str, client_port: int):
        super().__init__(f"ssh: host key mismatch: pinned {expected}, server offered {got} "
                         f"(connection from 127.0.0.1 port {client_port} closed before authentication)")
        self.client_port = client_port


class SetenvRefused(paramiko.SSHException):
    """sshd refused an ``env`` request: the provider's Command fails here, before ``exec``."""

    def __init__(self, name: str, client_port: int):
        super().__init__(f"could not set environment variable {name!r}: ssh: setenv failed")
        self.name = name
        self.client_port = client_port


class SessionTimeout(paramiko.SSHException):
    """The session did not end within the client's ``timeout`` (the provider would wait forever)."""

    def __init__(self, timeout: float, stdout: str, stderr: str, client_port: int):
        super().__init__(f"the SSH session was still open after {timeout} s (the provider has no deadline on "
                         f"session.Run); stderr so far: {stderr[-500:]!r}")
        self.stdout, self.stderr, self.client_port = stdout, stderr, client_port


# --- keys --------------------------------------------------------------------------------------

def new_ed25519() -> tuple[str, str]:
    """A fresh ed25519 key pair: (private key as OpenSSH PEM text, public key as ``ssh-ed25519 AAAA...``)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode("ascii")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode("ascii")
    return private, public


def parse_host_key_line(line: str) -> tuple[str, bytes]:
    """``<type> <base64> [comment]`` (what ``ssh.ParseAuthorizedKey`` takes) -> (type, key blob)."""
    parts = line.strip().split()
    if len(parts) < 2:
        raise ValueError(f"not a public key line: {line!r}")
    blob = base64.b64decode(parts[1], validate=True)
    n = int.from_bytes(blob[:4], "big")
    if blob[4:4 + n].decode("ascii", "replace") != parts[0]:
        raise ValueError(f"public key line {parts[0]}: its blob holds another key type")
    return parts[0], blob


def fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def secret_hint(secret: str) -> str:
    """How a secret is named in a report: its first 2 characters and a short hash, never itself."""
    return f"{secret[:2]}... sha256:{hashlib.sha256(secret.encode()).hexdigest()[:12]}"


# --- sshd --------------------------------------------------------------------------------------

@dataclass
class Sshd:
    host: str
    port: int
    host_key_line: str  # "ssh-ed25519 AAAA...": the form kdcHostKey / legacy.hostKey hold
    log_path: Path
    directory: Path
    keys_dir: Path  # AuthorizedKeysFile <keys_dir>/%u
    process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def authorize(self, user: str, public_key_line: str) -> None:
        path = self.keys_dir / user
        path.write_text(public_key_line.strip() + "\n")
        path.chmod(0o644)  # sshd reads it as the user; StrictModes: owned by root, not writable by others

    def deauthorize(self, user: str) -> None:
        (self.keys_dir / user).unlink(missing_ok=True)

    def log_text(self, since: int = 0) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(since)
            return f.read().decode("utf-8", "replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_for_port(self, client_port: int, *, wait_for_close: float = 2.0) -> list[str]:
        """sshd's log lines about the connection from 127.0.0.1 ``client_port``, once sshd logged its end."""
        pattern = re.compile(rf"\b127\.0\.0\.1 port {client_port}\b")
        deadline = time.monotonic() + wait_for_close
        while True:
            lines = [line for line in self.log_text().splitlines() if pattern.search(line)]
            if any(end in line for line in lines for end in ("closed", "Close session", "reset", "Disconnect")) \
                    or time.monotonic() > deadline:
                return lines
            time.sleep(0.01)

    # --- lifecycle ---------------------------------------------------------------------------
    def config(self, host_key_path: Path) -> str:
        return f"""\
# written by tests/integration/fixtures_sshd.py
ListenAddress {self.host}:{self.port}
HostKey {host_key_path}
PidFile {self.directory}/sshd.pid
AuthorizedKeysFile {self.keys_dir}/%u
AuthorizedPrincipalsFile none
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
GSSAPIAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers {USER_PREFIX}*
StrictModes yes
PermitUserEnvironment no
# as Debian's /etc/ssh/sshd_config: the locale only; anything else an env request asks for is refused
AcceptEnv LANG LC_*
LogLevel VERBOSE
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
MaxStartups 50:30:100
"""

    def start(self) -> None:
        if not os.path.exists(SSHD):
            raise RuntimeError(f"{SSHD} is missing: run tools/system-packages.sh (openssh-server)")
        # the privilege separation directory (tmpfiles.d makes it at boot; not in a container)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        private, public = new_ed25519()
        host_key = self.directory / "ssh_host_ed25519_key"
        fd = os.open(host_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(private)
        (self.directory / "ssh_host_ed25519_key.pub").write_text(public + "\n")
        self.host_key_line = " ".join(public.split()[:2])
        for attempt in range(5):
            self.port = _free_port()
            conf = self.directory / "sshd_config"
            conf.write_text(self.config(host_key))
            check = subprocess.run([SSHD, "-t", "-f", str(conf)], capture_output=True, text=True, check=False)
            if check.returncode != 0:
                raise RuntimeError(f"sshd -t refused the config: {check.stderr.strip()}")
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            log = open(self.log_path, "ab")
            # -D: foreground, so Popen owns it and it is stopped by its PID; -e: log to stderr (the file)
            self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(conf)], stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, cwd="/",
                                            env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"})
            log.close()
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                text = self.log_text(offset)
                if f"Server listening on {self.host} port {self.port}" in text:
                    return
                if self.process.poll() is not None:
                    if "Address already in use" in text or "Bind to port" in text:
                        break  # the free port was taken meanwhile: another one
                    raise RuntimeError(f"sshd exited with {self.process.returncode}: {text[-2000:]}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"sshd not listening after {START_TIMEOUT_S} s: {text[-2000:]}")
                time.sleep(0.005)
        raise RuntimeError("sshd: no free loopback port after 5 attempts")

    def stop(self) -> None:
        """Stop the listener by its PID and check it is gone and the port closed."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        pid, self.process = self.process.pid, None
        assert not _alive(pid), f"sshd {pid} still running after stop"
        with socket.socket() as s:
            s.settimeout(0.5)
            assert s.connect_ex((self.host, self.port)) != 0, f"something still listens on {self.host}:{self.port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie is dead, only not reaped yet


def start_sshd() -> Sshd:
    """A running sshd in a fresh root-owned directory under /run; the caller stops it (``stop_sshd``)."""
    directory = Path(tempfile.mkdtemp(prefix="pt-sshd-", dir="/run"))
    directory.chmod(0o755)  # the authorized_keys files below are read as the user
    keys_dir = directory / "authorized_keys"
    keys_dir.mkdir(mode=0o755)
    keys_dir.chmod(0o755)
    server = Sshd(host="127.0.0.1", port=0, host_key_line="", log_path=directory / "sshd.log",
                  directory=directory, keys_dir=keys_dir)
    try:
        server.start()
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return server


def stop_sshd(server: Sshd) -> None:
    try:
        server.stop()
    finally:
        shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    server = start_sshd()
    try:
        yield server
    finally:
        stop_sshd(server)


# --- accounts ----------------------------------------------------------------------------------

def _run_admin(argv: list[str], *, attempts: int = 20) -> subprocess.CompletedProcess:
    """useradd/userdel, retried while another process holds the passwd/group locks (exit 10)."""
    for i in range(attempts):
        done = subprocess.run(argv, capture_output=True, text=True, check=False, env={"PATH": SYSTEM_PATH})
        if done.returncode != 10 and "lock" not in done.stderr:
            return done
        time.sleep(0.05 * (i + 1))
    return done


def _processes() -> Iterator[tuple[int, list[int], int]]:
    """(pid, [real, effective, saved, fs uid], session id) of every process."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            status = Path(f"/proc/{name}/status").read_text()
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        uids = next((list(map(int, line.split()[1:5])) for line in status.splitlines() if line.startswith("Uid:")), [])
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):
            continue
        yield int(name), uids, int(fields[3])


def processes_of(uid: int) -> list[int]:
    """PIDs of live processes running with ``uid`` as any of their uids."""
    return [pid for pid, uids, _ in _processes() if uid in uids]


def describe_processes(pids: Sequence[int]) -> str:
    out = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")[:200]
        except OSError:
            cmd = "?"
        out.append(f"{pid}: {cmd}")
    return "; ".join(out)


def kill_processes_of(uid: int, *, timeout: float = 5.0) -> list[int]:
    """SIGKILL, by PID, every process with ``uid`` and every process in a session one of them leads
    (a ``sudo`` child of the account's login shell runs as root but in its session)."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        procs = list(_processes())
        leaders = {pid for pid, uids, sid in procs if uid in uids and pid == sid}
        targets = [pid for pid, uids, sid in procs if uid in uids or sid in leaders]
        targets = [pid for pid in targets if pid != os.getpid()]
        if not targets:
            return sorted(killed)
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of uid {uid} survive SIGKILL: {describe_processes(targets)}")
        time.sleep(0.02)


def create_user(name: str, *, home: bool = True) -> tuple[int, int, Path]:
    argv = ["useradd", "--shell", "/bin/bash" if home else "/usr/sbin/nologin", "--user-group",
            # "*": no password, and not "locked" ("!..."), which sshd refuses without PAM (auth.c allowed_user)
            "--password", "*", "--comment", "pytest tests/integration/fixtures_sshd.py"]
    argv += ["--create-home", "--home-dir", f"/home/{name}"] if home else ["--no-create-home", "--home-dir", "/nonexistent"]
    done = _run_admin(argv + [name])
    if done.returncode != 0:
        raise RuntimeError(f"useradd {name} failed ({done.returncode}): {done.stderr.strip()}")
    import pwd
    pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid, Path(pw.pw_dir)


def delete_user(name: str, uid: int) -> None:
    kill_processes_of(uid)
    done = _run_admin(["userdel", "--remove", name])
    import pwd
    try:
        pwd.getpwnam(name)
    except KeyError:
        pass
    else:
        raise RuntimeError(f"userdel {name} failed ({done.returncode}): {done.stderr.strip()}")
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(f"/home/{name}")
    for ts in (Path("/run/sudo/ts") / name, Path("/var/lib/sudo/ts") / name):
        ts.unlink(missing_ok=True)


def _unique_name(prefix: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9]{0,15}", prefix):
        raise ValueError(f"account prefix {prefix!r}: lower-case letters and digits, at most 16")
    return f"{USER_PREFIX}{prefix}-{secrets.token_hex(4)}"


def check_sudoers(text: str) -> str | None:
    """visudo's complaint about ``text`` as a sudoers file, or None when it parses."""
    with tempfile.TemporaryDirectory(prefix="pt-sudoers-") as d:
        path = Path(d) / "candidate"
        path.write_text(text)
        path.chmod(0o440)
        done = subprocess.run(["visudo", "-cf", str(path)], capture_output=True, text=True, check=False,
                              env={"PATH": SYSTEM_PATH})
        if done.returncode != 0:
            return (done.stdout + done.stderr).replace(str(path), "<sudoers text>").strip()
    return None


@dataclass
class Account:
    user: str
    uid: int
    gid: int
    home: Path
    private_key: str  # OpenSSH PEM text, only in memory
    public_key_line: str
    sudoers_files: list[Path] = field(default_factory=list)

    def allow(self, sudoers_text: str) -> Path:
        """Install ``sudoers_text`` as its own file in /etc/sudoers.d (mode 0440) once ``visudo -cf``
        accepts it; the test fails with visudo's message otherwise."""
        complaint = check_sudoers(sudoers_text)
        if complaint is not None:
            pytest.fail(f"visudo -cf refused the sudoers text for {self.user}:\n{complaint}\n--- text ---\n{sudoers_text}")
        final = SUDOERS_DIR / f"{self.user}-{len(self.sudoers_files)}"
        staging = SUDOERS_DIR / f"{final.name}{_SUDOERS_TMP}"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o440)
        with os.fdopen(fd, "w") as f:
            f.write(sudoers_text)
        os.chown(staging, 0, 0)
        os.chmod(staging, 0o440)
        os.rename(staging, final)
        self.sudoers_files.append(final)
        # the whole policy must still parse (a broken file in sudoers.d stops sudo for everyone)
        whole = subprocess.run(["visudo", "-c"], capture_output=True, text=True, check=False, env={"PATH": SYSTEM_PATH})
        if whole.returncode != 0:
            final.unlink(missing_ok=True)
            self.sudoers_files.remove(final)
            pytest.fail(f"with {final} the sudoers policy no longer parses (visudo -c):\n{whole.stdout}{whole.stderr}")
        return final

    def disallow(self) -> None:
        for path in self.sudoers_files:
            path.unlink(missing_ok=True)
        self.sudoers_files.clear()

    def processes(self) -> list[int]:
        return processes_of(self.uid)


class SshAccounts:
    """``create()`` makes accounts; ``cleanup()`` removes them with their files and processes."""

    def __init__(self, server: Sshd):
        self.sshd = server
        self.accounts: list[Account] = []

    def create(self, prefix: str = "ssh") -> Account:
        name = _unique_name(prefix)
        uid, gid, home = create_user(name)
        private, public = new_ed25519()
        account = Account(user=name, uid=uid, gid=gid, home=home, private_key=private, public_key_line=public)
        self.accounts.append(account)
        self.sshd.authorize(name, public)
        return account

    def cleanup(self) -> None:
        errors = []
        for account in reversed(self.accounts):
            try:
                account.disallow()
                self.sshd.deauthorize(account.user)
                delete_user(account.user, account.uid)
            except Exception as e:  # keep cleaning the others
                errors.append(f"{account.user}: {e}")
        self.accounts.clear()
        if errors:
            raise RuntimeError("ssh_accounts cleanup: " + "; ".join(errors))


@pytest.fixture
def ssh_accounts(sshd) -> Iterator[SshAccounts]:
    """Accounts for one test; at teardown their processes, sudoers files, keys, homes and users go.
    sshd's log lines written during the test are printed at teardown (shown only if it failed)."""
    offset = sshd.log_size()
    accounts = SshAccounts(sshd)
    try:
        yield accounts
    finally:
        try:
            accounts.cleanup()
        finally:
            print(f"--- sshd log ({sshd.log_path}) during this test ---\n{sshd.log_text(offset)}")


# --- the client --------------------------------------------------------------------------------

@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    client_port: int = 0
    exit_signal: str | None = None
    transport: paramiko.Transport | None = dataclasses.field(default=None, repr=False)


def _decode(data: bytes) -> str:
    # Go strings hold the bytes as they are; surrogateescape keeps them round-trippable
    return data.decode("utf-8", "surrogateescape")


def _send_env(chan: paramiko.Channel, name: str, value: str) -> bool:
    """x/crypto ``Session.Setenv``: an ``env`` request with want-reply; True when sshd accepted it.
    (paramiko's own ``set_environment_variable`` sends want-reply false and never learns.)"""
    m = paramiko.Message()
    m.add_byte(cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string("env")
    m.add_boolean(True)
    m.add_string(name)
    m.add_string(value)
    chan._event_pending()
    chan.transport._send_user_message(m)
    try:
        chan._wait_for_event()
    except paramiko.SSHException:
        return False  # paramiko closes the channel on a failed request; the provider returns an error here
    return True


_SIGNALS = {"ABRT": 6, "ALRM": 14, "FPE": 8, "HUP": 1, "ILL": 4, "INT": 2, "KILL": 9, "PIPE": 13,
            "QUIT": 3, "SEGV": 11, "TERM": 15, "USR1": 10, "USR2": 12}


def _watch_exit_signal(chan: paramiko.Channel, seen: dict) -> None:
    """paramiko ignores ``exit-signal``; x/crypto turns it into rc 128+signal (session.go L427-440, L455-465)."""
    original = chan._handle_request

    def handle(m):
        pos = m.packet.tell()
        if m.get_text() == "exit-signal":
            m.get_boolean()
            seen["signal"] = m.get_text()
        m.packet.seek(pos)
        return original(m)

    chan._handle_request = handle


def run_like_provider(sshd: Sshd, account: Account, command: str, stdin: str | None = None,
                      env: dict[str, str] | None = None, host_key_line: str | None = None,
                      timeout: float = DEFAULT_TIMEOUT_S, *, env_optional: bool = False,
                      keep_connection: bool = False) -> Result:
    """Run ``command`` as pulumi-command's remote.Command does (see the module docstring).

    ``env``: like ``environment``, each an ``env`` request with want-reply; a refusal raises
    ``SetenvRefused`` before ``exec`` (the Command fails).  ``env_optional=True``: sent without
    want-reply, and the command runs whatever sshd did with them (the provider's
    ``addPreviousOutputInEnv`` path, which only warns).  ``timeout`` bounds the whole exchange;
    past it ``SessionTimeout`` (the provider itself would wait forever).  ``keep_connection``: the
    connection stays open, in ``Result.transport`` (the provider never closes it); close it.
    """
    pinned = host_key_line if host_key_line is not None else sshd.host_key_line
    key_type, blob = parse_host_key_line(pinned)
    deadline = time.monotonic() + timeout
    sock = socket.create_connection((sshd.host, sshd.port), timeout=min(15.0, timeout))
    client_port = sock.getsockname()[1]
    transport = paramiko.Transport(sock)
    try:
        # connection.go L94: HostKeyAlgorithms = []string{publicKey.Type()}
        transport.get_security_options().key_types = [key_type]
        transport.start_client(timeout=max(0.1, deadline - time.monotonic()))
        offered = transport.get_remote_server_key()
        # x/crypto fixedHostKey.check: the marshalled keys, byte for byte, before authentication
        if offered.asbytes() != blob:
            raise HostKeyMismatch(f"{key_type} {fingerprint(blob)}", f"{offered.get_name()} "
                                  f"{fingerprint(offered.asbytes())}", client_port)
        user_key = paramiko.Ed25519Key.from_private_key(io.StringIO(account.private_key))
        try:
            transport.auth_none(account.user)  # x/crypto client_auth.go L72 tries "none" first
        except paramiko.BadAuthenticationType:
            pass
        if not transport.is_authenticated():
            transport.auth_publickey(account.user, user_key)
        chan = transport.open_session(timeout=max(0.1, deadline - time.monotonic()))
        exit_signal: dict = {}
        _watch_exit_signal(chan, exit_signal)
        for name, value in (env or {}).items():
            if env_optional:
                chan.set_environment_variable(name, value)
            elif not _send_env(chan, name, value):
                raise SetenvRefused(name, client_port)
        chan.exec_command(command)  # "exec", want-reply; never get_pty()

        data = (stdin or "").encode("utf-8", "surrogateescape")
        writer_error: list[BaseException] = []

        def write_stdin() -> None:
            try:
                if data:  # commandOutputs.go L73: only a non-empty stdin is attached
                    chan.sendall(data)
                chan.shutdown_write()  # x/crypto CloseWrite: EOF (at once when there is no stdin)
            except (OSError, paramiko.SSHException) as e:
                writer_error.append(e)

        writer = threading.Thread(target=write_stdin, daemon=True)
        writer.start()
        out, err = bytearray(), bytearray()
        while True:
            got = False
            while chan.recv_ready():
                out += chan.recv(65536)
                got = True
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
                got = True
            if chan.closed or (chan.eof_received and not chan.recv_ready() and not chan.recv_stderr_ready()
                               and chan.exit_status_ready()):
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                break
            if time.monotonic() > deadline:
                raise SessionTimeout(timeout, _decode(bytes(out)), _decode(bytes(err)), client_port)
            if not got:
                time.sleep(0.002)
        # x/crypto Wait: until the channel itself is closed
        while not chan.closed and time.monotonic() < deadline:
            time.sleep(0.002)
        writer.join(timeout=max(0.1, deadline - time.monotonic()))
        rc = chan.exit_status if chan.exit_status_ready() else -1
        if rc == -1 and exit_signal.get("signal"):
            rc = 128 + _SIGNALS.get(exit_signal["signal"], 0)
        result = Result(rc=rc, stdout=_decode(bytes(out)), stderr=_decode(bytes(err)), client_port=client_port,
                        exit_signal=exit_signal.get("signal"))
        if keep_connection:
            result.transport = transport
            transport = None
        return result
    finally:
        if transport is not None:
            transport.close()


# --- another user's view of /proc --------------------------------------------------------------

# Runs as a throwaway unprivileged user: the secrets arrive hex-encoded on stdin (never argv),
# "ready" after the first full pass, then a pass every ~2 ms until "stop" (or EOF) on stdin,
# then one JSON line: passes, leaks (pid, uid, file, secret index) and how many environ files
# were unreadable.  Nothing of a secret is printed.
_SCANNER = r"""
import json, os, select, sys
secrets = [bytes.fromhex(h) for h in json.loads(sys.stdin.readline())]
me = os.getpid()
found, denied, passes = {}, set(), 0
def uid_of(pid):
    try:
        for line in open('/proc/%d/status' % pid):
            if line.startswith('Uid:'):
                return int(line.split()[1])
    except OSError:
        return -1
def scan():
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == me:
            continue
        for what in ('cmdline', 'environ'):
            try:
                with open('/proc/%d/%s' % (pid, what), 'rb') as f:
                    data = f.read()
            except PermissionError:
                denied.add((pid, what))
                continue
            except OSError:
                continue
            spaced = data.replace(b'\0', b' ')
            for i, s in enumerate(secrets):
                if (s in data or s in spaced) and (pid, what, i) not in found:
                    found[(pid, what, i)] = {'pid': pid, 'uid': uid_of(pid), 'file': what, 'secret': i}
scan()
passes += 1
sys.stdout.write('ready\n')
sys.stdout.flush()
while True:
    r, _, _ = select.select([sys.stdin], [], [], 0.002)
    if r:
        break
    scan()
    passes += 1
sys.stdout.write(json.dumps({'passes': passes, 'leaks': list(found.values()),
                             'denied': sorted([p, w] for p, w in denied)}) + '\n')
"""


@dataclass(frozen=True)
class Leak:
    pid: int
    uid: int
    file: str  # "cmdline" or "environ"
    secret: str  # secret_hint(): first 2 characters and a hash

    def __str__(self) -> str:
        return f"pid {self.pid} (uid {self.uid}) /proc/{self.pid}/{self.file} holds secret {self.secret}"


@dataclass
class Watch:
    watcher: str = ""
    watcher_uid: int = -1
    watcher_gid: int = -1
    passes: int = 0
    leaks: list[Leak] = field(default_factory=list)
    denied: set[tuple[int, str]] = field(default_factory=set)  # (pid, "environ") it could not read

    def could_not_read(self, pid: int, what: str = "environ") -> bool:
        return (pid, what) in self.denied


def run_as(uid: int, gid: int, argv: list[str], **kwargs) -> subprocess.Popen:
    """Start ``argv`` as ``uid``/``gid`` with no supplementary groups and no capabilities, in a clean
    environment (plus ``env=``), through setpriv (no PAM, no login session)."""
    env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", **kwargs.pop("env", {})}
    full = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--", *argv]
    return subprocess.Popen(full, env=env, cwd="/", **kwargs)


@contextlib.contextmanager
def other_user_watch(secrets_: Sequence[str], *, assert_clean: bool = True) -> Iterator[Watch]:
    """While the body runs, a fresh unprivileged user scans every process's /proc/<pid>/cmdline and
    /proc/<pid>/environ for the secrets, a pass every few ms (what any other user of the host can
    see).  On exit the yielded ``Watch`` holds the leaks found; with ``assert_clean`` (default) the
    watch fails the test when there is one (after the body; a body's own exception wins).
    Environ files of other users are unreadable to it (ptrace access mode), so an environ leak
    counts only where another user can read it."""
    wanted = [s for s in secrets_ if s]
    if len(wanted) != len(secrets_):
        raise ValueError("other_user_watch: an empty secret matches everything")
    name = _unique_name("watch")
    uid, gid, _ = create_user(name, home=False)
    watch = Watch(watcher=name, watcher_uid=uid, watcher_gid=gid)
    proc = None
    body_failed = False
    try:
        proc = run_as(uid, gid, ["/usr/bin/python3", "-I", "-S", "-c", _SCANNER],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdin.write(json.dumps([s.encode().hex() for s in wanted]) + "\n")
        proc.stdin.flush()
        ready = proc.stdout.readline()
        if ready.strip() != "ready":
            raise RuntimeError(f"the /proc scanner did not start: {ready!r} {proc.stderr.read()[-1000:]}")
        try:
            yield watch
        except BaseException:
            body_failed = True
            raise
        finally:
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            out, errs = proc.communicate(timeout=30)
            if proc.returncode != 0 or not out.strip():
                raise RuntimeError(f"the /proc scanner failed ({proc.returncode}): {errs[-1000:]}")
            report = json.loads(out.strip().splitlines()[-1])
            watch.passes = report["passes"]
            watch.denied = {(p, w) for p, w in report["denied"]}
            watch.leaks = [Leak(pid=x["pid"], uid=x["uid"], file=x["file"], secret=secret_hint(wanted[x["secret"]]))
                           for x in report["leaks"]]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        delete_user(name, uid)
    if watch.passes < 2:
        raise AssertionError(f"the /proc scanner made only {watch.passes} pass(es): it watched nothing")
    if assert_clean and watch.leaks and not body_failed:
        raise AssertionError("secrets visible to another user in /proc:\n" + "\n".join(map(str, watch.leaks)))
