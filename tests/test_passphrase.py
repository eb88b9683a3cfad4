"""The passphrase secrets format is byte-compatible with `pulumi config set --secret`."""

import base64

import pytest
import yaml

from tests.conftest import EXAMPLE_PASSPHRASE, STACKS
from tools import passphrase as pp
from tools import stackconfig

# pulumi/pulumi pkg/secrets/passphrase/manager_test.go: state made with passphrase "password"
PULUMI_TEST_VECTOR = "v1:fozI5u6B030=:v1:F+6ZduKKd8G0/V7L:PGMFeIzwobWRKmEAzUdaQHqC5mMRIQ=="


def test_pulumi_published_vector_unlocks_with_its_passphrase():
    crypter = pp.crypter_from_salt("password", PULUMI_TEST_VECTOR)
    # the check value inside the salt is the string "pulumi"
    assert crypter.decrypt(PULUMI_TEST_VECTOR.split(":", 2)[2]) == "pulumi"


def test_pulumi_published_vector_rejects_wrong_passphrase():
    with pytest.raises(pp.PassphraseError, match="incorrect passphrase"):
        pp.crypter_from_salt("password123", PULUMI_TEST_VECTOR)


def test_round_trip_with_fresh_salt():
    salt, crypter = pp.new_salt("correct horse", salt=b"\x01" * 8)
    assert salt.startswith("v1:AQEBAQEBAQE=:v1:")
    token = crypter.encrypt("s3cr3t value with spaces")
    again = pp.crypter_from_salt("correct horse", salt)
    assert again.decrypt(token) == "s3cr3t value with spaces"


def test_ciphertext_is_raw_string_plus_gcm_tag():
    # `pulumi config set --secret` seals the raw string (not JSON): len = len(plaintext) + 16
    _, crypter = pp.new_salt("pw", salt=b"\x00" * 8)
    token = crypter.encrypt("opensesame", nonce=b"\x00" * 12)
    assert len(base64.b64decode(token.split(":")[2])) == len("opensesame") + 16


def test_tampered_ciphertext_is_rejected_without_echoing_it():
    _, crypter = pp.new_salt("pw")
    token = crypter.encrypt("hunter2")
    broken = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(pp.PassphraseError) as err:
        crypter.decrypt(broken)
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("stack", STACKS)
def test_example_stacks_decrypt_with_the_documented_passphrase(stack):
    sc = stackconfig.load(stack, EXAMPLE_PASSPHRASE)
    assert sc.decrypted
    assert "airflow:oidcClientSecret" in sc.secret_keys and "airflow:sshPrivateKey" in sc.secret_keys
    assert sc.config["airflow:oidcClientSecret"] != "[secret]"
    assert sc.config["airflow:sshPrivateKey"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


@pytest.mark.parametrize("stack", STACKS)
def test_stack_file_secrets_are_ciphertext_only(stack):
    doc = yaml.safe_load(open(f"Pulumi.{stack}.yaml"))
    for key in [k for k in doc["config"] if k.split(":")[1] in ("fernetKey", "webserverSecretKey", "oidcClientSecret", "sshPrivateKey")]:
        assert set(doc["config"][key]) == {"secure"}, f"{key} in Pulumi.{stack}.yaml must be a secure value"
        assert doc["config"][key]["secure"].startswith("v1:")


def test_set_secret_rewrites_in_place_and_keeps_comments(tmp_path):
    (tmp_path / "Pulumi.yaml").write_text("name: airflow\nruntime: python\n")
    (tmp_path / "Pulumi.x.yaml").write_text("# keep me\nconfig:\n  airflow:instance: x\n")
    stackconfig.set_secret("x", "fernetKey", "first", "pw", root=tmp_path)
    stackconfig.set_secret("x", "fernetKey", "second", "pw", root=tmp_path)
    text = (tmp_path / "Pulumi.x.yaml").read_text()
    assert "# keep me" in text and text.count("airflow:fernetKey") == 1
    assert "second" not in text
    sc = stackconfig.load("x", "pw", root=tmp_path)
    assert sc.config["airflow:fernetKey"] == "second"
    assert sc.secret_keys == ("airflow:fernetKey",)


def test_wrong_passphrase_names_the_stack_file():
    with pytest.raises(stackconfig.StackError, match=r"Pulumi\.search\.yaml: incorrect passphrase"):
        stackconfig.load("search", "not-the-passphrase")
