"""Chart values the program manages, which ``extraValues`` and ``privateValues`` cannot touch.

The instance's own layers (``extraValues``, plain; ``privateValues``, secret) are merged over
what the program renders, as helmfile merges values files.  That merge must not let them set,
replace or delete a value the program manages: the Fernet and webserver keys (in every spelling
Airflow reads: the chart's ``config.private`` env entries, ``AIRFLOW__CORE__FERNET_KEY`` in any
case, ``_cmd``/``_secret`` variants, the ``[core]``/``[webserver]`` options of
``config.airflow.config``), the OIDC block, the keytab and the whole ``kerberos`` block, the S3
keys and database password, the image and chart versions, and the names the program derives.

One rule, applied to every path of a user layer (keys compared case-insensitively, ``-`` as
``_``): a path inside a managed subtree, equal to a managed path, or an ancestor of one that is
given a non-mapping value (a null, a scalar or a list replaces the whole subtree) is refused.
Errors name the path, never the value.
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Mapping

# Managed subtrees and leaves (normalised: lower case, '-' as '_').
MANAGED: tuple[tuple[str, ...], ...] = (
    ("config", "private"),
    ("config", "oidc"),
    ("kerberos",),
    ("app", "version"),
    ("app", "executor_pod_image_version"),
    ("config", "airflow", "instance_name"),
    ("config", "airflow", "aws_access_key_id"),
    ("config", "airflow", "aws_secret_access_key"),
    ("config", "airflow", "postgresqlpass"),
    ("config", "airflow", "dbhost"),
    ("config", "airflow", "dbname"),
    ("config", "airflow", "dbuser"),
    ("environmentname",),
    ("pgservicename",),
)

# Airflow's own spellings of the two keys: env-style anywhere, option names in their section.
_ENV_SPELLING = re.compile(r"airflow__(core__fernet_key|(webserver|api)__secret_key)(_cmd|_secret)?", re.ASCII)
_OPTION = {"core": re.compile(r"fernet_key(_cmd|_secret)?", re.ASCII),
           "webserver": re.compile(r"secret_key(_cmd|_secret)?", re.ASCII),
           "api": re.compile(r"secret_key(_cmd|_secret)?", re.ASCII)}


def _norm(key: Any) -> str:
    return str(key).lower().replace("-", "_")


def _walk(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in node.items():
        here = path + (_norm(key),)
        yield here, value
        if isinstance(value, Mapping):
            yield from _walk(value, here)


def violation(values: Mapping[str, Any]) -> str | None:
    """The dotted path of the first managed value ``values`` would set, replace or delete."""
    for path, value in _walk(values):
        if isinstance(value, Mapping):
            continue  # a mapping merges key by key: its leaves are checked one by one
        dotted = ".".join(path)
        for managed in MANAGED:
            if path[: len(managed)] == managed:
                return dotted
            if managed[: len(path)] == path:
                return dotted  # a null, scalar or list would replace the managed subtree
        if _ENV_SPELLING.fullmatch(path[-1]):
            return dotted
        if len(path) >= 2 and path[-2] in _OPTION and _OPTION[path[-2]].fullmatch(path[-1]) and path[:3] == ("config", "airflow", "config"):
            return dotted
    return None
