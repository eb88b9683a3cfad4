"""Migrating a legacy (VM) instance: the steps that move data, as ordered resources.

* ``LogMigration`` (scheduler phase): on the legacy host, the first log sync pass, then
  puppet disabled and the airflow services stopped, then the short second pass, then a
  check by object count and size.  Remote Commands in that order; the Airflow release that
  starts the Kubernetes scheduler waits for the check.  All run as the SSH user; only the stop
  step uses sudo, for the commands of :func:`legacy_sudoers_rules`.
* ``DatabaseVerification`` (database phase): a Kubernetes Job in the instance's namespace,
  which reaches both the legacy database (external service) and the CloudNativePG cluster,
  runs the database verifier (components/db_verify.py) and fails on any difference.  The
  release that cuts Airflow over to CloudNativePG waits for it, so the stack cannot cut
  over on a lossy import.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command
import pulumi_kubernetes as k8s

from components import database, db_verify, log_migration, remote, sudoers
from components.config import InstanceConfig

SYNC_PARALLELISM = 16  # concurrent uploads (threads of one python3 process); bench/README.md
FIRST_SYNC_TIMEOUT_MINUTES = 24 * 60  # hours on a big instance (runbook: "this will take a long time")
# the tools the stop step runs as root on the legacy VM (Debian's paths); the README's sudoers rules name them
LEGACY_TOOLS = log_migration.LegacyTools()


@dataclass(frozen=True)
class LogMigrationArgs:
    cfg: InstanceConfig
    conn: command.remote.ConnectionArgs
    access_key: pulumi.Input[str]
    secret_key: pulumi.Input[str]
    bucket: pulumi.Resource


def stop_legacy_script(cfg: InstanceConfig) -> str:
    """The stop step's script: the stack's instance, logs dir, remoteSudo and step time limit."""
    assert cfg.legacy is not None
    return log_migration.stop_legacy_script(
        cfg.instance, logs_dir=cfg.legacy.logs_dir, use_sudo=cfg.remote_sudo,
        timeout_seconds=cfg.command_timeout_minutes * 60, tools=LEGACY_TOOLS)


def legacy_sudoers_rules(cfg: InstanceConfig) -> sudoers.HostRules:
    """The sudoers rules of ``sshUser`` on the legacy VM: exactly what :func:`stop_legacy_script` asks
    of sudo (the log steps ask for nothing), from the same values.  For the manual steps."""
    assert cfg.legacy is not None
    return log_migration.sudoers_rules(
        cfg.instance, cfg.ssh_user, host=cfg.legacy.host, logs_dir=cfg.legacy.logs_dir,
        timeout_seconds=cfg.command_timeout_minutes * 60, tools=LEGACY_TOOLS)


class LogMigration(pulumi.ComponentResource):
    verified: command.remote.Command

    def __init__(self, name: str, args: LogMigrationArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dpe:airflow:LogMigration", name, None, opts)
        cfg = args.cfg
        assert cfg.legacy is not None
        endpoint = cfg.rgw_endpoint  # https://host: s3cmd host_base and https from it
        keys = remote.key_pair_stdin(args.access_key, args.secret_key)
        sync_args = (cfg.legacy.logs_dir, cfg.logs_bucket, endpoint, cfg.rgw_region, SYNC_PARALLELISM)
        # both passes log a progress line on stderr every 30 s (live in `pulumi up`); the stop
        # step logs "downtime started", the final pass "downtime can end", each timestamped
        sync = log_migration.sync_script(*sync_args)
        final_sync = log_migration.sync_script(*sync_args, final_pass=True)

        # Every script runs as the SSH user (remote.wrap asks sudo for nothing): the log steps need no
        # privilege at all, the stop step asks sudo for its exact commands only (cfg.remote_sudo
        # goes into its script).
        first = remote.remote_command(
            f"{name}-first-sync",
            conn=args.conn, script=sync, stdin=keys, touches_secrets=True,
            timeout_minutes=FIRST_SYNC_TIMEOUT_MINUTES,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.bucket]),
        )
        stop = remote.remote_command(
            f"{name}-stop-legacy",
            conn=args.conn, script=stop_legacy_script(cfg),
            touches_secrets=False, timeout_minutes=cfg.command_timeout_minutes,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[first]),
        )
        final = remote.remote_command(
            f"{name}-final-sync",
            conn=args.conn, script=final_sync, stdin=keys, touches_secrets=True,
            timeout_minutes=FIRST_SYNC_TIMEOUT_MINUTES,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[stop]),
        )
        self.verified = remote.remote_command(
            f"{name}-verify",
            conn=args.conn,
            script=log_migration.verify_script(cfg.legacy.logs_dir, cfg.logs_bucket, endpoint, cfg.rgw_region),
            stdin=keys, touches_secrets=True,
            timeout_minutes=cfg.command_timeout_minutes,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[final]),
        )
        self.register_outputs({})


def verify_job_name(cfg: InstanceConfig) -> str:
    return f"{cfg.pg_service_name}-verify-import"


def verify_job_script(cfg: InstanceConfig) -> str:
    assert cfg.legacy is not None
    n = database.names(cfg)
    return db_verify.verify_script(
        cfg.legacy.db_host, cfg.legacy.db_port, cfg.legacy.db_name, cfg.legacy.db_user,
        n["rw_service"], 5432, database.IMPORT_DATABASE, database.IMPORT_DATABASE,
        source_sslmode="require",
    )


# The Job feeds the two passwords to the verifier on stdin from mounted Secrets: never in
# the pod spec, never on a command line (printf is a bash builtin; $(cat) strips a trailing
# newline a Secret may or may not have, so each password is exactly one line).
_JOB_COMMAND = (
    'printf \'%s\\n%s\\n\' "$(cat /run/secrets/source/password)" "$(cat /run/secrets/target/password)" '
    '| /bin/bash -c "$VERIFY_SCRIPT" db-verify'
)


def verify_job(cfg: InstanceConfig) -> dict:
    """The Job manifest (pure, so tests validate it against the Kubernetes schema)."""
    n = database.names(cfg)
    name = verify_job_name(cfg)
    restricted = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": cfg.namespace, "labels": {"app.kubernetes.io/managed-by": "pulumi"}},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 3600,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "airflow-db-verify"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "verify",
                        "image": database.image_catalog(cfg)["spec"]["images"][0]["image"],
                        "command": ["/bin/bash", "-c", _JOB_COMMAND],
                        "env": [
                            {"name": "VERIFY_SCRIPT", "value": verify_job_script(cfg)},
                            # the script's pgpass files; the image's root filesystem is not ours to write
                            {"name": "TMPDIR", "value": "/run/verify-tmp"},
                        ],
                        "volumeMounts": [
                            {"name": "tmp", "mountPath": "/run/verify-tmp"},
                            {"name": "source", "mountPath": "/run/secrets/source", "readOnly": True},
                            {"name": "target", "mountPath": "/run/secrets/target", "readOnly": True},
                        ],
                        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
                        "securityContext": restricted,
                    }],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                        {"name": "source", "secret": {"secretName": f"{name}-source", "defaultMode": 0o400}},
                        {"name": "target", "secret": {"secretName": n["app_secret"], "defaultMode": 0o400, "items": [{"key": "password", "path": "password"}]}},
                    ],
                },
            },
        },
    }


def verify_job_policies(cfg: InstanceConfig) -> list[dict]:
    assert cfg.legacy is not None
    name = verify_job_name(cfg)
    selector = f"job-name == '{name}'"
    meta = lambda suffix: {"name": f"{name}-{suffix}", "namespace": cfg.namespace, "labels": {"app.kubernetes.io/managed-by": "pulumi"}}  # noqa: E731
    return [
        {
            "apiVersion": database.CALICO_API, "kind": "NetworkPolicy", "metadata": meta("egress"),
            "spec": {
                "types": ["Egress"],
                "selector": selector,
                "egress": [
                    {"action": "Allow", "destination": {"services": {"name": f"postgresql-{cfg.legacy.pg_service}", "namespace": "external-services"}}},
                    {"action": "Allow", "protocol": "TCP", "destination": {"selector": "cnpg.io/podRole == 'instance'", "ports": [5432]}},
                ],
            },
        },
        {
            "apiVersion": database.CALICO_API, "kind": "NetworkPolicy", "metadata": meta("to-instance"),
            "spec": {
                "types": ["Ingress"],
                "selector": "cnpg.io/podRole == 'instance'",
                "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": selector}, "destination": {"ports": [5432]}}],
            },
        },
    ]


@dataclass(frozen=True)
class DatabaseVerificationArgs:
    cfg: InstanceConfig
    legacy_db_password: pulumi.Input[str]
    deploy_provider: k8s.Provider
    cluster: pulumi.Resource


class DatabaseVerification(pulumi.ComponentResource):
    job: k8s.batch.v1.Job

    def __init__(self, name: str, args: DatabaseVerificationArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dpe:airflow:DatabaseVerification", name, None, opts)
        cfg = args.cfg
        # nothing of the check exists before the Cluster it compares is Ready (awaited)
        child = pulumi.ResourceOptions(parent=self, provider=args.deploy_provider, depends_on=[args.cluster])
        manifest = verify_job(cfg)
        source = k8s.core.v1.Secret(
            f"{name}-source-password",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{verify_job_name(cfg)}-source", namespace=cfg.namespace),
            type="Opaque",
            string_data={"password": pulumi.Output.secret(args.legacy_db_password)},
            opts=child,
        )
        policies = [
            database._custom(f"{name}-netpol-{p['metadata']['name'].rsplit('-', 1)[-1]}", p, child)
            for p in verify_job_policies(cfg)
        ]
        # The built-in Job await is the gate: pulumi-kubernetes waits for the Job's Complete=True
        # condition and fails fast on Failed=True with reason BackoffLimitExceeded or
        # DeadlineExceeded (provider/pkg/await/job.go, checker/job/check.go); backoffLimit 0
        # makes a failed check exactly that.  The Cluster it depends on is awaited Ready
        # (pulumi.com/waitFor in database.cluster), so the check never runs on a running import.
        self.job = k8s.batch.v1.Job(
            f"{name}-job",
            metadata=k8s.meta.v1.ObjectMetaArgs(**manifest["metadata"]),
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(
                    depends_on=[source, *policies],
                    custom_timeouts=pulumi.CustomTimeouts(create="60m", update="60m"),
                    # a changed script or image re-runs the check
                    replace_on_changes=["spec"],
                    delete_before_replace=True,
                ),
            ),
        )
        self.register_outputs({"job": self.job.metadata.name})

