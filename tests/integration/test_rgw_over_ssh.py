"""The RGW user step as production runs it: over real SSH, as a non-root account that holds
exactly the documented sudoers rules (``sudoers.render(rgw_user.sudoers_rules(...))``), against
the real single-node Ceph RGW (tests/integration/fixtures_rgw.py).

The command sent is the Command's ``create`` input, ``remote.wrap(script)``, through
``run_like_provider`` (an ``exec`` request, no terminal, the key pair on stdin then EOF).

The one difference from production: the rules' radosgw-admin path is a root-owned wrapper that
execs the real ``/usr/bin/radosgw-admin`` with ``CEPH_CONF`` of the test cluster (sudo resets the
environment, and rgw_admin.py builds radosgw-admin's own; the RGW admin host has
/etc/ceph/ceph.conf).  python3 is the real ``/usr/bin/python3``.

Each test makes its own instance name: the rules' alias names the instance, and two files
defining one alias would break sudo for the whole host.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from components import remote, rgw_user, sudoers
from tests.integration.fixtures_rgw import RgwCluster, S3Keys, checksum_env, rgw  # noqa: F401
from tests.integration.fixtures_sshd import (  # noqa: F401,F811
    describe_processes, other_user_watch, run_like_provider, ssh_accounts, sshd)

STEP_TIMEOUT_S = 60


@dataclass
class Setup:
    instance: str
    uids: tuple[str, str]  # the Airflow logs user, the PostgreSQL backup user
    tools: rgw_user.RgwTools
    rules: sudoers.HostRules
    account: object

    def command(self, uid: str, name: str = "rgw-user", timeout_s: int = STEP_TIMEOUT_S, kill_after_s: int = 30) -> str:
        """The Command's ``create``: the script for ``uid``, under the remote timeout, never under sudo."""
        script = rgw_user.rgw_user_script(uid, uid, use_sudo=True, tools=self.tools)
        return remote.wrap(script, name, timeout_s, kill_after_seconds=kill_after_s)


def root_dir(tmp_path_factory, name: str) -> Path:
    """A directory only root can write, for the root-owned stand-ins sudo runs."""
    d = tmp_path_factory.mktemp(name)
    d.chmod(0o755)
    os.chown(d, 0, 0)
    return d


def root_executable(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chown(path, 0, 0)
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def wrapper(rgw, tmp_path_factory) -> Path:
    """``radosgw-admin`` for the rules: the real one, with the test cluster's config."""
    d = root_dir(tmp_path_factory, "rgw-wrapper")
    return root_executable(d / "radosgw-admin",
                           f"#!/bin/sh\nCEPH_CONF={shlex.quote(str(rgw.conf))} exec /usr/bin/radosgw-admin \"$@\"\n")


def setup_account(ssh_accounts, tool: Path, *, command_timeout_s: int = STEP_TIMEOUT_S) -> Setup:
    instance = f"ssh{secrets.token_hex(3)}"
    uids = (f"airflow-{instance}", f"postgresql-airflow-{instance}")
    tools = rgw_user.RgwTools(radosgw_admin=str(tool))
    account = ssh_accounts.create(prefix="rgw")
    rules = rgw_user.sudoers_rules(instance, account.user, [(u, u) for u in uids], command_timeout_s, tools)
    account.allow(sudoers.render(rules))
    return Setup(instance, uids, tools, rules, account)


def s3_pairs(rgw: RgwCluster, uid: str) -> list[tuple[str, str]]:
    info = rgw.user_info(uid)
    assert info is not None, f"user {uid} missing"
    return [(k["access_key"], k["secret_key"]) for k in info["keys"]]


# --- root's view of /proc while a step runs ---------------------------------------------------

@dataclass
class RootWatch:
    """As root, every few ms: each process whose environ holds a secret (pid, uid, argv)."""
    secrets_: list[str]
    holders: dict[int, tuple[int, str]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _scan(self) -> None:
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                argv = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
                environ = Path(f"/proc/{name}/environ").read_bytes()
                uid = next(int(line.split()[1]) for line in Path(f"/proc/{name}/status").read_text().splitlines()
                           if line.startswith("Uid:"))
            except (OSError, StopIteration):
                continue
            self.seen.add(argv[:300])
            if any(s.encode() in environ for s in self.secrets_):
                self.holders[int(name)] = (uid, argv[:300])

    def __enter__(self) -> "RootWatch":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self._scan()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def account_left(account, seconds: float = 5.0) -> str:
    """The account's processes still running after ``seconds`` (sshd's own per-connection process
    ends a moment after the client closes), described; "" when none."""
    return describe_processes(wait_until_gone(account.processes(), seconds))


def processes_mentioning(text: str) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                if text.encode() in Path(f"/proc/{name}/cmdline").read_bytes() and alive(int(name)):
                    out.append(int(name))
            except OSError:
                pass
    return out


def wait_until_gone(pids: list[int], seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


# --- the step, end to end --------------------------------------------------------------------

def test_over_ssh_with_exactly_the_rules_the_user_gets_the_pair_and_a_rerun_changes_nothing(rgw, sshd, ssh_accounts, wrapper):
    setup = setup_account(ssh_accounts, wrapper)
    for uid in setup.uids:  # the rules cover both users of the instance
        keys = S3Keys.generate()
        first = run_like_provider(sshd, setup.account, setup.command(uid), stdin=keys.stdin())
        assert (first.rc, first.stdout, first.stderr) == (0, f"user {uid}: created\n", ""), first
        assert s3_pairs(rgw, uid) == [(keys.access_key, keys.secret_key)], f"{uid}: exactly the supplied pair"
        with checksum_env():
            owner = rgw.s3_client(keys).list_buckets()["Owner"]["ID"]
        assert owner == uid, "an S3 request signed with the pair authenticates as the user"
        before = rgw.radosgw_admin_json("metadata", "get", f"user:{uid}")
        second = run_like_provider(sshd, setup.account, setup.command(uid), stdin=keys.stdin())
        assert (second.rc, second.stdout, second.stderr) == (0, f"user {uid}: unchanged\n", ""), second
        assert rgw.radosgw_admin_json("metadata", "get", f"user:{uid}") == before, \
            f"{uid}: the second run changed the user's metadata (version, keys, mtime)"
    assert account_left(setup.account) == "", "processes of the account outlived the steps"


def test_over_ssh_a_rotated_secret_and_a_foreign_access_key(rgw, sshd, ssh_accounts, wrapper):
    setup = setup_account(ssh_accounts, wrapper)
    uid = setup.uids[0]
    keys = S3Keys.generate()
    assert run_like_provider(sshd, setup.account, setup.command(uid), stdin=keys.stdin()).rc == 0
    rotated = S3Keys(keys.access_key, S3Keys.generate().secret_key)
    run = run_like_provider(sshd, setup.account, setup.command(uid), stdin=rotated.stdin())
    assert (run.rc, run.stdout) == (0, f"user {uid}: secret updated\n"), run
    assert s3_pairs(rgw, uid) == [(rotated.access_key, rotated.secret_key)], "same access key, new secret"
    # the fixture's admin user holds an access key: the account may not take it, for either user
    stolen = S3Keys(rgw.admin.access_key, S3Keys.generate().secret_key)
    admin_before = rgw.radosgw_admin_json("metadata", "get", "user:fixture-admin")
    for target in setup.uids:  # an existing user (key create), a missing one (user create)
        run = run_like_provider(sshd, setup.account, setup.command(target), stdin=stolen.stdin())
        assert run.rc != 0 and "already in use by another RGW user" in run.stderr, run
        assert stolen.access_key not in run.stderr + run.stdout, "the refusal does not print the access key"
    assert rgw.radosgw_admin_json("metadata", "get", "user:fixture-admin") == admin_before, "the admin's keys are untouched"
    assert rgw.user_info(setup.uids[1]) is None, "no half-made user"


# --- what else the account can do with sudo: nothing --------------------------------------------

def test_commands_outside_the_rules_are_refused(rgw, sshd, ssh_accounts, wrapper):
    setup = setup_account(ssh_accounts, wrapper)
    uid = setup.uids[0]
    keys = S3Keys.generate()
    assert run_like_provider(sshd, setup.account, setup.command(uid), stdin=keys.stdin()).rc == 0
    program = shlex.quote(rgw_user.rgw_admin_program())
    py = f"/usr/bin/python3 -I -c {program} {shlex.quote(str(wrapper))}"
    other_code = shlex.quote('import os; os.system("id")')
    refused = {
        "radosgw-admin user rm": f"sudo -n radosgw-admin user rm --uid={uid}",
        "the wrapped radosgw-admin, even an allowed argv": f"sudo -n {wrapper} user info --uid={uid}",
        "a shell": "sudo -n /bin/bash -c id",
        "sudo -s": "sudo -n -s id",
        "sudo -i": "sudo -n -i id",
        "the helper for another uid": f"sudo -n {py} user info --uid=fixture-admin",
        "the helper with another subcommand": f"sudo -n {py} user rm --uid={uid}",
        "the helper with an extra option": f"sudo -n {py} user info --uid={uid} --caps=users=*",
        "the helper with CEPH_ARGS set": f"sudo -n CEPH_ARGS=--uid=fixture-admin {py} user info --uid={uid}",
        "other python code": f"sudo -n /usr/bin/python3 -I -c {other_code} {shlex.quote(str(wrapper))} user info --uid={uid}",
    }
    for what, line in refused.items():
        result = run_like_provider(sshd, setup.account, line)
        assert result.rc != 0 and result.stdout == "", f"sudo allowed {what}: {result}"
        assert "uid=0" not in result.stdout + result.stderr, f"{what} ran as root"
    assert s3_pairs(rgw, uid) == [(keys.access_key, keys.secret_key)], "the user is intact"
    # sudo compares the arguments joined by single spaces: re-splitting the listed words passes
    # sudo; the rules' arguments hold no space, so only the option words can merge, and python3
    # then runs nothing
    resplit = run_like_provider(sshd, setup.account, f"sudo -n /usr/bin/python3 '-I -c' {program} {wrapper} user info --uid={uid}")
    assert (resplit.rc, resplit.stdout) == (2, "") and "usage:" in resplit.stderr, f"a re-split rule ran: {resplit}"
    # control: the allowed form does run (so the refusals above are the rules, not a broken sudo)
    allowed = run_like_provider(sshd, setup.account, f"sudo -n {py} user info --uid={uid} >/dev/null")
    assert allowed.rc == 0, f"the listed command was refused: {allowed}"


def test_the_helper_refuses_key_create_for_a_missing_user_so_no_other_users_key_changes(rgw, sshd, ssh_accounts, wrapper):
    """Ceph 16.2.15's ``key create --uid=<missing>`` rewrites the secret of the access key's owner;
    the account calls the rule directly, with the fixture admin's access key."""
    setup = setup_account(ssh_accounts, wrapper)
    missing = setup.uids[1]
    program = shlex.quote(rgw_user.rgw_admin_program())
    line = (f"printf '%s\\n%s\\n' {rgw.admin.access_key} {S3Keys.generate().secret_key} | "
            f"sudo -n /usr/bin/python3 -I -c {program} {wrapper} key create --uid={missing} --key-type=s3")
    before = rgw.radosgw_admin_json("metadata", "get", "user:fixture-admin")
    result = run_like_provider(sshd, setup.account, line)
    assert result.rc == 2 and "does not exist: refusing key create" in result.stderr, result
    assert rgw.radosgw_admin_json("metadata", "get", "user:fixture-admin") == before, "the owner's key changed"


# --- secrets: what another user can see ------------------------------------------------------------

def test_no_key_in_any_argv_or_in_an_environment_another_user_can_read(rgw, sshd, ssh_accounts, wrapper):
    setup = setup_account(ssh_accounts, wrapper)
    uid = setup.uids[0]
    keys = S3Keys.generate()
    rotated = S3Keys(keys.access_key, S3Keys.generate().secret_key)
    secrets_ = [keys.access_key, keys.secret_key, rotated.secret_key]
    with other_user_watch(secrets_) as watch, RootWatch(secrets_) as root:
        first = run_like_provider(sshd, setup.account, setup.command(uid), stdin=keys.stdin())
        second = run_like_provider(sshd, setup.account, setup.command(uid), stdin=rotated.stdin())
    assert (first.rc, second.rc) == (0, 0), (first, second)
    assert watch.leaks == [], "another user saw a key"
    assert any(f"user info --uid={uid}" in argv for argv in root.seen), "the watch saw the radosgw-admin calls"
    # by design the keys are in the environment (CEPH_ARGS) of radosgw-admin, root's, and only there
    assert root.holders, "the keys never showed in any environ: the check below proves nothing"
    for pid, (owner, argv) in root.holders.items():
        assert owner == 0 and ("radosgw-admin" in argv), f"a key in the environ of pid {pid} (uid {owner}): {argv[:120]}"
        assert watch.could_not_read(pid), f"the other user could read the environ of {argv[:80]} (pid {pid})"
    for result in (first, second):
        for key in secrets_:
            assert key not in result.stdout + result.stderr, "a key was printed"


# --- stopping a hung radosgw-admin ---------------------------------------------------------------

HANGING = """#!/bin/bash
# a radosgw-admin that hangs: ignores TERM, HUP and INT, and keeps a child of its own
trap '' TERM HUP INT
echo "$$" >> {pids}
sleep 300 &
echo "$!" >> {pids}
while :; do sleep 1; done
"""


@pytest.fixture
def hanging() -> Iterator[tuple[Path, Path]]:
    """The stand-in and the file its PIDs go to, in a root-owned directory the accounts can read
    (pytest's own temporary directories are root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="pt-rgw-hang-", dir="/tmp"))
    d.chmod(0o755)
    pids = d / "pids"
    tool = root_executable(d / "radosgw-admin", HANGING.format(pids=shlex.quote(str(pids))))
    try:
        yield tool, pids
    finally:
        # a failed test may leave them: KILL, by PID, what this stand-in and its rgw_admin.py started
        left = processes_mentioning(str(tool)) + ([int(p) for p in pids.read_text().split()] if pids.exists() else [])
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(d, ignore_errors=True)


def started(pids_file: Path, want: int = 2, seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pids = [int(p) for p in pids_file.read_text().split()] if pids_file.exists() else []
        if len(pids) >= want:
            return pids
        time.sleep(0.02)
    raise AssertionError("the hanging radosgw-admin never started: the test proves nothing")


def test_a_hung_radosgw_admin_is_stopped_by_the_step_timeout_with_nothing_left(rgw, sshd, ssh_accounts, hanging):
    tool, pids_file = hanging
    setup = setup_account(ssh_accounts, tool)
    timeout_s, kill_after_s = 2, 2
    began = time.monotonic()
    result = run_like_provider(sshd, setup.account, setup.command(setup.uids[0], "rgw-hung", timeout_s, kill_after_s),
                               stdin=S3Keys.generate().stdin())
    elapsed = time.monotonic() - began
    assert result.rc == 124, f"the step ends as timed out (TERM), not KILLed: {result}"
    assert result.stderr.strip().splitlines()[-1] == (
        f"rgw-hung: timed out after {timeout_s} s on the remote host; the step was stopped with everything it started")
    assert elapsed < timeout_s + kill_after_s + 3, f"took {elapsed:.1f} s"
    stub = started(pids_file)
    assert wait_until_gone(stub) == [], "the root radosgw-admin (or its child) outlived the step"
    assert wait_until_gone(processes_mentioning(str(tool))) == [], "a root rgw_admin.py outlived the step"
    assert account_left(setup.account) == "", "processes of the account outlived the step"


def test_when_sudo_itself_is_killed_the_root_radosgw_admin_dies_too(rgw, sshd, ssh_accounts, hanging):
    """What the step's KILL (timeout --kill-after, or reap_step) does to sudo: sudo dies without
    relaying anything, and its root child is reparented.  rgw_admin.py dies with its parent
    (PR_SET_PDEATHSIG) and KILLs radosgw-admin's process group."""
    tool, pids_file = hanging
    setup = setup_account(ssh_accounts, tool)
    program = shlex.quote(rgw_user.rgw_admin_program())
    line = (f"sudo -n /usr/bin/python3 -I -c {program} {tool} user info --uid={setup.uids[0]} </dev/null >/dev/null 2>&1 & "
            f"sp=$!; while ! test -s {pids_file}; do sleep 0.05; done; sleep 0.3; kill -KILL \"$sp\"; "
            f"wait \"$sp\"; echo \"sudo $?\"")
    result = run_like_provider(sshd, setup.account, line, timeout=20)
    assert result.stdout == "sudo 137\n", f"sudo was KILLed by the account: {result}"
    stub = started(pids_file)
    assert wait_until_gone(stub) == [], "the root radosgw-admin survived its sudo"


def test_sudos_command_timeout_stops_a_hung_radosgw_admin_within_a_longer_step(rgw, sshd, ssh_accounts, hanging):
    """sudo 1.9.13's command_timeout: HUP and TERM to the command, KILL 2 s later; rgw_admin.py
    stops radosgw-admin at the first of them and the step fails with radosgw-admin's exit."""
    tool, pids_file = hanging
    setup = setup_account(ssh_accounts, tool, command_timeout_s=2)
    began = time.monotonic()
    result = run_like_provider(sshd, setup.account, setup.command(setup.uids[0], "rgw-cmd-timeout", 60),
                               stdin=S3Keys.generate().stdin(), timeout=40)
    elapsed = time.monotonic() - began
    assert result.rc == 1 and re.search(r"radosgw-admin user info failed \(exit 1(29|43)\)", result.stderr), result
    assert elapsed < 10, f"sudo's command_timeout (2 s) did not stop it: {elapsed:.1f} s"
    assert wait_until_gone(started(pids_file)) == [], "the root radosgw-admin outlived sudo's command_timeout"
