"""Explicit Kubernetes providers, least privilege as on the platform.

* ``admin``: the cluster admin kubeconfig, used only for what a namespace's deploy user
  cannot do (the Namespace and its RoleBinding).
* ``deploy``: the instance's own deploy kubeconfig (the one helmfile uses), bound to the
  namespace, for everything inside it.

Never the ambient default provider: a resource without one of these is a bug the tests catch.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.config import InstanceConfig


@dataclass(frozen=True)
class KubernetesProviders:
    admin: k8s.Provider
    deploy: k8s.Provider


def kubernetes_providers(name: str, cfg: InstanceConfig, parent: pulumi.Resource) -> KubernetesProviders:
    admin = k8s.Provider(
        f"{name}-k8s-admin",
        kubeconfig=cfg.admin_kubeconfig,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    deploy = k8s.Provider(
        f"{name}-k8s-deploy",
        kubeconfig=cfg.deploy_kubeconfig,
        namespace=cfg.namespace,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return KubernetesProviders(admin=admin, deploy=deploy)
