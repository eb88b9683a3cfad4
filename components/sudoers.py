"""The sudoers rules each remote host needs: exact commands, never a shell.

Every remote script runs as the stack's SSH user (``sshUser``); only the privileged tools it
calls go through ``sudo -n``, by absolute path and with arguments the program knows in advance.
So each host's rules are a ``Cmnd_Alias`` of complete command lines (no wildcard anywhere:
sudoers matches the arguments exactly when a command lists them, sudoers(5) "Cmnd_List"), and
the rules are rendered by the same code that builds the scripts, from the same values: what
the README and the manual steps print is what the scripts ask for, and the integration tests
install exactly this text for a real account behind a real sshd (tests/integration).

Rules are per instance: the alias names the instance, so two instances' rules sit side by side
in ``/etc/sudoers.d`` and removing one instance removes only its file.

Syntax facts relied on (sudoers(5), sudo 1.9.13 in Debian 12, checked with ``visudo -cf`` in
tests/test_sudoers.py):

* in a command's arguments ``, : = ! #`` are escaped with a backslash (``\\(`` is a syntax
  error, whatever sudoers(5) says of words) and ``* ? [ ]`` are wildcards unless escaped:
  everything is escaped here, so nothing is a wildcard; a backslash cannot be matched
  literally (the matcher reads it as an escape again), so an argument with one is refused;
* an argument cannot hold a space unambiguously (sudo matches the arguments joined by single
  spaces), so an argument with one is written with its spaces and two arguments that would join
  to the same text are refused;
* ``Defaults!ALIAS command_timeout=N`` makes sudo kill a privileged tool that outlives the
  step's own time limit (an unprivileged step cannot KILL a root process);
* ``Defaults!ALIAS env_keep += "NAME"`` keeps one variable through ``env_reset`` for those
  commands only (the RGW key pair travels in ``CEPH_ARGS``, never on a command line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_ALIAS = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# characters sudoers gives a meaning inside a command's arguments; each is escaped
_SPECIAL = re.compile(r"([\\,:=!*?\[\]#])")


class SudoersError(ValueError):
    pass


@dataclass(frozen=True)
class HostRules:
    """The sudo rights of ``user`` on one host, for one instance."""
    host: str  # who reads it: e.g. "KDC (kdcHost krb1001.eqiad.wmnet)"
    user: str  # the SSH user
    alias: str  # Cmnd_Alias name, e.g. AIRFLOW_SEARCH_KDC
    commands: tuple[tuple[str, ...], ...]  # exact argv, absolute path first
    runas: str = "root"
    env_keep: tuple[str, ...] = ()
    command_timeout_seconds: int | None = None
    comments: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for who, value in (("user", self.user), ("runas", self.runas)):
            if not _USER.match(value):
                raise SudoersError(f"sudoers: {who} {value!r} is not a plain user name")
        if not _ALIAS.match(self.alias):
            raise SudoersError(f"sudoers: alias {self.alias!r} must be upper-case letters, digits and _")
        if not self.commands:
            raise SudoersError(f"sudoers {self.alias}: no command")
        seen: dict[str, tuple[str, ...]] = {}
        for argv in self.commands:
            if not argv or not argv[0].startswith("/"):
                raise SudoersError(f"sudoers {self.alias}: {argv!r} must start with an absolute path")
            for arg in argv:
                if "\\" in arg:
                    raise SudoersError(f"sudoers {self.alias}: argument {arg!r} of {argv[0]} holds a backslash, "
                                       f"which sudo's argument matching reads as an escape")
                if not arg or arg != arg.strip() or "  " in arg or any(c in arg for c in "\t\n\r\0\x0b\x0c"):
                    raise SudoersError(f"sudoers {self.alias}: argument {arg!r} of {argv[0]} cannot be "
                                       f"written exactly (empty, or with leading/trailing/repeated/non-space white space)")
            joined = " ".join(argv)
            if joined in seen and seen[joined] != argv:
                raise SudoersError(f"sudoers {self.alias}: {argv!r} and {seen[joined]!r} read the same to sudo")
            seen[joined] = argv
        for name in self.env_keep:
            if not _ENV.match(name):
                raise SudoersError(f"sudoers {self.alias}: env_keep {name!r} is not a variable name")
        if self.command_timeout_seconds is not None and self.command_timeout_seconds <= 0:
            raise SudoersError(f"sudoers {self.alias}: command_timeout must be positive")

    @property
    def file_name(self) -> str:
        """A name ``/etc/sudoers.d`` reads (sudo skips names with a dot or ending in ~)."""
        return self.alias.lower().replace("_", "-")


def escape(arg: str) -> str:
    return _SPECIAL.sub(r"\\\1", arg)


def command_line(argv: tuple[str, ...]) -> str:
    return " ".join(escape(a) for a in argv)


def render(rules: HostRules) -> str:
    """The text of ``/etc/sudoers.d/<rules.file_name>`` (mode 0440, owner root; check with visudo -cf)."""
    out = [f"# {rules.host}: what the airflow Pulumi program runs as {rules.runas} over SSH as {rules.user}",
           "# generated by components/sudoers.py; exact commands only, no shell and no wildcard"]
    out += [f"# {c}" for c in rules.comments]
    cmds = [command_line(a) for a in rules.commands]
    out.append(f"Cmnd_Alias {rules.alias} = \\")
    out += [f"    {c}, \\" for c in cmds[:-1]]
    out.append(f"    {cmds[-1]}")
    if rules.command_timeout_seconds is not None:
        out.append(f"Defaults!{rules.alias} command_timeout={rules.command_timeout_seconds}")
    if rules.env_keep:
        out.append(f"Defaults!{rules.alias} env_keep += \"{' '.join(rules.env_keep)}\"")
    out.append(f"{rules.user} ALL = ({rules.runas}) NOPASSWD: {rules.alias}")
    return "\n".join(out) + "\n"


def alias_for(instance: str, host_kind: str) -> str:
    """``AIRFLOW_<INSTANCE>_<KIND>``: one alias per instance and host kind."""
    return re.sub(r"[^A-Z0-9]+", "_", f"AIRFLOW_{instance}_{host_kind}".upper()).strip("_")
