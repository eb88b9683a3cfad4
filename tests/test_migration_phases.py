"""Migrating search in phases: per-phase config, values, resources, and safety across phases."""

import pytest

from components import airflow_values, config
from components.config import ConfigError, PHASES
from tests.conftest import run_stack, stack_config
from tools import mockrun

LEGACY_PASSWORD = "legacy-db-password-for-tests"
RELEASE = "kubernetes:helm.sh/v3:Release"
CLUSTER = "kubernetes:postgresql.cnpg.io/v1:Cluster"
COMMAND = "command:remote:Command"


def phase_overrides(phase, chart=None):
    overrides = {"phase": phase}
    if phase in config.EXTERNAL_DB_PHASES:
        overrides["airflowChartVersion"] = chart or "0.0.120"
    elif chart:
        overrides["airflowChartVersion"] = chart
    secrets = {"legacyDbPassword": LEGACY_PASSWORD} if phase != "complete" else {}
    return overrides, secrets


_RUNS = {}


def run_phase(phase, chart=None):
    key = (phase, chart)
    if key not in _RUNS:
        overrides, secrets = phase_overrides(phase, chart)
        run = run_stack("search", overrides=overrides, secret_overrides=secrets)
        if run.error is not None:
            raise run.error
        _RUNS[key] = run.monitor
    return _RUNS[key]


def instance_layer(phase, chart=None):
    overrides, secrets = phase_overrides(phase, chart)
    bag, secret_keys = stack_config("search", overrides=overrides, secret_overrides=secrets)
    cfg, _ = config.load(bag, is_secret=lambda k: k in secret_keys, read_secret=lambda k: "x")
    return airflow_values.instance_values(cfg)


def values(mon):
    return mon.one(RELEASE).inputs["values"]


# --- values per phase, against wmf-charts.md section 5 ------------------------------------

def test_webserver_phase_values_match_the_reference():
    assert instance_layer("webserver") == {
        "config": {
            "airflow": {
                "instance_name": "search", "dags_folder": "search",
                "dbHost": "an-db1001.eqiad.wmnet", "dbName": "airflow_search", "dbUser": "airflow_search",
                "auth": {"role_mappings": {"airflow-search-ops": ["Op"]}},
                "config": {"logging": {"remote_logging": False}},
            },
            "oidc": {"client_id": "airflow_search"},
        },
        "external_services": {"webserver": {"postgresql": ["analytics"], "airflow": ["search"]}},
        "ingress": {"gatewayHosts": {"default": "airflow-search", "extraFQDNs": ["airflow-search.wikimedia.org"]}},
        "kerberos": {"enabled": False},
        "scheduler": {"remote_host": "an-airflow1005.eqiad.wmnet", "enabled": False},
        "postgresql": {"cloudnative": False},
    }


def test_webserver_phase_disables_scheduler_and_kerberos_and_keeps_db_password_secret():
    v = values(run_phase("webserver"))
    assert v["scheduler"] == {"remote_host": "an-airflow1005.eqiad.wmnet", "enabled": False}
    assert v["kerberos"]["enabled"] is False and "keytab" not in v["kerberos"]
    leaf = v["config"]["airflow"]["postgresqlPass"]
    assert isinstance(leaf, mockrun.SecretLeaf) and leaf.value == LEGACY_PASSWORD
    assert "aws_access_key_id" not in v["config"]["airflow"]


def test_scheduler_phase_values_match_the_reference():
    assert instance_layer("scheduler") == {
        "config": {
            "airflow": {
                "instance_name": "search", "dags_folder": "search",
                "dbHost": "an-db1001.eqiad.wmnet", "dbName": "airflow_search", "dbUser": "airflow_search",
                "auth": {"role_mappings": {"airflow-search-ops": ["Op"]}},
                "config": {"core": {"executor": "KubernetesExecutor"}, "kerberos": {"principal": "analytics-search/airflow-search.discovery.wmnet"}},
            },
            "oidc": {"client_id": "airflow_search"},
        },
        "external_services": {
            "webserver": {"postgresql": ["analytics"]}, "scheduler": {"postgresql": ["analytics"]}, "task-pod": {"postgresql": ["analytics"]},
        },
        "ingress": {"gatewayHosts": {"default": "airflow-search", "extraFQDNs": ["airflow-search.wikimedia.org"]}},
        "postgresql": {"cloudnative": False},
    }


def test_scheduler_phase_turns_on_kerberos_and_remote_logging():
    v = values(run_phase("scheduler"))
    assert "scheduler" not in v and "enabled" not in v["kerberos"]
    assert isinstance(v["kerberos"]["keytab"], mockrun.SecretLeaf)
    assert "remote_logging" not in v["config"]["airflow"]["config"]["logging"]  # chart default: true
    assert isinstance(v["config"]["airflow"]["aws_secret_access_key"], mockrun.SecretLeaf)


def test_database_import_phase_scales_airflow_to_zero():
    layer = instance_layer("database-import")
    assert layer["resources"] == {"replicas": 0}
    assert layer["postgresql"] == {"cloudnative": False}


def test_database_phase_values_match_the_reference_cut_over():
    # wmf-charts.md 5, phase 3b (airflow-search @35a03f3ce, chart 0.0.69)
    assert instance_layer("database", chart="0.0.69") == {
        "config": {
            "airflow": {
                "instance_name": "search", "dags_folder": "search",
                "auth": {"role_mappings": {"airflow-search-ops": ["Op"]}},
                "config": {"core": {"executor": "KubernetesExecutor"}, "kerberos": {"principal": "analytics-search/airflow-search.discovery.wmnet"}},
            },
            "oidc": {"client_id": "airflow_search"},
        },
        "ingress": {"gatewayHosts": {"default": "airflow-search", "extraFQDNs": ["airflow-search.wikimedia.org"]}},
    }
    v = values(run_phase("database"))
    assert v["pgServiceName"] == "postgresql-airflow-search"
    assert "postgresqlPass" not in v["config"]["airflow"] and "postgresql" not in v and "resources" not in v


# --- resources per phase -------------------------------------------------------------------

def test_webserver_phase_has_no_storage_identity_or_database():
    types = {r.type for r in run_phase("webserver").registered()}
    assert not types & {COMMAND, CLUSTER, "aws:s3/bucket:Bucket"}


def test_scheduler_phase_migrates_logs_in_runbook_order_before_the_release():
    mon = run_phase("scheduler")
    by_urn = {r.urn: r for r in mon.registered()}
    cmds = {r.name: r for r in mon.by_type(COMMAND)}
    chain = ["search-log-migration-first-sync", "search-log-migration-stop-legacy",
             "search-log-migration-final-sync", "search-log-migration-verify"]
    assert set(chain) <= set(cmds)
    for before, after in zip(chain, chain[1:]):
        deps = {by_urn[u].name for u in cmds[after].explicit_depends_on if u in by_urn}
        assert before in deps, f"{after} must run after {before}"
    first_deps = {by_urn[u].name for u in cmds[chain[0]].explicit_depends_on if u in by_urn}
    assert "search-logs-bucket" in first_deps
    release = mon.one(RELEASE)
    assert cmds[chain[-1]].urn in release.explicit_depends_on, "the k8s scheduler starts only after the logs are verified"
    assert "an-airflow1005.eqiad.wmnet" == cmds[chain[0]].inputs["connection"].value["host"]


def test_database_import_bootstraps_cnpg_from_the_legacy_database_after_scaling_to_zero():
    mon = run_phase("database-import")
    cluster = mon.one(CLUSTER)
    spec = cluster.inputs["spec"]
    assert spec["bootstrap"]["initdb"]["import"] == {
        "type": "microservice", "databases": ["airflow_search"], "source": {"externalCluster": "external-database"},
    }
    assert spec["externalClusters"] == [{
        "name": "external-database",
        "connectionParameters": {"host": "an-db1001.eqiad.wmnet", "port": "5432", "user": "airflow_search", "dbname": "airflow_search"},
        "password": {"name": "postgresql-airflow-search-bootstrap-import", "key": "password"},
    }]
    secret = mon.named("search-postgresql-bootstrap-import")
    assert secret.inputs["metadata"]["name"] == "postgresql-airflow-search-bootstrap-import"
    assert isinstance(secret.inputs["stringData"], mockrun.SecretLeaf)
    release = mon.one(RELEASE)
    assert release.urn in cluster.explicit_depends_on, "Airflow must be scaled to 0 before the import starts"
    assert values(mon)["resources"] == {"replicas": 0}


def test_database_phase_verifies_the_import_before_cutting_over():
    mon = run_phase("database")
    job = mon.one("kubernetes:batch/v1:Job")
    release = mon.one(RELEASE)
    assert job.urn in release.explicit_depends_on, "the cut-over must wait for the verifier"
    assert mon.one(CLUSTER).urn in job.explicit_depends_on
    cmd = job.inputs["spec"]["template"]["spec"]["containers"][0]
    script = next(e["value"] for e in cmd["env"] if e["name"] == "VERIFY_SCRIPT")
    assert "SOURCE_HOST=an-db1001.eqiad.wmnet" in script and "TARGET_HOST=postgresql-airflow-search-rw" in script
    assert LEGACY_PASSWORD not in repr(job.inputs)
    spec = mon.one(CLUSTER).inputs["spec"]
    assert "import" not in spec["bootstrap"]["initdb"]
    assert "password" not in spec["externalClusters"][0], "the import password goes away"
    assert not [r for r in mon.registered() if r.name.endswith("bootstrap-import")]


def test_complete_phase_drops_the_migration_machinery():
    mon = run_phase("complete")
    names = {r.name for r in mon.registered()}
    assert not [n for n in names if "log-migration" in n or "db-verification" in n]
    steps = [s["step"] for s in mon.stack_outputs["manualSteps"]]
    assert "Remove the legacy instance's secrets from puppet" in steps


def test_webserver_phase_emits_the_hiera_snippet_with_the_key_masked():
    mon = run_phase("webserver")
    step = next(s for s in mon.stack_outputs["manualSteps"] if s["step"].startswith("Share the webserver secret key"))
    assert step["where"].endswith("hieradata/role/common/analytics_cluster/airflow/search.yaml")
    assert "profile::airflow::instances_secrets:\n  search:\n    secret_key: '<secret: pulumi config get -s search webserverSecretKey>'" in step["snippet"]


# --- config validation per phase -----------------------------------------------------------

@pytest.mark.parametrize("phase", ["webserver", "scheduler", "database-import"])
def test_external_database_phases_reject_charts_after_0_0_120(phase):
    run = run_stack("search", overrides={"phase": phase, "airflowChartVersion": "0.0.121"},
                    secret_overrides={"legacyDbPassword": LEGACY_PASSWORD})
    assert isinstance(run.error, ConfigError)
    assert str(run.error).startswith("airflow:airflowChartVersion: 0.0.121 no longer reads the external-database values")
    assert run.monitor.registered() == []


@pytest.mark.parametrize("phase", ["webserver", "scheduler", "database-import", "database"])
def test_phases_that_read_the_legacy_database_need_its_password(phase):
    overrides, _ = phase_overrides(phase)
    run = run_stack("search", overrides=overrides)
    assert str(run.error).startswith(f"airflow:legacyDbPassword: missing: phase {phase} connects to the legacy database")


def test_complete_phase_refuses_a_leftover_legacy_password():
    run = run_stack("search", secret_overrides={"legacyDbPassword": LEGACY_PASSWORD})
    assert str(run.error) == "airflow:legacyDbPassword: must be gone once the migration is complete; remove it with `./dev config rm -s search legacyDbPassword` (CLI: `pulumi config rm -s search legacyDbPassword`)"


def test_unknown_phase_and_legacy_keys_are_rejected():
    assert str(run_stack("search", overrides={"phase": "cutover"}).error).startswith("airflow:phase: 'cutover' is not a migration phase")
    run = run_stack("search", overrides={"legacy": {"host": "an-airflow1005.eqiad.wmnet", "dbhost": "x"}})
    assert str(run.error).startswith("airflow:legacy.dbhost: unknown key")


def test_a_new_instance_cannot_start_mid_migration():
    run = run_stack("test-k8s", overrides={"phase": "scheduler"})
    assert str(run.error).startswith("airflow:legacy: is missing but phase scheduler migrates a legacy instance")


def test_legacy_phases_need_the_shared_keys():
    overrides, secrets = phase_overrides("webserver")
    bag, secret_keys = stack_config("search", overrides=overrides, secret_overrides=secrets)
    bag.pop("airflow:webserverSecretKey")
    secret_keys.remove("airflow:webserverSecretKey")
    run = mockrun.run_program("airflow", "search", bag, secret_keys)
    assert str(run.error).startswith("airflow:webserverSecretKey: missing: phase webserver shares it with the legacy instance")


# --- safety across phases ------------------------------------------------------------------

# Inputs whose change makes the engine replace the resource (provider semantics).
def replacement_inputs(reg):
    i = reg.inputs
    if reg.type == "aws:s3/bucket:Bucket":
        return {"bucket": i.get("bucket"), "provider": reg.provider.rsplit("::", 1)[0]}
    if reg.type == COMMAND:
        return {"triggers": mockrun.masked(i.get("triggers"))}
    if reg.type.startswith("kubernetes:"):
        return {"name": i["metadata"]["name"], "namespace": i["metadata"].get("namespace"), "kind": i.get("kind")}
    if reg.type.startswith("random:"):
        return {k: v for k, v in i.items()}
    return {}


def protected(mon):
    return {r.urn: r for r in mon.registered() if r.protect}


@pytest.mark.parametrize("before, after", list(zip(PHASES, PHASES[1:])) + [(PHASES[0], PHASES[-1])])
def test_phase_change_never_removes_or_replaces_protected_data(before, after):
    old, new = protected(run_phase(before)), protected(run_phase(after))
    # webserver owns no data yet: the namespace is admin_ng's (read), the legacy keys come from config
    assert bool(old) == (before != "webserver"), f"phase {before}: protected resources {sorted(old)}"
    for urn, reg in old.items():
        assert urn in new, f"{before} -> {after} would delete protected {reg.type} {reg.name}"
        assert replacement_inputs(new[urn]) == replacement_inputs(reg), f"{before} -> {after} would replace {reg.name}"
        assert new[urn].protect


@pytest.mark.parametrize("before, after", list(zip(PHASES, PHASES[1:])))
def test_phase_change_keeps_the_release_and_namespace_identity(before, after):
    for typ in (RELEASE, "kubernetes:core/v1:Namespace"):
        assert run_phase(before).one(typ).urn == run_phase(after).one(typ).urn


def test_the_cluster_ignores_bootstrap_changes_once_created():
    for phase in ("database-import", "database", "complete"):
        assert run_phase(phase).one(CLUSTER).ignore_changes == ["spec.bootstrap"]


@pytest.mark.parametrize("phase", PHASES)
def test_the_offline_preview_of_each_phase_renders(phase, tmp_path):
    # exactly the README's command: ./dev preview -s search --set phase=... [--set-secret ...]
    import io

    from tools import preview

    argv = ["-s", "search", "--set", f"phase={phase}", "--out", str(tmp_path)]
    if phase in config.EXTERNAL_DB_PHASES:
        argv += ["--set", "airflowChartVersion=0.0.120"]
    if phase != "complete":
        argv += ["--set-secret", "legacyDbPassword"]
    out, err = io.StringIO(), io.StringIO()
    assert preview.main(argv, stdout=out, stderr=err) == 0, err.getvalue()
    assert (tmp_path / "helm" / "search-airflow-release.values.yaml").is_file()
    assert f'phase: "{phase}"' in out.getvalue()
