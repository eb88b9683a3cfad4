"""Pulumi's passphrase secrets provider, format v1, so stack files stay byte-compatible
with `pulumi config set --secret` (pulumi/pulumi sdk/go/common/resource/config/crypt.go and
pkg/secrets/passphrase/manager.go).

* key: PBKDF2-HMAC-SHA256(passphrase, salt[8], 1,000,000 iterations, 32 bytes)
* ``encryptionsalt: v1:<b64 salt>:<secure value of "pulumi">`` (detects a wrong passphrase)
* ``secure: v1:<b64 nonce[12]>:<b64 AES-256-GCM ciphertext+tag>``, plaintext = the raw string
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

ITERATIONS = 1_000_000
_CHECK = "pulumi"


class PassphraseError(Exception):
    """Wrong passphrase or malformed ciphertext; the message never contains a secret."""


def _b64d(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, AttributeError):  # binascii.Error, UnicodeEncodeError, not a string
        raise PassphraseError("a value is not valid base64") from None


def _b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@lru_cache(maxsize=8)
def _derive(passphrase: str, salt: bytes) -> bytes:
    return PBKDF2HMAC(hashes.SHA256(), 32, salt, ITERATIONS).derive(passphrase.encode("utf-8"))


@dataclass(frozen=True)
class Crypter:
    key: bytes

    def encrypt(self, plaintext: str, nonce: bytes | None = None) -> str:
        nonce = os.urandom(12) if nonce is None else nonce
        sealed = AESGCM(self.key).encrypt(nonce, plaintext.encode("utf-8"), None)
        return f"v1:{_b64e(nonce)}:{_b64e(sealed)}"

    def decrypt(self, ciphertext: str) -> str:
        parts = ciphertext.split(":")
        if len(parts) != 3 or parts[0] != "v1":
            raise PassphraseError("ciphertext is not in the v1:<nonce>:<data> format")
        try:
            return AESGCM(self.key).decrypt(_b64d(parts[1]), _b64d(parts[2]), None).decode("utf-8")
        except (InvalidTag, ValueError, PassphraseError) as exc:
            raise PassphraseError("cannot decrypt: wrong passphrase or corrupted value") from exc


def crypter_from_salt(passphrase: str, encryption_salt: str) -> Crypter:
    """Unlock a stack file's ``encryptionsalt``; raise PassphraseError on a wrong passphrase."""
    parts = encryption_salt.split(":", 2) if isinstance(encryption_salt, str) else []
    if len(parts) != 3 or parts[0] != "v1":
        raise PassphraseError("encryptionsalt is not in the v1:<salt>:<check> format")
    try:
        salt = _b64d(parts[1])
    except PassphraseError:
        raise PassphraseError("encryptionsalt is not in the v1:<salt>:<check> format") from None
    crypter = Crypter(_derive(passphrase, salt))
    try:
        check = crypter.decrypt(parts[2])
    except PassphraseError:
        raise PassphraseError("incorrect passphrase") from None
    if check != _CHECK:
        raise PassphraseError("incorrect passphrase")
    return crypter


def new_salt(passphrase: str, salt: bytes | None = None) -> tuple[str, Crypter]:
    """A fresh ``encryptionsalt`` value and its crypter, as `pulumi stack init` makes them."""
    salt = os.urandom(8) if salt is None else salt
    crypter = Crypter(_derive(passphrase, salt))
    return f"v1:{_b64e(salt)}:{crypter.encrypt(_CHECK)}", crypter


def passphrase_from_env(env: dict[str, str] | None = None) -> str | None:
    """PULUMI_CONFIG_PASSPHRASE, else the (whitespace-trimmed) PULUMI_CONFIG_PASSPHRASE_FILE.

    A file that cannot be read or is not UTF-8 text is a one-line PassphraseError."""
    env = dict(os.environ) if env is None else env
    if "PULUMI_CONFIG_PASSPHRASE" in env:
        return env["PULUMI_CONFIG_PASSPHRASE"]
    path = env.get("PULUMI_CONFIG_PASSPHRASE_FILE")
    if path:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise PassphraseError(f"PULUMI_CONFIG_PASSPHRASE_FILE: cannot read it ({exc.strerror or type(exc).__name__})") from None
        try:
            return data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise PassphraseError("PULUMI_CONFIG_PASSPHRASE_FILE: not UTF-8 text") from None
    return None
