"""Kerberos principals and the instance keytab (runbook: "Issue a Kerberos keytab").

The runbook runs, on the KDC host::

    sudo kadmin.local addprinc -randkey <runs-as>/<fqdn>@WIKIMEDIA    (and airflow/..., HTTP/...)
    sudo kadmin.local ktadd -norandkey -k <file> <the three principals>
    base64 <file>

``keytab_script`` (components/scripts/kdc_keytab.sh, filled in by ``remote.script``) makes that
idempotent and loud.  What it guards against was measured on a real MIT KDC (krb5 1.20,
shared/reference/kerberos-postgres-study.md §2-§4, §6):

* ``kadmin.local -q`` always exits 0, so the argument form is used;
* ``addprinc`` of an existing principal exits 1, so ``getprinc`` decides first, and only the
  "Principal does not exist" answer leads to ``addprinc`` (any other failure aborts);
* kadmin.local writes to the database of its *default* realm whatever the principal's realm
  says, so every call carries ``-r REALM`` and every name is fully qualified; the script also
  checks that ``krbtgt/REALM@REALM`` exists, i.e. that the database it opened serves REALM;
* plain ``ktadd`` draws new keys (a new kvno) and breaks every keytab already deployed, so the
  only export is ``ktadd -norandkey``;
* ``ktadd`` appends to an existing file, so it writes into a file removed just before (and the
  normalizer refuses a keytab holding two entries for one principal, kvno and enctype);
* ``ktadd`` exits 0 when it skips a missing principal (and writes no file when all are
  missing), so ``klist -k`` must find every principal in the result;
* ``ktadd`` prints "Entry for principal ..." on stdout, which would corrupt the captured base64;
* each keytab entry carries its export time, so two exports differ; the timestamps are zeroed
  (components/scripts/kdc_keytab_normalize.py; kinit still works) and a re-run gives
  byte-identical output, hence no diff in Pulumi.

Least privilege (issue 14).  The script runs as the SSH user; only these go through sudo, each
with arguments fixed in advance and listed exactly by ``sudoers_rules`` (built from the same
values as the script, so the two cannot drift):

* ``kadmin.local -r REALM getprinc krbtgt/REALM@REALM``, and ``getprinc`` / ``addprinc -randkey``
  of each of the instance's three principals: nothing else of kadmin (no delprinc, no cpw, no
  ktadd without -norandkey, no -q);
* ``kadmin.local -r REALM ktadd -norandkey -k SPOOL/<service fqdn>/keytab <the three principals>``;
* ``install -d -m 0700 SPOOL/<service fqdn>``, ``rm -f -- SPOOL/<service fqdn>/keytab`` and
  ``cat -- SPOOL/<service fqdn>/keytab``, SPOOL being ``/var/lib/airflow-keytabs``.

Why the keytab path is safe.  kadmin.local runs as root and writes wherever ``-k`` says,
appending to what is there, following symlinks.  So ``-k`` never names a place the SSH user can
reach: it is a fixed path, in the rule itself, inside a directory created by root (the
``install -d`` rule) with mode 0700, under ``/var/lib/airflow-keytabs`` (created by the same
``install -d`` as root, under root's ``/var/lib``).  Nobody but root can create, replace or link
anything on that path, so no symlink or hard link can redirect root's write, and the user cannot
name another file: the rules fix every argument (``sudo -n kadmin.local ... -k /tmp/x`` is
refused).  The script also refuses to run when ``/var/lib/airflow-keytabs`` exists but is not a
root-owned directory closed to group and others (a hand-made spool another user could write
to), before it creates anything.  ``rm -f`` first, so ktadd starts a fresh file whatever an
interrupted run left; root's copy is read back with the ``cat`` rule into the user's own
``mktemp -d`` directory (mode 0700) and removed at once (and by the EXIT trap on any failure);
everything after that (normalizing, ``klist -k``, base64) runs as the user on its own copy.
Two runs for one instance at the same time (Pulumi's stack lock prevents it; an operator by hand
might not) can only fail: one removes the other's file (``ktadd wrote no keytab``) or the file
holds both exports (refused by the normalizer); neither prints a wrong keytab.  What the user
gains over the runbook's full root: the keytab it is meant to carry, and nothing else.

Why every privileged tool runs under root's own ``timeout``.  What sudo 1.9.13 (Debian 12) does
when the step times out, read in its source (src/exec_nopty.c, src/exec.c, src/exec_pty.c at
v1.9.13p3) and measured here (tests/integration/test_kdc_over_ssh.py):

* over SSH without a pty sudo has no terminal, so it never uses a pty, even with ``use_pty``
  (``pty_setup`` needs ``/dev/tty``): the command runs in sudo's own process group, which is
  the step's (remote.wrap's ``timeout`` leads it);
* a TERM sent to sudo by a process outside sudo's or the command's own group (the step's
  ``timeout``) is relayed, to the command's PID only (``signal_cb_nopty``);
* ``command_timeout``: HUP and TERM to the command's PID, 2 s later KILL to that PID only
  (``terminate_command(pid, false)``): a child the tool started survives it, as root (measured);
* sudo itself runs with the SSH user's real uid, so the step's KILL (timeout's ``--kill-after``)
  kills sudo, which then neither relays nor enforces ``command_timeout``: the root tool is left
  running, forever if it ignores TERM (measured: ``[sudo] <defunct>``, the root tool alive);
* a root process left running also keeps the session's stdout open, so sshd never closes the
  channel and pulumi-command's ``session.Run`` never returns (measured: the session was still
  open at the test client's deadline).

So each rule's command is ``/usr/bin/timeout --kill-after=1s <S>s <tool> <args>`` with S the
step's timeout: GNU timeout, as root, makes itself the leader of a new process group for the
tool; on its own deadline, or on the TERM sudo relays from the step's timeout, it TERMs the whole
group and KILLs it 1 s later, as root, so nothing the tool started survives, even when sudo
itself has been KILLed meanwhile.  ``command_timeout`` stays at S as the rules' own bound; its
KILL of timeout's PID comes 2 s after its TERM, later than timeout's 1 s, so it cannot cut the
group kill short.  The kill-after (1 s) is far below remote.wrap's (30 s): the step ends about
1 s after its deadline, before its own KILL could orphan anything.

Principals are never deleted by this program (``delete_script`` only says how to): they are
shared with the running instance, and a deleted principal cannot be brought back with the
same keys.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import pulumi
import pulumi_command as command

from components import remote, sudoers

if TYPE_CHECKING:
    from components.config import InstanceConfig

# kadmin.local's answer (on stderr, rc 1) to getprinc of a principal that is not in the database
NOT_FOUND = "Principal does not exist"
# root's timeout KILLs the tool's group this long after its TERM: less than sudo's 2 s between
# command_timeout's TERM and KILL, and far less than remote.wrap's kill-after
TOOL_KILL_AFTER_SECONDS = 1

_PATH = re.compile(r"^(/[A-Za-z0-9._+-]+)+$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")
_INSTANCE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
# sudo matches a command's arguments joined by spaces, and reads a backslash as an escape: a name
# holding white space, a backslash or a control character cannot be listed exactly
_UNLISTABLE = re.compile(r"[\s\\\x00-\x1f\x7f]")


@dataclass(frozen=True)
class KdcTools:
    """Absolute paths on the KDC host: the privileged tools (never looked up on PATH: sudo's
    secure_path and a non-login SSH session's PATH differ) and the root-only keytab spool.
    The defaults are Debian 12's; the integration tests point kadmin_local at a root-owned
    wrapper of the real one and spool_root at a root-owned test directory."""

    kadmin_local: str = "/usr/sbin/kadmin.local"
    timeout: str = "/usr/bin/timeout"
    install: str = "/usr/bin/install"
    rm: str = "/usr/bin/rm"
    cat: str = "/usr/bin/cat"
    spool_root: str = "/var/lib/airflow-keytabs"

    def __post_init__(self) -> None:
        for name in ("kadmin_local", "timeout", "install", "rm", "cat", "spool_root"):
            path = getattr(self, name)
            if not _PATH.match(path) or "/../" in f"{path}/" or "/./" in f"{path}/":
                raise ValueError(f"KdcTools.{name}: {path!r} is not a plain absolute path")
        if self.spool_root == "/":
            raise ValueError("KdcTools.spool_root: / is not a spool directory")


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
    if _UNLISTABLE.search(realm) or realm.startswith("-"):
        raise ValueError(f"Kerberos realm {realm!r}: white space, a backslash, a control character or a "
                         f"leading '-' cannot be passed to kadmin.local through an exact sudoers rule")
    if not names:
        raise ValueError("no Kerberos principals to export")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate Kerberos principals in {list(names)!r}")
    for name in names:
        if name.startswith("-"):
            raise ValueError(f"Kerberos principal {name!r} would be read as an option by kadmin.local")
        if _UNLISTABLE.search(name):
            raise ValueError(f"Kerberos principal {name!r}: white space, a backslash or a control character "
                             f"cannot be listed exactly in a sudoers rule (sudo joins arguments with spaces)")
        # kadmin.local would silently file a principal of another realm in REALM's database
        if not name.endswith(f"@{realm}") or name == f"@{realm}":
            raise ValueError(f"Kerberos principal {name!r} is not fully qualified in realm {realm!r}")


def service_host(realm: str, names: Sequence[str]) -> str:
    """The host part (last component) the instance's principals share: the service FQDN, which
    names the instance's spool directory."""
    _check(realm, names)
    hosts = {name[: -len(realm) - 1].rpartition("/")[2] for name in names}
    host = hosts.pop() if len(hosts) == 1 else None
    if host is None or not _HOST.match(host) or any(not name[: -len(realm) - 1].rpartition("/")[0] for name in names):
        raise ValueError(f"the principals {list(names)!r} must all be <primary>/<one service host>@{realm}")
    return host


@dataclass(frozen=True)
class _Kdc:
    """Everything the scripts and the sudoers rules are built from: one source for both."""

    realm: str
    principals: tuple[str, ...]
    timeout_seconds: int
    tools: KdcTools
    spool_dir: str = field(init=False)
    spool_keytab: str = field(init=False)

    def __post_init__(self) -> None:
        host = service_host(self.realm, self.principals)
        if not isinstance(self.timeout_seconds, int) or isinstance(self.timeout_seconds, bool) or self.timeout_seconds <= 0:
            raise ValueError(f"the step's timeout must be a positive number of seconds, not {self.timeout_seconds!r}")
        object.__setattr__(self, "spool_dir", f"{self.tools.spool_root}/{host}")
        object.__setattr__(self, "spool_keytab", f"{self.spool_dir}/keytab")

    @property
    def krbtgt(self) -> str:
        return f"krbtgt/{self.realm}@{self.realm}"

    def bounded(self, *argv: str) -> tuple[str, ...]:
        """``argv`` as the script runs it through sudo: under root's own timeout (module docstring)."""
        return (self.tools.timeout, f"--kill-after={TOOL_KILL_AFTER_SECONDS}s", f"{self.timeout_seconds}s", *argv)

    def privileged(self) -> tuple[tuple[str, ...], ...]:
        """Every command the scripts run through sudo, exactly (the order they first run in)."""
        kadmin = (self.tools.kadmin_local, "-r", self.realm)
        out = [(*kadmin, "getprinc", self.krbtgt)]
        for name in self.principals:
            out += [(*kadmin, "getprinc", name), (*kadmin, "addprinc", "-randkey", name)]
        out += [
            (self.tools.install, "-d", "-m", "0700", self.spool_dir),
            (self.tools.rm, "-f", "--", self.spool_keytab),
            (*kadmin, "ktadd", "-norandkey", "-k", self.spool_keytab, *self.principals),
            (self.tools.cat, "--", self.spool_keytab),
        ]
        return tuple(self.bounded(*argv) for argv in out)

    def tool_values(self) -> dict[str, remote.ScriptValue]:
        return {
            "timeout_bin": self.tools.timeout,
            "tool_timeout": self.timeout_seconds,
            "tool_kill_after": TOOL_KILL_AFTER_SECONDS,
        }


def keytab_script(realm: str, principals: Sequence[str], *, use_sudo: bool, timeout_seconds: int,
                  tools: KdcTools = KdcTools()) -> str:
    """Bash for the KDC host: ensure ``principals`` exist, print base64 of their keytab.

    Runs as the SSH user; every privileged call is ``"${sudo[@]}"`` (``sudo -n`` when
    ``use_sudo``) + one command of ``sudoers_rules``.  ``timeout_seconds`` is the step's own
    (remote.wrap's) timeout.  stdout carries only ``base64 -w0`` of the keytab (a secret);
    progress goes to stderr.  Re-runs print byte-identical output and never rotate a key.
    """
    kdc = _Kdc(realm, tuple(principals), timeout_seconds, tools)
    values: dict[str, remote.ScriptValue] = {
        "realm": kdc.realm,
        "krbtgt": kdc.krbtgt,
        "principals": list(kdc.principals),
        "not_found": NOT_FOUND,
        **kdc.tool_values(),
        "kadmin_local": tools.kadmin_local,
        "install_bin": tools.install,
        "rm_bin": tools.rm,
        "cat_bin": tools.cat,
        "spool_root": tools.spool_root,
        "spool_dir": kdc.spool_dir,
        "spool_keytab": kdc.spool_keytab,
        "normalize_py": remote.script_file("kdc_keytab_normalize.py"),
    }
    return remote.script("kdc_keytab.sh", f"Kerberos principals and keytab in realm {realm}", values, use_sudo=use_sudo)


def kept_instructions(realm: str, principals: Sequence[str], tools: KdcTools = KdcTools()) -> list[str]:
    """What deleting the keytab Command leaves, and how an operator removes it by hand.

    Printed on stderr by the delete command, and in the manual steps: pulumi-command shows a
    delete's output only while it runs (or in the error if it fails), so the manual steps are
    where it reliably reaches the operator."""
    r = shlex.quote(realm)
    spool_dir = f"{tools.spool_root}/{service_host(realm, principals)}"
    return [
        f"Kerberos principals are kept (realm {realm}); deleting one breaks every keytab that holds it.",
        "Once no instance uses them, an operator may delete them on the KDC host by hand:",
        *(f"  sudo kadmin.local -r {r} delprinc -force {shlex.quote(p)}" for p in principals),
        f"  and the instance's empty keytab spool: sudo rmdir {shlex.quote(spool_dir)}",
    ]


def delete_script(realm: str, principals: Sequence[str], *, use_sudo: bool, timeout_seconds: int,
                  tools: KdcTools = KdcTools()) -> str:
    """Bash run when the keytab Command is deleted: deletes no principal, says how to, on stderr.

    The principals back the running instance's keytab (and possibly other hosts' keytabs);
    a deleted principal comes back only with new keys.  Removing them is an operator's call.
    The only thing it removes is root's spool copy of the keytab, should an interrupted run have
    left one (the ``rm`` rule of ``sudoers_rules``); it exits 0 even when it cannot.
    """
    kdc = _Kdc(realm, tuple(principals), timeout_seconds, tools)
    values: dict[str, remote.ScriptValue] = {
        "kept": kept_instructions(realm, principals, tools),
        **kdc.tool_values(),
        "rm_bin": tools.rm,
        "spool_keytab": kdc.spool_keytab,
    }
    return remote.script("kdc_delete.sh", f"Kerberos principals in realm {realm}: kept on delete", values,
                         use_sudo=use_sudo)


def sudoers_rules(instance: str, user: str, realm: str, principals: Sequence[str], timeout_seconds: int,
                  tools: KdcTools = KdcTools(), *, kdc_host: str | None = None) -> sudoers.HostRules:
    """The sudo rights ``user`` needs on the KDC host for ``instance``'s keytab step: exactly the
    commands ``keytab_script`` and ``delete_script`` run through sudo, with the same values.

    ``timeout_seconds`` is the step's timeout (``commandTimeoutMinutes`` * 60), which is part of
    every command (root's own ``timeout``) and sudo's ``command_timeout``.
    """
    if not _INSTANCE.match(instance):
        raise ValueError(f"instance {instance!r} is not a DNS label")
    kdc = _Kdc(realm, tuple(principals), timeout_seconds, tools)
    return sudoers.HostRules(
        host=f"KDC (kdcHost {kdc_host})" if kdc_host else "KDC (kdcHost)",
        user=user,
        alias=sudoers.alias_for(instance, "kdc"),
        commands=kdc.privileged(),
        command_timeout_seconds=timeout_seconds,
        comments=(
            f"airflow-{instance}: Kerberos principals and keytab in realm {realm} (components/kerberos.py)",
            f"each tool runs under root's own timeout ({timeout_seconds} s, the step's), which kills the tool's whole process group;",
            f"ktadd writes only {kdc.spool_keytab}, in a directory only root can write to",
        ),
    )


def stack_sudoers_rules(cfg: "InstanceConfig", tools: KdcTools = KdcTools()) -> sudoers.HostRules:
    """``sudoers_rules`` with a stack's values: what the README and the manual steps print."""
    return sudoers_rules(cfg.instance, cfg.ssh_user, cfg.kerberos_realm,
                         principals(cfg.runs_as_user, cfg.service_fqdn, cfg.kerberos_realm),
                         cfg.command_timeout_minutes * 60, tools, kdc_host=cfg.kdc_host)


@dataclass(frozen=True)
class KerberosKeytabArgs:
    realm: str
    principals: Sequence[str]
    conn: command.remote.ConnectionArgs
    use_sudo: bool  # the stack's remoteSudo: "${sudo[@]}" is `sudo -n` before each privileged tool
    timeout_minutes: int = 10
    # the preconditions (the admin_ng namespace): nothing runs on the remote host before them
    depends_on: Sequence[pulumi.Input[pulumi.Resource]] = ()
    tools: KdcTools = KdcTools()


class KerberosKeytab(pulumi.ComponentResource):
    """The principals on the KDC host and the base64 of their keytab (a secret)."""

    command: command.remote.Command
    keytab_base64: pulumi.Output[str]

    def __init__(self, name: str, args: KerberosKeytabArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dpe:airflow:KerberosKeytab", name, None, opts)
        names = list(args.principals)
        seconds = args.timeout_minutes * 60  # remote_command's own timeout for the step
        self.command = remote.remote_command(
            f"{name}-keytab",
            conn=args.conn,
            script=keytab_script(args.realm, names, use_sudo=args.use_sudo, timeout_seconds=seconds, tools=args.tools),
            # the script itself runs as the SSH user; only its privileged tools go through sudo
            touches_secrets=True,
            delete_script=delete_script(args.realm, names, use_sudo=args.use_sudo, timeout_seconds=seconds,
                                        tools=args.tools),
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
