"""Namespace and RoleBinding: content, admin provider, and the Kubernetes schema."""

import kubernetes_validate
import pytest

from tests.conftest import KUBERNETES_VERSION, rendered
from tools import mockrun

# API groups kubernetes-validate knows; CNPG and Calico objects are checked in test_database.py
CORE_GROUPS = ("kubernetes:core/", "kubernetes:rbac.authorization.k8s.io/", "kubernetes:networking.k8s.io/")


def provider_name(reg):
    return reg.provider.rsplit("::", 1)[0].rsplit("::", 1)[-1]


@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_core_objects_validate_against_the_kubernetes_schema(stack):
    mon = rendered(stack)
    core = [r for r in mon.registered() if r.custom and r.type.startswith(CORE_GROUPS)]
    assert {r.inputs["kind"] for r in core} == {"Namespace", "RoleBinding", "Secret", "NetworkPolicy"}
    for reg in core:
        kubernetes_validate.validate(mockrun.unmasked(reg.inputs), KUBERNETES_VERSION, strict=True)


def test_namespace_is_named_for_the_instance_with_its_labels():
    ns = rendered("test-k8s").one("kubernetes:core/v1:Namespace")
    assert ns.inputs["metadata"]["name"] == "airflow-test-k8s"
    assert ns.inputs["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "pulumi",
        "pod-security.wmf.org/profile": "restricted",
        "pod-security.wmf.org/hostpath-analytics": "include",
    }
    assert ns.protect, "the Namespace holds the instance's PVCs and Secrets: it must be protected"


def test_deploy_user_is_bound_to_deploy_airflow():
    rb = rendered("search").one("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding")
    assert rb.inputs["metadata"]["namespace"] == "airflow-search"
    assert rb.inputs["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "deploy-airflow"}
    assert rb.inputs["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "airflow-search-deploy"}]


@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_only_namespace_and_rolebinding_use_the_admin_provider(stack):
    mon = rendered(stack)
    for reg in mon.registered():
        if not reg.custom or reg.type.startswith("pulumi:providers:"):
            continue
        if reg.type.startswith("kubernetes:"):
            expected = "admin" if reg.inputs.get("kind") in ("Namespace", "RoleBinding") else "deploy"
            assert provider_name(reg).endswith(f"-k8s-{expected}"), f"{reg.name} must use the {expected} provider"


def test_providers_use_the_platform_kubeconfigs():
    mon = rendered("search")
    admin = mon.named("search-k8s-admin")
    deploy = mon.named("search-k8s-deploy")
    assert admin.inputs["kubeconfig"] == "/etc/kubernetes/admin-dse-k8s-eqiad.config"
    assert deploy.inputs["kubeconfig"] == "/etc/kubernetes/airflow-search-deploy-dse-k8s-eqiad.config"
    assert deploy.inputs["namespace"] == "airflow-search"
