"""``AirflowInstance``: one Airflow instance (one stack) as a ComponentResource.

The order follows the runbook's "Creating a new instance": namespace and deploy rights,
S3 users and buckets, Kerberos principals and keytab, generated secrets, the CloudNativePG
cluster, then the Airflow release; the steps no API reaches become the ``manual_steps``.
"""

from __future__ import annotations

from dataclasses import replace

import pulumi

from components import airflow_values, generated_secrets, kerberos, manual_steps, remote
from components.airflow_release import AirflowRelease, AirflowReleaseArgs
from components.buckets import RgwBucket, RgwBucketArgs
from components.config import InstanceConfig, Secrets
from components.database import PostgresCluster, PostgresClusterArgs
from components.kerberos import KerberosKeytab, KerberosKeytabArgs
from components.migration import DatabaseVerification, DatabaseVerificationArgs, LogMigration, LogMigrationArgs
from components.namespace import InstanceNamespace, NamespaceArgs
from components.providers import deploy_provider
from components.rgw_user import RgwUser, RgwUserArgs


class AirflowInstance(pulumi.ComponentResource):
    namespace: pulumi.Output[str]
    manual_steps: list[dict[str, str]]
    pg_bucket_credentials: pulumi.Output[dict] | None

    def __init__(self, name: str, cfg: InstanceConfig, secrets: Secrets, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dpe:airflow:Instance", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        deploy = deploy_provider(name, cfg, parent=self)

        # admin_ng made the namespace; nothing below (no RGW user, bucket, keytab, log sync or
        # legacy-host step) runs unless it exists as the instance needs it
        ns = InstanceNamespace(name, NamespaceArgs(cfg=cfg, deploy_provider=deploy), opts=child)
        precondition: list = [ns.checked]

        # --- generated secrets (protected: they must never change once created) ---
        # A migrated instance carries its legacy fernet and webserver keys in config, a taken-over
        # one (cfg.takeover) every credential: config validation refused any missing one, so
        # nothing is generated then.  The names of what is generated never depend on config, so a
        # stack that generated its keys keeps exactly the same resources.
        needs_airflow_s3 = cfg.phase_at_least("scheduler")
        needs_pg_s3 = cfg.phase_at_least("database-import")
        generates = (
            secrets.fernet_key is None or secrets.webserver_secret_key is None
            or (needs_airflow_s3 and secrets.airflow_s3_keys is None)
            or (needs_pg_s3 and secrets.postgresql_s3_keys is None)
        )
        rnd = generated_secrets.random_provider(name, self) if generates else None
        fernet_key = secrets.fernet_key or generated_secrets.fernet_key(name, self, rnd)
        webserver_key = secrets.webserver_secret_key or generated_secrets.webserver_secret_key(name, self, rnd)

        ssh = remote.SshSettings(
            user=cfg.ssh_user,
            private_key=secrets.ssh_private_key,
            dial_timeout_seconds=cfg.ssh_dial_timeout_seconds,
            dial_error_limit=cfg.ssh_dial_error_limit,
        )
        # explicit provider, inherited by the Commands inside the components below
        commands = pulumi.ResourceOptions(parent=self, providers=[remote.command_provider(name, self)])
        rgw_conn = remote.connection(ssh, cfg.rgw_admin_host, cfg.rgw_admin_host_key)

        release_deps: list = [*precondition]
        private_extra: dict = {}
        logs_bucket = None

        def s3_user_and_bucket(user_name: str, uid: str, bucket_name: str, bucket: str, keys) -> RgwBucket:
            """An RGW user holding the program's key pair, and its bucket through its provider."""
            user = RgwUser(
                user_name,
                RgwUserArgs(
                    uid=uid, display_name=uid, access_key=keys.access_key, secret_key=keys.secret_key,
                    conn=rgw_conn, use_sudo=cfg.remote_sudo, timeout_minutes=cfg.command_timeout_minutes,
                    depends_on=precondition,
                ),
                opts=commands,
            )
            return RgwBucket(
                bucket_name,
                RgwBucketArgs(
                    bucket=bucket, endpoint=cfg.rgw_endpoint, region=cfg.rgw_region,
                    access_key=keys.access_key, secret_key=keys.secret_key, depends_on=[*precondition, user],
                ),
                opts=child,
            )

        # --- phase scheduler onwards: S3 user and bucket for logs, Kerberos, log migration ---
        if needs_airflow_s3:
            # the running user's pair from config (the RGW script then finds it and changes
            # nothing), else a generated one
            airflow_keys = secrets.airflow_s3_keys or generated_secrets.s3_key_pair(f"{name}-airflow-s3", self, rnd)
            logs_bucket = s3_user_and_bucket(f"{name}-rgw-airflow", cfg.airflow_s3_user, f"{name}-logs", cfg.logs_bucket, airflow_keys)
            keytab = KerberosKeytab(
                f"{name}-kerberos",
                KerberosKeytabArgs(
                    realm=cfg.kerberos_realm,
                    principals=kerberos.principals(cfg.runs_as_user, cfg.service_fqdn, cfg.kerberos_realm),
                    conn=remote.connection(ssh, cfg.kdc_host, cfg.kdc_host_key),
                    use_sudo=cfg.remote_sudo,
                    timeout_minutes=cfg.command_timeout_minutes,
                    depends_on=precondition,
                ),
                opts=commands,
            )
            release_deps.append(logs_bucket)
            private_extra.update(
                s3_access_key=airflow_keys.access_key,
                s3_secret_key=airflow_keys.secret_key,
                kerberos_keytab=keytab.keytab_base64,
            )
            if cfg.legacy is not None and cfg.phase != "complete":
                # the old task logs reach the bucket before the Kubernetes scheduler starts
                logs = LogMigration(
                    f"{name}-log-migration",
                    LogMigrationArgs(
                        cfg=cfg,
                        conn=remote.connection(ssh, cfg.legacy.host, cfg.legacy.host_key),
                        access_key=airflow_keys.access_key,
                        secret_key=airflow_keys.secret_key,
                        bucket=logs_bucket,
                    ),
                    opts=commands,
                )
                release_deps.append(logs.verified)

        # --- phase database-import onwards: PostgreSQL (CloudNativePG) ---
        database = None
        if needs_pg_s3:
            pg_keys = secrets.postgresql_s3_keys or generated_secrets.s3_key_pair(f"{name}-postgresql-s3", self, rnd)
            pg_bucket = s3_user_and_bucket(f"{name}-rgw-postgresql", cfg.pg_s3_user, f"{name}-postgresql-backups", cfg.pg_bucket, pg_keys)
            self.pg_bucket_credentials = pulumi.Output.secret(
                pulumi.Output.all(pg_keys.access_key, pg_keys.secret_key).apply(
                    lambda ks: {"bucket": cfg.pg_bucket, "access_key": ks[0], "secret_key": ks[1]}
                )
            )
            database = PostgresClusterArgs(
                cfg=cfg,
                s3_access_key=pg_keys.access_key,
                s3_secret_key=pg_keys.secret_key,
                deploy_provider=deploy,
                legacy_db_password=secrets.legacy_db_password,
                depends_on=[*precondition, pg_bucket],
            )
        else:
            self.pg_bucket_credentials = None

        # --- Airflow ---
        private = airflow_values.private_values(
            cfg,
            fernet_key=fernet_key,
            webserver_secret_key=webserver_key,
            oidc_client_secret=secrets.oidc_client_secret,
            legacy_db_password=secrets.legacy_db_password,
            **private_extra,
        )
        if secrets.private_values:
            # the instance's own private values (extra connections and secrets), as helmfile's
            # private file; the program-managed secret paths are refused by config validation
            private = airflow_values.deep_merge(private, secrets.private_values)
        release_args = AirflowReleaseArgs(
            namespace=cfg.namespace,
            chart_repository=cfg.chart_repository,
            chart_version=cfg.airflow_chart_version,
            values=airflow_values.airflow_values(cfg, private),
            timeout_seconds=cfg.release_timeout_seconds,
            deploy_provider=deploy,
            depends_on=release_deps,
        )

        if database is not None and cfg.phase == "database-import":
            # Airflow is scaled to 0 (by this release update) before CloudNativePG starts
            # importing: nothing writes to the legacy database during the dump.
            release = AirflowRelease(f"{name}-airflow", release_args, opts=child)
            PostgresCluster(f"{name}-postgresql", replace(database, depends_on=[*database.depends_on, release]), opts=child)
        elif database is not None:
            pg = PostgresCluster(f"{name}-postgresql", database, opts=child)
            # the pooler Service must exist before Airflow pods start: they read its
            # service-link env var (wmf-charts.md 1.7)
            deps = [*release_deps, pg.pooler_service]
            if cfg.legacy is not None and cfg.phase == "database":
                check = DatabaseVerification(
                    f"{name}-db-verification",
                    DatabaseVerificationArgs(
                        cfg=cfg,
                        legacy_db_password=secrets.legacy_db_password,
                        deploy_provider=deploy,
                        cluster=pg.cluster,
                    ),
                    opts=child,
                )
                deps.append(check.job)
            AirflowRelease(f"{name}-airflow", replace(release_args, depends_on=deps), opts=child)
        else:
            AirflowRelease(f"{name}-airflow", release_args, opts=child)

        self.namespace = ns.namespace.metadata.name
        self.manual_steps = manual_steps.manual_steps(cfg)
        self.register_outputs({"namespace": self.namespace})
