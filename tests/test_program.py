"""Whole-program properties: component tree, parents, providers, names."""

import pytest

from tests.conftest import rendered

INSTANCE = "dpe:airflow:Instance"


@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_every_resource_is_parented_under_the_instance(stack):
    mon = rendered(stack)
    inst = mon.one(INSTANCE)
    assert inst.parent == mon.stack_urn
    by_urn = {r.urn: r for r in mon.registered()}
    for reg in mon.registered():
        if reg is inst:
            continue
        chain, node = [], reg
        while node.parent and node.parent in by_urn:
            node = by_urn[node.parent]
            chain.append(node.name)
        assert node is inst, f"{reg.type} {reg.name} is not under the instance component (chain {chain})"


@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_no_resource_uses_an_ambient_default_provider(stack):
    for reg in rendered(stack).registered():
        if reg.custom and not reg.type.startswith("pulumi:providers:"):
            assert reg.provider, f"{reg.type} {reg.name} uses the default provider"


@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_resource_names_derive_from_the_instance(stack):
    for reg in rendered(stack).registered():
        assert reg.name == stack or reg.name.startswith(f"{stack}-"), f"{reg.name} is not derived from {stack}"


def test_stack_outputs():
    out = rendered("search").stack_outputs
    assert out["namespace"] == "airflow-search"
    assert out["chartVersion"] == "0.0.177"


def test_resource_set_of_search():
    types = sorted(r.type for r in rendered("search").registered())
    assert types == sorted([
        "dpe:airflow:Instance", "dpe:airflow:Namespace", "dpe:airflow:Release",
        "pulumi:providers:kubernetes", "pulumi:providers:kubernetes",
        "kubernetes:core/v1:Namespace", "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding",
        "kubernetes:helm.sh/v3:Release",
    ])
