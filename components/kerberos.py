"""Kerberos principals and the instance keytab (runbook: "Issue a Kerberos keytab").

The runbook runs, on the KDC host::

    sudo kadmin.local addprinc -randkey <runs-as>/<fqdn>@WIKIMEDIA    (and airflow/..., HTTP/...)
    sudo kadmin.local ktadd -norandkey -k <file> <the three principals>
    base64 <file>

``keytab_script`` makes that idempotent and loud.  What it guards against was measured on a
real MIT KDC (krb5 1.20, shared/reference/kerberos-postgres-study.md §2-§4, §6):

* ``kadmin.local -q`` always exits 0, so the argument form is used;
* ``addprinc`` of an existing principal exits 1, so ``getprinc`` decides first, and only the
  "Principal does not exist" answer leads to ``addprinc`` (any other failure aborts);
* kadmin.local writes to the database of its *default* realm whatever the principal's realm
  says, so every call carries ``-r REALM`` and every name is fully qualified; the script also
  checks that ``krbtgt/REALM@REALM`` exists, i.e. that the database it opened serves REALM;
* plain ``ktadd`` draws new keys (a new kvno) and breaks every keytab already deployed, so the
  only export is ``ktadd -norandkey``;
* ``ktadd`` appends to an existing file, so it writes into a fresh ``mktemp -d``;
* ``ktadd`` exits 0 when it skips a missing principal (and writes no file when all are
  missing), so ``klist -k`` must find every principal in the result;
* ``ktadd`` prints "Entry for principal ..." on stdout, which would corrupt the captured base64;
* each keytab entry carries its export time, so two exports differ; the timestamps are zeroed
  (kinit still works) and a re-run gives byte-identical output, hence no diff in Pulumi.

Principals are never deleted by this program (``delete_script`` only says how to): they are
shared with the running instance, and a deleted principal cannot be brought back with the
same keys.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Sequence

import pulumi
import pulumi_command as command

from components import remote

# kadmin.local's answer (on stderr, rc 1) to getprinc of a principal that is not in the database
NOT_FOUND = "Principal does not exist"

# Zero the 32-bit timestamp of every entry of a version 0x0502 keytab, in place.  The layout
# is MIT's keytab file format: after the 2-byte version, each record is a signed 32-bit size
# (negative: a hole left by a removed entry) followed by num_components (16 bits), the realm
# and the components (16-bit length + bytes each), name_type (32 bits) and the timestamp.
# Written for any python3 >= 3.5, which every Debian KDC host has.
_NORMALIZE_PY = r"""
import struct
import sys

path = sys.argv[1]
with open(path, "rb") as f:
    data = bytearray(f.read())
if data[:2] != b"\x05\x02":
    sys.exit("%s: not a version 0x0502 keytab" % path)
pos, entries = 2, 0
while pos < len(data):
    if pos + 4 > len(data):
        sys.exit("%s: truncated record at byte %d" % (path, pos))
    (size,) = struct.unpack_from(">i", data, pos)
    pos += 4
    if size < 0:
        pos += -size
        continue
    end = pos + size
    if size == 0 or end > len(data):
        sys.exit("%s: bad record size %d at byte %d" % (path, size, pos - 4))
    p = pos
    (components,) = struct.unpack_from(">H", data, p)
    p += 2
    for _ in range(components + 1):  # the realm, then each component
        (length,) = struct.unpack_from(">H", data, p)
        p += 2 + length
    p += 4  # name_type
    if p + 4 > end:
        sys.exit("%s: entry at byte %d is too short" % (path, pos - 4))
    data[p:p + 4] = b"\0\0\0\0"
    entries += 1
    pos = end
if entries == 0:
    sys.exit("%s: no entries" % path)
with open(path, "wb") as f:
    f.write(data)
"""


def principals(runs_as_primary: str, service_fqdn: str, realm: str) -> list[str]:
    """The instance's principals: the UNIX user tasks run as, then airflow and HTTP."""
    return [
        f"{runs_as_primary}/{service_fqdn}@{realm}",
        f"airflow/{service_fqdn}@{realm}",
        f"HTTP/{service_fqdn}@{realm}",
    ]


def _check(realm: str, names: Sequence[str]) -> None:
    if not realm:
        raise ValueError("the Kerberos realm is empty")
    if not names:
        raise ValueError("no Kerberos principals to export")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate Kerberos principals in {list(names)!r}")
    for name in names:
        if name.startswith("-"):
            raise ValueError(f"Kerberos principal {name!r} would be read as an option by kadmin.local")
        # kadmin.local would silently file a principal of another realm in REALM's database
        if not name.endswith(f"@{realm}") or name == f"@{realm}":
            raise ValueError(f"Kerberos principal {name!r} is not fully qualified in realm {realm!r}")


def keytab_script(realm: str, principals: Sequence[str]) -> str:
    """Bash for the KDC host: ensure ``principals`` exist, print base64 of their keytab.

    stdout carries only ``base64 -w0`` of the keytab (a secret); progress goes to stderr.
    Re-runs print byte-identical output and never rotate a key.
    """
    _check(realm, principals)
    r = shlex.quote(realm)
    krbtgt = shlex.quote(f"krbtgt/{realm}@{realm}")
    listed = " ".join(shlex.quote(p) for p in principals)
    return remote.header(f"Kerberos principals and keytab in realm {realm}") + f"""\
# kadmin.local's messages are matched below
export LC_ALL=C

principals=({listed})

# kadmin.local opens the database of the realm given with -r; if this host's KDC does not
# serve that realm it falls back to a compiled-in path or another realm's database, so make
# sure the database holds the realm's own ticket-granting principal before writing to it.
if ! out="$(kadmin.local -r {r} getprinc {krbtgt} 2>&1)"; then
    printf 'realm %s is not served by the KDC database on this host (kadmin.local -r %s getprinc %s):\\n%s\\n' \\
        {r} {r} {krbtgt} "$out" >&2
    exit 1
fi

ensure_principal() {{
    local principal="$1" out
    if out="$(kadmin.local -r {r} getprinc "$principal" 2>&1)"; then
        printf 'exists: %s\\n' "$principal" >&2
    elif [[ "$out" == *{shlex.quote(NOT_FOUND)}* ]]; then
        # -randkey: nobody ever types a password for a service principal
        if ! out="$(kadmin.local -r {r} addprinc -randkey "$principal" 2>&1)"; then
            printf 'addprinc %s failed:\\n%s\\n' "$principal" "$out" >&2
            exit 1
        fi
        printf 'created: %s\\n' "$principal" >&2
    else
        printf 'getprinc %s failed:\\n%s\\n' "$principal" "$out" >&2
        exit 1
    fi
}}

for principal in "${{principals[@]}}"; do
    ensure_principal "$principal"
done

workdir="$(mktemp -d)"
trap 'rm -rf -- "$workdir"' EXIT
trap 'reap_step; exit 1' HUP INT TERM
keytab="$workdir/keytab"

# -norandkey: export the current keys; a plain ktadd would draw new ones and break every
# keytab already deployed.  ktadd lists its entries on stdout, which is reserved for the result.
kadmin.local -r {r} ktadd -norandkey -k "$keytab" "${{principals[@]}}" >&2

if [[ ! -s "$keytab" ]]; then
    echo "ktadd wrote no keytab (it skips principals that do not exist and still exits 0)" >&2
    exit 1
fi

# every entry carries its export time; zero it so that a re-run prints the same bytes
python3 - "$keytab" <<'PY'
{_NORMALIZE_PY.strip()}
PY

# ktadd exits 0 when it skips a principal, so check the result holds every one of them
if ! listing="$(klist -k "$keytab")"; then
    echo "klist -k cannot read the exported keytab" >&2
    exit 1
fi
names="$(sed -n 's/^ *[0-9][0-9]* //p' <<<"$listing")"
missing=0
for principal in "${{principals[@]}}"; do
    if ! grep -Fxq -- "$principal" <<<"$names"; then
        printf 'missing from the exported keytab: %s\\n' "$principal" >&2
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
"""


def kept_instructions(realm: str, principals: Sequence[str]) -> list[str]:
    """What deleting the keytab Command leaves, and how an operator removes it by hand.

    Printed on stderr by the delete command, and in the manual steps: pulumi-command shows a
    delete's output only while it runs (or in the error if it fails), so the manual steps are
    where it reliably reaches the operator."""
    r = shlex.quote(realm)
    return [
        f"Kerberos principals are kept (realm {realm}); deleting one breaks every keytab that holds it.",
        "Once no instance uses them, an operator may delete them on the KDC host by hand:",
        *(f"  sudo kadmin.local -r {r} delprinc -force {shlex.quote(p)}" for p in principals),
    ]


def delete_script(realm: str, principals: Sequence[str]) -> str:
    """Bash run when the keytab Command is deleted: deletes nothing, says how to, on stderr.

    The principals back the running instance's keytab (and possibly other hosts' keytabs);
    a deleted principal comes back only with new keys.  Removing them is an operator's call.
    """
    _check(realm, principals)
    return remote.notice_script(f"Kerberos principals in realm {realm}: kept on delete", kept_instructions(realm, principals))


@dataclass(frozen=True)
class KerberosKeytabArgs:
    realm: str
    principals: Sequence[str]
    conn: command.remote.ConnectionArgs
    use_sudo: bool
    timeout_minutes: int = 10
    # the preconditions (the admin_ng namespace): nothing runs on the remote host before them
    depends_on: Sequence[pulumi.Input[pulumi.Resource]] = ()


class KerberosKeytab(pulumi.ComponentResource):
    """The principals on the KDC host and the base64 of their keytab (a secret)."""

    command: command.remote.Command
    keytab_base64: pulumi.Output[str]

    def __init__(self, name: str, args: KerberosKeytabArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dpe:airflow:KerberosKeytab", name, None, opts)
        names = list(args.principals)
        self.command = remote.remote_command(
            f"{name}-keytab",
            conn=args.conn,
            script=keytab_script(args.realm, names),
            use_sudo=args.use_sudo,
            touches_secrets=True,
            delete_script=delete_script(args.realm, names),
            # another realm or another set of principals is another keytab
            triggers=[args.realm, *names],
            timeout_minutes=args.timeout_minutes,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                # losing this resource would lose the keytab the instance runs with
                protect=True,
                delete_before_replace=True,
            ),
        )
        self.keytab_base64 = pulumi.Output.secret(self.command.stdout.apply(lambda out: (out or "").strip()))
        self.register_outputs({"keytab_base64": self.keytab_base64})
