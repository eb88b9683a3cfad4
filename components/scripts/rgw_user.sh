#!/bin/bash
# shellcheck shell=bash
# The RGW user step ("Generate the S3 keypairs") on the RGW admin host, run as the SSH user
# (components/rgw_user.py says why each step is there).
# Filled in by the program: uid, display_name, the absolute paths python3 and radosgw_admin,
# rgw_admin_py (components/scripts/rgw_admin.py as the one-line program `python3 -I -c` runs as
# root) and the sudo array.
# stdin: the access key, then the secret key, one a line.  stdout: one line, "user UID: created|
# unchanged|key added|secret updated"; no key is ever printed, on stdout or stderr.

fail() { printf '%s: %s\n' "$0" "$*" >&2; exit 1; }

# the keys arrive on stdin, two lines: access key, then secret key (never argv, never this text)
IFS= read -r access_key || fail "stdin: expected the access key on line 1"
IFS= read -r secret_key || [[ -n $secret_key ]] || fail "stdin: expected the secret key on line 2"
# alphanumeric keys (pulumi-random, special=False) need no escaping in CEPH_ARGS (split on
# whitespace), JSON or SigV4 credential scopes; rgw_admin.py checks the same shapes again
[[ $access_key =~ ^[A-Za-z0-9]{16,128}$ ]] || fail "the access key must be 16-128 letters/digits"
[[ $secret_key =~ ^[A-Za-z0-9+/]{20,128}$ ]] || fail "the secret key must be 20-128 letters/digits/+/"

errors=$(mktemp)
trap 'rm -f "$errors"' EXIT

# radosgw-admin as root: exactly the argv the host's sudoers rules list (rgw_user.sudoers_rules)
rgw_admin() {
    "${sudo[@]}" "$python3" -I -c "$rgw_admin_py" "$radosgw_admin" "$@"
}

# the forms that take the key pair: it goes to rgw_admin.py on stdin (a here-string: no argv,
# no environment), which hands it to radosgw-admin in CEPH_ARGS
rgw_admin_with_keys() {
    rgw_admin "$@" <<<"$access_key"$'\n'"$secret_key"
}

# `user info` JSON (secrets included) goes into $info, never to our stdout/stderr; sets $info_rc
load_user() {
    info_rc=0
    info=$(rgw_admin user info --uid="$uid" </dev/null 2>"$errors") || info_rc=$?
    if [[ $info_rc -ne 0 && $info_rc -ne 22 ]]; then
        cat "$errors" >&2
        fail "radosgw-admin user info failed (exit $info_rc)"
    fi
}

# parse $info's "keys" array (pretty JSON, one field a line) with bash builtins only, so no secret
# reaches a command line: has_key / same_secret for our pair, s3_keys = number of S3 key pairs
parse_keys() {
    has_key=no same_secret=no s3_keys=0
    local line current='' in_keys=no
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
            current=${BASH_REMATCH[1]}
            s3_keys=$((s3_keys + 1))
        elif [[ $line =~ $re_secret && $current == "$access_key" ]]; then
            has_key=yes
            if [[ ${BASH_REMATCH[1]} == "$secret_key" ]]; then same_secret=yes; fi
        fi
    done <<<"$info"
    return 0
}

# a keyed radosgw-admin call; 241 (ERR_KEY_EXIST): another RGW user holds the access key
with_keys_or_fail() {
    local what=$1 rc=0
    shift
    rgw_admin_with_keys "$@" >/dev/null 2>"$errors" || rc=$?
    case $rc in
        0) ;;
        241) fail "the access key is already in use by another RGW user; refusing to change it ($what)" ;;
        *) cat "$errors" >&2; fail "radosgw-admin $what failed (exit $rc)" ;;
    esac
}

load_user
if [[ $info_rc -eq 22 ]]; then
    # radosgw-admin refuses an access key another user holds (exit 241, "duplicate key")
    with_keys_or_fail "user create" user create --uid="$uid" --display-name="$display_name"
    result=created
else
    parse_keys
    if [[ $has_key == yes && $same_secret == yes ]]; then
        result=unchanged
    elif [[ $has_key == yes ]]; then
        # key create with an access key the user has replaces that key's secret in place
        with_keys_or_fail "key create (secret update)" key create --uid="$uid" --key-type=s3
        result="secret updated"
    else
        # for an existing user radosgw-admin refuses another user's access key (exit 241);
        # rgw_admin.py refuses key create for a user that does not exist
        other_keys=$s3_keys
        with_keys_or_fail "key create" key create --uid="$uid" --key-type=s3
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
