"""The legacy-VM steps as production runs them: over real SSH, as a non-root account that holds
exactly the rendered sudoers rules (``sudoers.render(log_migration.sudoers_rules(...))``).

Each command sent is the Command's ``create`` input, ``remote.wrap(script)``, through
``run_like_provider`` (an ``exec`` request, no terminal, stdin written then closed).

* the stop step: the rules' puppet and systemctl are root-owned stand-ins that record their argv
  and uid (no systemd here; tests/test_log_migration_script.py has the same stand-ins), the real
  ``/usr/bin/timeout`` and the real sudo 1.9.13: it works, a second run changes nothing, the
  listing runs unprivileged and the stops as root, and anything outside the rules is refused;
* the sync and the verification against the real Ceph RGW (tests/integration/fixtures_rgw.py),
  with the keys on stdin: the tree uploads as the account, a second pass uploads nothing, no key
  is in any argv or environment another user can read while it runs, and a subtree the account
  cannot read fails in one line whose fix, applied, makes the re-run pass.

The hung-tool cases over SSH (a hung uploader, a hung puppet under sudo) are in
tests/integration/test_remote_timeout.py, with the same stand-ins (:class:`LegacyHost`).
Every test makes its own instance name: the rules' alias names the instance, and two sudoers
files defining one alias break sudo for the whole host.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from components import log_migration as lm
from components import remote, sudoers
from tests.integration.fixtures_logtree import LogTree, make_tree
from tests.integration.fixtures_rgw import RgwCluster, S3Keys, checksum_env, rgw  # noqa: F401
from tests.integration.fixtures_sshd import (  # noqa: F401
    Account, describe_processes, other_user_watch, processes_of, run_like_provider, ssh_accounts, sshd)
from tests.integration.test_log_migration import make_user
from tests.test_log_migration_script import FAKE_PUPPET, FAKE_SYSTEMCTL

STEP_TIMEOUT_S = 120
PROGRESS = re.compile(r"[\w-]+: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ progress: (\d+) of (\d+) files \(.+\) done, (\d+) uploaded")


# --- the legacy VM's privileged tools: root-owned stand-ins ---------------------------------------

def root_dir(prefix: str) -> Path:
    """A root-owned 0755 directory the accounts can reach (pytest's temporary directories are
    root's alone)."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/run"))
    os.chown(d, 0, 0)
    d.chmod(0o755)
    return d


def root_executable(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chown(path, 0, 0)
    path.chmod(0o755)
    return path


@dataclass
class LegacyHost:
    """puppet and systemctl stand-ins in ``root``/bin (root-owned, run by sudo as root and, for
    the listing, by the account), their state beside them: units.json, puppet's lock files in
    ``root`` (searchable by all, as puppet's 01755 statedir), every call with its uid in calls.jsonl."""

    root: Path
    tools: lm.LegacyTools
    instance: str

    @property
    def logs_dir(self) -> str:
        return f"/srv/airflow-{self.instance}/logs"  # the default layout: the legacy name is the instance

    def units_of(self, state: str = "active") -> dict[str, str]:
        return {u: state for u in lm.legacy_units(self.instance)}

    def set_units(self, units: dict[str, str]) -> None:
        path = self.root / "units.json"
        path.write_text(json.dumps(units))
        path.chmod(0o644)

    def units(self) -> dict[str, str]:
        return json.loads((self.root / "units.json").read_text())

    def calls(self) -> list[dict]:
        path = self.root / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def reset_calls(self) -> None:
        path = self.root / "calls.jsonl"
        path.write_text("")
        path.chmod(0o666)  # the unprivileged listing appends to it too (test stand-ins only)

    def rules(self, user: str, timeout_s: int) -> sudoers.HostRules:
        return lm.sudoers_rules(self.instance, user, host="127.0.0.1", logs_dir=self.logs_dir,
                                timeout_seconds=timeout_s, tools=self.tools)

    def stop_command(self, timeout_s: int = STEP_TIMEOUT_S, kill_after_s: int = remote.KILL_AFTER_SECONDS,
                     name: str = "legacy-stop") -> str:
        """The stop Command's ``create``: the script as migration.stop_legacy_script builds it
        (remoteSudo true, tool calls bounded by the step's timeout), under the remote timeout."""
        script = lm.stop_legacy_script(self.instance, logs_dir=self.logs_dir, use_sudo=True,
                                       timeout_seconds=timeout_s, tools=self.tools)
        return remote.wrap(script, name=name, timeout_seconds=timeout_s, kill_after_seconds=kill_after_s)


@contextlib.contextmanager
def legacy_host(puppet_text: str | None = None) -> Iterator[LegacyHost]:
    """Stand-ins for one test; ``puppet_text`` replaces the puppet stand-in (a hanging one)."""
    root = root_dir("pt-legacy-")
    try:
        bin_dir = root / "bin"
        bin_dir.mkdir(mode=0o755)
        bin_dir.chmod(0o755)
        puppet = root_executable(bin_dir / "puppet", puppet_text or FAKE_PUPPET.format(python="/usr/bin/python3"))
        systemctl = root_executable(bin_dir / "systemctl", FAKE_SYSTEMCTL.format(python="/usr/bin/python3"))
        host = LegacyHost(root, lm.LegacyTools(puppet=str(puppet), systemctl=str(systemctl)),
                          f"lg{secrets.token_hex(3)}")
        host.set_units({})
        host.reset_calls()
        yield host
    finally:
        # a failed test may leave a stand-in (or the root timeout or sudo running it): KILL by PID
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != os.getpid():
                with contextlib.suppress(OSError):
                    if str(root).encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                        os.kill(int(name), signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def allowed_account(ssh_accounts, host: LegacyHost, timeout_s: int = STEP_TIMEOUT_S) -> Account:
    account = ssh_accounts.create(prefix="legacy")
    account.allow(sudoers.render(host.rules(account.user, timeout_s)))
    return account


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_until_gone(pids: list[int], seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def account_left(account: Account, seconds: float = 5.0) -> str:
    """The account's processes still running after ``seconds`` (sshd's per-connection process ends
    a moment after the client closes), described; "" when none."""
    return describe_processes(wait_until_gone(account.processes(), seconds))


# --- the stop step ---------------------------------------------------------------------------------

def test_stop_over_ssh_with_exactly_the_rules_then_a_rerun_changes_nothing(sshd, ssh_accounts):
    with legacy_host() as host:
        other = {"airflow-scheduler@other_instance.service": "active", "ssh.service": "active"}
        host.set_units({**host.units_of("active"), **other})
        account = allowed_account(ssh_accounts, host)

        first = run_like_provider(sshd, account, host.stop_command())
        assert first.rc == 0, f"the stop step fails with exactly the rendered rules: {first}"
        units = sorted(lm.legacy_units(host.instance))
        assert first.stdout == (f"airflow-{host.instance} legacy services: puppet agent disabled; stopped "
                                f"{' '.join(units)}\n"), first.stdout
        assert host.units() == {**host.units_of("inactive"), **other}, "exactly the instance's units are stopped"
        calls = host.calls()
        by_uid = {(c["tool"], c["argv"][0]): c["uid"] for c in calls}
        assert by_uid[("puppet", "config")] == 0 and by_uid[("puppet", "agent")] == 0, "puppet runs as root, via sudo"
        assert by_uid[("systemctl", "stop")] == 0, "systemctl stop runs as root, via sudo"
        assert by_uid[("systemctl", "list-units")] == account.uid and by_uid[("systemctl", "show")] == account.uid, \
            "listing the units needs no privilege: it runs as the SSH user"
        assert [c["argv"] for c in calls if c["argv"][0] == "stop"] == \
            [["stop", u] for u in lm.legacy_units(host.instance)], "one stop per unit of the instance"
        assert "downtime started: the legacy services of" in first.stderr, first.stderr
        assert account_left(account) == "", "processes of the account outlived the step"

        host.reset_calls()
        second = run_like_provider(sshd, account, host.stop_command())
        assert second.rc == 0, second
        assert second.stdout == f"airflow-{host.instance} legacy services: puppet agent was already disabled; none was running\n"
        mutating = [c for c in host.calls() if c["argv"][:2] == ["agent", "--disable"] or c["argv"][0] == "stop"]
        assert mutating == [], f"a second run disables and stops nothing: {mutating}"
        assert host.units() == {**host.units_of("inactive"), **other}


OUTSIDE_THE_RULES = {
    "systemctl via PATH": "sudo -n systemctl stop ssh.service",
    "another unit": "sudo -n /usr/bin/timeout --kill-after=1s {t}s {systemctl} stop ssh.service",
    "the tool without its timeout": "sudo -n {systemctl} stop {unit}",
    "another time limit": "sudo -n /usr/bin/timeout --kill-after=1s 99999s {systemctl} stop {unit}",
    "a unit pattern": "sudo -n /usr/bin/timeout --kill-after=1s {t}s {systemctl} stop 'airflow-scheduler@*.service'",
    "puppet --enable": "sudo -n /usr/bin/timeout --kill-after=1s {t}s {puppet} agent --enable",
    "another disable reason": "sudo -n /usr/bin/timeout --kill-after=1s {t}s {puppet} agent --disable x",
    "a shell": "sudo -n /bin/bash -c id",
    "a bare shell": "sudo -n /bin/bash",
    "a shell under timeout": "sudo -n /usr/bin/timeout --kill-after=1s {t}s /bin/bash -c id",
    "sudo -s": "sudo -n -s id",
    "sudo -i": "sudo -n -i id",
    "another user": "sudo -n -u nobody /usr/bin/timeout --kill-after=1s {t}s {systemctl} stop {unit}",
}


def test_commands_outside_the_rules_are_refused_and_a_listed_one_runs(sshd, ssh_accounts):
    with legacy_host() as host:
        host.set_units({**host.units_of("active"), "ssh.service": "active"})
        account = allowed_account(ssh_accounts, host)
        unit = lm.legacy_units(host.instance)[0]
        values = {"t": STEP_TIMEOUT_S, "systemctl": host.tools.systemctl, "puppet": host.tools.puppet, "unit": unit}
        for what, line in OUTSIDE_THE_RULES.items():
            result = run_like_provider(sshd, account, line.format(**values) + " </dev/null")
            assert result.rc != 0, f"{what}: sudo ran it: {result}"
            assert "a password is required" in result.stderr or "not allowed" in result.stderr, \
                f"{what}: refused by sudo's policy, not by something else: {result.stderr!r}"
        assert host.units()["ssh.service"] == "active" and all(c["argv"][0] != "stop" for c in host.calls()), \
            "nothing was stopped"
        # the control: a listed command, exactly, does run (so the refusals above are the policy's)
        ok = run_like_provider(sshd, account, f"sudo -n /usr/bin/timeout --kill-after=1s {STEP_TIMEOUT_S}s "
                                              f"{host.tools.systemctl} stop {unit} </dev/null")
        assert ok.rc == 0 and host.units()[unit] == "inactive", f"the listed command was refused: {ok}"


# --- the sync and the verification, unprivileged -------------------------------------------------------

@dataclass
class Logs:
    rgw: RgwCluster
    keys: S3Keys
    bucket: str
    base: Path  # root-owned 0755, holds the tree
    tree: LogTree

    def command(self, step: str, name: str | None = None, **kwargs) -> str:
        args = (str(self.tree.root), self.bucket, self.rgw.http_endpoint, self.rgw.region)
        script = (lm.sync_script(*args, 4, **kwargs) if step in ("sync", "final-sync")
                  else lm.verify_script(*args))
        return remote.wrap(script, name=name or f"legacy-{step}", timeout_seconds=STEP_TIMEOUT_S)

    def objects(self) -> dict[str, int]:
        out = {}
        with checksum_env():
            for page in self.rgw.s3_client(self.keys).get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
                out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        return out


@pytest.fixture
def logs(rgw) -> Iterator[Logs]:
    """A 2,000-file tree any user can read (as Airflow writes its logs), a bucket and its RGW user."""
    base = root_dir("pt-legacy-logs-")
    try:
        tree = make_tree(base / "logs", files=2000, seed=31)
        for path in [base / "logs", *(base / "logs").rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)
        suffix = secrets.token_hex(3)
        keys = make_user(rgw, f"legacy-ssh-{suffix}")
        bucket = f"logs.airflow-lg{suffix}.test-eqiad"
        with checksum_env():
            rgw.s3_client(keys).create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": rgw.region})
        yield Logs(rgw, keys, bucket, base, tree)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def uploader_uids(account: Account) -> Iterator[set[int]]:
    """The real uids of the processes running the uploader (``python3 - upload``) started from the
    account's SSH session while the body runs: an uploader counts if one of its ancestors runs as
    the account (its login shell), so a root one started through sudo would count too, while
    uploaders of other tests running at the same time (the other xdist worker) do not."""
    seen: set[int] = set()
    stop = threading.Event()

    def status(pid: str) -> dict[str, str]:
        return dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)

    def from_account(pid: str) -> bool:
        for _ in range(64):
            st = status(pid)
            if int(st["Uid"].split()[0]) == account.uid:
                return True
            pid = st["PPid"].strip()
            if pid in ("0", "1"):
                return False
        return False

    def poll() -> None:
        while not stop.wait(0.01):
            for name in os.listdir("/proc"):
                if not name.isdigit():
                    continue
                try:
                    if b"python3\0-\0upload\0" in Path(f"/proc/{name}/cmdline").read_bytes() and from_account(name):
                        seen.add(int(status(name)["Uid"].split()[0]))
                except (OSError, KeyError, ValueError):
                    pass

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


def test_sync_uploads_the_tree_as_the_ssh_user_leaks_no_key_and_a_second_pass_uploads_nothing(sshd, ssh_accounts, logs):
    account = ssh_accounts.create(prefix="logsync")  # no sudoers rule at all: the log steps need none
    with other_user_watch([logs.keys.access_key, logs.keys.secret_key]) as watch, uploader_uids(account) as uids:
        first = run_like_provider(sshd, account, logs.command("sync", progress_seconds=0.2), stdin=logs.keys.stdin(),
                                  timeout=STEP_TIMEOUT_S)
    assert first.rc == 0, f"the sync fails as the unprivileged SSH user: {first}"
    assert watch.leaks == [] and watch.passes >= 2, f"a key was visible to another user: {watch.leaks}"
    assert uids == {account.uid}, f"the uploader ran as uid(s) {uids}, not as the SSH user {account.uid}"
    files = len(logs.tree.files)
    assert re.fullmatch(rf"synced {re.escape(str(logs.tree.root))} to s3://{re.escape(logs.bucket)}/: {files} files .* "
                        rf"uploaded {files} \(\d+ bytes\).*\n", first.stdout), f"one summary line: {first.stdout!r}"
    assert logs.objects() == {rel: (logs.tree.root / rel).stat().st_size for rel in logs.tree.files}, \
        "every regular file is an object of its size, under its relative key"
    progress = [PROGRESS.match(line) for line in first.stderr.splitlines() if " progress: " in line]
    assert progress and all(progress), f"progress lines on stderr, in the issue-13 format: {first.stderr[-2000:]}"
    assert logs.keys.secret_key not in first.stdout + first.stderr and logs.keys.access_key not in first.stderr

    final = run_like_provider(sshd, account, logs.command("final-sync", final_pass=True), stdin=logs.keys.stdin(),
                              timeout=STEP_TIMEOUT_S)
    assert final.rc == 0, final
    assert "uploaded 0 (0 bytes), copied 0 server-side" in final.stdout, f"a second pass uploads nothing: {final.stdout}"
    assert re.search(r"downtime can end: the last log sync is done \(0 files uploaded\)", final.stderr), final.stderr

    verify = run_like_provider(sshd, account, logs.command("verify"), stdin=logs.keys.stdin(), timeout=STEP_TIMEOUT_S)
    assert verify.rc == 0, f"the verification fails as the SSH user: {verify}"
    total = next(line for line in verify.stdout.splitlines() if line.startswith("TOTAL "))
    assert total.split()[1] == total.split()[3] == str(files) and total.endswith(" ok"), total
    assert account_left(account) == "", "processes of the account outlived the steps"


def test_an_unreadable_subtree_fails_in_one_line_whose_fix_makes_the_rerun_pass(sshd, ssh_accounts, logs):
    account = ssh_accounts.create(prefix="logsync")
    group = f"pt-logs-{secrets.token_hex(3)}"
    subprocess.run(["groupadd", group], check=True)
    try:
        locked = logs.tree.root / "dag_id=restricted"
        (locked / "run_id=1").mkdir(parents=True)
        (locked / "run_id=1" / "attempt=1.log").write_text("a task log only its group reads\n")
        gid = grp.getgrnam(group).gr_gid
        for path in (locked, locked / "run_id=1", locked / "run_id=1" / "attempt=1.log"):
            os.chown(path, 0, gid)
            path.chmod(0o750 if path.is_dir() else 0o640)

        failed = run_like_provider(sshd, account, logs.command("sync", name="legacy-sync"), stdin=logs.keys.stdin(),
                                   timeout=STEP_TIMEOUT_S)
        assert failed.rc == 1, failed
        lines = failed.stderr.splitlines()
        assert lines == [f"legacy-sync: cannot read {locked} (a directory, owner root:{group}, mode 0750) as {account.user}: "
                         f"the log steps read the tree as the SSH user, without sudo, as the runbook does; add "
                         f"{account.user} to the group {group} (usermod -aG {group} {account.user}), then re-run"], \
            f"exactly one line naming the path and the fix: {failed.stderr!r}"
        assert logs.objects() == {}, "nothing is uploaded from a partial walk"

        subprocess.run(["usermod", "-aG", group, account.user], check=True)  # the fix, as the line says
        fixed = run_like_provider(sshd, account, logs.command("sync"), stdin=logs.keys.stdin(), timeout=STEP_TIMEOUT_S)
        assert fixed.rc == 0, f"the fix the line gives does not make the sync pass: {fixed}"
        assert "dag_id=restricted/run_id=1/attempt=1.log" in logs.objects(), "the restricted subtree is uploaded now"
    finally:
        subprocess.run(["gpasswd", "-d", account.user, group], capture_output=True)
        subprocess.run(["groupdel", group], check=False, capture_output=True)
