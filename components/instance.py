"""``AirflowInstance``: one Airflow instance (one stack) as a ComponentResource."""

from __future__ import annotations

import pulumi

from components import airflow_values
from components.airflow_release import AirflowRelease, AirflowReleaseArgs
from components.config import InstanceConfig, Secrets
from components.namespace import InstanceNamespace, NamespaceArgs
from components.providers import kubernetes_providers


class AirflowInstance(pulumi.ComponentResource):
    namespace: pulumi.Output[str]
    release_status: pulumi.Output

    def __init__(self, name: str, cfg: InstanceConfig, secrets: Secrets, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dpe:airflow:Instance", name, None, opts)
        providers = kubernetes_providers(name, cfg, parent=self)

        ns = InstanceNamespace(
            f"{name}",
            NamespaceArgs(
                namespace=cfg.namespace,
                deploy_user=cfg.deploy_user,
                labels=cfg.namespace_labels,
                admin_provider=providers.admin,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

        private = airflow_values.private_values(
            fernet_key=secrets.fernet_key,
            webserver_secret_key=secrets.webserver_secret_key,
            s3_access_key=secrets.s3_access_key,
            s3_secret_key=secrets.s3_secret_key,
            oidc_client_secret=secrets.oidc_client_secret,
            kerberos_keytab=secrets.kerberos_keytab,
        )
        release = AirflowRelease(
            f"{name}-airflow",
            AirflowReleaseArgs(
                namespace=ns.namespace.metadata.name,
                chart_repository=cfg.chart_repository,
                chart_version=cfg.airflow_chart_version,
                values=airflow_values.airflow_values(cfg, private),
                timeout_seconds=cfg.release_timeout_seconds,
                deploy_provider=providers.deploy,
                depends_on=[ns.role_binding],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

        self.namespace = ns.namespace.metadata.name
        self.release_status = release.release.status
        self.register_outputs({"namespace": self.namespace})
