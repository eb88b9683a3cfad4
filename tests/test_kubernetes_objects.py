"""The namespace admin_ng made (read, never created), the one deploy provider, and the
Kubernetes schema of the core objects the program does create."""

import kubernetes_validate
import pytest

from components import namespace as ns_mod
from tests.conftest import KUBERNETES_VERSION, rendered
from tools import mockrun

# API groups kubernetes-validate knows; CNPG and Calico objects are checked in test_database.py
CORE_GROUPS = ("kubernetes:core/", "kubernetes:rbac.authorization.k8s.io/", "kubernetes:networking.k8s.io/")
NAMESPACE = "kubernetes:core/v1:Namespace"


def provider_name(reg):
    return reg.provider.rsplit("::", 1)[0].rsplit("::", 1)[-1]


@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_core_objects_validate_against_the_kubernetes_schema(stack):
    mon = rendered(stack)
    core = [r for r in mon.registered() if r.custom and not r.read and r.type.startswith(CORE_GROUPS)]
    assert {r.inputs["kind"] for r in core} == {"Secret", "NetworkPolicy"}
    for reg in core:
        kubernetes_validate.validate(mockrun.unmasked(reg.inputs), KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_namespace_is_read_not_created_and_no_rolebinding_is_made(stack):
    mon = rendered(stack)
    reads = [r for r in mon.by_type(NAMESPACE)]
    assert len(reads) == 1 and reads[0].read, "the Namespace must be a read (Namespace.get), never a create"
    assert reads[0].read_id == f"airflow-{stack}"
    assert not mon.by_type("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"), "admin_ng owns the deploy RoleBinding"


def test_geoip_instances_need_the_analytics_pss_labels_from_admin_ng():
    mon = rendered("test-k8s")
    snippet = next(s for s in mon.stack_outputs["manualSteps"] if s["step"].startswith(ns_mod.ADMIN_NG_STEP))["snippet"]
    for key, value in ns_mod.ANALYTICS_PSS_LABELS.items():
        assert f"{key}: {value}" in snippet, f"the admin_ng snippet must set {key}"
    search = next(s for s in rendered("search").stack_outputs["manualSteps"] if s["step"].startswith(ns_mod.ADMIN_NG_STEP))
    assert "allow-hostpath-analytics" not in search["snippet"], "no GeoIP: no hostPath exception"


@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_every_kubernetes_resource_uses_the_deploy_provider_and_there_is_no_admin_provider(stack):
    mon = rendered(stack)
    providers = [r.name for r in mon.by_type("pulumi:providers:kubernetes")]
    assert providers == [f"{stack}-k8s-deploy"], f"one deploy provider only, got {providers}"
    for reg in mon.registered():
        if reg.custom and reg.type.startswith("kubernetes:"):
            assert provider_name(reg) == f"{stack}-k8s-deploy", f"{reg.name} must use the deploy provider"


def test_provider_uses_the_platform_deploy_kubeconfig():
    deploy = rendered("search").named("search-k8s-deploy")
    assert deploy.inputs["kubeconfig"] == "/etc/kubernetes/airflow-search-deploy-dse-k8s-eqiad.config"
    assert deploy.inputs["namespace"] == "airflow-search"
