"""A hung tool on the legacy VM is killed with everything it started, over real SSH.

pulumi-command 1.2.1 never cancels a running SSH session (its deadline reaches only the dial,
remote/connection.go ``dialWithRetry``), so ``remote.wrap`` runs each script under GNU
``timeout --kill-after``.  Here the exact command text the Command sends runs through
``run_like_provider`` (tests/integration/fixtures_sshd.py) as a non-root account:

* a hung uploader (the sync's python3 helper replaced by one that ignores TERM and keeps a child):
  the step's own TERM handler stops it, KILLs what ignores the TERM, and nothing of the account
  is left;
* a hung ``puppet`` run as root through sudo, with exactly the rendered rules.  What sudo 1.9.13
  does, measured (tests below and exec_nopty.c ``signal_cb_nopty`` / exec.c ``terminate_command``):
  without a terminal the tool runs in sudo's own process group; the step's TERM reaches sudo
  (the step may signal it: its real uid is the account's), which relays it to the one process it
  started; its ``command_timeout`` sends HUP and TERM to that process and KILL 2 s later, to that
  process only, so a child the tool started survives, as root; and once sudo is KILLed (by the
  step's reaper, or timeout's KILL) nothing relays or times out anything.  Hence each rule runs
  the tool under a root-side ``timeout --kill-after=1s``: it leads its own process group, and on
  the relayed TERM, or at its own deadline when nothing relays, it ends the whole group;
* the same hung puppet when the SSH user is root (``remoteSudo: false``): no sudo to relay, the
  step's TERM handler signals the root-side timeout itself.

The KDC and RGW steps have their own hung-tool cases over SSH (test_kdc_over_ssh.py,
test_rgw_over_ssh.py).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from components import log_migration as lm
from components import remote
from tests.integration.fixtures_sshd import (  # noqa: F401
    describe_processes, processes_of, run_like_provider, ssh_accounts, sshd)
from tests.integration.fixtures_logtree import make_tree
from tests.integration.test_legacy_over_ssh import (
    account_left, allowed_account, alive, legacy_host, root_dir, wait_until_gone)

TIMEOUT_S = 3
KILL_AFTER_S = 10  # remote.wrap's KILL would come this long after the TERM: far later than needed here

# a privileged tool that hangs: ignores TERM and HUP (sudo's command_timeout sends both) and keeps
# a child of its own, which inherits the ignored TERM
HANGING_PUPPET = """#!/bin/bash
trap '' TERM HUP
sleep 300 &
echo "$!" >> {pids}
echo "$$" >> {pids}
while :; do sleep 1; done
"""

# the sync's python3 helper, replaced by one that hangs the same way
HANGING_UPLOADER = """
import os, signal, subprocess, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "300"])
with open({pids!r}, "a") as f:
    f.write("%d\\n%d\\n" % (os.getpid(), child.pid))
while True:
    time.sleep(1)
"""

KEYS = f"{secrets.token_hex(10).upper()}\n{secrets.token_hex(20)}\n"  # shaped like the program's, per run


def timed_out_line(name: str) -> str:
    return f"{name}: timed out after {TIMEOUT_S} s on the remote host; the step was stopped with everything it started"


def started(pids_file: Path, want: int = 2, seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pids = [int(p) for p in pids_file.read_text().split()] if pids_file.exists() else []
        if len(pids) >= want:
            return pids
        time.sleep(0.02)
    raise AssertionError("the hanging tool never started: the test proves nothing")


def processes_mentioning(text: str) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in Path(f"/proc/{name}/cmdline").read_bytes() and alive(int(name)):
                    out.append(int(name))
    return out


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@contextlib.contextmanager
def hang_pids(directory: Path | None = None) -> Iterator[Path]:
    """The file the hanging stand-ins write their PIDs to (in ``directory``, else a root-owned one the
    accounts can read).  A failed test may leave them running: at the end they are KILLed by PID,
    with anything still naming the directory, whatever happened, before the directory goes."""
    d = directory or root_dir("pt-legacy-pids-")
    pids = d / "pids"
    try:
        yield pids
    finally:
        left = processes_mentioning(str(d)) + ([int(p) for p in pids.read_text().split()] if pids.exists() else [])
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if directory is None:
            shutil.rmtree(d, ignore_errors=True)


def test_a_hung_uploader_is_killed_with_its_child_and_the_step_fails_with_one_line(sshd, ssh_accounts):
    base = root_dir("pt-legacy-hang-")
    with hang_pids(base) as pids:
        try:
            make_tree(base / "logs", files=20, seed=41)
            for path in [base / "logs", *(base / "logs").rglob("*")]:
                if not path.is_symlink():
                    path.chmod(0o755 if path.is_dir() else 0o644)
            pids.touch()
            pids.chmod(0o666)  # the hanging helper runs as the account
            script = lm.sync_script(str(base / "logs"), "logs.airflow-search.dse-k8s-eqiad", "http://127.0.0.1:9", "dpe", 2)
            real = f"log_sync_py={shlex.quote(remote.script_file('log_sync.py'))}\n"
            assert script.count(real) == 1, "the helper is one value of the script"
            script = script.replace(real, f"log_sync_py={shlex.quote(HANGING_UPLOADER.format(pids=str(pids)))}\n")
            account = ssh_accounts.create(prefix="hang")
            name = "legacy-sync-hung"
            began = time.monotonic()
            result = run_like_provider(sshd, account, remote.wrap(script, name=name, timeout_seconds=TIMEOUT_S,
                                                                  kill_after_seconds=KILL_AFTER_S), stdin=KEYS, timeout=60)
            elapsed = time.monotonic() - began
            assert result.rc == 124, f"the step ends as timed out (its TERM handler ran): {result}"
            assert result.stderr.strip().splitlines()[-1] == timed_out_line(name), result.stderr
            assert "interrupted; stopping the upload (a re-run resumes)" in result.stderr, result.stderr
            assert result.stdout == "", "a killed step prints nothing on stdout"
            assert elapsed < TIMEOUT_S + KILL_AFTER_S, f"ended by the step's own handler, not timeout's KILL: {elapsed:.1f} s"
            helper = started(pids)
            assert wait_until_gone(helper) == [], f"the uploader or its child outlived the step: {describe_processes(helper)}"
            assert account_left(account) == "", "processes of the account outlived the step"
        finally:
            shutil.rmtree(base, ignore_errors=True)


def test_a_hung_privileged_puppet_is_ended_with_its_child_as_root_through_sudo(sshd, ssh_accounts):
    with hang_pids() as pids, legacy_host(HANGING_PUPPET.format(pids=shlex.quote(str(pids)))) as host:
        host.set_units(host.units_of("active"))
        account = allowed_account(ssh_accounts, host, timeout_s=TIMEOUT_S)
        name = "legacy-stop-hung"
        began = time.monotonic()
        result = run_like_provider(sshd, account, host.stop_command(TIMEOUT_S, KILL_AFTER_S, name), timeout=60)
        elapsed = time.monotonic() - began
        assert result.rc == 124, f"the step ends as timed out (TERM), not KILLed: {result}"
        assert result.stderr.strip().splitlines()[-1] == timed_out_line(name), result.stderr
        assert "interrupted; waiting for the privileged call to end" in result.stderr, result.stderr
        assert elapsed < TIMEOUT_S + 4, f"the root timeout ends the group 1 s after the relayed TERM: {elapsed:.1f} s"
        tool = started(pids)
        assert wait_until_gone(tool) == [], f"the root puppet or its child outlived the step: {describe_processes(tool)}"
        assert wait_until_gone(processes_mentioning(str(host.root))) == [], \
            "a root timeout, sudo or stand-in outlived the step"
        assert account_left(account) == "", "processes of the account outlived the step"
        assert host.units() == host.units_of("active"), "nothing was stopped: puppet never answered"


def test_when_sudo_itself_is_killed_the_root_timeout_still_ends_puppet_and_its_child(sshd, ssh_accounts):
    """The worst case: the whole step, sudo included, KILLed (the OOM killer, a kill -9 of the
    session).  Nothing relays the TERM then; the root-side timeout ends the tool's group on its
    own deadline (the step's timeout), 1 s later KILL."""
    with hang_pids() as pids, legacy_host(HANGING_PUPPET.format(pids=shlex.quote(str(pids)))) as host:
        host.set_units(host.units_of("active"))
        account = allowed_account(ssh_accounts, host, timeout_s=TIMEOUT_S)
        outcome: dict = {}
        # the session's own remote timeout is longer, so that only the KILL below ends the step
        line = remote.wrap(lm.stop_legacy_script(host.instance, logs_dir=host.logs_dir, use_sudo=True,
                                                 timeout_seconds=TIMEOUT_S, tools=host.tools),
                           name="legacy-stop-killed", timeout_seconds=60)

        def session() -> None:
            try:
                outcome["result"] = run_like_provider(sshd, account, line, timeout=90)
            except Exception as err:  # noqa: BLE001 - the KILL below ends the connection
                outcome["error"] = err

        began = time.monotonic()
        thread = threading.Thread(target=session, daemon=True)
        thread.start()
        tool = started(pids)
        sudo = [p for p in processes_of(account.uid) if cmdline(p).startswith(b"sudo\0-n\0")]
        assert sudo, "sudo runs with the account's real uid (so the account's KILL reaches it)"
        for pid in processes_of(account.uid):  # everything of the account, sudo included, as a KILL of the step would
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        thread.join(timeout=30)
        assert wait_until_gone(sudo, 2) == [], "sudo was KILLed"
        assert all(alive(p) for p in tool), "right after the KILL the root tool still runs (nothing relayed a TERM)"
        left = wait_until_gone(tool, TIMEOUT_S + 4 - (time.monotonic() - began))
        assert left == [], f"the root puppet or its child outlived its own timeout: {describe_processes(left)}"
        assert time.monotonic() - began < TIMEOUT_S + 5
        assert wait_until_gone(processes_mentioning(str(host.root))) == [], "a root timeout outlived its deadline"
        # the KILLed step could not remove its scratch dir (the next stop run does: unit-tested)
        for leftover in Path(tempfile.gettempdir()).glob("airflow-legacy-stop.*"):
            if leftover.stat().st_uid == account.uid:
                shutil.rmtree(leftover)


def test_without_sudo_a_hung_puppet_is_ended_by_the_steps_own_handler(tmp_path):
    """remoteSudo false (the SSH user is root, here: this test's root): no sudo relays the TERM; the
    step's handler TERMs the root-side timeout itself, which ends the tool's group 1 s later."""
    with hang_pids(tmp_path) as pids, legacy_host(HANGING_PUPPET.format(pids=shlex.quote(str(pids)))) as host:
        host.set_units(host.units_of("active"))
        script = lm.stop_legacy_script(host.instance, logs_dir=host.logs_dir, use_sudo=False, timeout_seconds=TIMEOUT_S,
                                       tools=host.tools)
        name = "legacy-stop-root"
        began = time.monotonic()
        done = subprocess.run(["/bin/sh", "-c", remote.wrap(script, name=name, timeout_seconds=TIMEOUT_S,
                                                            kill_after_seconds=KILL_AFTER_S)],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, start_new_session=True)
        elapsed = time.monotonic() - began
        assert done.returncode == 124, done
        assert done.stderr.strip().splitlines()[-1] == timed_out_line(name), done.stderr
        assert elapsed < TIMEOUT_S + 4, f"{elapsed:.1f} s"
        tool = started(pids)
        assert wait_until_gone(tool) == [], f"the puppet or its child outlived the step: {describe_processes(tool)}"
        assert wait_until_gone(processes_mentioning(str(host.root))) == []


def test_a_command_within_its_time_passes_its_exit_status_and_output_through():
    line = remote.wrap("echo out; echo err >&2; exit 3", name="quick-step", timeout_seconds=10)
    done = subprocess.run(["/bin/sh", "-c", line], capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (3, b"out\n", b"err\n")


def test_the_hung_cases_can_fail_a_tool_that_is_not_bounded_survives(sshd, ssh_accounts):
    """The control: the same hung puppet run by sudo WITHOUT the root-side timeout (a rule for the
    bare tool) outlives the step, as root: what the checks above would catch."""
    with hang_pids() as pids, legacy_host(HANGING_PUPPET.format(pids=shlex.quote(str(pids)))) as host:
        account = ssh_accounts.create(prefix="hang")
        account.allow(f"{account.user} ALL = (root) NOPASSWD: {host.tools.puppet} config print agent_disabled_lockfile\n")
        # (its output away from the session: a surviving tool holding the session's stdout or stderr
        # would also keep the provider's SSH session open, forever)
        line = remote.wrap(f"sudo -n {host.tools.puppet} config print agent_disabled_lockfile </dev/null >/dev/null 2>&1",
                           name="unbounded", timeout_seconds=2, kill_after_seconds=2)
        result = run_like_provider(sshd, account, line, timeout=30)
        assert result.rc in remote.TIMED_OUT, result
        tool = started(pids)
        assert wait_until_gone(tool, 3) != [], "without the root-side timeout the root tool survives the step"
