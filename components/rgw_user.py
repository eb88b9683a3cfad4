"""Ceph RGW users (runbook: "Generate the S3 keypairs"), run with radosgw-admin on the RGW admin host.

The runbook runs ``radosgw-admin user create`` and copies the generated keys out of its JSON.
Here the program supplies the keys (pulumi-random, ``generated_secrets.s3_key_pair``) so that a
re-run converges on the same pair: radosgw-admin ADDS a generated key to the user's keyring on
every ``key create``, it never replaces one.

How the keys reach radosgw-admin without a command line: the script reads them from stdin
(two lines: access key, then secret key) and hands them over in the ``CEPH_ARGS`` environment
variable of the one radosgw-admin process that needs them; every Ceph tool appends
``CEPH_ARGS`` to its arguments (``env_to_vec``).  /proc/PID/cmdline is world-readable, while
/proc/PID/environ is readable only by the process owner (root here).  Checked on Ceph 16.2.15
(tests/integration/test_rgw.py polls every process's argv while the script runs).

radosgw-admin facts the script relies on (all checked against the real tool, Ceph 16.2.15):

* ``user info --uid`` exits 22 for an unknown user; its JSON holds every secret key.
* ``key create --key-type=s3`` with a given access key that the user already has replaces that
  key's secret in place (no second pair); with a new access key it adds a pair.
* ``key create --uid=A`` with an access key owned by ANOTHER user B silently rewrites B's secret
  (exit 0): the script looks the access key up first (``user info`` with the key in CEPH_ARGS;
  exit 13 "Permission denied" means no user has it) and refuses to touch another user's key.
* ``user create`` with an access key owned by another user fails (exit 241, "duplicate key").
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Sequence

import pulumi
import pulumi_command as command

from components import remote

USER_SCRIPT = r"""
uid={uid}
display_name={display_name}

fail() {{ printf '%s: %s\n' "$0" "$*" >&2; exit 1; }}

# the keys arrive on stdin, two lines: access key, then secret key (never argv, never this text)
IFS= read -r access_key || fail "stdin: expected the access key on line 1"
IFS= read -r secret_key || [[ -n $secret_key ]] || fail "stdin: expected the secret key on line 2"
# alphanumeric keys (pulumi-random, special=False) need no escaping in CEPH_ARGS (split on
# whitespace), JSON or SigV4 credential scopes
[[ $access_key =~ ^[A-Za-z0-9]{{16,128}}$ ]] || fail "the access key must be 16-128 letters/digits"
[[ $secret_key =~ ^[A-Za-z0-9+/]{{20,128}}$ ]] || fail "the secret key must be 20-128 letters/digits/+/"

errors=$(mktemp)
trap 'rm -f "$errors"' EXIT

# radosgw-admin with the key pair as extra arguments through CEPH_ARGS (ceph env_to_vec), not argv
radosgw_admin_with_keys() {{
    CEPH_ARGS="${{CEPH_ARGS:+$CEPH_ARGS }}--access-key=$access_key --secret-key=$secret_key" \
        radosgw-admin "$@" </dev/null
}}

# `user info` JSON (secrets included) goes into $info, never to our stdout/stderr; sets $info_rc
load_user() {{
    info_rc=0
    info=$(radosgw-admin user info --uid="$uid" </dev/null 2>"$errors") || info_rc=$?
    if [[ $info_rc -ne 0 && $info_rc -ne 22 ]]; then
        cat "$errors" >&2
        fail "radosgw-admin user info failed (exit $info_rc)"
    fi
}}

# parse $info's "keys" array (pretty JSON, one field a line) with bash builtins only, so no secret
# reaches a command line: has_key / same_secret for our pair, s3_keys = number of S3 key pairs
parse_keys() {{
    has_key=no same_secret=no s3_keys=0
    local line current= in_keys=no
    local re_start='^[[:space:]]*"keys": \[$'
    local re_end='^[[:space:]]*\],?$'
    local re_access='^[[:space:]]*"access_key": "([^"]*)",?$'
    local re_secret='^[[:space:]]*"secret_key": "([^"]*)",?$'
    while IFS= read -r line; do
        if [[ $in_keys == no ]]; then
            if [[ $line =~ $re_start ]]; then in_keys=yes; fi
        elif [[ $line =~ $re_end ]]; then
            break
        elif [[ $line =~ $re_access ]]; then
            current=${{BASH_REMATCH[1]}}
            s3_keys=$((s3_keys + 1))
        elif [[ $line =~ $re_secret && $current == "$access_key" ]]; then
            has_key=yes
            if [[ ${{BASH_REMATCH[1]}} == "$secret_key" ]]; then same_secret=yes; fi
        fi
    done <<<"$info"
    return 0
}}

load_user
if [[ $info_rc -eq 22 ]]; then
    radosgw_admin_with_keys user create --uid="$uid" --display-name="$display_name" >/dev/null \
        || fail "radosgw-admin user create failed"
    result=created
else
    parse_keys
    if [[ $has_key == yes && $same_secret == yes ]]; then
        result=unchanged
    elif [[ $has_key == yes ]]; then
        # key create with an access key the user has replaces that key's secret in place
        radosgw_admin_with_keys key create --uid="$uid" --key-type=s3 >/dev/null \
            || fail "radosgw-admin key create (secret update) failed"
        result="secret updated"
    else
        # key create with another user's access key would rewrite THAT user's secret: look it up
        owner_rc=0
        CEPH_ARGS="${{CEPH_ARGS:+$CEPH_ARGS }}--access-key=$access_key" \
            radosgw-admin user info </dev/null >/dev/null 2>"$errors" || owner_rc=$?
        case $owner_rc in
            13) ;;  # "user.init failed: (13) Permission denied": no user has this access key
            0) fail "the access key is already in use (by another RGW user, or this user's keys could not be parsed); refusing to change it" ;;
            *) cat "$errors" >&2; fail "radosgw-admin user info by access key failed (exit $owner_rc)" ;;
        esac
        other_keys=$s3_keys
        radosgw_admin_with_keys key create --uid="$uid" --key-type=s3 >/dev/null \
            || fail "radosgw-admin key create failed"
        result="key added"
        if [[ $other_keys -gt 0 ]]; then
            printf '%s: user %s already had %d other S3 key pair(s), left in place; remove unused ones with: radosgw-admin key rm --uid=%q --key-type=s3 --access-key=...\n' \
                "$0" "$uid" "$other_keys" "$uid" >&2
        fi
    fi
fi

# verify: the user now has exactly our pair (anything else is partial work)
load_user
[[ $info_rc -eq 0 ]] || fail "user $uid missing after '$result'"
parse_keys
[[ $has_key == yes && $same_secret == yes ]] || fail "user $uid does not hold the supplied key pair after '$result'"
printf 'user %s: %s\n' "$uid" "$result"
"""

def rgw_user_script(uid: str, display_name: str) -> str:
    """Ensure RGW user ``uid`` exists and holds the key pair given on stdin (access, secret lines).

    Updates: creates the user with the pair; adds the pair to an existing user that lacks it
    (other key pairs are left and reported on stderr); rewrites the secret of our access key if
    it differs.  Ignored: display name and caps of an existing user.  Refused: an access key that
    belongs to another user.  stdout is one line, ``user UID: created|unchanged|key added|secret
    updated``; no key is ever printed.
    """
    return remote.header("RGW user") + USER_SCRIPT.format(
        uid=shlex.quote(uid), display_name=shlex.quote(display_name)
    )


def kept_instructions(uid: str) -> list[str]:
    """What deleting the RGW user Command leaves (the user and its data), and the manual removal."""
    return [
        f"RGW user {uid} and its data are kept (data-bearing). To delete them by hand, on the RGW admin host:",
        f"  sudo radosgw-admin user rm --uid={shlex.quote(uid)} --purge-data",
    ]


def rgw_user_delete_script(uid: str) -> str:
    """Deleting the resource deletes nothing (the user owns the instance's buckets): it prints
    the manual command on stderr."""
    return remote.notice_script("RGW user, on delete: keep the user", kept_instructions(uid))


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
            script=rgw_user_script(args.uid, args.display_name),
            delete_script=rgw_user_delete_script(args.uid),
            use_sudo=args.use_sudo,
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
