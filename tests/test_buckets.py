"""Buckets on RGW through an aws.Provider per RGW user."""

import json

import pytest

from components import buckets
from components.config import ConfigError
from tests.conftest import rendered, run_stack

BUCKET = "aws:s3/bucket:Bucket"
AWS_PROVIDER = "pulumi:providers:aws"


@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_both_buckets_exist_protected_and_retained(stack):
    found = {r.inputs["bucket"]: r for r in rendered(stack).by_type(BUCKET)}
    assert set(found) == {f"logs.airflow-{stack}.dse-k8s-eqiad", f"postgresql-airflow-{stack}.dse-k8s-eqiad"}
    for name, reg in found.items():
        assert reg.protect, f"bucket {name} must be protected"
        assert reg.retain_on_delete, f"bucket {name} must be retained on delete"
        assert reg.inputs.get("forceDestroy") is False, f"bucket {name} must never be force-destroyed"


def test_each_bucket_goes_through_its_own_users_provider():
    mon = rendered("search")
    providers = {r.urn: r for r in mon.by_type(AWS_PROVIDER)}
    assert len(providers) == 2
    for bucket in mon.by_type(BUCKET):
        provider_urn = bucket.provider.rsplit("::", 1)[0]
        assert provider_urn in providers, f"{bucket.name} must use an RGW provider"
    logs = next(b for b in mon.by_type(BUCKET) if b.inputs["bucket"].startswith("logs."))
    assert "search-logs-rgw" in logs.provider


@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_rgw_provider_settings(stack):
    for prov in rendered(stack).by_type(AWS_PROVIDER):
        i = prov.inputs
        assert json.loads(i["endpoints"]) == [{"s3": "https://rgw.eqiad.dpe.anycast.wmnet"}], prov.name
        assert i["region"] == "dpe"
        for flag in ("s3UsePathStyle", "skipCredentialsValidation", "skipMetadataApiCheck", "skipRegionValidation", "skipRequestingAccountId"):
            assert i[flag] == "true", f"{prov.name}: {flag} must be true for RGW"
        # the keys are secrets (the SDK also lists them as secret outputs)
        assert type(i["accessKey"]).__name__ == "SecretLeaf" and type(i["secretKey"]).__name__ == "SecretLeaf"


def test_buckets_depend_on_their_rgw_user():
    mon = rendered("search")
    by_urn = {r.urn: r for r in mon.registered()}
    for bucket in mon.by_type(BUCKET):
        # depends_on on a component resolves to its children: the radosgw-admin Command
        deps = [by_urn[u] for u in bucket.explicit_depends_on if u in by_urn]
        assert any(d.type == "command:remote:Command" and "-rgw-" in d.name for d in deps), f"{bucket.name} must depend on its RGW user"
    logs = next(b for b in mon.by_type(BUCKET) if b.inputs["bucket"].startswith("logs."))
    assert any(by_urn[u].name == "search-rgw-airflow-user" for u in logs.explicit_depends_on)
    pg = next(b for b in mon.by_type(BUCKET) if b.inputs["bucket"].startswith("postgresql-"))
    assert any(by_urn[u].name == "search-rgw-postgresql-user" for u in pg.explicit_depends_on)


def test_missing_checksum_env_is_a_one_line_error(monkeypatch):
    monkeypatch.delenv("AWS_REQUEST_CHECKSUM_CALCULATION")
    run = run_stack("search")
    assert isinstance(run.error, ConfigError)
    assert str(run.error).startswith("environment AWS_REQUEST_CHECKSUM_CALCULATION: is unset, but Ceph RGW needs when_required")
    assert run.monitor.registered() == []


def test_checksum_env_accepts_either_case():
    buckets.require_checksum_env({"AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED", "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"})
    with pytest.raises(ConfigError):
        buckets.require_checksum_env({"AWS_REQUEST_CHECKSUM_CALCULATION": "when_supported", "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"})
