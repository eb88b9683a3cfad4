"""What runs is what the program deploys (issue 12, part 6).

The program's shared values are verbatim copies of deployment-charts, traceable to one commit;
the snapshot of every running instance's own helmfile values (tests/upstream, same commit) is
"today's values".  For every stack that runs there, the takeover diff of its first `up` against
those values shows only the changes its stack file lists in ``airflow:takeoverChanges``, with a
reason, and every listed change happens.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components import airflow_values as av
from tests.conftest import EXAMPLE_PASSPHRASE, stack_cfg
from tools import mockrun, takeover_diff as td, upstream_values as uv
from tools.preview import RELEASE_TYPE, render

ROOT = Path(__file__).resolve().parent.parent
STACKS_IN_TREE = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
RUNNING = sorted(s for s in STACKS_IN_TREE if (uv.SNAPSHOT_DIR / uv.SERVICES / f"airflow-{s}" / "helmfile.yaml").exists())
PG_COMMON = uv.SNAPSHOT_DIR / uv.SERVICES / "_cloudnative-pg-cluster_common_" / "values-dse-k8s-eqiad.yaml"


def _common() -> dict:
    return yaml.safe_load((uv.COMMON_DIR / "values-dse-k8s-eqiad.yaml").read_text())


# --- traceability -------------------------------------------------------------------------

def test_every_copy_is_the_blob_its_source_file_names():
    assert uv.check() == []


def test_a_changed_copy_is_reported(tmp_path, monkeypatch):
    common = tmp_path / "common"
    shutil.copytree(uv.COMMON_DIR, common)
    monkeypatch.setattr(uv, "COMMON_DIR", common)
    path = common / "values-analytics-test.yaml"
    path.write_text(path.read_text().replace("an-test-master1003", "an-test-master1001", 1))
    problems = uv.check()
    # named once per record of it: the program's SOURCE.yaml and each instance that reads it
    assert problems and all("common/values-analytics-test.yaml: differs from" in p for p in problems), problems


def test_the_program_and_the_snapshot_come_from_one_commit():
    program = yaml.safe_load((uv.COMMON_DIR / "SOURCE.yaml").read_text())
    snapshot = uv.snapshot_source()
    assert program["commit"] == snapshot["commit"] and len(program["commit"]) == 40
    assert set(program["files"]) == set(uv.COMMON_FILES)


def test_every_running_instance_has_its_stack():
    # a stack of a new instance simply is not in RUNNING; an instance that runs needs its stack
    running = {p.name[len("airflow-"):] for p in (uv.SNAPSHOT_DIR / uv.SERVICES).glob("airflow-*")}
    assert running and running <= set(STACKS_IN_TREE), running - set(STACKS_IN_TREE)
    assert set(RUNNING) == running


@pytest.mark.parametrize("key", sorted(uv.SITE_KEYS))
def test_site_default_in_pulumi_yaml_is_the_common_value(key):
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert str(project["config"][key]["default"]) == str(uv.dig(_common(), uv.SITE_KEYS[key])), (
        f"Pulumi.yaml {key} differs from _airflow_common_/values-dse-k8s-eqiad.yaml; run tools.upstream_values refresh")


def test_database_defaults_are_the_cloudnative_pg_common_values():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    pg = yaml.safe_load(PG_COMMON.read_text())
    assert project["pgbouncerImageTag"]["default"] == pg["pooler"]["imageTag"]
    assert project["rgwEndpoint"]["default"] == pg["s3"]["endpoint_url"]
    assert project["rgwRegion"]["default"] == pg["s3"]["region"]
    ca = (ROOT / "components" / "chart_values" / "wmf-ca-certificates.pem").read_text()
    assert ca.strip() == pg["s3"]["ca_cert_bundle"].strip(), "wmf-ca-certificates.pem is not the CA bundle postgresql-airflow-* use"


# --- refresh from a clone -----------------------------------------------------------------

def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.processes
def test_refresh_copies_a_commit_verbatim_and_records_its_blobs(tmp_path, monkeypatch):
    repo = tmp_path / "deployment-charts"
    services = repo / uv.SERVICES
    (services / "_airflow_common_").mkdir(parents=True)
    for name in uv.COMMON_FILES:
        shutil.copy(uv.COMMON_DIR / name, services / "_airflow_common_" / name)
    (services / "_airflow_common_" / "values-dse-k8s-eqiad.yaml").write_text(
        _common_text().replace("mx-out1001.wikimedia.org", "mx-out1002.wikimedia.org"))
    for release in ("airflow-search", "postgresql-airflow-search"):
        src = uv.SNAPSHOT_DIR / uv.SERVICES / release
        shutil.copytree(src, services / release)
    (services / "_cloudnative-pg-cluster_common_").mkdir()
    shutil.copy(PG_COMMON, services / "_cloudnative-pg-cluster_common_" / PG_COMMON.name)
    for link, target in (("airflow-search/values-dse-k8s-eqiad.yaml", "../_airflow_common_/values-dse-k8s-eqiad.yaml"),
                         ("airflow-search/values-analytics-production.yaml", "../_airflow_common_/values-analytics-production.yaml"),
                         ("postgresql-airflow-search/values-cloudnative-pg-cluster-dse-k8s-eqiad.yaml",
                          "../_cloudnative-pg-cluster_common_/values-dse-k8s-eqiad.yaml")):
        (services / link).symlink_to(target)
    _git(repo.parent, "init", "-q", str(repo))
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "snapshot")
    commit = _git(repo, "rev-parse", "HEAD")

    monkeypatch.setattr(uv, "COMMON_DIR", tmp_path / "out" / "common")
    monkeypatch.setattr(uv, "SNAPSHOT_DIR", tmp_path / "out" / "snapshot")
    monkeypatch.setattr(uv, "ROOT", tmp_path / "out")
    (tmp_path / "out").mkdir()
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "out" / "Pulumi.yaml")
    notes = uv.refresh(uv.Clone(repo / ".git", commit), ["search", "brand-new"])

    assert notes == ["brand-new: no helmfile.d/dse-k8s-services/airflow-brand-new at this commit (not running)"]
    assert uv.check() == []
    source = yaml.safe_load((uv.SNAPSHOT_DIR / "SOURCE.yaml").read_text())
    assert source["commit"] == commit
    for rel, entry in source["files"].items():  # the ids git itself gives
        assert entry["blob"] == _git(repo, "rev-parse", f"{commit}:{entry['path']}"), rel
    assert source["files"]["airflow-search/values-analytics-production.yaml"]["path"].endswith(
        "_airflow_common_/values-analytics-production.yaml"), "a symlink is recorded as the file it points to"
    pulumi_yaml = (tmp_path / "out" / "Pulumi.yaml").read_text()
    assert "default: mx-out1002.wikimedia.org" in pulumi_yaml, "the site default follows the copied common value"
    assert "# Project-level defaults shared by every instance." in pulumi_yaml, "comments are kept"


def _common_text() -> str:
    return (uv.COMMON_DIR / "values-dse-k8s-eqiad.yaml").read_text()


# --- the takeover diff against today's values ---------------------------------------------

def _secret_layer(node):
    """The program's secret subtrees (they come from the private values file, not public)."""
    if isinstance(node, mockrun.SecretLeaf):
        return mockrun.unmasked(node)
    if isinstance(node, dict):
        out = {k: _secret_layer(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not None and v != {}}
    return None


def todays_values(stack: str, program_values: dict) -> dict:
    cfg = stack_cfg(stack)
    return uv.live_values(
        f"airflow-{stack}", general=av.general_values(cfg), private=_secret_layer(program_values) or {},
        tail={"environmentName": cfg.environment, "pgServiceName": cfg.pg_service_name})


def _takeover_diff(stack: str, overrides: dict | None = None):
    run = render(stack, EXAMPLE_PASSPHRASE, overrides=overrides)
    values = run.monitor.one(RELEASE_TYPE).inputs["values"]
    diff = td.values_diff(run, todays_values(stack, values))
    return td.annotate(diff, td._listed_changes(run))


@pytest.mark.parametrize("stack", RUNNING)
def test_first_up_changes_only_what_the_stack_lists(stack):
    lines, stale = _takeover_diff(stack)
    unlisted = [line for line in lines if line.endswith("NOT LISTED in airflow:takeoverChanges")]
    assert unlisted == [], f"Pulumi.{stack}.yaml: the first up changes values it does not list:\n" + "\n".join(unlisted)
    assert stale == [], f"Pulumi.{stack}.yaml: airflow:takeoverChanges lists what the first up does not change: {stale}"
    assert all(line.startswith("?") or "# intended: " in line for line in lines), lines


def test_an_unlisted_change_is_reported_and_a_listed_one_carries_its_reason():
    lines, stale = _takeover_diff("dumps", overrides={"extraValues": {"scheduler": {"requests": {"cpu": 4}}}})
    assert "~ scheduler.requests.cpu: 8 -> 4    # NOT LISTED in airflow:takeoverChanges" in lines, lines
    assert any(line.startswith('- config.auth.op_ldap_role: "airflow-analytics-ops"    # intended: dead key dropped')
               for line in lines), lines
    assert stale == []


def test_a_listed_change_that_does_not_happen_is_stale():
    lines, stale = _takeover_diff("search", overrides={"takeoverChanges": {"config.airflow.instance_name": "renamed"}})
    assert stale == ["config.airflow.instance_name"], (lines, stale)


@pytest.mark.parametrize("stack", RUNNING)
def test_stack_hadoop_cluster_is_the_layer_its_helmfile_reads(stack):
    layers = {p.name for p in uv.release_files(f"airflow-{stack}")}
    hadoop = sorted(n[:-len(".yaml")] for n in layers if n.startswith("values-analytics-"))
    want = [av.HADOOP_LAYERS[stack_cfg(stack).hadoop_cluster]] if stack_cfg(stack).hadoop_cluster != "none" else []
    assert hadoop == want, f"Pulumi.{stack}.yaml hadoopCluster vs helmfile layers {sorted(layers)}"


# --- the database release -----------------------------------------------------------------

CHART_DEFAULTS = {"cluster": {"instances": 2, "storage": {"size": "15Gi"}, "walStorage": {"size": "30Gi"}}}


@pytest.mark.parametrize("stack", RUNNING)
def test_database_config_is_what_postgresql_release_runs(stack):
    """Each per-instance value of postgresql-airflow-<x> has its stack key, with the same value."""
    release = f"postgresql-airflow-{stack}"
    values = CHART_DEFAULTS
    for path in uv.release_files(release):
        values = av.deep_merge(values, yaml.safe_load(path.read_text()) or {})
    cluster, pooler = values["cluster"], values.get("pooler", {})
    cfg = stack_cfg(stack)
    assert cfg.pg_instances == cluster["instances"], release
    assert cfg.pg_storage_size == cluster["storage"]["size"], release
    assert cfg.pg_wal_storage_size == cluster["walStorage"]["size"], release
    assert dict(cfg.pg_parameters) == {k: str(v) for k, v in cluster.get("postgresql", {}).items()}, release
    spec = {k: cluster[k] for k in ("resources", "affinity") if k in cluster}
    assert dict(cfg.pg_spec_overrides) == spec, release
    assert dict(cfg.pg_pooler_parameters) == {k: str(v) for k, v in pooler.get("parameters", {}).items()}, release
