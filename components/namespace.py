"""The instance's Namespace and the RoleBinding that lets its deploy user deploy Airflow.

On the platform admin_ng creates both (``namespaces:`` entry with
``deployClusterRole: deploy-airflow``, wmf-charts.md 3.1); here they are native resources
through the admin provider.  The ClusterRole ``deploy-airflow`` itself is cluster-wide and
stays with admin_ng.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import pulumi
import pulumi_kubernetes as k8s

DEPLOY_CLUSTER_ROLE = "deploy-airflow"


@dataclass(frozen=True)
class NamespaceArgs:
    namespace: pulumi.Input[str]
    deploy_user: pulumi.Input[str]
    labels: Mapping[str, str]
    admin_provider: k8s.Provider


class InstanceNamespace(pulumi.ComponentResource):
    namespace: k8s.core.v1.Namespace
    role_binding: k8s.rbac.v1.RoleBinding

    def __init__(self, name: str, args: NamespaceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dpe:airflow:Namespace", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=args.admin_provider)
        labels = {"app.kubernetes.io/managed-by": "pulumi", **args.labels}
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=args.namespace, labels=labels),
            # Deleting a namespace deletes every PVC and Secret in it.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=True)),
        )
        self.role_binding = k8s.rbac.v1.RoleBinding(
            f"{name}-deploy-rolebinding",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=f"{DEPLOY_CLUSTER_ROLE}-binding",
                namespace=self.namespace.metadata.name,
                labels={"app.kubernetes.io/managed-by": "pulumi"},
            ),
            role_ref=k8s.rbac.v1.RoleRefArgs(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=DEPLOY_CLUSTER_ROLE
            ),
            subjects=[
                k8s.rbac.v1.SubjectArgs(api_group="rbac.authorization.k8s.io", kind="User", name=args.deploy_user)
            ],
            opts=child,
        )
        self.register_outputs({"namespace": self.namespace.metadata.name})
