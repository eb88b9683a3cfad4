"""Secrets the runbook says to generate "random": made once by pulumi-random, then never again.

* Fernet key: a new one would make every encrypted connection/variable in the Airflow
  database unreadable, so the resource is protected; a migrated instance carries its legacy
  key in config (``fernetKey``) instead.
* Webserver secret key (``webserverSecretKey`` in config when shared with a legacy scheduler).
* The S3 key pairs of the two RGW users: supplied to radosgw-admin, so a re-run converges on
  the same keys instead of adding new ones (Ceph adds generated keys to the user's keyring).
  A running instance being taken over carries its users' existing pairs in config instead
  (``airflowS3AccessKey``/``...SecretKey``, ``postgresqlS3...``); with ``takeover`` on nothing
  here is ever called (config refuses a missing credential).

All results are secret Outputs.  Protected: replacing any of them is refused by the engine.
"""

from __future__ import annotations

import pulumi
import pulumi_random as random

from components.config import S3KeyPair  # noqa: F401 - the pair type, shared with the config's pairs


def fernet_from_base64(std_b64: str) -> str:
    """Fernet wants url-safe base64 of 32 bytes; RandomBytes gives standard base64."""
    return std_b64.replace("+", "-").replace("/", "_")


def random_provider(name: str, parent: pulumi.Resource) -> random.Provider:
    return random.Provider(f"{name}-random", opts=pulumi.ResourceOptions(parent=parent))


def _protected(parent: pulumi.Resource, provider: random.Provider) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent, provider=provider, protect=True)


def fernet_key(name: str, parent: pulumi.Resource, provider: random.Provider) -> pulumi.Output[str]:
    raw = random.RandomBytes(f"{name}-fernet-key", length=32, opts=_protected(parent, provider))
    return pulumi.Output.secret(raw.base64.apply(fernet_from_base64))


def webserver_secret_key(name: str, parent: pulumi.Resource, provider: random.Provider) -> pulumi.Output[str]:
    pw = random.RandomPassword(f"{name}-webserver-secret-key", length=64, special=False, opts=_protected(parent, provider))
    return pulumi.Output.secret(pw.result)


def s3_key_pair(name: str, parent: pulumi.Resource, provider: random.Provider) -> S3KeyPair:
    # RGW-style keys: 20 upper-case alphanumerics and 40 alphanumerics (no characters that
    # need escaping in JSON, shell or config files)
    access = random.RandomPassword(
        f"{name}-access-key", length=20, lower=False, upper=True, numeric=True, special=False, opts=_protected(parent, provider)
    )
    secret = random.RandomPassword(f"{name}-secret-key", length=40, special=False, opts=_protected(parent, provider))
    return S3KeyPair(access_key=pulumi.Output.secret(access.result), secret_key=pulumi.Output.secret(secret.result))
