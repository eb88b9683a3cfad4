"""Every remote command is bounded on the remote host: a hung tool is killed, with all it started.

pulumi-command 1.2.1 never cancels a running SSH session (its deadline reaches only the dial,
remote/connection.go ``dialWithRetry``), so ``remote.wrap`` runs each script under GNU
``timeout --kill-after``.  Here the exact command text the Command sends is run the way sshd
runs an exec request (the login shell's ``-c``, stdin closed), once as is and once through
``sudo -n``, against the real generated scripts whose privileged tool hangs (a fake
``kadmin.local`` / ``radosgw-admin`` / the sync's ``python3`` / ``puppet`` earlier on PATH that ignores SIGTERM and starts a child).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from components import kerberos, log_migration, remote, rgw_user

TIMEOUT_S = 2
KILL_AFTER_S = 1

HANGING_TOOL = """#!/bin/bash
# a privileged tool that hangs: ignores TERM and keeps a child of its own
trap '' TERM
sleep 300 &
echo "$!" >> {pids}
echo "$$" >> {pids}
while :; do sleep 1; done
"""


# a throwaway key pair of the shapes the scripts accept, made per run (no key in the repository)
KEYS = f"{secrets.token_hex(10).upper()}\n{secrets.token_hex(20)}\n"


def scripts(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """The tool each remote script calls first, the script, and its stdin."""
    principals = kerberos.principals("analytics-search", "airflow-search.discovery.wmnet", "WIKIMEDIA")
    logs = tmp_path / "logs" / "dag_id=x"
    logs.mkdir(parents=True)
    (logs / "attempt=1.log").write_text("a log line\n")
    sync = log_migration.sync_script(str(tmp_path / "logs"), "logs.airflow-search.dse-k8s-eqiad",
                                     "https://127.0.0.1:9", "dpe", 2, ca_file="/etc/ssl/certs/ca-certificates.crt")
    return {
        "kadmin.local": (kerberos.keytab_script("WIKIMEDIA", principals), ""),
        "radosgw-admin": (rgw_user.rgw_user_script("airflow-search", "airflow-search"), KEYS),
        # the log sync's uploader is one python3 process (s3cmd only for files above 5 GiB)
        "python3": (sync, KEYS),
        "puppet": (log_migration.stop_legacy_script("search"), ""),
    }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead; only its parent has not reaped it yet
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("use_sudo", [False, True], ids=["plain", "sudo"])
@pytest.mark.parametrize("tool", ["kadmin.local", "radosgw-admin", "python3", "puppet"])
def test_a_hung_remote_tool_is_killed_with_its_children_and_the_step_fails_with_one_line(tmp_path, tool, use_sudo):
    if use_sudo and shutil.which("sudo") is None:
        pytest.fail("sudo is required (tools/system-packages.sh installs it)")
    script, stdin = scripts(tmp_path)[tool]
    pids = tmp_path / "pids"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / tool
    fake.write_text(HANGING_TOOL.format(pids=pids))
    fake.chmod(0o755)
    if tool == "puppet":  # the stop script checks that systemctl exists before calling puppet
        (bindir / "systemctl").write_text("#!/bin/sh\nexit 0\n")
        (bindir / "systemctl").chmod(0o755)
    name = f"search-step-{uuid.uuid4().hex[:8]}"
    line = remote.wrap(script, use_sudo, name, TIMEOUT_S, kill_after_seconds=KILL_AFTER_S)
    # sudo resets PATH (secure_path): hand the fake tool's directory through env for that case
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    if use_sudo:
        line = line.replace("sudo -n ", f"sudo -n env PATH={bindir}:/usr/sbin:/usr/bin:/sbin:/bin ", 1)

    started = time.monotonic()
    done = subprocess.run(["/bin/sh", "-c", line], input=stdin.encode(), env=env,
                          capture_output=True, timeout=60)
    elapsed = time.monotonic() - started

    assert done.returncode in remote.TIMED_OUT, f"{tool}: exit {done.returncode}, stderr {done.stderr!r}"
    assert elapsed < TIMEOUT_S + KILL_AFTER_S + 5, f"{tool}: took {elapsed:.1f}s"
    last = done.stderr.decode().strip().splitlines()[-1]
    # 124: the TERM stopped the step (its handler KILLed what ignored it); 137: the step itself
    # ignored the TERM and timeout's KILL ended it
    assert last == {
        124: f"{name}: timed out after {TIMEOUT_S} s on the remote host; the step was stopped with everything it started",
        137: f"{name}: killed with SIGKILL on the remote host: it ignored the TERM of its {TIMEOUT_S} s time limit "
             f"for {KILL_AFTER_S} s, or something else (the OOM killer?) killed it",
    }[done.returncode]
    assert done.stdout == b"", "a killed step prints nothing on stdout (the provider's error carries it)"
    started_pids = [int(p) for p in pids.read_text().split()]
    assert len(started_pids) >= 2, "the fake tool must have started (else this test proves nothing)"
    deadline = time.monotonic() + 5
    while any(alive(p) for p in started_pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in started_pids if alive(p)], f"{tool}: processes left running after the timeout"


def test_a_command_within_its_time_passes_its_exit_status_and_output_through(tmp_path):
    line = remote.wrap("echo out; echo err >&2; exit 3", False, "quick-step", 10)
    done = subprocess.run(["/bin/sh", "-c", line], capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (3, b"out\n", b"err\n")
