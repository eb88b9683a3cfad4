"""``./dev test --unit`` (tests/unit_tier.py): the in-process tier, and the check that keeps it so.

Each test runs a real pytest session (pytester, in a process of its own) on a small tree of
tests: a pure one, ones that start processes in each way the guard watches, a marked one and
one under tests/integration."""

from __future__ import annotations

import pytest

from tools import stackconfig

TREE = {
    "tests/test_tier.py": '''
import os
import subprocess

import pytest


def test_pure():
    assert sorted("cba") == ["a", "b", "c"]


def test_starts_bash():
    assert subprocess.run(["bash", "-c", "exit 0"]).returncode == 0


def test_hides_the_process_it_started():
    try:
        subprocess.run(["true"], check=True)
    except Exception:
        pass


def test_os_system():
    assert os.system("true") == 0


@pytest.mark.processes
def test_marked():
    assert subprocess.run(["true"]).returncode == 0
''',
    "tests/integration/test_service.py": '''
def test_needs_a_service():
    assert True
''',
}


@pytest.fixture
def tree(pytester: pytest.Pytester, monkeypatch) -> pytest.Pytester:
    for path, text in TREE.items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    pytester.makeini("[pytest]\naddopts = --strict-markers -p tests.unit_tier\n")
    monkeypatch.setenv("PYTHONPATH", str(stackconfig.ROOT))
    return pytester


@pytest.mark.processes  # starts pytest
def test_unit_runs_only_the_in_process_tests_and_fails_each_that_starts_a_process(tree):
    result = tree.runpytest_subprocess("--unit", "-p", "no:cacheprovider", "-rE")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 4, result.stdout.str()
    assert outcomes.get("errors") == 3, "each unmarked test that started a process is an error"
    assert outcomes.get("deselected") == 2, "the marked test and tests/integration are left out"
    out = result.stdout.str()
    for name, started in (("test_starts_bash", "subprocess 'bash'"), ("test_hides_the_process_it_started", "subprocess 'true'"),
                          ("test_os_system", "os.system 'true'")):
        assert f"test_tier.py::{name} starts processes ({started})" in out, f"{name}: the error names what it started"
    assert "mark it @pytest.mark.processes" in out
    assert "test_pure" not in out.split("short test summary")[-1], "the pure test is not reported"


@pytest.mark.processes  # starts pytest
def test_without_unit_every_test_runs_and_nothing_is_guarded(tree):
    result = tree.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.parseoutcomes() == {"passed": 6}, result.stdout.str()


def test_the_dev_command_passes_unit_to_pytest_and_installs_nothing():
    dev = (stackconfig.ROOT / "dev").read_text()
    branch = dev[dev.index('if [[ "${1:-}" == "--unit" ]]'):dev.index('exec "$VENV/bin/python" -m pytest')]
    assert "unit=(--unit)" in branch and "system-packages.sh" in branch.split("else", 1)[1], \
        "./dev test --unit passes --unit; only the whole suite installs the Debian packages"
