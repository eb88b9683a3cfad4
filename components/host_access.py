"""What the SSH user may do on each remote host: the sudoers rules, as manual steps.

Every remote script runs as the stack's ``sshUser``; only the privileged tools go through
``sudo -n``, with exactly the arguments the host's rules list (components/sudoers.py).  The rules
are rendered by the modules that build the scripts, from the same values (kerberos.py,
rgw_user.py, log_migration.py); this module only collects them per stack and prints each as a
step due before the first ``pulumi up``: the steps fail with "sudo: a password is required"
without them.

On the platform sudo rules come from puppet (operations/puppet), so the step names the file and
its exact content; installing it by hand on a host is the fallback, checked with ``visudo``.
"""

from __future__ import annotations

from dataclasses import dataclass

from components import kerberos, migration, rgw_user, sudoers
from components.config import InstanceConfig

PUPPET = "operations/puppet"


@dataclass(frozen=True)
class HostAccess:
    kind: str  # "KDC", "RGW admin host", "legacy Airflow VM"
    host: str
    rules: sudoers.HostRules

    @property
    def path(self) -> str:
        return f"/etc/sudoers.d/{self.rules.file_name}"


def _timeout_seconds(cfg: InstanceConfig) -> int:
    return cfg.command_timeout_minutes * 60


def hosts(cfg: InstanceConfig) -> list[HostAccess]:
    """The hosts this stack runs remote steps on, in the order the steps run, with their rules.

    A stack that never reaches the scheduler phase runs nothing remote; the legacy VM only while
    a migration is under way (components/instance.py registers the same steps)."""
    out: list[HostAccess] = []
    if not cfg.phase_at_least("scheduler") and cfg.legacy is None:
        return out
    out.append(HostAccess("RGW admin host", cfg.rgw_admin_host, rgw_user.sudoers_rules(
        cfg.instance, cfg.ssh_user, rgw_user.instance_users(cfg), _timeout_seconds(cfg))))
    out.append(HostAccess("KDC", cfg.kdc_host, kerberos.stack_sudoers_rules(cfg)))
    if cfg.legacy is not None and cfg.phase != "complete":
        out.append(HostAccess("legacy Airflow VM", cfg.legacy.host, migration.legacy_sudoers_rules(cfg)))
    return out


def manual_steps(cfg: InstanceConfig) -> list[dict[str, str]]:
    """One step per host: the file, its exact content, and how to check it."""
    steps = []
    for access in hosts(cfg):
        text = sudoers.render(access.rules)
        steps.append({
            "step": f"sudo rules for {cfg.ssh_user} on the {access.kind} {access.host}",
            "where": (f"{PUPPET}: the sudo rules of {access.host} (puppet manages /etc/sudoers.d there); "
                      f"by hand only as a fallback: install -m 0440 -o root -g root <file> {access.path}"),
            "key": access.path,
            "snippet": text + (
                f"# check on {access.host}: visudo -cf {access.path} && sudo -l -U {cfg.ssh_user}\n"
                f"# nothing else: the program's scripts run as {cfg.ssh_user} and ask sudo for exactly these lines\n"),
        })
    return steps
