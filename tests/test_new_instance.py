"""A new instance is a first-class path: from nothing to a clean offline preview with
`./dev config` alone, and the tests that cover the fleet stay green with its stack in the tree.

Everything happens in a temporary copy of the repository (other tests list every
Pulumi.*.yaml of /work/main: no stack file is ever left there)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.conftest import EXAMPLE_PASSPHRASE
from tools import stackconfig

ROOT = stackconfig.ROOT
NEW = "newinst"
# the tests decrypt every stack of the tree with the examples' passphrase (tests/conftest.py),
# so a stack added to this repository's tree uses it too
PASSPHRASE = EXAMPLE_PASSPHRASE
OIDC = "SENTINEL-new-instance-oidc-9b1f"

# the tests that encode the fleet's shape (counts, the reference list, the Fernet rule: all of
# test_fleet.py's cross-fleet tests, and these) and every test module that lists the stacks of
# the tree, for the new stack
FLEET_SHAPE = [
    "tests/test_fleet.py",
    "tests/test_stackconfig.py::test_the_fleet_holds_the_13_reference_stacks",
    "tests/test_secret_leaks.py::test_the_fleet_is_thirteen_stacks",
    "tests/test_upstream_values.py::test_every_running_instance_has_its_stack",
    "tests/test_takeover_platform.py::test_every_stack_file_is_covered",
]
GLOBBING = ["tests/test_live_platform.py", "tests/test_takeover_platform.py", "tests/test_upstream_values.py",
            "tests/test_host_keys.py", "tests/test_takeover_diff.py", "tests/test_stackconfig.py",
            "tests/test_secret_leaks.py", "tests/test_import_plan.py"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """The working tree, copied (the virtualenv linked), so a stack file can be added."""
    copy = tmp_path_factory.mktemp("repo") / "main"
    shutil.copytree(ROOT, copy, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".pytest_cache", "out", "render", ".*.tmp"))
    (copy / ".venv").symlink_to(ROOT / ".venv")
    yield copy
    shutil.rmtree(copy, ignore_errors=True)


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    return {**base, "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE, **extra}


def dev(repo: Path, *argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / "dev"), *argv], cwd=repo, env=env(), input=stdin, capture_output=True, timeout=600)


def ssh_key() -> bytes:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())


@pytest.fixture(scope="module")
def new_stack(repo) -> Path:
    """A new instance made with `./dev config` alone: init, then the two required secrets on stdin."""
    assert not (repo / f"Pulumi.{NEW}.yaml").exists()
    steps = [(("config", "init", "-s", NEW), b""),
             (("config", "set", "--secret", "-s", NEW, "oidcClientSecret"), OIDC.encode() + b"\n"),
             (("config", "set", "--secret", "-s", NEW, "sshPrivateKey"), ssh_key())]
    for argv, stdin in steps:
        proc = dev(repo, *argv, stdin=stdin)
        assert proc.returncode == 0, (argv, proc.stderr.decode())
        assert b"Traceback" not in proc.stderr and OIDC.encode() not in proc.stdout + proc.stderr
    return repo / f"Pulumi.{NEW}.yaml"


@pytest.mark.processes
def test_a_new_instance_goes_from_nothing_to_a_clean_preview_with_dev_config_alone(repo, new_stack):
    text = new_stack.read_text()
    assert OIDC not in text and "BEGIN OPENSSH" not in text
    proc = subprocess.run([str(repo / ".venv" / "bin" / "python"), "-m", "tools.preview", "-s", NEW], cwd=repo,
                          env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" or "error" not in proc.stderr, proc.stderr
    assert f"* pulumi:pulumi:Stack airflow-{NEW}" in proc.stdout
    assert "Secrets: checked with the passphrase" in proc.stdout, "the secrets were decrypted and validated"
    assert f"airflow-{NEW}" in proc.stdout and OIDC not in proc.stdout
    # what it has before the first up: the Fernet and webserver keys are generated, not in config
    assert "fernetKey" not in text and "webserverSecretKey" not in text


@pytest.mark.processes
def test_the_repository_itself_holds_no_new_stack(new_stack):
    assert not (ROOT / f"Pulumi.{NEW}.yaml").exists()
    assert new_stack.parent != ROOT


def per_stack_tests(module: str) -> list[str]:
    """The test functions of ``module`` parametrized over every stack of the tree."""
    import importlib

    mod = importlib.import_module(module)
    fleet = set(stackconfig.stacks())
    return [name for name, fn in vars(mod).items() if name.startswith("test_") and any(
        m.name == "parametrize" and isinstance(m.args[1], (list, tuple)) and fleet <= {v for v in m.args[1] if isinstance(v, str)}
        for m in getattr(fn, "pytestmark", []))]


def unparametrized_tests(module: str) -> list[str]:
    import importlib

    mod = importlib.import_module(module)
    return [name for name, fn in vars(mod).items() if name.startswith("test_") and callable(fn)
            and not [m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]]


@pytest.mark.processes
def test_the_tests_of_the_fleet_stay_green_with_the_new_stack_in_the_tree(repo, new_stack, tmp_path):
    # In the copy, in one pytest process: the fleet's shape (test_fleet.py's cross-fleet tests and
    # the counting tests of the other modules) and, in every module that lists the stacks of the
    # tree, each test case of the new stack.  The 13 stacks' own cases run in the suite itself.
    import xml.etree.ElementTree as ET

    shape = set(unparametrized_tests("tests.test_fleet")) | {i.split("::")[1] for i in FLEET_SHAPE if "::" in i}
    paths = sorted({"tests/test_fleet.py", *GLOBBING, *(i.split("::")[0] for i in FLEET_SHAPE)})
    report = tmp_path / "report.xml"
    proc = subprocess.run([str(repo / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist", "-x", f"--junitxml={report}", *paths, "-k", " or ".join([NEW, *sorted(shape)])],
                          cwd=repo, env=env(), capture_output=True, text=True, timeout=900)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
    assert proc.returncode == 0, f"{summary}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    assert " passed" in summary and "skipped" not in summary, summary
    ran = {case.get("name") for case in ET.parse(report).iter("testcase")}
    assert shape <= ran, f"fleet-shape tests that did not run: {sorted(shape - ran)}"
    for name in per_stack_tests("tests.test_fleet"):
        assert f"{name}[{NEW}]" in ran, f"{name} did not run for {NEW}"
    assert len([n for n in ran if NEW in n]) >= 20, sorted(ran)
