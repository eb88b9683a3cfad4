"""SSH host keys are decoded like the provider decodes them, before anything is registered.

pulumi-command parses ``hostKey`` with Go's ``ssh.ParseAuthorizedKey`` only at ``up``, after
the run has started (remote/connection.go L88-94); the program decodes it up front.
"""

import base64
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from components.config import ConfigError, _host_key
from tests.conftest import stack_cfg
from tools import stackconfig


def openssh(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def blob(*fields: bytes) -> str:
    return base64.b64encode(b"".join(struct.pack(">I", len(f)) + f for f in fields)).decode()


# a fixed key: parametrize ids must be the same in every pytest-xdist worker's collection
ED25519 = openssh(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))))


@pytest.mark.parametrize("value", [
    ED25519,
    openssh(ec.generate_private_key(ec.SECP256R1())),
    openssh(ec.generate_private_key(ec.SECP384R1())),
])
def test_well_formed_host_keys_are_accepted(value):
    assert _host_key("kdcHostKey", value) == value


@pytest.mark.parametrize("value, why", [
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKdcHostKeyReplaceMeWithSshKeyscanOutput", "the old example: 47 key bytes"),
    ("ssh-ed25519 " + blob(b"ssh-ed25519", b"\x01" * 31), "a 31-byte ed25519 key"),
    ("ssh-ed25519 " + blob(b"ecdsa-sha2-nistp256", b"\x01" * 32), "the blob names another algorithm"),
    ("ssh-ed25519 AAAA$$$$", "not base64"),
    ("ssh-ed25519 " + ED25519.split()[1][:-4], "truncated base64"),
    ("ecdsa-sha2-nistp256 " + blob(b"ecdsa-sha2-nistp256", b"nistp256", b"\x04" + b"\x00" * 64), "a point off the curve"),
    (openssh(rsa.generate_private_key(public_exponent=65537, key_size=2048)), "ssh-rsa: SHA-1 signatures, off since OpenSSH 8.8"),
    (ED25519.split()[1], "no type"),
    (ED25519 + " root@kdc", "a comment (not what ssh-keyscan -t prints after the host)"),
    (ED25519 + "\n", "a trailing newline"),
])
def test_malformed_host_keys_are_refused_with_the_fix(value, why):
    with pytest.raises(ConfigError) as err:
        _host_key("kdcHostKey", value)
    message = str(err.value)
    assert message.startswith("airflow:kdcHostKey:") and "ssh-keyscan" in message, why
    assert "\n" not in message


@pytest.mark.parametrize("stack", stackconfig.stacks())
def test_every_example_stack_carries_well_formed_host_keys(stack):
    cfg = stack_cfg(stack)
    keys = [cfg.kdc_host_key, cfg.rgw_admin_host_key] + ([cfg.legacy.host_key] if cfg.legacy else [])
    for key in keys:
        serialization.load_ssh_public_key(key.encode())  # what the provider's parser would accept
