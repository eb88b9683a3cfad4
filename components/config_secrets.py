"""The secret inputs of the stack config, as secret ``pulumi.Output`` values.

Checked without ever quoting a value (they are secrets); see components/config.py ``load``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import pulumi

from components import managed_values
from components.config_errors import PROJECT, ConfigError, current_stack, rm_fix, set_fix
from components.config_keys import _S3_ACCESS_KEY, _S3_SECRET_KEY, S3_KEY_PAIRS
from components.config_types import _FERNET

SECRET_PLACEHOLDER = "[secret]"


@dataclass(frozen=True)
class S3KeyPair:
    """An RGW user's S3 key pair, both halves secret Outputs."""

    access_key: pulumi.Output[str]
    secret_key: pulumi.Output[str]


@dataclass(frozen=True)
class Secrets:
    """Secret inputs from config; each is a secret ``pulumi.Output[str]`` (None: generate it)."""

    oidc_client_secret: pulumi.Output[str]
    ssh_private_key: pulumi.Output[str]
    fernet_key: pulumi.Output[str] | None
    webserver_secret_key: pulumi.Output[str] | None
    legacy_db_password: pulumi.Output[str] | None = None
    private_values: Mapping[str, Any] | None = None  # extra chart values, every leaf a secret Output
    airflow_s3_keys: S3KeyPair | None = None  # RGW user airflow-<instance> (None: generate it)
    postgresql_s3_keys: S3KeyPair | None = None  # RGW user postgresql-airflow-<instance> (None: generate it)


def _secret_leaves(node: Any) -> Any:
    # keep the structure (so it merges like a values file) and make every leaf secret
    if isinstance(node, Mapping):
        return {k: _secret_leaves(v) for k, v in node.items()}
    return pulumi.Output.secret(node)


def _load_secrets(raw: Mapping[str, Any], typed: Mapping[str, Any], read_secret: Callable[[str], str] | None,
                  stack: str | None = None) -> Secrets:
    # messages here never quote a value: these are secrets
    stack = stack or current_stack()
    fernet = typed.get("fernetKey")
    if fernet is not None and not _FERNET.fullmatch(fernet):
        raise ConfigError("fernetKey", "is not a Fernet key (url-safe base64 of 32 bytes)", f"{set_fix(stack, 'fernetKey', secret=True, how='copy the legacy instance fernet_key with')}, or {rm_fix(stack, 'fernetKey', how='remove it with')} to have one generated")
    webserver = typed.get("webserverSecretKey")
    if webserver is not None and len(webserver) < 32:
        raise ConfigError("webserverSecretKey", "is shorter than 32 characters", f"{set_fix(stack, 'webserverSecretKey', secret=True, how='set a random string of 64 characters with')}, or {rm_fix(stack, 'webserverSecretKey', how='remove it with')} to have one generated")
    key_text = typed.get("sshPrivateKey")
    if key_text is not None and not re.fullmatch(r"-----BEGIN (OPENSSH|RSA|EC) PRIVATE KEY-----\n(.|\n)+\n-----END (OPENSSH|RSA|EC) PRIVATE KEY-----\s*", key_text, re.ASCII):
        raise ConfigError("sshPrivateKey", "is not a PEM/OpenSSH private key", set_fix(stack, "sshPrivateKey", secret=True, stdin="< keyfile"))

    for _, access, secret, _ in S3_KEY_PAIRS:
        if (value := typed.get(access)) is not None and not _S3_ACCESS_KEY.fullmatch(value):
            raise ConfigError(access, "is not an RGW access key (16-128 letters and digits)",
                              f"copy the user's access_key from `radosgw-admin user info`, or remove {access} and {secret} to have a pair generated")
        if (value := typed.get(secret)) is not None and not _S3_SECRET_KEY.fullmatch(value):
            raise ConfigError(secret, "is not an RGW secret key (20-128 letters, digits, '+' and '/')",
                              f"copy the user's secret_key from `radosgw-admin user info`, or remove {access} and {secret} to have a pair generated")
    pairs = [(typed.get(a), a) for _, a, _, _ in S3_KEY_PAIRS]
    if pairs[0][0] is not None and pairs[0][0] == pairs[1][0]:
        # the RGW script refuses an access key another user holds: say so before anything runs
        raise ConfigError(pairs[1][1], f"is the same as {pairs[0][1]}: each RGW user has its own key pair",
                          "copy the access_key of user postgresql-airflow-<instance> from `radosgw-admin user info`")

    private_values: Any = None
    if "privateValues" in typed:
        private_values = typed["privateValues"]
        if (path := managed_values.violation(private_values)) is not None:
            raise ConfigError("privateValues", f"sets {path}, which the program manages", "remove it from privateValues")
    elif raw.get("privateValues") == SECRET_PLACEHOLDER:
        private_values = {}

    def secret(key: str) -> pulumi.Output[str] | None:
        if key not in raw:
            return None
        if read_secret is not None:
            return pulumi.Output.secret(read_secret(key))
        return pulumi.Config(PROJECT).require_secret(key)

    return Secrets(
        oidc_client_secret=secret("oidcClientSecret"),
        ssh_private_key=secret("sshPrivateKey"),
        legacy_db_password=secret("legacyDbPassword"),
        private_values=_secret_leaves(private_values) if private_values is not None else None,
        fernet_key=secret("fernetKey"),
        webserver_secret_key=secret("webserverSecretKey"),
        airflow_s3_keys=_key_pair(secret, "airflowS3AccessKey", "airflowS3SecretKey"),
        postgresql_s3_keys=_key_pair(secret, "postgresqlS3AccessKey", "postgresqlS3SecretKey"),
    )


def _key_pair(secret: Callable[[str], pulumi.Output[str] | None], access: str, secret_key: str) -> S3KeyPair | None:
    a, s = secret(access), secret(secret_key)
    return None if a is None or s is None else S3KeyPair(access_key=a, secret_key=s)
