"""Every remote Command: pinned host key, finite timeouts (the engine's and a remote ``timeout``),
secrets on stdin only, stderr the only log, stdout marked secret."""

import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from components import remote
from tests.conftest import STACKS, rendered, stack_config
from tests.test_secret_leaks import FLEET, PHASE_RUNS, monitor_for
from tools import mockrun

COMMAND = "command:remote:Command"
# the engine's deadline for a step whose remote ``timeout`` is S seconds: S + the 30 s kill-after
# + 60 s, so the remote kill and its one-line reason come back before the engine gives up
ENGINE_MARGIN_SECONDS = 30 + 60
# the command line of components/remote.py wrap(): the login shell's stderr set aside (its "Killed"
# report would quote the whole script), then timeout --kill-after=Ks Ss /bin/bash -c <script> <name>
BOUNDED = re.compile(r"^# shellcheck disable=SC2016 [^\n]*\nexec 3>&2 2>/dev/null; timeout --kill-after=(?P<kill>[0-9]+)s (?P<seconds>[0-9]+)s /bin/bash -c ")


def commands(stack):
    found = rendered(stack).by_type(COMMAND)
    assert found, f"{stack} has no remote Commands"
    return found


def all_secret_values(stack):
    """Every secret the program handles: decrypted config secrets and (mock) generated ones."""
    config, secret_keys = stack_config(stack)
    values = {config[k] for k in secret_keys}
    mon = rendered(stack)
    for urn, reg in mon.resources.items():  # MockMonitor's own record of outputs
        if mon.registrations.get(urn) and mon.registrations[urn].type.startswith("random:"):
            for key in ("result", "base64", "hex"):
                if key in reg.state:
                    values.add(reg.state[key])
    return {v for v in values if v and len(v) >= 8}


@pytest.mark.parametrize("stack", STACKS)
def test_commands_pin_the_host_key_and_bound_the_dial(stack):
    project = yaml.safe_load(open("Pulumi.yaml"))["config"]
    keys = {project["kdcHostKey"]["default"], project["rgwAdminHostKey"]["default"]}
    for cmd in commands(stack):
        conn = cmd.inputs["connection"]
        assert isinstance(conn, mockrun.SecretLeaf), f"{cmd.name}: the connection holds the private key; it must be secret"
        conn = conn.value
        assert conn["hostKey"] in keys, f"{cmd.name}: host key must be pinned"
        assert conn["perDialTimeout"] == 15 and conn["dialErrorLimit"] == 5, f"{cmd.name}: explicit dial timeout/limit"
        assert conn["user"] == "pulumi-airflow"
        # commandTimeoutMinutes 10: 600 s on the remote host, 600 + 30 + 60 s for the engine
        assert cmd.custom_timeouts == {"create": "690s", "update": "690s", "delete": "690s"}, \
            f"{cmd.name}: custom timeouts"


@pytest.mark.parametrize("stack", STACKS)
def test_commands_log_stderr_only_and_mark_their_output_secret(stack):
    for cmd in commands(stack):
        # stdout is the one secret channel, stderr the log (never a secret)
        assert cmd.inputs["logging"] == "stderr", f"{cmd.name}: must log stderr only, never stdout"
        assert {"stdout", "stderr"} <= set(cmd.additional_secret_outputs), f"{cmd.name}: stdout/stderr must be secret outputs"
        assert cmd.inputs.get("addPreviousOutputInEnv") is False, f"{cmd.name}: previous (secret) stdout must not reach the env"


@pytest.mark.parametrize("stack", STACKS)
def test_no_secret_in_any_command_line(stack):
    secrets = all_secret_values(stack)
    assert secrets, "the test needs secret values to look for"
    for cmd in commands(stack):
        for step in ("create", "update", "delete"):
            text = cmd.inputs.get(step) or ""
            assert isinstance(text, str), f"{cmd.name}.{step} must be plain script text (secrets go on stdin)"
            for value in secrets:
                assert value not in text, f"{cmd.name}.{step} contains a secret value"


@pytest.mark.parametrize("stack", STACKS)
def test_stdin_carrying_keys_is_secret(stack):
    with_stdin = [cmd for cmd in commands(stack) if "stdin" in cmd.inputs]
    assert {c.name for c in with_stdin} >= {f"{stack}-rgw-airflow-user", f"{stack}-rgw-postgresql-user"}
    for cmd in with_stdin:
        assert isinstance(cmd.inputs["stdin"], mockrun.SecretLeaf), f"{cmd.name}: stdin carries keys; it must be secret"


@pytest.mark.parametrize("stack", STACKS)
def test_no_secret_value_reaches_any_input_unmarked(stack):
    secrets = all_secret_values(stack)
    for reg in rendered(stack).registered():
        plain = repr(mockrun.masked(reg.inputs))
        for value in secrets:
            assert value not in plain, f"{reg.type} {reg.name} carries a secret outside a secret input"


@pytest.mark.parametrize("stack", STACKS)
def test_data_bearing_commands_are_protected_and_delete_before_replace(stack):
    cmds = {c.name: c for c in commands(stack)}
    expected = {f"{stack}-rgw-airflow-user", f"{stack}-rgw-postgresql-user", f"{stack}-kerberos-keytab"}
    assert expected <= set(cmds), f"missing commands: {expected - set(cmds)}"
    for name in expected:
        assert cmds[name].protect, f"{name} must be protected"
        assert cmds[name].delete_before_replace, f"{name}: create and delete hit the same uid/principal"


# what a script may put after "${sudo[@]}": a tool by absolute path or a variable holding one,
# never a shell, sudo's own shell/user options, or a command runner
SUDO_CALL = re.compile(r'"\$\{sudo\[@\]\}"\s+(?P<word>\S+)')
NOT_A_TOOL = re.compile(r"^(\S*/)?(bash|sh|dash|zsh|env|su|sudo|nohup|xargs|find|python3?|perl|-\S*)$")


@pytest.mark.parametrize("which", FLEET + PHASE_RUNS)
def test_no_command_asks_sudo_for_a_shell(which):
    """Issue 14: the command line runs the script as the SSH user; inside it only privileged tools
    go through sudo (by absolute path, exact arguments: tests/integration/*_over_ssh.py run each
    script behind real sshd with exactly the documented sudoers rules)."""
    for cmd in (r for r in monitor_for(which).registered() if r.type == COMMAND):
        for step in ("create", "delete"):
            text = cmd.inputs.get(step)
            if text is None:
                continue
            _, _, script = _bounded(cmd, step)
            outside = text.replace(shlex.quote(script), "<script>")
            assert "sudo" not in outside, f"{cmd.name}.{step}: the command line asks sudo for something: {outside[:200]}"
            # the body (the values block only assigns: quoted text, and the sudo array itself)
            body = script.split("\n# --- components/scripts/", 1)
            assert len(body) == 2, f"{cmd.name}.{step}: not built by remote.script (components/scripts/)"
            for line in body[1].splitlines():
                code = re.sub(r'"\$\{sudo\[@\]\}"', " SUDO_CALL ", line)
                code = re.sub(r"'[^']*'|\"(?:[^\"\\]|\\.)*\"", "''", code).split("#", 1)[0]  # quoted text, comments
                assert not re.search(r"(^|[\s;|&(`])sudo(\s|$)", code), f"{cmd.name}.{step}: sudo called directly: {line.strip()}"
                code = line
                for call in SUDO_CALL.finditer(code):
                    word = call["word"].strip('"')
                    assert not NOT_A_TOOL.match(word), f"{cmd.name}.{step}: sudo runs {word!r}: {line.strip()}"
                    assert word.startswith("/") or word.startswith("$"), \
                        f"{cmd.name}.{step}: sudo runs {word!r} by PATH, not by an absolute path: {line.strip()}"


TIMED_OUT_TAIL = ("; rc=$?; exec 2>&3 3>&-; if [ \"$rc\" -eq 124 ]; then printf '%s\\n' "
                  "'{name}: timed out after {seconds} s on the remote host; the step was stopped with everything it started'"
                  " >&2; elif [ \"$rc\" -eq 137 ]; then printf '%s\\n' "
                  "'{name}: killed with SIGKILL on the remote host: it ignored the TERM of its {seconds} s time limit "
                  "for 30 s, or something else (the OOM killer?) killed it' >&2; fi; exit \"$rc\"")


def test_scripts_always_run_under_bash_and_timeout_as_the_ssh_user():
    head = remote.SHELLCHECK_LINE + "\n"
    assert head.startswith("# shellcheck disable=SC2016 ") and head.count("\n") == 1, "a comment line for shellcheck, nothing else"
    assert remote.wrap("echo hi", name="x", timeout_seconds=60) == head + (
        "exec 3>&2 2>/dev/null; timeout --kill-after=30s 60s /bin/bash -c 'echo hi' x 2>&3 3>&-"
        + TIMED_OUT_TAIL.format(name="x", seconds=60))
    assert remote.wrap("echo 'hi'", name="a b", timeout_seconds=600) == head + (
        "exec 3>&2 2>/dev/null; timeout --kill-after=30s 600s /bin/bash -c 'echo '\"'\"'hi'\"'\"'' 'a b' 2>&3 3>&-"
        + TIMED_OUT_TAIL.format(name="a b", seconds=600))
    assert remote.wrap("true", name="x", timeout_seconds=5, kill_after_seconds=2).startswith(head +
        "exec 3>&2 2>/dev/null; timeout --kill-after=2s 5s /bin/bash -c true x 2>&3 3>&-; "), "the kill-after can be given"


def _bounded(cmd: mockrun.Registration, step: str) -> tuple[int, int, str]:
    """(kill-after, timeout seconds, inner script) of a Command's create/delete text,
    checked to be exactly remote.wrap() of that script under the Command's own name."""
    text = cmd.inputs[step]
    match = BOUNDED.match(text)
    assert match, f"{cmd.name}.{step} does not run under timeout --kill-after=: {text[:120]!r}"
    words = shlex.split(text)
    script = words[words.index("-c") + 1]
    kill, seconds = int(match["kill"]), int(match["seconds"])
    assert text == remote.wrap(script, name=cmd.name, timeout_seconds=seconds, kill_after_seconds=kill), \
        f"{cmd.name}.{step}: not the wrap() of its script (name as $0, the timed-out line, its exit status)"
    return kill, seconds, script


@pytest.mark.parametrize("which", FLEET + PHASE_RUNS)
def test_every_command_runs_under_a_remote_timeout_matching_its_custom_timeout(which):
    """pulumi-command 1.2.1 bounds only the dial; the remote ``timeout`` bounds the session, and the
    engine's deadline (custom timeouts) is S + 90 s so the remote kill's reason comes back first."""
    cmds = [r for r in monitor_for(which).registered() if r.type == COMMAND]
    if which in FLEET:  # phase webserver runs nothing remote
        assert cmds, f"{which} has no remote Commands"
    for cmd in cmds:
        steps = ["create"] + (["delete"] if cmd.inputs.get("delete") is not None else [])
        bounds = {step: _bounded(cmd, step) for step in steps}
        for step, (kill, seconds, _) in bounds.items():
            assert kill == 30, f"{cmd.name}.{step}: kill-after {kill}s, expected 30s"
            assert seconds >= 60, f"{cmd.name}.{step}: a remote timeout of {seconds}s is too short to be meant"
        assert len({b[:2] for b in bounds.values()}) == 1, f"{cmd.name}: create and delete differ in timeout: {bounds}"
        seconds = bounds["create"][1]
        engine = f"{seconds + ENGINE_MARGIN_SECONDS}s"
        assert cmd.custom_timeouts == {"create": engine, "update": engine, "delete": engine}, \
            f"{cmd.name}: custom timeouts {cmd.custom_timeouts}, expected {engine} for a remote timeout of {seconds}s"


def _alive(pid: int) -> bool:
    """A process that still exists and is not a zombie (PID 1 in a container may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# what ignores the TERM: nothing, the step's own shell (the KILL after the kill-after is needed),
# or only a tool the step started (the shell exits on the TERM and leaves that tool behind unless
# something kills it: timeout stops waiting once its child has gone)
# (the child does not hold the output pipes, so a survivor is found below, not by a hung read)
HANGS = {
    "hangs": ("", "sleep 300 >/dev/null 2>&1 &", 124),
    "hangs-and-ignores-TERM": ("trap '' TERM\n", "sleep 300 >/dev/null 2>&1 &", 137),
    "a-tool-ignores-TERM": ("", "(trap '' TERM; exec sleep 300) >/dev/null 2>&1 &", 124),
}


@pytest.mark.processes
@pytest.mark.parametrize("mode", list(HANGS))
def test_a_hung_step_is_killed_with_everything_it_started(tmp_path, mode):
    """The generated line, run by sh as the remote login shell would, against a step that hangs
    (and starts a child that hangs): it ends within the bound, with the timed-out exit status and
    one line on stderr naming the step, and nothing it started is left running."""
    prelude, child, status = HANGS[mode]
    pids = tmp_path / "pids"
    script = remote.header("a step that hangs") + (
        prelude
        + f"{child}\necho $! >> {shlex.quote(str(pids))}\necho $$ >> {shlex.quote(str(pids))}\n"
        + "echo started >&2\nwait\n"
    )
    line = remote.wrap(script, name="hung-step", timeout_seconds=1, kill_after_seconds=1)
    started = time.monotonic()
    try:
        done = subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True, timeout=60,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        elapsed = time.monotonic() - started
        _check_killed(done, elapsed, status, pids, mode)
    finally:  # whatever the outcome, leave nothing of this test running
        for pid in (int(p) for p in (pids.read_text().split() if pids.exists() else [])):
            if _alive(pid):
                os.kill(pid, 9)


def _check_killed(done: subprocess.CompletedProcess, elapsed: float, status: int, pids: Path, mode: str) -> None:
    assert done.returncode == status, f"timed-out exit status {status}: {done}"
    assert elapsed < 20, f"the step was not bounded: {elapsed:.1f} s"
    assert done.stdout == "", "nothing on stdout"
    assert done.stderr.startswith("started\n"), f"the step ran: {done.stderr!r}"
    expected = {
        124: "hung-step: timed out after 1 s on the remote host; the step was stopped with everything it started\n",
        137: "hung-step: killed with SIGKILL on the remote host: it ignored the TERM of its 1 s time limit for 1 s, "
             "or something else (the OOM killer?) killed it\n",
    }[status]
    assert done.stderr.endswith(expected), f"one clear line names the step: {done.stderr!r}"
    started_pids = [int(p) for p in pids.read_text().split()]
    assert len(started_pids) == 2, "the step and its child wrote their pids"
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in started_pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in started_pids if _alive(p)], f"a process of the timed-out step is still running ({mode})"


@pytest.mark.processes
def test_a_step_that_fails_or_succeeds_in_time_keeps_its_exit_status_and_says_nothing_more():
    for status in (0, 3):
        line = remote.wrap(f"echo out; echo err >&2; exit {status}", name="quick", timeout_seconds=30)
        done = subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True, timeout=60)
        assert done.returncode == status, f"exit status {status} passed on: {done}"
        assert (done.stdout, done.stderr) == ("out\n", "err\n"), f"no timed-out line for a step that ended: {done}"
