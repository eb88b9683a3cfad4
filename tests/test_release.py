"""The Airflow Helm release: chart, pinning, waiting, and wiring."""

import pytest

from tests.conftest import rendered, run_stack

RELEASE = "kubernetes:helm.sh/v3:Release"


@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_release_installs_the_pinned_wmf_chart_as_production(stack):
    rel = rendered(stack).one(RELEASE)
    assert rel.inputs["chart"] == "airflow"
    assert rel.inputs["version"] == "0.0.177"
    assert rel.inputs["repositoryOpts"] == {"repo": "https://helm-charts.wikimedia.org/stable/"}
    assert rel.inputs["name"] == "production"
    assert rel.inputs["namespace"] == f"airflow-{stack}"
    assert rel.inputs.get("createNamespace") in (None, False)


@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_release_waits_with_a_finite_timeout_and_is_atomic(stack):
    rel = rendered(stack).one(RELEASE)
    assert rel.inputs["atomic"] is True
    assert rel.inputs.get("skipAwait") in (None, False)
    assert 0 < rel.inputs["timeout"] <= 3600
    # deprecated and without effect since pulumi-kubernetes 4.30 (nulls are kept anyway)
    assert "allowNullValues" not in rel.inputs


def test_release_timeout_and_chart_version_come_from_config():
    # a new chart version goes to the canary first
    run = run_stack("test-k8s", overrides={"releaseTimeoutSeconds": 600, "airflowChartVersion": "0.0.178"})
    rel = run.monitor.one(RELEASE)
    assert rel.inputs["timeout"] == 600 and rel.inputs["version"] == "0.0.178"


def test_release_uses_the_deploy_provider_and_waits_for_the_namespace_check():
    mon = rendered("search")
    rel = mon.one(RELEASE)
    assert "search-k8s-deploy" in rel.provider
    ns = mon.one("kubernetes:core/v1:Namespace")
    assert ns.read and ns.urn in rel.explicit_depends_on, "the release must wait for the admin_ng namespace"
    assert rel.inputs["namespace"] == "airflow-search"
