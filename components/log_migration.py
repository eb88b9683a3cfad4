"""Task and scheduler logs to S3 (runbook: "Sync all the scheduler and DAG task logs to S3").

The runbook, on the legacy Airflow VM, runs twice (a long first pass while the instance still
runs, then ``stop_legacy_script`` and a short second pass during the downtime)::

    cd /srv/airflow-<instance>/logs && s3cmd --access_key=.. --secret_key=.. \\
        --host=rgw.eqiad.dpe.anycast.wmnet --region=dpe --host-bucket=no \\
        sync -r ./* s3://logs.airflow-<instance>.dse-k8s-eqiad/

The scripts here keep its semantics (same keys: paths relative to the logs directory; copy
only, nothing is ever deleted on the target; symlinks are not followed, as s3cmd skips them)
and fix what measured badly (shared/reference/ceph-rgw-s3-study.md, bench/README.md):

* the keys were on s3cmd's command line (visible in ``ps``): they arrive on **stdin** (two
  lines: access key, secret key) and go into a 0600 s3cmd config in a ``mktemp -d`` scratch
  dir that an EXIT trap removes.  A run killed with SIGKILL cannot run its trap, so every run
  first removes the scratch dirs of earlier runs whose process is gone: "kill, then re-run"
  leaves no key on disk;
* one s3cmd process uploads one file at a time, and spends ~0.9 ms of CPU per file (request
  building in Python, libmagic): the sync is one ``python3`` process (standard library only;
  s3cmd itself needs python3) that walks the tree once, lists the bucket under each top-level
  entry in parallel, then has ``parallelism`` threads over kept-alive connections compare each
  file (same size and MD5 = the ETag of a single-part object: not re-uploaded, as s3cmd) and PUT
  what differs, headers and body in one send (TCP_NODELAY), SigV4 with ``UNSIGNED-PAYLOAD`` and a
  Content-MD5 the RGW checks.  ``Content-Type`` from the extension table, ``text/plain`` for a
  ``.log`` (what libmagic gave the runbook's s3cmd); ``x-amz-meta-s3cmd-attrs`` with the MD5, so
  an s3cmd run later still recognises the objects.  bench/README.md has the numbers;
* files above ``multipart_threshold`` (5 GiB, one PUT's limit) are left to ``s3cmd sync
  --files-from`` (multipart), as are their s3cmd semantics;
* progress: a timestamped line on stderr every ``progress_seconds`` (files and bytes done,
  uploads, rate, time left); the final pass ends with "downtime can end", the stop step logs
  "downtime started".  stdout keeps its one summary line;
* a failed file (after 4 retries on connection errors and 5xx) fails the script after the
  others were tried, naming it; nothing is ever deleted on the target.

s3cmd facts relied on for the big files and ``verify`` (s3cmd 2.3.0, checked against the real
RGW in tests/integration/test_log_migration.py): ``sync`` without ``--delete-removed`` never
deletes; unchanged files are not re-uploaded; a killed multipart upload leaves invisible parts,
never a short object; a config value starting with ``$`` is read from the environment, so the
keys are checked to be letters/digits/``+/``.  Each PUT is atomic, so a killed sync leaves no
partial object and a re-run resumes.

``verify_script`` compares the tree and the bucket key by key and prints, per top-level
prefix, the local file count and bytes against the matching objects' count and bytes (not
ETags: multipart ETags are not MD5s).  ``stop_legacy_script`` is the runbook's
``puppet agent --disable`` + ``systemctl stop``, made idempotent and narrowed to the instance's
own units.

The scripts are files (``remote.script``): components/scripts/legacy_logs.sh (sync and verify;
its Python helper components/scripts/log_sync.py is shipped as a value) and
components/scripts/legacy_stop.sh.

**Least privilege.**  Everything runs as the SSH user.  The sync and the verification ask sudo
for nothing, as the runbook's operator read the tree as himself: a path the user cannot read
fails them before any request, with one line naming it and the fix.  Only the stop step needs
root, for exactly the calls :func:`privileged_commands` lists (``puppet config print`` of the two
lock files, ``puppet agent --disable "<reason>"``, ``systemctl stop`` of each of the instance's
three units; the program never runs ``puppet agent --enable``), each under a root-side GNU
``timeout`` (sudo relays a TERM only to the process it started, and its ``command_timeout`` ends
only that process: ``timeout`` ends the tool's whole process group).  :func:`sudoers_rules`
renders them from the same values, for ``/etc/sudoers.d``.

Endpoint: a URL (``https://rgw.eqiad.dpe.anycast.wmnet``, as ``rgwEndpoint`` in the stack
config) or a bare ``host[:port]`` (meaning https).  ``http://`` is accepted for the loopback
test RGW only.  s3cmd gets ``host_base = host_bucket = host[:port]`` (path-style, as
``--host-bucket=no``), ``bucket_location = <region>`` and signature v4.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from components import remote, sudoers

SCRATCH_PREFIX = "airflow-log-migration"
PUPPET_DISABLE_REASON = "airflow scheduler migration to Kubernetes"
# the runbook stops airflow-{webserver,kerberos,scheduler}@*.service; here: the instance's own
LEGACY_SERVICES = ("webserver", "kerberos", "scheduler")
MAX_PARALLELISM = 64
PROGRESS_SECONDS = 30  # a progress line on stderr this often
# above this, a file goes to s3cmd, which uploads it in parts (multipart_chunk_size_mb 15)
MULTIPART_THRESHOLD = 5 * 1024 ** 3  # S3's limit for one PUT
STEP_SECONDS = 600  # the stop step's time limit unless given (Pulumi.yaml commandTimeoutMinutes: 10)
TOOL_KILL_AFTER = "1s"  # root-side timeout: KILL this long after its TERM (under sudo's 2 s HUP/TERM-to-KILL)

_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# S3 bucket names as RGW accepts them (dots allowed: path-style addressing)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_INSTANCE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
# puppet's airflow::instance title: /srv/airflow-<title> is its airflow_home, systemd instance name of its units
_LEGACY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")
_DEFAULT_LOGS = re.compile(r"^/srv/airflow-([^/]+)/logs/?$")


@dataclass(frozen=True)
class LegacyTools:
    """Absolute paths of the tools the stop step runs as root (Debian's); tests pass stand-ins.
    Never found through PATH: sudo's secure_path and the non-login SSH PATH differ."""

    puppet: str = "/usr/bin/puppet"
    systemctl: str = "/usr/bin/systemctl"
    timeout: str = "/usr/bin/timeout"

    def __post_init__(self) -> None:
        for name in ("puppet", "systemctl", "timeout"):
            path = getattr(self, name)
            if not re.fullmatch(r"/[A-Za-z0-9_./+-]+", path) or "/../" in path or path.endswith("/.."):
                raise ValueError(f"LegacyTools.{name}: {path!r} is not a plain absolute path")


@dataclass(frozen=True)
class Endpoint:
    host: str  # host[:port], what s3cmd's host_base takes (no scheme)
    https: bool


def parse_endpoint(endpoint: str) -> Endpoint:
    """``https://host[:port]``, ``http://host:port`` (tests) or bare ``host[:port]`` (https)."""
    text = endpoint if "://" in endpoint else f"https://{endpoint}"
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http"):
        raise ValueError(f"endpoint {endpoint!r}: scheme must be https (or http for a test RGW)")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"endpoint {endpoint!r}: give only scheme://host[:port]")
    host = parts.hostname or ""
    if not _HOST.match(host):
        raise ValueError(f"endpoint {endpoint!r}: {host!r} is not a host name or IPv4 address")
    try:
        port = parts.port
    except ValueError as err:
        raise ValueError(f"endpoint {endpoint!r}: {err}") from None
    return Endpoint(host=f"{host}:{port}" if port else host, https=parts.scheme == "https")


def _check(bucket: str, region: str) -> None:
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not an S3 bucket name")
    if not _REGION.match(region):
        raise ValueError(f"{region!r} is not an RGW zonegroup api_name")


def _positive_int(name: str, value: object, low: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# the log steps: sync (first and final pass) and verify, one body file, no privilege

def _log_values(step: str, logs_dir: str, bucket: str, endpoint: str, region: str, ca_file: str | None,
                parallelism: int, progress_seconds: float, multipart_threshold: int,
                final_pass: bool) -> dict[str, remote.ScriptValue]:
    _check(bucket, region)
    if not logs_dir.startswith("/"):
        raise ValueError(f"logs_dir {logs_dir!r} must be an absolute path")
    ep = parse_endpoint(endpoint)
    return {
        "step": step,
        "logs_dir": logs_dir,
        "bucket": bucket,
        "s3_host": ep.host,
        "use_https": "True" if ep.https else "False",
        "region": region,
        "ca_file": ca_file or "",
        "parallelism": parallelism,
        "progress_seconds": repr(float(progress_seconds)),
        "multipart_threshold": multipart_threshold,
        "final_pass": 1 if final_pass else 0,
        "log_sync_py": remote.script_file("log_sync.py"),
    }


def sync_script(logs_dir: str, bucket: str, endpoint: str, region: str, parallelism: int,
                ca_file: str | None = None, *, progress_seconds: float = PROGRESS_SECONDS,
                multipart_threshold: int = MULTIPART_THRESHOLD, final_pass: bool = False) -> str:
    """Copy every regular file under ``logs_dir`` to ``s3://bucket/<relative path>``, as the SSH user.

    stdin: access key and secret key, one a line.  stdout: one summary line.  stderr: a
    progress line every ``progress_seconds`` (files and bytes done, rate, time left), and with
    ``final_pass`` a timestamped "downtime can end" line once everything is uploaded.  Exit
    non-zero when anything failed (the files that were uploaded stay; a re-run resumes), or at
    once, naming it, when the SSH user cannot read part of the tree.  ``endpoint``: see the module
    docstring; ``ca_file``: a PEM bundle for https (default: the system store, which holds the WMF
    CA on production hosts).  ``parallelism``: concurrent uploads (threads, each with its own
    kept-alive connection).  Files above ``multipart_threshold`` bytes go to s3cmd, which uploads
    them in 15 MB parts.  No sudo: the Command runs it with ``use_sudo=False``.
    """
    if not isinstance(parallelism, int) or isinstance(parallelism, bool) or not 1 <= parallelism <= MAX_PARALLELISM:
        raise ValueError(f"parallelism must be an integer in 1..{MAX_PARALLELISM}, got {parallelism!r}")
    if isinstance(progress_seconds, bool) or not isinstance(progress_seconds, (int, float)) or not 0.1 <= progress_seconds <= 3600:
        raise ValueError(f"progress_seconds must be a number in 0.1..3600, got {progress_seconds!r}")
    if not isinstance(multipart_threshold, int) or isinstance(multipart_threshold, bool) or multipart_threshold < 1:
        raise ValueError(f"multipart_threshold must be a positive integer, got {multipart_threshold!r}")
    values = _log_values("sync", logs_dir, bucket, endpoint, region, ca_file, parallelism, progress_seconds,
                         multipart_threshold, final_pass)
    return remote.script("legacy_logs.sh", "airflow logs to S3: " + ("final sync" if final_pass else "sync"),
                         values, use_sudo=False)


def verify_script(logs_dir: str, bucket: str, endpoint: str, region: str, ca_file: str | None = None) -> str:
    """Compare ``logs_dir`` with the bucket, as the SSH user; table on stdout; exit 1 on a missing/short object.

    Key by key: every local regular file must have an object of the same size (no ETags:
    multipart ETags are not MD5s).  The table gives, per top-level prefix, the local files
    and bytes, the matching objects and bytes, and the objects only on the target (reported,
    not a failure: the Kubernetes scheduler may already have written logs there).  The body is
    the sync's (the key handling exists once); the sync's tunables are carried unused.
    """
    values = _log_values("verify", logs_dir, bucket, endpoint, region, ca_file, 1, PROGRESS_SECONDS,
                         MULTIPART_THRESHOLD, False)
    return remote.script("legacy_logs.sh", "airflow logs to S3: verify", values, use_sudo=False)


# ---------------------------------------------------------------------------------------------
# stop the legacy services (downtime starts here): the only step with sudoers rules

def legacy_name(instance: str, logs_dir: str | None = None) -> str:
    """The legacy instance's name on the VM: puppet's ``airflow::instance`` title, whose home is
    ``/srv/airflow-<title>`` and whose units are ``airflow-<service>@<title>.service``.  Taken
    from ``logs_dir`` when it is that default layout, else the Kubernetes name with ``-`` as
    ``_`` (the chart's own mapping: instance ``platform-eng`` had ``platform_eng``)."""
    if not _INSTANCE.match(instance):
        raise ValueError(f"{instance!r} is not an instance name")
    match = _DEFAULT_LOGS.match(logs_dir or "")
    name = match.group(1) if match else instance.replace("-", "_")
    if not _LEGACY_NAME.match(name):
        raise ValueError(f"legacy instance name {name!r} (from logs dir {logs_dir!r}) is not a systemd instance name")
    return name


def legacy_units(name: str) -> tuple[str, ...]:
    """The instance's units, in the runbook's order: airflow-{webserver,kerberos,scheduler}@<name>.service."""
    return tuple(f"airflow-{service}@{name}.service" for service in LEGACY_SERVICES)


def _bounded(argv: tuple[str, ...], timeout_seconds: int, tools: LegacyTools) -> tuple[str, ...]:
    return (tools.timeout, f"--kill-after={TOOL_KILL_AFTER}", f"{timeout_seconds}s", *argv)


def privileged_commands(name: str, timeout_seconds: int, tools: LegacyTools = LegacyTools()) -> tuple[tuple[str, ...], ...]:
    """Every argv the stop step runs through sudo, exactly (what ``legacy_stop.sh`` calls ``privileged``)."""
    _positive_int("timeout_seconds", timeout_seconds)
    calls = [
        (tools.puppet, "config", "print", "agent_disabled_lockfile"),
        (tools.puppet, "config", "print", "agent_catalog_run_lockfile"),
        (tools.puppet, "agent", "--disable", PUPPET_DISABLE_REASON),
        *((tools.systemctl, "stop", unit) for unit in legacy_units(name)),
    ]
    return tuple(_bounded(argv, timeout_seconds, tools) for argv in calls)


def stop_legacy_script(instance: str, *, logs_dir: str | None = None, use_sudo: bool = False,
                       timeout_seconds: int = STEP_SECONDS, run_wait_seconds: int = 300,
                       tools: LegacyTools = LegacyTools()) -> str:
    """The runbook's ``puppet agent --disable "..."`` and ``systemctl stop airflow-{...}@*.service``,
    for this instance's units only (:func:`legacy_name`).

    Idempotent: puppet already disabled (whatever the reason) and services already stopped are
    fine.  Fails before changing anything when systemd has no scheduler unit of that name.  Waits
    up to ``run_wait_seconds`` for a puppet run in progress (it could restart a service), and
    checks that no unit of the instance is still active.  Runs as the SSH user; the calls of
    :func:`privileged_commands` go through ``sudo -n`` when ``use_sudo`` (the stack's
    ``remoteSudo``), each bounded by ``timeout_seconds`` (the step's own limit).
    """
    name = legacy_name(instance, logs_dir)
    _positive_int("run_wait_seconds", run_wait_seconds, 0)
    _positive_int("timeout_seconds", timeout_seconds)
    units = legacy_units(name)
    values: dict[str, remote.ScriptValue] = {
        "instance": instance,
        "legacy_name": name,
        "units": list(units),
        "scheduler_unit": units[LEGACY_SERVICES.index("scheduler")],
        "reason": PUPPET_DISABLE_REASON,
        "run_wait_seconds": run_wait_seconds,
        "tool_seconds": timeout_seconds,
        "puppet": tools.puppet,
        "systemctl": tools.systemctl,
        "timeout": tools.timeout,
    }
    return remote.script("legacy_stop.sh", "airflow legacy services: stop", values, use_sudo=use_sudo)


def sudoers_rules(instance: str, user: str, *, host: str, timeout_seconds: int, logs_dir: str | None = None,
                  tools: LegacyTools = LegacyTools()) -> sudoers.HostRules:
    """What the SSH user may run as root on the legacy VM: exactly the stop step's calls, from
    the same values as the script (``/etc/sudoers.d/<file_name>``; the log steps need none)."""
    name = legacy_name(instance, logs_dir)
    return sudoers.HostRules(
        host=f"legacy Airflow VM (legacy.host {host}) of airflow-{instance}",
        user=user,
        alias=sudoers.alias_for(instance, "legacy"),
        commands=privileged_commands(name, timeout_seconds, tools),
        command_timeout_seconds=timeout_seconds,
        comments=(
            f"the stop step only: puppet's lock file paths, puppet agent --disable, systemctl stop of the {name} units;",
            f"each under a root-side timeout, which ends the tool's whole process group; sudo's command_timeout bounds it too.",
            f"The log sync and verify need no rule: {user} must be able to read {logs_dir or f'/srv/airflow-{name}/logs'}.",
        ),
    )
