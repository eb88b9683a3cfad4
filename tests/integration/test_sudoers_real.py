"""What real sudo (Debian 12, sudo 1.9.13) makes of components/sudoers.py's text.

A throwaway non-root user gets a rendered rule set in /etc/sudoers.d (checked by visudo first);
then ``sudo -n`` as that user shows each listed command runs with exactly its arguments, and
the same tool with any other argument, a shell, or a literal wildcard's expansion is refused.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from components import sudoers

WEIRD = 'a,b:c=d(e)!f*g?[h]#i"j\'k$l%m@n o'


@pytest.fixture(scope="module")
def account():
    assert os.geteuid() == 0, "creates a user and a sudoers file: run as root (CI does)"
    assert shutil.which("visudo") and shutil.which("sudo"), "sudo is not installed (tools/system-packages.sh)"
    user = f"pt-sudo-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/bash", user], check=True)
    rules = sudoers.HostRules(
        host="test host", user=user, alias=sudoers.alias_for(user, "test"),
        commands=(("/usr/bin/printf", "%s|", WEIRD),
                  ("/usr/bin/echo", "airflow scheduler migration to Kubernetes"),
                  ("/usr/bin/id", "-u")),
        command_timeout_seconds=2,
    )
    text = sudoers.render(rules)
    path = Path("/etc/sudoers.d") / rules.file_name
    check = subprocess.run(["visudo", "-cf", "-"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, f"visudo refuses the rendered rules:\n{check.stdout}{check.stderr}\n{text}"
    path.write_text(text)
    path.chmod(0o440)
    try:
        yield user
    finally:
        path.unlink(missing_ok=True)
        subprocess.run(["userdel", user], check=False)


def as_user(user: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", "sudo", "-n", *argv], capture_output=True, text=True, timeout=30)


def test_a_listed_command_runs_with_exactly_its_arguments_however_odd(account):
    proc = as_user(account, "/usr/bin/printf", "%s|", WEIRD)
    assert proc.returncode == 0 and proc.stdout == WEIRD + "|", proc


def test_an_argument_with_spaces_matches_as_written(account):
    proc = as_user(account, "/usr/bin/echo", "airflow scheduler migration to Kubernetes")
    assert proc.returncode == 0, proc


@pytest.mark.parametrize("argv", [
    ("/usr/bin/printf", "%s|", WEIRD.replace("*", "X")),  # the escaped * is no wildcard
    ("/usr/bin/printf", "%s|", WEIRD.replace("?", "X")),
    ("/usr/bin/printf", "%s|", WEIRD, "extra"),
    ("/usr/bin/id",),
    ("/usr/bin/id", "-u", "root"),
    ("/bin/bash", "-c", "id"),
    ("/bin/sh",),
], ids=["star", "question-mark", "extra-argument", "fewer-arguments", "more-arguments", "shell", "sh"])
def test_anything_else_is_refused_without_running(account, argv):
    proc = as_user(account, *argv)
    assert proc.returncode != 0 and proc.stdout == "", f"sudo ran {argv}: {proc}"


def test_sudo_shell_and_list_options_are_refused(account):
    for opts in (("-s",), ("-i",), ("-u", "root", "/bin/bash")):
        proc = as_user(account, *opts)
        assert proc.returncode != 0, f"sudo -n {' '.join(opts)} was allowed: {proc}"
