"""The instance's one Kubernetes provider: its deploy kubeconfig, bound to its namespace.

``/etc/kubernetes/airflow-<instance>-deploy-<env>.config`` is the file helmfile uses; puppet
writes it once the manual step "Kubernetes read and deploy users" is done.  Its user is bound
to ClusterRole ``deploy-airflow`` in the namespace only (admin_ng's RoleBinding ``deploy``), which
is everything this program needs: it creates nothing cluster-wide and reads its own Namespace
(components/namespace.py).  No admin kubeconfig, and never the ambient default provider: a
resource without this provider is a bug the tests catch.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.config import InstanceConfig


def deploy_provider(name: str, cfg: InstanceConfig, parent: pulumi.Resource) -> k8s.Provider:
    return k8s.Provider(
        f"{name}-k8s-deploy",
        kubeconfig=cfg.deploy_kubeconfig,
        namespace=cfg.namespace,
        opts=pulumi.ResourceOptions(parent=parent),
    )
