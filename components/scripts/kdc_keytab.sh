#!/bin/bash
# shellcheck shell=bash
# The instance's Kerberos principals and keytab, on the KDC host, run as the SSH user
# (components/kerberos.py says why each step is there and why the spool is safe).
# Filled in by the program: realm, krbtgt (krbtgt/REALM@REALM), principals (array), not_found
# (kadmin.local's answer for a missing principal), the privileged tools' absolute paths
# (timeout_bin, kadmin_local, install_bin, rm_bin, cat_bin), tool_timeout and tool_kill_after
# (seconds), the root-only spool (spool_root, spool_dir, spool_keytab), normalize_py
# (components/scripts/kdc_keytab_normalize.py) and the sudo array.
# stdout carries only the base64 of the keytab (a secret), printed last; progress goes to stderr.

# kadmin.local's messages are matched below
export LC_ALL=C

# Every privileged call, exactly as the host's sudoers rules list it: root's own GNU timeout
# around the tool.  As root it leads the tool's process group and, on its deadline or on the
# TERM sudo relays from this step's timeout, TERMs the whole group and KILLs it 1 s later.
as_root() {
    "${sudo[@]}" "$timeout_bin" "--kill-after=${tool_kill_after}s" "${tool_timeout}s" "$@"
}

# kadmin.local opens the database of the realm given with -r; if this host's KDC does not
# serve that realm it falls back to a compiled-in path or another realm's database, so make
# sure the database holds the realm's own ticket-granting principal before writing to it.
if ! out="$(as_root "$kadmin_local" -r "$realm" getprinc "$krbtgt" 2>&1)"; then
    printf 'realm %s is not served by the KDC database on this host (kadmin.local -r %s getprinc %s):\n%s\n' \
        "$realm" "$realm" "$krbtgt" "$out" >&2
    exit 1
fi

# root writes the keytab under spool_root: nobody but root may be able to plant a file or a
# symlink there (checked before anything is created)
if [[ -L "$spool_root" ]]; then
    printf 'the keytab spool %s is a symlink; it must be a directory only root can write to\n' "$spool_root" >&2
    exit 1
fi
if [[ -e "$spool_root" ]]; then
    owner_mode="$(stat -c '%u %a' -- "$spool_root")"
    if [[ ! -d "$spool_root" || "${owner_mode% *}" != 0 ]] || (( 8#${owner_mode#* } & 8#022 )); then
        printf 'the keytab spool %s (uid and mode: %s) must be a directory owned by root that no group or other user can write to\n' \
            "$spool_root" "$owner_mode" >&2
        exit 1
    fi
fi

ensure_principal() {
    local principal="$1" out
    if out="$(as_root "$kadmin_local" -r "$realm" getprinc "$principal" 2>&1)"; then
        printf 'exists: %s\n' "$principal" >&2
    elif [[ "$out" == *"$not_found"* ]]; then
        # -randkey: nobody ever types a password for a service principal
        if ! out="$(as_root "$kadmin_local" -r "$realm" addprinc -randkey "$principal" 2>&1)"; then
            printf 'addprinc %s failed:\n%s\n' "$principal" "$out" >&2
            exit 1
        fi
        printf 'created: %s\n' "$principal" >&2
    else
        printf 'getprinc %s failed:\n%s\n' "$principal" "$out" >&2
        exit 1
    fi
}

for principal in "${principals[@]}"; do
    ensure_principal "$principal"
done

workdir="$(mktemp -d)"
spooled=0
cleanup() {
    rm -rf -- "$workdir"
    if [[ "$spooled" -eq 1 ]]; then
        as_root "$rm_bin" -f -- "$spool_keytab" || true
    fi
}
trap cleanup EXIT
keytab="$workdir/keytab"

# ktadd appends to an existing file: export into a fixed path in a directory only root can
# write to, after removing whatever an interrupted run may have left there
as_root "$install_bin" -d -m 0700 "$spool_dir"
spooled=1
as_root "$rm_bin" -f -- "$spool_keytab"
# -norandkey: export the current keys; a plain ktadd would draw new ones and break every
# keytab already deployed.  ktadd lists its entries on stdout, which is reserved for the result.
as_root "$kadmin_local" -r "$realm" ktadd -norandkey -k "$spool_keytab" "${principals[@]}" >&2
# root's copy comes back into this user's private directory, then goes
if ! as_root "$cat_bin" -- "$spool_keytab" >"$keytab" || [[ ! -s "$keytab" ]]; then
    echo "ktadd wrote no keytab (it skips principals that do not exist and still exits 0)" >&2
    exit 1
fi
as_root "$rm_bin" -f -- "$spool_keytab"
spooled=0

# every entry carries its export time; zero it so that a re-run prints the same bytes
python3 -c "$normalize_py" "$keytab"

# ktadd exits 0 when it skips a principal, so check the result holds every one of them
if ! listing="$(klist -k "$keytab")"; then
    echo "klist -k cannot read the exported keytab" >&2
    exit 1
fi
names="$(sed -n 's/^ *[0-9][0-9]* //p' <<<"$listing")"
missing=0
for principal in "${principals[@]}"; do
    if ! grep -Fxq -- "$principal" <<<"$names"; then
        printf 'missing from the exported keytab: %s\n' "$principal" >&2
        missing=1
    fi
done
if [[ "$missing" -ne 0 ]]; then
    exit 1
fi

# the one secret on stdout, and the last thing the script does: pulumi-command puts stdout in its
# error text when a command fails (pulumi-command v1.2.1 remote/commandOutputs.go L100-102), so
# nothing may reach stdout before every check has passed
encoded="$(base64 -w0 "$keytab")"
printf '%s' "$encoded"
