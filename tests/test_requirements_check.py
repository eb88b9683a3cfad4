"""The program refuses to run on a virtualenv that does not hold what requirements.txt pins."""

import pytest

from components import requirements_check as rc
from tests.conftest import run_stack


def test_the_project_virtualenv_matches_requirements_txt():
    rc.require_pinned_environment()  # the venv ./dev builds from requirements-dev.txt (which includes it)


def test_pins_are_read_from_requirements_txt():
    pins = rc.pins(rc.REQUIREMENTS.read_text())
    assert pins["pulumi-kubernetes"] == "4.34.2" and pins["pulumi-command"] == "1.2.1"


def test_a_bumped_pin_not_installed_stops_with_one_line_naming_the_fix(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# runtime\npulumi-kubernetes==4.99.0\n")
    with pytest.raises(rc.RequirementsMismatch) as err:
        rc.require_pinned_environment(req)
    message = str(err.value)
    assert "pulumi-kubernetes is 4.34.2, requirements.txt pins 4.99.0" in message
    assert "pulumi install" in message and "\n" not in message


def test_a_missing_package_and_an_unpinned_line_are_refused(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("no-such-package-xyz==1.0\n")
    with pytest.raises(rc.RequirementsMismatch, match="no-such-package-xyz==1.0 is not installed"):
        rc.require_pinned_environment(req)
    req.write_text("pulumi>=3\n")
    with pytest.raises(rc.RequirementsMismatch, match="not pinned as name==version"):
        rc.require_pinned_environment(req)


def test_the_program_checks_before_registering_anything(monkeypatch):
    monkeypatch.setattr(rc.metadata, "version", lambda name: "0.0.0")
    run = run_stack("search")
    assert isinstance(run.error, rc.RequirementsMismatch), repr(run.error)
    assert run.monitor.registered() == []
