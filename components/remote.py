"""Remote Commands over SSH, and the conventions every generated script follows.

Scripts are built by pure functions elsewhere (``kerberos.keytab_script``,
``rgw_user.rgw_user_script``, ...); tests run that exact text against real services.  This
module turns a script into a ``command.remote.Command`` with the platform's hygiene:

* the host key is pinned (pulumi-command otherwise uses InsecureIgnoreHostKey,
  https://github.com/pulumi/pulumi-command/issues/755), with an explicit dial timeout and
  retry limit (https://github.com/pulumi/pulumi-command/issues/199) and custom timeouts;
* **a remote ``timeout`` bounds every command.**  In pulumi-command 1.2.1 the operation's
  deadline (custom timeouts, Ctrl-C) reaches only the dial retry loop
  (provider/pkg/provider/remote/connection.go ``dialWithRetry`` L150-187): ``session.Run``
  never looks at the context and the session is never closed or signalled
  (remote/commandOutputs.go L95).  A hung ``kadmin.local`` would hold ``pulumi up`` and the
  stack lock forever.  So the command is ``timeout --kill-after=K S <script>``, S matching the
  custom timeout: GNU timeout runs in its own process group and signals the whole group
  (TERM, then KILL after K), so nothing of the step survives it (a privileged tool under sudo
  is bounded by its own root-side ``timeout``, pinned in the host's sudoers rules);
* secrets reach the script on **stdin** only: never in the script text (argv on the remote
  host, and the provider's error text: ``fmt.Errorf("%w: running %q:\n%s", err, cmd, output)``,
  remote/commandOutputs.go L100-102, whatever ``logging`` says) and never in ``environment``
  (pulumi-command sends each variable as an SSH "env" request wanting a reply, which sshd refuses
  without AcceptEnv, and the Command then fails before running anything: commandOutputs.go
  L42-49, L110-126; tests/integration/test_ssh_layer.py);
* **stderr is the log, stdout the one secret channel.**  Every Command logs stderr only
  (``logging: stderr``); no script writes a secret to stderr (tests/test_remote_commands.py and
  the integration leak scan), and a script that returns a secret prints it on stdout as its
  last statement, so a failing command has nothing secret in the combined output the error
  carries.  Commands touching secrets mark stdout and stderr secret
  (https://github.com/pulumi/pulumi-command/issues/401, #134);
* **least privilege** (issue 14): the script runs as the SSH user; only its privileged tools go
  through ``sudo -n``, by absolute path with exactly the arguments the host's sudoers rules list
  (components/sudoers.py, rendered per host by kerberos.py, rgw_user.py and log_migration.py,
  printed as manual steps by host_access.py).  No command asks sudo for a shell.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence, Union

import pulumi
import pulumi_command as command


@dataclass(frozen=True)
class SshSettings:
    user: str
    private_key: pulumi.Output[str]  # secret
    dial_timeout_seconds: int
    dial_error_limit: int


def key_pair_stdin(access_key: pulumi.Input[str], secret_key: pulumi.Input[str]) -> pulumi.Output[str]:
    """stdin of the scripts that take an S3 key pair: the access key, then the secret key, one a line."""
    return pulumi.Output.all(access_key, secret_key).apply(lambda ks: f"{ks[0]}\n{ks[1]}\n")


def command_provider(name: str, parent: pulumi.Resource) -> command.Provider:
    return command.Provider(f"{name}-command", opts=pulumi.ResourceOptions(parent=parent))


def connection(ssh: SshSettings, host: str, host_key: str) -> command.remote.ConnectionArgs:
    return command.remote.ConnectionArgs(
        host=host,
        port=22,
        user=ssh.user,
        private_key=ssh.private_key,
        host_key=host_key,
        per_dial_timeout=ssh.dial_timeout_seconds,
        dial_error_limit=ssh.dial_error_limit,
    )


SHELLCHECK_LINE = "# shellcheck disable=SC2016  # the quoted script is expanded by bash -c, not by this shell"
KILL_AFTER_SECONDS = 30  # after the TERM, what a step gets to clean up before KILL
TIMED_OUT = (124, 137)  # GNU timeout: the command timed out (TERM), or had to be KILLed


def wrap(script: str, name: str, timeout_seconds: int, kill_after_seconds: int = KILL_AFTER_SECONDS) -> str:
    """The command line the Command runs for ``script`` (which itself is run verbatim).

    Always bash (the scripts use bash features; the remote login shell may be another), and
    ``$0`` is the step's name so diagnostics say which step failed.  The line itself is POSIX
    sh (it is what the login shell runs): a timed-out step ends with one line on stderr.
    The script runs as the SSH user: it calls its privileged tools through sudo itself
    (remote.script's ``sudo`` array, each host's exact rules in components/sudoers.py), so
    nothing ever asks sudo for a shell.
    """
    if not name or timeout_seconds <= 0:
        raise ValueError("wrap needs the step's name and a positive timeout")
    bounded = (f"timeout --kill-after={kill_after_seconds}s {timeout_seconds}s "
               f"/bin/bash -c {shlex.quote(script)} {shlex.quote(name)}")
    line = bounded
    timed_out = shlex.quote(f"{name}: timed out after {timeout_seconds} s on the remote host; "
                            f"the step was stopped with everything it started")
    killed = shlex.quote(f"{name}: killed with SIGKILL on the remote host: it ignored the TERM of its "
                         f"{timeout_seconds} s time limit for {kill_after_seconds} s, or something else "
                         f"(the OOM killer?) killed it")
    # The login shell reports a job killed by a signal on ITS stderr ("bash: line 1: PID Killed
    # timeout ... /bin/bash -c '<the whole script>'", dash: "Killed"), which would put the script
    # in the Command's log and error text: its stderr goes to /dev/null around the step, the
    # step's own stderr to the saved one (fd 3), and it is restored for the one-line reason.
    # The first line is for shellcheck (tests/integration/test_shellcheck.py checks every command
    # line as sh): the script is meant literally in single quotes; bash expands it, not this shell.
    return (f"{SHELLCHECK_LINE}\nexec 3>&2 2>/dev/null; {line} 2>&3 3>&-; rc=$?; exec 2>&3 3>&-; "
            f"if [ \"$rc\" -eq {TIMED_OUT[0]} ]; then printf '%s\\n' {timed_out} >&2; "
            f"elif [ \"$rc\" -eq {TIMED_OUT[1]} ]; then printf '%s\\n' {killed} >&2; fi; exit \"$rc\"")


def remote_command(
    name: str,
    *,
    conn: command.remote.ConnectionArgs,
    script: str,
    stdin: pulumi.Input[str] | None = None,
    touches_secrets: bool,
    delete_script: str | None = None,
    triggers: Sequence[pulumi.Input[object]] | None = None,
    timeout_minutes: int = 10,
    opts: pulumi.ResourceOptions,
) -> command.remote.Command:
    """A remote Command with the hygiene above; ``opts`` must carry the parent."""
    seconds = timeout_minutes * 60
    options = pulumi.ResourceOptions(
        # the engine's deadline, and the remote one: a little longer, so the remote kill and its
        # one-line reason come back before the engine gives up on the step
        custom_timeouts=pulumi.CustomTimeouts(
            create=f"{seconds + KILL_AFTER_SECONDS + 60}s",
            update=f"{seconds + KILL_AFTER_SECONDS + 60}s",
            delete=f"{seconds + KILL_AFTER_SECONDS + 60}s",
        ),
    )
    if touches_secrets:
        options = pulumi.ResourceOptions.merge(
            options, pulumi.ResourceOptions(additional_secret_outputs=["stdout", "stderr"])
        )
    return command.remote.Command(
        name,
        connection=conn,
        create=wrap(script, name, seconds),
        delete=wrap(delete_script, name, seconds) if delete_script else None,
        stdin=pulumi.Output.secret(stdin) if (stdin is not None and touches_secrets) else stdin,
        # stderr is progress and the delete-time instructions, never a secret; stdout may be one
        logging=command.remote.Logging.STDERR,
        # the previous stdout may be secret; never hand it to the next run's environment
        add_previous_output_in_env=False,
        triggers=list(triggers) if triggers else None,
        opts=pulumi.ResourceOptions.merge(options, opts),
    )


SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

ScriptValue = Union[str, int, Sequence[str]]


def script_file(name: str) -> str:
    """The text of ``components/scripts/<name>`` (a shell body or a Python helper a script ships)."""
    path = SCRIPTS_DIR / name
    if path.parent != SCRIPTS_DIR or not path.is_file():
        raise ValueError(f"no script file components/scripts/{name}")
    return path.read_text()


def _body(name: str) -> str:
    """A script file without its shebang and the shellcheck directives meant for the file alone."""
    lines = script_file(name).splitlines(keepends=True)
    while lines and (lines[0].startswith("#!") or lines[0].startswith("# shellcheck shell=")):
        lines.pop(0)
    return "".join(lines)


def assignments(values: Mapping[str, ScriptValue]) -> str:
    """Shell assignments of ``values``, every value quoted: a string or int becomes a scalar,
    a list or tuple an array.  Names are checked (lower-case shell identifiers)."""
    out = []
    for key, value in values.items():
        if not _NAME.match(key):
            raise ValueError(f"script value name {key!r} is not a lower-case shell identifier")
        if isinstance(value, bool):
            raise ValueError(f"script value {key}: say true/false as a string")
        if isinstance(value, int):
            out.append(f"{key}={value}")
        elif isinstance(value, str):
            if "\0" in value:
                raise ValueError(f"script value {key} holds a NUL byte")
            out.append(f"{key}={shlex.quote(value)}")
        else:
            items = list(value)
            for item in items:
                if not isinstance(item, str) or "\0" in item:
                    raise ValueError(f"script value {key}: every item must be a string without NUL")
            out.append(f"{key}=(" + " ".join(shlex.quote(i) for i in items) + ")")
    return "".join(line + "\n" for line in out)


def script(template: str, what: str, values: Mapping[str, ScriptValue], *, use_sudo: bool) -> str:
    """The script a remote Command runs: ``components/scripts/header.sh``, the values filled in by
    the program (quoted shell assignments), then ``components/scripts/<template>`` verbatim.

    ``sudo`` is an array the body puts before each privileged tool (``"${sudo[@]}" /usr/sbin/kadmin.local``):
    ``sudo -n`` when the stack says ``remoteSudo: true``, nothing when the SSH user is root.  The
    script itself runs as the SSH user; only those tools are asked of sudo, by absolute path, with
    exactly the arguments the host's sudoers rules (``components/sudoers.py``) allow.
    """
    if "sudo" in values:
        raise ValueError("the sudo array is set by remote.script")
    # only a body that calls a privileged tool gets the array (an unused one is shellcheck's SC2034)
    sudo = {"sudo": ["sudo", "-n"] if use_sudo else []} if re.search(r"\$\{#?sudo\[", _body(template)) else {}
    filled = {**sudo, **values}
    return (header(what, template)
            + "\n# --- values filled in by the program ---\n" + assignments(filled)
            + f"\n# --- components/scripts/{template} ---\n" + _body(template))


def notice_script(what: str, lines: Sequence[str]) -> str:
    """A script that changes nothing and prints ``lines`` on stderr (delete-time instructions)."""
    return header(what) + "printf '%s\\n' " + " ".join(shlex.quote(line) for line in lines) + " >&2\n"


def header(what: str, template: str | None = None) -> str:
    source = f" from components/scripts/{template}" if template else ""
    return (f"#!/bin/bash\n# generated by the airflow Pulumi program ({what}){source}; idempotent: check, then act\n"
            + script_file("header.sh"))
