"""Ceph RGW users (runbook: "Generate the S3 keypairs"), run with radosgw-admin on the RGW admin host.

The runbook runs ``radosgw-admin user create`` and copies the generated keys out of its JSON.
Here the program supplies the keys (pulumi-random, ``generated_secrets.s3_key_pair``) so that a
re-run converges on the same pair: radosgw-admin ADDS a generated key to the user's keyring on
every ``key create``, it never replaces one.

The script (components/scripts/rgw_user.sh) runs as the SSH user.  Only radosgw-admin runs as
root, always through the small program components/scripts/rgw_admin.py
(``sudo -n /usr/bin/python3 -I -c CODE /usr/bin/radosgw-admin WORDS...``), and the host's
sudoers rules (:func:`sudoers_rules`) list every such command line exactly, CODE included:
``user info --uid=U``, ``user create --uid=U --display-name=D`` and ``key create --uid=U
--key-type=s3``, for the instance's two users U.  Nothing else, no shell, no environment.

How the keys reach radosgw-admin without a command line: the script reads them from stdin
(two lines: access key, then secret key) and writes them to rgw_admin.py's stdin (a bash
here-string), which checks their shape and hands them to the one radosgw-admin process that
needs them in a ``CEPH_ARGS`` it builds itself: radosgw-admin reads keys only from its
arguments, and every Ceph tool adds ``CEPH_ARGS`` to its arguments (``env_to_vec``).
/proc/PID/cmdline is world-readable, while /proc/PID/environ is readable only by the process
owner (root here; the script's own bash holds the keys only in its memory, never in its
environment).

Why not ``sudo radosgw-admin ...`` with ``Defaults!ALIAS env_keep += "CEPH_ARGS"``, the obvious
rule: CEPH_ARGS would then be the caller's, and it adds any option the rule's argv does not
give.  Checked on Ceph 16.2.15: an option given in both places takes the argv's value (CEPH_ARGS
options come first, the last one wins), so ``--uid`` cannot be overridden, but
``--caps=users=*;buckets=*``, ``--admin`` and ``--system`` on ``user create`` make an RGW
administrator, ``user info`` without ``--uid`` plus ``CEPH_ARGS=--uid=<anyone>`` prints anyone's
secret keys, ``--log-file=<any path>`` creates a root-owned file anywhere, and ``CEPH_ARGS='-- rm'``
turns ``radosgw-admin user --uid=U`` into ``user rm``.  An env_keep entry pins a value only
exactly or with ``*`` wildcards (sudoers(5)), and ``*`` matches `` --caps=...`` too.  So the
caller gives the keys on stdin and nothing else.

radosgw-admin facts the script relies on (all checked against the real tool, Ceph 16.2.15):

* ``user info --uid`` exits 22 for an unknown user; its JSON holds every secret key.
* ``key create --key-type=s3`` with a given access key that the user already has replaces that
  key's secret in place (no second pair); with a new access key it adds a pair.
* ``key create --uid=A`` with an access key owned by ANOTHER user B: exit 241 ("existing S3 key
  in RGW system") when A exists; when A does NOT exist radosgw-admin finds the user by the
  access key and silently rewrites B's secret (exit 0).  The script calls key create only for a
  user it has just found, and rgw_admin.py refuses key create for a uid ``user info`` does not
  find (a caller of the sudo rule skips the script).
* ``user create`` with an access key owned by another user fails (exit 241, "duplicate key").

Stopping (sudo 1.9.13, checked in tests/integration/test_rgw_over_ssh.py): sudo relays the TERM of
the step's ``timeout`` to its command, but the unprivileged step cannot signal a root process,
and a sudo that is KILLed (``timeout --kill-after``, the header's ``reap_step``) leaves its root
command running, reparented, with sudo's ``command_timeout`` gone with it.  rgw_admin.py
therefore runs radosgw-admin in a process group of its own and KILLs it on TERM, HUP or INT
and when its parent sudo dies (PR_SET_PDEATHSIG).  ``command_timeout`` (the step's time limit)
remains as a bound of its own: sudo sends HUP and TERM, then KILL 2 s later.

The rules pin rgw_admin.py's code: a change to components/scripts/rgw_admin.py (or a tool
path) changes the rules, which must be on the host before the next ``pulumi up`` (else sudo
refuses and the step fails, changing nothing).

Residual risk, what the SSH user can do on the RGW admin host with these rules: read the keys of
the instance's two RGW users (``user info``), create them, add key pairs of its choosing to them
or change the secret of their own access keys; run rgw_admin.py, whose code sudo fixes, with
any stdin (it reads at most 600 bytes and accepts only the two key lines).  Not: another uid,
another subcommand or option, a change to another user's key, a file, a shell.  Between
rgw_admin.py's ``user info`` check and its ``key create`` the user could be deleted by someone
else (then the key create acts on the key's owner); only an RGW administrator can delete it.
sudo matches a rule's arguments joined by single spaces, so a caller may split them differently:
no argument of these rules holds a space (:func:`sudoers_rules` refuses a uid or display name
with one), so only ``-I -c`` can be merged into one word, which python3 refuses.
"""

from __future__ import annotations

import ast
import base64
import functools
import re
import shlex
from dataclasses import dataclass
from typing import Iterable, Sequence

import pulumi
import pulumi_command as command

from components import remote, sudoers


@dataclass(frozen=True)
class RgwTools:
    """Absolute paths of what the script runs as root (sudo's secure_path and the SSH PATH differ).
    Production: Debian's ceph packages and python3.  Tests pass stand-ins."""
    radosgw_admin: str = "/usr/bin/radosgw-admin"
    python3: str = "/usr/bin/python3"

    def __post_init__(self) -> None:
        for path in (self.radosgw_admin, self.python3):
            if not path.startswith("/") or any(c.isspace() for c in path):
                raise ValueError(f"RGW tool path {path!r} must be absolute, without white space")


HELPER = "rgw_admin.py"


def rgw_admin_code() -> str:
    """components/scripts/rgw_admin.py as run: the file without its module docstring."""
    return _without_docstring(remote.script_file(HELPER))


@functools.lru_cache(maxsize=4)
def _without_docstring(source: str) -> str:
    # parsed once per text: every render asks for it on each of its privileged command lines (in
    # the unit suite's long-lived workers, CPython 3.11's ast.parse here now and then failed with
    # "SystemError: AST constructor recursion depth mismatch"; cause not pinned down)
    first = ast.parse(source).body[0]
    return "".join(source.splitlines(keepends=True)[first.end_lineno:]).lstrip("\n")


def rgw_admin_program() -> str:
    """The one argument ``python3 -I -c`` runs: rgw_admin.py base64-encoded, so that the sudoers
    rules hold it as one word (no space, newline or backslash, which a rule cannot match)."""
    encoded = base64.b64encode(rgw_admin_code().encode()).decode()
    return f'exec(__import__("base64").b64decode("{encoded}"))'


def rgw_admin_argv(tools: RgwTools, *words: str) -> tuple[str, ...]:
    """The exact command line of one privileged radosgw-admin call (what sudo runs as root)."""
    return (tools.python3, "-I", "-c", rgw_admin_program(), tools.radosgw_admin, *words)


def privileged_commands(uid: str, display_name: str, tools: RgwTools = RgwTools()) -> tuple[tuple[str, ...], ...]:
    """Every command line the script runs through sudo for ``uid``, in the order it may run them."""
    return (
        rgw_admin_argv(tools, "user", "info", f"--uid={uid}"),
        rgw_admin_argv(tools, "user", "create", f"--uid={uid}", f"--display-name={display_name}"),
        rgw_admin_argv(tools, "key", "create", f"--uid={uid}", "--key-type=s3"),
    )


def rgw_user_script(uid: str, display_name: str, *, use_sudo: bool = False, tools: RgwTools = RgwTools()) -> str:
    """Ensure RGW user ``uid`` exists and holds the key pair given on stdin (access, secret lines).

    Updates: creates the user with the pair; adds the pair to an existing user that lacks it
    (other key pairs are left and reported on stderr); rewrites the secret of our access key if
    it differs.  Ignored: display name and caps of an existing user.  Refused: an access key that
    belongs to another user.  stdout is one line, ``user UID: created|unchanged|key added|secret
    updated``; no key is ever printed.

    ``use_sudo``: the stack's ``remoteSudo`` (radosgw-admin through ``sudo -n``); False when the
    SSH user is root, and for tests that run the script as root.
    """
    return remote.script("rgw_user.sh", "RGW user", {
        "uid": uid,
        "display_name": display_name,
        "python3": tools.python3,
        "radosgw_admin": tools.radosgw_admin,
        "rgw_admin_py": rgw_admin_program(),
    }, use_sudo=use_sudo)


def kept_instructions(uid: str) -> list[str]:
    """What deleting the RGW user Command leaves (the user and its data), and the manual removal."""
    return [
        f"RGW user {uid} and its data are kept (data-bearing). To delete them by hand, on the RGW admin host:",
        f"  sudo radosgw-admin user rm --uid={shlex.quote(uid)} --purge-data",
    ]


def rgw_user_delete_script(uid: str, *, use_sudo: bool = False) -> str:
    """Deleting the resource deletes nothing (the user owns the instance's buckets): it prints
    the manual command on stderr."""
    return remote.script("rgw_user_delete.sh", "RGW user, on delete: keep the user",
                         {"notice": kept_instructions(uid)}, use_sudo=use_sudo)


# a space in an argument lets the caller of sudo split it into two with the same joined text
_ONE_WORD = re.compile(r"^\S+$")


def instance_users(cfg) -> tuple[tuple[str, str], ...]:
    """(uid, display name) of the instance's RGW users, as components/instance.py makes them:
    the Airflow logs user and the PostgreSQL backup user (a stack in an early phase uses only
    the first; the rules cover both)."""
    return ((cfg.airflow_s3_user, cfg.airflow_s3_user), (cfg.pg_s3_user, cfg.pg_s3_user))


def instance_sudoers_rules(cfg) -> sudoers.HostRules:
    """:func:`sudoers_rules` of a stack: its SSH user, both RGW users, the steps' time limit."""
    return sudoers_rules(cfg.instance, cfg.ssh_user, instance_users(cfg), cfg.command_timeout_minutes * 60)


def sudoers_rules(instance: str, user: str, uids_and_display_names: Iterable[tuple[str, str]],
                  timeout_seconds: int, tools: RgwTools = RgwTools()) -> sudoers.HostRules:
    """The RGW admin host's sudoers rules for ``instance``: exactly the command lines
    :func:`rgw_user_script` runs through sudo for each (uid, display name), for ``user``
    (``sshUser``), with sudo's command_timeout at the step's own time limit."""
    commands: list[tuple[str, ...]] = []
    users = list(uids_and_display_names)
    if not users:
        raise sudoers.SudoersError(f"sudoers for the RGW admin host of {instance}: no RGW user")
    for uid, display_name in users:
        for what, value in (("uid", uid), ("display name", display_name)):
            if not _ONE_WORD.match(value):
                raise sudoers.SudoersError(
                    f"RGW user {what} {value!r}: empty or with white space; a sudoers rule cannot pin it "
                    f"(the caller could split it into other arguments with the same text)")
        commands += privileged_commands(uid, display_name, tools)
    code = rgw_admin_code().rstrip("\n").splitlines()
    comments = (
        "radosgw-admin runs only through components/scripts/rgw_admin.py, the CODE after python3 -I -c,",
        "base64-encoded (decode: cut the quoted text out of exec(...) and pipe it to base64 -d).",
        "The key pair comes on its stdin; it builds the CEPH_ARGS radosgw-admin gets, so no",
        "env_keep: a caller's CEPH_ARGS would add any radosgw-admin option (components/rgw_user.py).",
        f"Users: {', '.join(uid for uid, _ in users)}.  The code CODE decodes to:",
        *(f"    {line}" if line else "" for line in code),
    )
    return sudoers.HostRules(
        host=f"RGW admin host (rgwAdminHost) of airflow-{instance}",
        user=user,
        alias=sudoers.alias_for(instance, "rgw"),
        commands=tuple(commands),
        command_timeout_seconds=timeout_seconds,
        comments=comments,
    )


key_stdin = remote.key_pair_stdin  # the script's stdin: access key, then secret key


@dataclass(frozen=True)
class RgwUserArgs:
    uid: str
    display_name: str
    access_key: pulumi.Input[str]
    secret_key: pulumi.Input[str]
    conn: command.remote.ConnectionArgs
    use_sudo: bool
    timeout_minutes: int = 10
    tools: RgwTools = RgwTools()
    # the preconditions (the admin_ng namespace): nothing runs on the remote host before them
    depends_on: Sequence[pulumi.Input[pulumi.Resource]] = ()


class RgwUser(pulumi.ComponentResource):
    """An RGW user holding the program's S3 key pair (data-bearing: protected, never deleted)."""

    command: command.remote.Command

    def __init__(self, name: str, args: RgwUserArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dpe:airflow:RgwUser", name, None, opts)
        self.command = remote.remote_command(
            f"{name}-user",
            conn=args.conn,
            script=rgw_user_script(args.uid, args.display_name, use_sudo=args.use_sudo, tools=args.tools),
            delete_script=rgw_user_delete_script(args.uid, use_sudo=args.use_sudo),
            # the script itself runs as the SSH user; only radosgw-admin goes through sudo
            # a changed key pair changes stdin: without an `update` command pulumi-command re-runs
            # `create` (an update, no replacement, which protect would refuse)
            stdin=key_stdin(args.access_key, args.secret_key),
            touches_secrets=True,
            timeout_minutes=args.timeout_minutes,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                protect=True,
                # create and delete act on the same uid: never let a replacement's delete run
                # after the new create (https://github.com/pulumi/pulumi-command/issues/855)
                delete_before_replace=True,
            ),
        )
        self.register_outputs({"uid": args.uid})
