"""Secrets the runbook generates "random": valid, secret end to end, never regenerated."""

import pytest
from cryptography.fernet import Fernet

from components import generated_secrets
from tests.conftest import rendered, run_stack
from tools import mockrun

RANDOM_TYPES = ("random:index/randomPassword:RandomPassword", "random:index/randomBytes:RandomBytes")


def release_values(mon):
    return mon.one("kubernetes:helm.sh/v3:Release").inputs["values"]


def test_generated_fernet_key_is_a_valid_fernet_key():
    mon = rendered("test-k8s")  # test-k8s has no fernetKey in config: it is generated
    leaf = release_values(mon)["config"]["private"]["airflow__core__fernet_key"]
    assert isinstance(leaf, mockrun.SecretLeaf)
    Fernet(leaf.value.encode())  # raises if it is not url-safe base64 of 32 bytes
    assert generated_secrets.fernet_from_base64("ab+/cd==") == "ab-_cd=="


def test_configured_fernet_key_wins_and_nothing_is_generated_for_it():
    mon = rendered("search")  # search carries its legacy instance's fernet key
    assert not [r for r in mon.registered() if r.name.endswith("-fernet-key")]
    Fernet(release_values(mon)["config"]["private"]["airflow__core__fernet_key"].value.encode())


@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_every_generated_secret_is_protected(stack):
    randoms = [r for r in rendered(stack).registered() if r.type in RANDOM_TYPES]
    assert randoms, "expected generated secrets"
    for reg in randoms:
        assert reg.protect, f"{reg.name}: a regenerated secret breaks the instance; it must be protected"


def test_test_k8s_generates_fernet_webserver_and_two_s3_key_pairs():
    names = sorted(r.name for r in rendered("test-k8s").registered() if r.type in RANDOM_TYPES)
    assert names == sorted([
        "test-k8s-fernet-key", "test-k8s-webserver-secret-key",
        "test-k8s-airflow-s3-access-key", "test-k8s-airflow-s3-secret-key",
        "test-k8s-postgresql-s3-access-key", "test-k8s-postgresql-s3-secret-key",
    ])


def test_generation_inputs_do_not_depend_on_volatile_config():
    # keepers would regenerate a key when they change: none are used
    for reg in rendered("test-k8s").registered():
        if reg.type in RANDOM_TYPES:
            assert "keepers" not in reg.inputs, f"{reg.name} must not have keepers"


def test_s3_keys_are_rgw_shaped():
    mon = rendered("test-k8s")
    access = mon.named("test-k8s-airflow-s3-access-key").inputs
    assert access["length"] == 20 and access["lower"] is False and access["special"] is False
    secret = mon.named("test-k8s-airflow-s3-secret-key").inputs
    assert secret["length"] == 40 and secret["special"] is False


def test_pg_bucket_credentials_output_is_secret():
    out = rendered("search").stack_outputs["pgBucketCredentials"]
    assert isinstance(out, mockrun.SecretLeaf)
    assert out.value["bucket"] == "postgresql-airflow-search.dse-k8s-eqiad"
