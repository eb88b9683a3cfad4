"""The offline preview command: tree, --out files, masking, one-line errors."""

import io
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import EXAMPLE_PASSPHRASE
from tools import preview, stackconfig

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, passphrase=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    if passphrase:
        env["PULUMI_CONFIG_PASSPHRASE"] = passphrase
    return subprocess.run([sys.executable, "-m", "tools.preview", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_preview_prints_the_tree_with_options():
    proc = run_cli("-s", "search")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "* dpe:airflow:Instance search" in out
    # the namespace is admin_ng's: a read (`>`, as pulumi preview marks reads), no create, no admin provider
    assert "> kubernetes:core/v1:Namespace search-namespace  [provider=search-k8s-deploy]" in out
    assert '{"id": "airflow-search"}' in out
    assert "+ kubernetes:core/v1:Namespace" not in out and "RoleBinding" not in out and "k8s-admin" not in out
    assert "> kubernetes:core/v1:Service search-postgresql-pooler-service" in out
    assert "+ kubernetes:postgresql.cnpg.io/v1:Cluster search-postgresql-cluster  [provider=search-k8s-deploy; protect; ignoreChanges=spec.bootstrap;" in out
    assert "+ command:remote:Command search-kerberos-keytab  [provider=search-command; protect; deleteBeforeReplace; secretOutputs=stdout,stderr,connection; dependsOn=search-namespace;" in out
    assert "Manual steps (systems this program cannot reach):" in out
    assert "placeholders" in out  # no passphrase: secrets were not decrypted


def test_unknown_stack_exits_non_zero_with_one_line():
    proc = run_cli("-s", "nope")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: unknown stack 'nope'")
    assert "Traceback" not in proc.stderr


def test_bad_config_exits_non_zero_with_one_line(tmp_path, monkeypatch):
    # a copy of the project with a broken stack file
    for name in ("Pulumi.yaml", "Pulumi.search.yaml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    text = (tmp_path / "Pulumi.search.yaml").read_text().replace("airflow:instance: search", "airflow:instance: Search_1")
    (tmp_path / "Pulumi.bad.yaml").write_text(text)
    monkeypatch.setattr(stackconfig, "ROOT", tmp_path)
    load = stackconfig.load
    monkeypatch.setattr(stackconfig, "load", lambda stack, pw, root=tmp_path: load(stack, pw, root))
    err = io.StringIO()
    code = preview.main(["-s", "bad"], stdout=io.StringIO(), stderr=err)
    assert code == 2
    assert err.getvalue() == "error: airflow:instance: 'Search_1' is not a DNS label of at most 30 characters; use lowercase letters, digits and '-', starting with a letter (e.g. search)\n"


def test_wrong_passphrase_is_one_line():
    proc = run_cli("-s", "search", passphrase="wrong")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: Pulumi.search.yaml: incorrect passphrase (PULUMI_CONFIG_PASSPHRASE)"


def test_out_writes_values_and_manifests_with_secrets_masked(tmp_path):
    proc = run_cli("-s", "test-k8s", "--out", str(tmp_path), passphrase=EXAMPLE_PASSPHRASE)
    assert proc.returncode == 0, proc.stderr
    assert "checked with the passphrase" in proc.stdout
    values = yaml.safe_load((tmp_path / "helm" / "test-k8s-airflow-release.values.yaml").read_text())
    assert values["config"]["private"] == {"airflow__core__fernet_key": "[secret]", "airflow__webserver__secret_key": "[secret]"}
    assert values["kerberos"]["keytab"] == "[secret]"
    assert values["config"]["airflow"]["instance_name"] == "test-k8s"
    # reads are not the program's objects: no manifest for the namespace
    assert not list((tmp_path / "manifests").glob("Namespace-*")) and not list((tmp_path / "manifests").glob("RoleBinding-*"))
    cluster = yaml.safe_load((tmp_path / "manifests" / "Cluster-test-k8s-postgresql-cluster.yaml").read_text())
    assert cluster["metadata"]["annotations"]["pulumi.com/waitFor"] == "condition=Ready"
    # no decrypted secret value appears in anything written or printed
    sc = stackconfig.load("test-k8s", EXAMPLE_PASSPHRASE)
    written = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file()) + proc.stdout + proc.stderr
    for key in sc.secret_keys:
        assert sc.config[key] not in written, f"{key} leaked into the preview"


def test_out_values_are_exactly_the_release_inputs(tmp_path):
    from tools import mockrun

    run = preview.render("search", EXAMPLE_PASSPHRASE)
    preview.write_out(run, tmp_path)
    rel = run.monitor.one("kubernetes:helm.sh/v3:Release")
    on_disk = yaml.safe_load((tmp_path / "helm" / "search-airflow-release.values.yaml").read_text())
    assert on_disk == mockrun.masked(rel.inputs["values"])
