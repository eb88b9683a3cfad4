"""Domain types of the stack config: full-match ASCII patterns, bounds, one-line errors.

Every check names the key and the fix (``ConfigError``); values may be quoted in the problem,
except for secret keys, whose messages ``config.load`` strips of any quoted value.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import Any, Mapping

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from components.config_errors import ConfigError

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", re.ASCII)
_HOST_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", re.ASCII)
_CHART_VERSION = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$", re.ASCII)

# app.version as published by the airflow image pipeline (wmf-charts.md 4.3):
# airflow-<airflowVersion>-py<python>-<YYYY-MM-DD-HHMMSS>-<40-hex git sha>@sha256:<64-hex digest>
_IMAGE_VERSION = re.compile(
    r"^airflow-(?P<airflow>\d+\.\d+\.\d+)-py(?P<python>\d+\.\d+)-"
    r"(?P<built>\d{4}-\d{2}-\d{2}-\d{6})-(?P<sha>[0-9a-f]{40})@sha256:(?P<digest>[0-9a-f]{64})$", re.ASCII)
_LDAP_GROUP = re.compile(r"^[a-z][-a-z0-9_]*$", re.ASCII)
_PRINCIPAL_PRIMARY = re.compile(r"^[a-z][-a-z0-9_]*$", re.ASCII)
_REALM = re.compile(r"^[A-Z][A-Z0-9.-]*$", re.ASCII)
_FERNET = re.compile(r"^[A-Za-z0-9_-]{43}=$", re.ASCII)
_HOST_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")

# The longest derived name bounds the instance name: the S3 bucket
# "postgresql-airflow-<instance>.<environment>" must fit in 63 characters, and the
# pooler Service "postgresql-airflow-<instance>-pooler-rw" is a 63-character DNS-1035 label.
MAX_INSTANCE_LEN = 30


def dns_label(key: str, value: str, max_len: int = 63) -> str:
    if not isinstance(value, str) or not _DNS_LABEL.fullmatch(value) or len(value) > max_len:
        raise ConfigError(
            key,
            f"{value!r} is not a DNS label of at most {max_len} characters",
            "use lowercase letters, digits and '-', starting with a letter (e.g. search)",
        )
    return value


def hostname(key: str, value: str) -> str:
    labels = value.split(".") if isinstance(value, str) else []
    if (
        not labels
        or len(value) > 253
        or len(labels) < 2
        or not all(_HOST_LABEL.fullmatch(label) and len(label) <= 63 for label in labels)
    ):
        raise ConfigError(
            key,
            f"{value!r} is not a fully qualified hostname",
            "give a lowercase FQDN such as krb1001.eqiad.wmnet",
        )
    return value


def https_url(key: str, value: str) -> str:
    m = re.fullmatch(r"^(?P<scheme>[a-z]+)://(?P<host>[^/:]+)(:\d+)?(/.*)?$", value or "", re.ASCII)
    if not m or m.group("scheme") != "https":
        raise ConfigError(
            key, f"{value!r} is not an https:// URL", "write the scheme, e.g. https://rgw.eqiad.dpe.anycast.wmnet"
        )
    hostname(key, m.group("host"))
    return value


def chart_version(key: str, value: str) -> str:
    if not isinstance(value, str) or not _CHART_VERSION.fullmatch(value):
        raise ConfigError(key, f"{value!r} is not a chart version", "use MAJOR.MINOR.PATCH, e.g. 0.0.177")
    return value


def version_tuple(value: str) -> tuple[int, int, int]:
    major, minor, patch = (int(p) for p in value.split("."))
    return (major, minor, patch)


def image_version(key: str, value: str) -> str:
    if not isinstance(value, str) or not _IMAGE_VERSION.fullmatch(value):
        raise ConfigError(
            key,
            f"{value!r} is not an airflow image version",
            "use airflow-<X.Y.Z>-py<X.Y>-<YYYY-MM-DD-HHMMSS>-<40-hex sha>@sha256:<64-hex digest>",
        )
    return value


def ldap_group(key: str, value: str) -> str:
    if not _LDAP_GROUP.fullmatch(value):
        raise ConfigError(key, f"{value!r} is not an LDAP group name", "use lowercase letters, digits, '-' and '_'")
    return value


def _in_range(key: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ConfigError(key, f"{value} is outside {low}..{high}", f"pick a value between {low} and {high}")
    return value


def _must_match(key: str, value: str, pattern: str, problem: str, fix: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(pattern, value, re.ASCII):
        raise ConfigError(key, problem, fix)
    return value


def _unix_user(key: str, value: str) -> str:
    return _must_match(key, value, r"^[a-z_][a-z0-9_-]{0,31}$", f"{value!r} is not a UNIX user name", "use lowercase letters, digits, '-' and '_'")


def _host_key(key: str, value: str) -> str:
    """An SSH host public key the provider can parse, as ``<type> <base64>`` (``ssh-keyscan``).

    pulumi-command parses ``hostKey`` with Go's ``ssh.ParseAuthorizedKey`` at ``up``
    (pulumi-command v1.2.1 provider/pkg/provider/remote/connection.go L88-94), after the run has
    started; here it is decoded up front: the base64, the algorithm name inside the blob (it must
    match the prefix) and the key itself (``cryptography``'s OpenSSH parser checks the curve
    point and length).  ``ssh-rsa`` is refused: the provider pins the host key algorithm to the
    key's type, and ``ssh-rsa`` (SHA-1) signatures are off by default since OpenSSH 8.8.
    """
    fix = "paste '<type> <base64>' from `ssh-keyscan -t ed25519 <host>`"
    if not isinstance(value, str) or "\n" in value or len(value) > 1024:
        raise ConfigError(key, "is not an SSH host public key", fix)
    parts = value.split(" ")
    if len(parts) != 2 or parts[0] not in _HOST_KEY_TYPES:
        raise ConfigError(key, "is not an SSH host public key of type " + "/".join(_HOST_KEY_TYPES), fix)
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (name_len,) = struct.unpack(">I", blob[:4])
        inner = blob[4:4 + name_len].decode("ascii")
        if inner != parts[0]:
            raise ValueError(f"blob says {inner}")
        serialization.load_ssh_public_key(value.encode("ascii"))
    except (ValueError, struct.error, UnicodeDecodeError, TypeError, binascii.Error, UnsupportedAlgorithm):
        raise ConfigError(key, f"is not a valid {parts[0]} public key (its base64 does not decode to one)", fix) from None
    return value


def _quantity(key: str, value: str) -> str:
    return _must_match(key, value, r"^[1-9][0-9]*(Mi|Gi|Ti)$", f"{value!r} is not a storage size", "use e.g. 15Gi")


def _pg_parameters(params: Mapping[str, Any], key: str = "pgParameters") -> dict[str, str]:
    out = {}
    for k, v in params.items():
        if (not re.fullmatch(r"^[a-z_][a-z0-9_.]{0,62}$", k, re.ASCII) or isinstance(v, (dict, list)) or v is None
                or not re.fullmatch(r"[^\x00-\x1f\x7f]{0,256}", str(v), re.ASCII)):
            raise ConfigError(key, f"{k!r} is not a postgresql.conf parameter with a scalar value", "e.g. {max_connections: \"200\"}")
        out[k] = str(v)
    return out


# a values path as tools/takeover_diff.show_path prints it: plain keys joined by dots, any
# other key as ["json string"]
_BRACKETED = r'\["(?:[^"\\\x00-\x1f]|\\.)*"\]'
_VALUES_PATH = re.compile(rf'(?:[A-Za-z0-9_-]+|{_BRACKETED})(?:\.[A-Za-z0-9_-]+|{_BRACKETED})*', re.ASCII)


def _takeover_changes(key: str, value: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """{values path: reason}: each intended difference from the running release, with why."""
    out = []
    for path, reason in value.items():
        if not _VALUES_PATH.fullmatch(path):
            raise ConfigError(key, f"{path!r} is not a values path as takeover-diff prints it",
                              'copy the path from `./dev takeover-diff`, e.g. config.auth.op_ldap_role or worker.config["/etc/x"]')
        if not isinstance(reason, str) or not reason.strip() or "\n" in reason.strip():
            raise ConfigError(key, f"{path}: the reason must be one non-empty line", f"{path}: <why the first up changes it>")
        out.append((path, reason.strip()))
    return tuple(out)


def _image_tag(key: str, value: str) -> str:
    return _must_match(key, value, r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[0-9a-f]{64})?$",
                       f"{value!r} is not an image tag", "use <tag> or <tag>@sha256:<64-hex digest>")


def _abs_path(key: str, value: str) -> str:
    if not value.startswith("/") or any(c in value for c in "\n\0"):
        raise ConfigError(key, f"{value!r} is not an absolute path", "e.g. /etc/kubernetes")
    return value.rstrip("/") or "/"


def _logs_dir(key: str, value: str) -> str:
    """The legacy log tree to upload: absolute, normalised, not / and not a system tree.

    The sync uploads everything under it: ``/`` or a path with ``..`` would upload the host."""
    _abs_path(key, value)
    parts = value.strip("/").split("/")
    if value != "/" + "/".join(parts) or any(p in ("", ".", "..") for p in parts) or len(parts) < 2:
        raise ConfigError(key, f"{value!r} is not a normalised directory at least two levels deep",
                          "e.g. /srv/airflow-search/logs (no '..', '.', '//' or trailing '/')")
    if not re.fullmatch(r"[A-Za-z0-9_./@+-]+", value, re.ASCII):
        raise ConfigError(key, f"{value!r} has characters outside letters, digits and ._/@+-", "e.g. /srv/airflow-search/logs")
    return value


def https_endpoint(key: str, value: str) -> str:
    """``https://host[:port]``: no path, query, user or fragment (the S3 endpoint and s3cmd host_base)."""
    m = re.fullmatch(r"https://(?P<host>[a-z0-9.-]+)(:(?P<port>[0-9]{1,5}))?", value, re.ASCII)
    if not m or (m.group("port") is not None and not 1 <= int(m.group("port")) <= 65535):
        raise ConfigError(key, f"{value!r} is not https://<host>[:<port>]", "e.g. https://rgw.eqiad.dpe.anycast.wmnet (no path)")
    hostname(key, m.group("host"))
    return value
PG_SPEC_OVERRIDABLE = ("resources", "affinity", "priorityClassName")


def _pg_spec_overrides(spec: Mapping[str, Any]) -> dict[str, Any]:
    for key in spec:
        if key not in PG_SPEC_OVERRIDABLE:
            raise ConfigError(f"pgSpecOverrides.{key}", "cannot be overridden", f"only {', '.join(PG_SPEC_OVERRIDABLE)}; sizes and parameters have their own keys")
    return dict(spec)
