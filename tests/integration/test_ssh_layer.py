"""The SSH layer every remote Command goes through, over a real OpenSSH server.

``run_like_provider`` (tests/integration/fixtures_sshd.py) speaks to sshd the way
pulumi-command 1.2.1's remote.Command does (an ``exec`` request, no terminal, stdin then EOF,
``env`` requests with want-reply, the host key pinned); these tests pin down what a script can
rely on when it runs that way, as a non-root account with exactly the sudo rules it was given.
Each check has its control: the same probe seeing the opposite when the condition is changed.
"""

from __future__ import annotations

import io
import re
import secrets
import threading
import time
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from components import remote
from tests.integration.fixtures_sshd import (  # noqa: F401,F811
    HostKeyMismatch, SetenvRefused, SshAccounts, describe_processes, new_ed25519, other_user_watch, processes_of, run_as,
    run_like_provider, ssh_accounts, sshd)

TERMINAL_PROBE = ('for fd in 0 1 2; do if test -t "$fd"; then echo "fd$fd tty"; else echo "fd$fd notty"; fi; done; '
                  'tty; echo "tty rc $?"; echo "SSH_TTY ${SSH_TTY-unset}"')


def _with_pty(sshd, account, command: str) -> str:
    """The control: the same command over a channel that asks for a pty (what the provider never does)."""
    transport = paramiko.Transport((sshd.host, sshd.port))
    try:
        transport.connect(username=account.user,
                          pkey=paramiko.Ed25519Key.from_private_key(io.StringIO(account.private_key)))
        chan = transport.open_session()
        chan.get_pty()
        chan.exec_command(command)
        out = b""
        while True:
            data = chan.recv(65536)
            if not data:
                break
            out += data
        return out.decode().replace("\r\n", "\n")
    finally:
        transport.close()


def test_the_exec_request_has_no_terminal(sshd, ssh_accounts):
    account = ssh_accounts.create(prefix="tty")
    result = run_like_provider(sshd, account, TERMINAL_PROBE)
    assert result.stdout == "fd0 notty\nfd1 notty\nfd2 notty\nnot a tty\ntty rc 1\nSSH_TTY unset\n", result
    assert result.rc == 0 and result.stderr == ""
    # control: the probe does see a terminal when one is asked for
    with_pty = _with_pty(sshd, account, TERMINAL_PROBE)
    assert "fd0 tty\nfd1 tty\nfd2 tty\n/dev/pts/" in with_pty, with_pty


def test_stdin_is_delivered_byte_exact_then_eof(sshd, ssh_accounts):
    account = ssh_accounts.create(prefix="stdin")
    # bigger than both SSH windows (paramiko 2 MiB, sshd 2 MiB), so flow control is exercised
    # both ways; multi-byte characters, CR LF, NUL-free, no final newline
    chunk = "line\twith tab\r\nünïcödé ✓ \\ ' \" $HOME `x`\n" + secrets.token_urlsafe(64)
    stdin = (chunk * (3 * 2 ** 20 // len(chunk)))[:-1]
    command = ('cat; if IFS= read -r more; then echo "read after EOF: $more" >&2; exit 3; fi; '
               'echo "EOF after the data" >&2')
    result = run_like_provider(sshd, account, command, stdin=stdin, timeout=30)
    assert (result.rc, result.stderr) == (0, "EOF after the data\n"), result.stderr
    assert result.stdout == stdin  # byte for byte (the client encodes and decodes UTF-8 both ways)
    assert len(result.stdout.encode()) > 3 * 10 ** 6


@pytest.mark.parametrize("stdin", [None, ""], ids=["none", "empty"])
def test_without_stdin_the_command_reads_eof_at_once(sshd, ssh_accounts, stdin):
    account = ssh_accounts.create(prefix="nostdin")
    started = time.monotonic()
    # if stdin were left open, the read would wait for the client's 10 s timeout
    result = run_like_provider(sshd, account, 'if read -r x; then echo "read: $x"; exit 3; fi; cat | wc -c',
                               stdin=stdin, timeout=10)
    elapsed = time.monotonic() - started
    assert (result.rc, result.stdout.strip(), result.stderr) == (0, "0", ""), result
    assert elapsed < 2, f"EOF came after {elapsed:.1f} s"


def test_the_login_shell_reads_bashrc_before_the_command(sshd, ssh_accounts):
    """Debian's bash (built with SSH_SOURCE_BASHRC) sources ~/.bashrc for a command sshd runs, before
    the command: whatever it prints lands in the Command's stdout, the one secret channel.  The
    default /etc/skel one returns at once for a non-interactive shell (the control)."""
    account = ssh_accounts.create(prefix="bashrc")
    assert run_like_provider(sshd, account, "printf x").stdout == "x"
    bashrc = account.home / ".bashrc"
    bashrc.write_text("echo from-bashrc\n" + bashrc.read_text())
    assert run_like_provider(sshd, account, "printf x").stdout == "from-bashrc\nx"


def _ecdsa_line() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.mark.parametrize("wrong", ["same type, other key", "other type"])
def test_a_wrong_pinned_host_key_is_refused_before_anything_runs(sshd, ssh_accounts, wrong):
    account = ssh_accounts.create(prefix="hostkey")
    marker = account.home / f"ran-{secrets.token_hex(4)}"
    pinned = new_ed25519()[1] if wrong == "same type, other key" else _ecdsa_line()
    with pytest.raises(paramiko.SSHException) as refused:
        run_like_provider(sshd, account, f"touch {marker}", host_key_line=pinned, timeout=10)
    if wrong == "same type, other key":
        assert isinstance(refused.value, HostKeyMismatch), refused.value
        port = refused.value.client_port
        lines = sshd.log_for_port(port)
        assert any("Connection from 127.0.0.1 port" in line for line in lines), lines  # sshd saw it...
        # ...and it never got past the key exchange: no authentication, no session
        assert not [line for line in lines if "Accepted" in line or "session" in line.lower()], lines
    else:
        # connection.go L94 pins the host key algorithm to the pinned key's type: no common one
        assert "host key" in str(refused.value).lower(), refused.value
    assert not marker.exists()
    # control: with the right key the same command runs, and the log shows its session
    result = run_like_provider(sshd, account, f"touch {marker}")
    assert result.rc == 0 and marker.exists(), result
    lines = sshd.log_for_port(result.client_port)
    assert any(f"Accepted publickey for {account.user}" in line for line in lines), lines
    assert any("Starting session: command" in line for line in lines), lines


def test_environment_requests_are_refused_by_sshd_without_acceptenv(sshd, ssh_accounts):
    """Why components/remote.py never passes a secret in ``environment``: sshd refuses the ``env``
    request (no AcceptEnv for it), the provider's Setenv fails and so does the Command, before the
    command runs; a client that does not wait for the answer gets a command without the variable."""
    account = ssh_accounts.create(prefix="env")
    marker = account.home / "ran"
    value = secrets.token_urlsafe(16)
    with pytest.raises(SetenvRefused) as refused:
        run_like_provider(sshd, account, f"touch {marker}", env={"PT_SECRET": value})
    assert refused.value.name == "PT_SECRET"
    assert not marker.exists()
    # sent without want-reply (the provider's addPreviousOutputInEnv path): dropped, and the
    # control: LC_* (AcceptEnv LANG LC_*, as Debian's sshd_config) does arrive
    probe = 'printf "%s|%s\\n" "${PT_SECRET-unset}" "${LC_PT_PROBE-unset}"'
    result = run_like_provider(sshd, account, probe, env={"PT_SECRET": value, "LC_PT_PROBE": "probe"},
                               env_optional=True)
    assert (result.rc, result.stdout) == (0, "unset|probe\n"), result
    # and an accepted name passes the provider's want-reply Setenv
    result = run_like_provider(sshd, account, probe, env={"LC_PT_PROBE": "probe"})
    assert (result.rc, result.stdout) == (0, "unset|probe\n"), result


def test_sudo_rights_are_exactly_what_allow_installed(sshd, ssh_accounts, tmp_path):
    account = ssh_accounts.create(prefix="sudo")
    tmp_path.chmod(0o700)  # root's: only a command that really ran as root can write here
    marker = tmp_path / "ran-as-root"
    allowed = "sudo -n /usr/bin/id -u"
    before = run_like_provider(sshd, account, allowed)
    assert before.rc != 0 and "password is required" in before.stderr, before  # nothing before allow()

    path = account.allow(f"{account.user} ALL=(root) NOPASSWD: /usr/bin/id -u, /usr/bin/tty\n")
    assert oct(path.stat().st_mode & 0o777) == "0o440" and path.stat().st_uid == 0
    result = run_like_provider(sshd, account, allowed)
    assert (result.rc, result.stdout) == (0, "0\n"), result
    # Debian's "Defaults use_pty" gives a command a pty only when sudo runs in a terminal
    result = run_like_provider(sshd, account, "sudo -n /usr/bin/tty")
    assert (result.rc, result.stdout) == (1, "not a tty\n"), result

    refused = {
        "other arguments": ("sudo -n /usr/bin/id", None),
        "a shell with a command": (f"sudo -n /bin/bash -c 'touch {marker}; id'", None),
        "sudo -s": ("sudo -n -s", f"touch {marker}\nid\n"),
        "sudo -i": ("sudo -n -i", f"touch {marker}\nid\n"),
        "another run-as user": (f"sudo -n -u {account.user} /usr/bin/id -u", None),
    }
    for what, (command, stdin) in refused.items():
        result = run_like_provider(sshd, account, command, stdin=stdin)
        # "a password is required" (sudo -n: no NOPASSWD rule matches), or "Sorry, user ... is not
        # allowed" (sudo -n -u: the user has rules, none for that run-as user)
        assert result.rc == 1 and re.search(r"password is required|is not allowed", result.stderr), (what, result)
        assert result.stdout == "", (what, result)
    assert not marker.exists()


def test_allow_fails_the_test_with_visudos_message(sshd, ssh_accounts):
    account = ssh_accounts.create(prefix="visudo")
    with pytest.raises(pytest.fail.Exception, match="syntax error"):
        account.allow(f"{account.user} ALL=(root) NOPASSWD /usr/bin/id\n")  # the ':' is missing
    assert account.sudoers_files == []
    result = run_like_provider(sshd, account, "sudo -n /usr/bin/id")
    assert result.rc == 1, result


def _wrap(script: str, **kwargs) -> str:
    return remote.wrap(script, **kwargs)


HANGS = {
    # ignores TERM, and so does its child (an ignored signal stays ignored across fork and exec)
    "ignores-term": "trap '' TERM\nsleep 300 &\nwhile :; do sleep 1; done\n",
    "obeys-term": "sleep 300 &\nwait\n",
}
HUNG_TIMEOUT_S, HUNG_KILL_AFTER_S = 1, 1


@pytest.fixture(scope="module")
def hung_runs(sshd):
    """Both hung steps run once, side by side (each waits out its time limit), with what was left
    of their accounts' processes while the connection stayed open and after it closed."""
    accounts = SshAccounts(sshd)
    runs: dict[str, dict] = {}

    def run(kind: str) -> None:
        record = runs[kind] = {}
        try:
            account = record["account"] = accounts.create(prefix="hang")
            command = _wrap(HANGS[kind], name="hung-step", timeout_seconds=HUNG_TIMEOUT_S,
                            kill_after_seconds=HUNG_KILL_AFTER_S)
            started = time.monotonic()
            # the provider keeps its connection open after the session (commandOutputs.go L31-40)
            result = record["result"] = run_like_provider(sshd, account, command, timeout=20, keep_connection=True)
            record["elapsed"] = time.monotonic() - started
            try:
                record["left_while_connected"] = describe_processes(
                    [pid for pid in processes_of(account.uid) if Path(f"/proc/{pid}/comm").read_text().strip() != "sshd"])
            finally:
                result.transport.close()
            deadline = time.monotonic() + 2
            while processes_of(account.uid) and time.monotonic() < deadline:
                time.sleep(0.01)
            record["left_after_close"] = describe_processes(processes_of(account.uid))
        except BaseException as e:  # reported by the test that reads this run
            record["error"] = e

    threads = [threading.Thread(target=run, args=(kind,)) for kind in HANGS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        yield runs
    finally:
        accounts.cleanup()


@pytest.mark.parametrize("kind, rc, reason", [
    ("ignores-term", 137, "killed with SIGKILL on the remote host"),
    ("obeys-term", 124, f"timed out after {HUNG_TIMEOUT_S} s on the remote host"),
], ids=["ignores-term", "obeys-term"])
def test_a_hung_wrapped_command_is_ended_by_the_remote_timeout_with_everything_it_started(hung_runs, kind, rc, reason):
    run = hung_runs[kind]
    if "error" in run:
        raise run["error"]
    result = run["result"]
    assert result.rc == rc, result
    assert result.stdout == "", result
    assert result.stderr.splitlines()[-1].startswith(f"hung-step: {reason}"), result.stderr
    assert run["elapsed"] < HUNG_TIMEOUT_S + HUNG_KILL_AFTER_S + 1.5, f"the session ended after {run['elapsed']:.1f} s"
    # while the connection stays open only sshd's own process of the account is left, then nothing
    assert run["left_while_connected"] == "", f"survivors of the timed-out step: {run['left_while_connected']}"
    assert run["left_after_close"] == "", f"left after the connection closed: {run['left_after_close']}"


def test_the_watch_sees_a_secret_in_the_argv_of_the_accounts_process(sshd, ssh_accounts):
    """The positive control of other_user_watch: the command text is the login shell's argv
    (``bash -c <command>``) on the remote host, visible to every user there."""
    account = ssh_accounts.create(prefix="argv")
    secret = "pt-" + secrets.token_urlsafe(16)
    with other_user_watch([secret], assert_clean=False) as watch:
        result = run_like_provider(sshd, account, f"sleep 0.3; : {secret}")
    assert result.rc == 0, result
    assert any(leak.file == "cmdline" and leak.uid == account.uid for leak in watch.leaks), watch
    assert all(secret not in str(leak) for leak in watch.leaks)
    # asserting (the default): the test fails, naming the process but never the secret
    with pytest.raises(AssertionError) as failed:
        with other_user_watch([secret]):
            run_like_provider(sshd, account, f"sleep 0.3; : {secret}")
    assert "cmdline" in str(failed.value) and secret not in str(failed.value)
    assert secret[:2] in str(failed.value)


def test_another_users_environ_is_unreadable_so_only_readable_environ_counts(sshd, ssh_accounts):
    account = ssh_accounts.create(prefix="environ")
    secret = "pt-" + secrets.token_urlsafe(16)
    with other_user_watch([secret], assert_clean=False) as watch:
        # the secret reaches the account's process environment through stdin, not the command text
        box: dict = {}
        runner = threading.Thread(target=lambda: box.update(result=run_like_provider(
            sshd, account, 'IFS= read -r s; export PT_S="$s"; exec sleep 0.6', stdin=secret + "\n")))
        runner.start()
        deadline = time.monotonic() + 5
        pid = None
        while pid is None and time.monotonic() < deadline:
            pid = next((p for p in processes_of(account.uid)
                        if Path(f"/proc/{p}/comm").read_text().strip() == "sleep"), None)
            time.sleep(0.005)
        assert pid is not None, "the account's sleep never showed up"
        # control: the secret is in that environ (root reads it)
        assert secret.encode() in Path(f"/proc/{pid}/environ").read_bytes()
        # and where the watcher can read an environ (its own process), the same secret is found
        own = run_as(watch.watcher_uid, watch.watcher_gid, ["/bin/sleep", "0.3"], env={"PT_S": secret})
        own.wait(timeout=5)
        runner.join(timeout=10)
    assert box["result"].rc == 0, box["result"]
    assert watch.could_not_read(pid, "environ"), f"the watcher read /proc/{pid}/environ of another user"
    assert not [leak for leak in watch.leaks if leak.pid == pid], watch.leaks
    assert [leak for leak in watch.leaks if leak.pid == own.pid and leak.file == "environ"], watch.leaks



# The login shell reports its foreground job killed by SIGKILL on its own stderr ("bash: line N:
# PID Killed  timeout ... /bin/bash -c <the whole script> NAME"); remote.wrap points the shell's
# stderr at /dev/null around the step so that only the step's stderr and the reason remain.
def test_a_killed_wrapped_command_leaves_only_the_one_line_reason_on_stderr(hung_runs):
    run = hung_runs["ignores-term"]
    if "error" in run:
        raise run["error"]
    assert run["result"].rc == 137, run["result"]
    assert run["result"].stderr == (
        f"hung-step: killed with SIGKILL on the remote host: it ignored the TERM of its {HUNG_TIMEOUT_S} s "
        f"time limit for {HUNG_KILL_AFTER_S} s, or something else (the OOM killer?) killed it\n")
