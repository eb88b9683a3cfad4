"""shellcheck finds nothing in any script the program generates (issue 14).

Every stack in the tree is rendered under the mock runtime, in every migration phase when it
has a legacy instance (each phase registers other steps), and every script is collected
generally, not from a list: each remote Command's ``create``/``delete`` line (what the remote
login shell runs, checked as POSIX sh), the bash script inside it (``/bin/bash -c <script>``),
and any other input anywhere that starts with a ``#!`` line (the verification Job's script).
Debian's shellcheck 0.9.0 runs with its default checks, all severities, nothing excluded.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from typing import Any, Iterator

import pytest

from components import config_keys
from tests.conftest import load_example_stack, run_stack
from tests.test_migration_phases import phase_overrides
from tools import stackconfig

SHELLCHECK = shutil.which("shellcheck")


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _strings(v)
    elif hasattr(node, "value"):  # mockrun.SecretLeaf
        yield from _strings(node.value)


def inner_script(line: str) -> str:
    """The script a remote.wrap() line hands to ``/bin/bash -c``."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    for i, tok in enumerate(tokens[:-2]):
        if tok == "/bin/bash" and tokens[i + 1] == "-c":
            return tokens[i + 2]
    raise AssertionError(f"no /bin/bash -c in the command line {line[:120]!r}")


def renders() -> Iterator[tuple[str, Any]]:
    for stack in stackconfig.stacks():
        raw = load_example_stack(stack).config
        phases = config_keys.PHASES if "airflow:legacy" in raw else (None,)
        for phase in phases:
            # what each phase needs besides the phase (tests/test_migration_phases.py)
            overrides, secrets = phase_overrides(phase) if phase else (None, None)
            run = run_stack(stack, overrides=overrides, secret_overrides=secrets)
            assert run.error is None, f"{stack} (phase {phase}) does not render: {run.error}"
            yield f"{stack}/{phase or '-'}", run.monitor


def collect() -> dict[tuple[str, str], list[str]]:
    """{(shell, text): [where it comes from]} for every generated script and command line."""
    found: dict[tuple[str, str], list[str]] = {}
    for label, monitor in renders():
        for reg in monitor.registered():
            for key in ("create", "delete", "update"):
                line = reg.inputs.get(key) if reg.type == "command:remote:Command" else None
                if isinstance(line, str):
                    found.setdefault(("sh", line), []).append(f"{label} {reg.name}.{key} (command line)")
                    found.setdefault(("bash", inner_script(line)), []).append(f"{label} {reg.name}.{key}")
            for text in _strings(reg.inputs):
                if text.startswith("#!") and "sh" in text.splitlines()[0]:
                    shell = "bash" if "bash" in text.splitlines()[0] else "sh"
                    found.setdefault((shell, text), []).append(f"{label} {reg.name} ({reg.type})")
    return found


@pytest.fixture(scope="module")
def scripts() -> dict[tuple[str, str], list[str]]:
    return collect()


def test_every_stack_yields_remote_scripts_to_check(scripts):
    """The collection is not vacuous: the KDC, RGW and legacy-VM steps are all in it."""
    where = " ".join(w for ws in scripts.values() for w in ws)
    for step in ("kerberos", "rgw", "log-migration", "stop-legacy"):
        assert step in where, f"no generated script of a '{step}' step was collected"
    assert any(shell == "bash" for shell, _ in scripts), "no bash script collected"


def test_shellcheck_finds_nothing_in_any_generated_script(scripts):
    assert SHELLCHECK, "shellcheck is not installed: tools/system-packages.sh installs it"
    failures = []
    for (shell, text), where in sorted(scripts.items(), key=lambda kv: kv[1][0]):
        proc = subprocess.run([SHELLCHECK, "--shell", shell, "--format", "gcc", "-"], input=text,
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            failures.append(f"{where[0]} (and {len(where) - 1} more, {shell}):\n{proc.stdout}{proc.stderr}")
    assert not failures, "shellcheck findings:\n" + "\n".join(failures)


def test_shellcheck_is_able_to_fail():
    """The check above would see a finding: an unquoted expansion, as in a careless script."""
    assert SHELLCHECK, "shellcheck is not installed"
    proc = subprocess.run([SHELLCHECK, "--shell", "bash", "-"], input="#!/bin/bash\nrm -rf $dir/x\n",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "SC2086" in proc.stdout, "shellcheck did not flag an unquoted variable"
