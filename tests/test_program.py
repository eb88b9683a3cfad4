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
    from collections import Counter

    types = Counter(r.type for r in rendered("search").registered())
    assert types == Counter({
        "dpe:airflow:Instance": 1, "dpe:airflow:Namespace": 1, "dpe:airflow:Release": 1,
        "dpe:airflow:RgwUser": 2, "dpe:airflow:RgwBucket": 2, "dpe:airflow:KerberosKeytab": 1,
        "dpe:airflow:PostgresCluster": 1,
        "pulumi:providers:kubernetes": 1, "pulumi:providers:aws": 2, "pulumi:providers:random": 1, "pulumi:providers:command": 1,
        # reads: the admin_ng namespace and the operator's pooler Service
        "kubernetes:core/v1:Namespace": 1, "kubernetes:core/v1:Service": 1,
        "kubernetes:helm.sh/v3:Release": 1,
        "random:index/randomPassword:RandomPassword": 4,  # two S3 key pairs (search carries its legacy fernet/webserver keys)
        "command:remote:Command": 3,
        "aws:s3/bucket:Bucket": 2,
        "kubernetes:core/v1:Secret": 2,
        "kubernetes:postgresql.cnpg.io/v1:ImageCatalog": 1, "kubernetes:postgresql.cnpg.io/v1:Cluster": 1,
        "kubernetes:postgresql.cnpg.io/v1:Pooler": 1, "kubernetes:postgresql.cnpg.io/v1:ScheduledBackup": 1,
        "kubernetes:networking.k8s.io/v1:NetworkPolicy": 2, "kubernetes:crd.projectcalico.org/v1:NetworkPolicy": 3,
    })
