"""The program runs only on the dependencies ``requirements.txt`` pins.

``Pulumi.yaml`` runs the program in ``.venv`` (runtime option ``virtualenv``).  With the pip
toolchain the Pulumi CLI installs ``requirements.txt`` into it only when it creates the
virtualenv (pulumi/pulumi sdk/python/toolchain/pip.go ``EnsureVenv``: it returns at once when
``.venv`` already is a virtualenv, and installs only when the directory is missing or empty),
so a bumped pin, such as a provider upgrade, is never applied by ``pulumi up`` itself: the SDK
packages stay old, and with them the provider plugin versions they ask the engine for.  So the program compares what is
installed with the pins and stops with one line naming the fix.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pulumi

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")
FIX = "run `pulumi install` (or `./dev python -m pip install -r requirements.txt`) and retry"


class RequirementsMismatch(pulumi.RunError):
    """.venv does not hold what requirements.txt pins: one line, no traceback."""


def pins(text: str) -> dict[str, str]:
    """``name==version`` lines of a requirements file (comments and blank lines skipped)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if match is None:
            raise RequirementsMismatch(f"requirements.txt: {line!r} is not pinned as name==version; pin it exactly")
        out[match.group(1)] = match.group(2)
    return out


_VERSIONS: dict[tuple[object, str], str] = {}


def _installed_version(name: str) -> str:
    """``metadata.version(name)``, looked up once per process (a scan of sys.path, ~1 ms a
    package: `./dev preview --all` and the tests run the program many times in one process)."""
    lookup = metadata.version
    key = (lookup, name)
    if key not in _VERSIONS:
        _VERSIONS[key] = lookup(name)
    return _VERSIONS[key]


def mismatches(wanted: dict[str, str], installed=None) -> list[str]:
    installed = installed or _installed_version
    problems = []
    for name, version in sorted(wanted.items()):
        try:
            have = installed(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}=={version} is not installed")
            continue
        if have != version:
            problems.append(f"{name} is {have}, requirements.txt pins {version}")
    return problems


def require_pinned_environment(path: Path = REQUIREMENTS, installed=None) -> None:
    problems = mismatches(pins(path.read_text(encoding="utf-8")), installed)
    if problems:
        raise RequirementsMismatch(f"the virtualenv does not match requirements.txt ({'; '.join(problems)}): {FIX}")
