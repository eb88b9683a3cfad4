"""The database-phase verification Job: valid manifest, passwords on stdin, exact script."""

import subprocess

import kubernetes_validate
import pytest

from components import config, migration
from tests.conftest import KUBERNETES_VERSION, stack_config


@pytest.fixture(scope="module")
def cfg():
    bag, secret_keys = stack_config("search", overrides={"phase": "database"}, secret_overrides={"legacyDbPassword": "pw"})
    c, _ = config.load(bag, is_secret=lambda k: k in secret_keys, read_secret=lambda k: "x")
    return c


def test_job_manifest_validates_against_the_kubernetes_schema(cfg):
    kubernetes_validate.validate(migration.verify_job(cfg), KUBERNETES_VERSION, strict=True)


def test_job_runs_the_verifier_script_for_legacy_and_cnpg(cfg):
    container = migration.verify_job(cfg)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["VERIFY_SCRIPT"] == migration.verify_job_script(cfg)
    assert "SOURCE_DB=airflow_search" in env["VERIFY_SCRIPT"] and "TARGET_DB=app" in env["VERIFY_SCRIPT"]
    assert "SOURCE_SSLMODE=require" in env["VERIFY_SCRIPT"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert migration.verify_job(cfg)["spec"]["backoffLimit"] == 0, "a failed check must fail the update, not retry"


@pytest.mark.processes
@pytest.mark.parametrize("trailing", ["", "\n"])
def test_job_command_feeds_exactly_two_password_lines(tmp_path, trailing):
    # the Job's exact command, with the secret mount point moved under tmp_path
    (tmp_path / "source").mkdir()
    (tmp_path / "target").mkdir()
    (tmp_path / "source" / "password").write_text("s3cr:et$(id)" + trailing)
    (tmp_path / "target" / "password").write_text("tgt pw" + trailing)
    command = migration._JOB_COMMAND.replace("/run/secrets", str(tmp_path))
    probe = 'IFS= read -r a; IFS= read -r b; printf "[%s][%s]" "$a" "$b"; [[ -z $(cat) ]]'
    out = subprocess.run(["/bin/bash", "-c", command], env={"VERIFY_SCRIPT": probe, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "[s3cr:et$(id)][tgt pw]"
