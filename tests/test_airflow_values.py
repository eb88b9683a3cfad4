"""The airflow chart values match what the Wikimedia chart reads (wmf-charts.md 1, 4, 5)."""

import pytest

from components import airflow_values, config
from tests.conftest import rendered, run_stack, stack_config
from tools import mockrun

RELEASE = "kubernetes:helm.sh/v3:Release"

SECRET_PATHS = {
    "config.private.airflow__core__fernet_key",
    "config.private.airflow__webserver__secret_key",
    "config.airflow.aws_access_key_id",
    "config.airflow.aws_secret_access_key",
    "config.oidc.client_secret",
    "kerberos.keytab",
}


def values_of(stack_or_monitor):
    mon = rendered(stack_or_monitor) if isinstance(stack_or_monitor, str) else stack_or_monitor
    return mon.one(RELEASE).inputs["values"]


def get(values, dotted):
    node = values
    for part in dotted.split("."):
        node = node[part]
    return node


def test_search_values_leave_the_derived_names_to_the_chart():
    v = values_of("search")
    # wmf-charts.md 5, phase 3b: airflow-search values after the cut-over; like its
    # values-production.yaml upstream, the names chart 0.0.177 derives from instance_name are
    # not set (dags_folder, executor, principal, OIDC client id, Op group)
    assert get(v, "config.airflow.instance_name") == "search"
    assert "dags_folder" not in v["config"]["airflow"] and "auth" not in v["config"]["airflow"]
    assert "executor" not in get(v, "config.airflow.config.core") and "kerberos" not in get(v, "config.airflow.config")
    assert "client_id" not in v["config"]["oidc"]
    assert airflow_values.chart_defaults("search") == {
        "dags_folder": "search", "client_id": "airflow_search", "executor": "KubernetesExecutor",
        "principal": "analytics-search/airflow-search.discovery.wmnet"}
    assert get(v, "ingress.gatewayHosts") == {"default": "airflow-search", "extraFQDNs": ["airflow-search.wikimedia.org"]}
    assert v["pgServiceName"] == "postgresql-airflow-search"
    assert v["environmentName"] == "dse-k8s-eqiad"
    # final state: no external-database keys at all
    for gone in ("dbHost", "dbName", "dbUser", "postgresqlPass"):
        assert gone not in v["config"]["airflow"], f"{gone} must not be in the final-state values"
    assert "postgresql" not in v and "scheduler" not in v


def test_search_runs_on_the_production_hadoop_cluster():
    v = values_of("search")
    assert get(v, "worker.config.hadoop.core")["fs.defaultFS"] == "hdfs://analytics-hadoop/"
    assert "analytics-hive" in v["config"]["connections"]
    assert get(v, "external_services.task-pod.hive") == ["analytics"]
    assert v["host_aliases"] == {"an-master1003.eqiad.wmnet": "10.64.36.15", "an-master1004.eqiad.wmnet": "10.64.53.14"}


def test_test_k8s_values_carry_its_own_differences():
    v = values_of("test-k8s")
    assert get(v, "config.airflow.config.kerberos.principal") == "analytics/airflow-test-k8s.discovery.wmnet"
    assert get(v, "config.airflow.auth.op_ldap_role") is None  # `~`: no Op group
    assert get(v, "config.oidc.idp_server") == "idp-test.wikimedia.org"
    assert get(v, "external_services.webserver.cas") == ["idp-test"]
    assert get(v, "config.geoip.enabled") is True
    assert get(v, "worker.config.hadoop.core")["fs.defaultFS"] == "hdfs://analytics-test-hadoop/"
    assert "dags_folder" not in v["config"]["airflow"] and "client_id" not in v["config"]["oidc"]
    assert v["pgServiceName"] == "postgresql-airflow-test-k8s"


def test_charts_up_to_0_0_120_get_every_name_explicitly():
    # those charts derive nothing from instance_name (wmf-charts.md 1.7)
    run = run_stack("search", overrides={"airflowChartVersion": "0.0.120"})
    assert run.error is None
    v = values_of(run.monitor)
    assert get(v, "config.airflow.dags_folder") == "search"
    assert get(v, "config.airflow.config.core.executor") == "KubernetesExecutor"
    assert get(v, "config.airflow.config.kerberos.principal") == "analytics-search/airflow-search.discovery.wmnet"
    assert get(v, "config.oidc.client_id") == "airflow_search"


@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_common_values_every_instance_shares(stack):
    v = values_of(stack)
    assert v["docker"] == {"registry": "docker-registry.discovery.wmnet"}
    assert get(v, "app.version") == get(v, "app.executor_pod_image_version")
    assert get(v, "app.version").startswith("airflow-2.11.2-py3.11-")
    assert get(v, "config.connections.s3_dpe.extra") == {"endpoint_url": "https://rgw.eqiad.dpe.anycast.wmnet", "region_name": "dpe"}
    assert get(v, "config.airflow.config.logging.remote_log_conn_id") == "s3_dpe"
    assert get(v, "config.airflow.config.smtp.smtp_host") == "mx-out1001.wikimedia.org"
    assert get(v, "kerberos.volume.storage_class") == "ceph-cephfs-ssd"
    assert get(v, "gitsync.volume.storage_class") == "ceph-cephfs-ssd"
    assert get(v, "kerberos.servers") == ["krb1001.eqiad.wmnet"]
    assert get(v, "external_services.kerberos.kerberos") == ["kdc"]
    assert get(v, "discovery.listeners") == ["mw-api-int", "noc", "schema", "analytics-web"]


@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_secret_bearing_values_reach_the_release_as_secrets(stack):
    v = values_of(stack)
    # search also carries its own private values (privateValues): extra connection credentials
    extra = {f"config.{conn}.{field}" for conn in ("wikimedia_enterprise", "opensearch_semantic_search_eqiad",
                                                   "opensearch_semantic_search_codfw")
             for field in ("username", "password")} if stack == "search" else set()
    assert set(mockrun.secret_paths(v)) == SECRET_PATHS | extra


def test_secret_values_come_from_secret_config_unchanged():
    sentinel = "SENTINEL-oidc-" + "x" * 20
    run = run_stack("search", secret_overrides={"oidcClientSecret": sentinel})
    assert run.error is None
    leaf = values_of(run.monitor)["config"]["oidc"]["client_secret"]
    assert isinstance(leaf, mockrun.SecretLeaf) and leaf.value == sentinel
    # and nowhere in plain text
    assert sentinel not in repr(mockrun.masked(values_of(run.monitor)))


def test_old_charts_get_explicit_role_mappings_instead_of_op_ldap_role():
    run = run_stack("search", overrides={"airflowChartVersion": "0.0.69"})
    assert run.error is None
    auth = values_of(run.monitor)["config"]["airflow"]["auth"]
    assert auth == {"role_mappings": {"airflow-search-ops": ["Op"]}}


def test_extra_role_mappings_and_extra_values_merge_last():
    run = run_stack(
        "search",
        overrides={
            "extraRoleMappings": {"airflow-analytics-ops": ["Op"]},
            "extraValues": {"config": {"airflow": {"config": {"core": {"parallelism": 128}}}}},
        },
    )
    assert run.error is None
    v = values_of(run.monitor)
    assert get(v, "config.airflow.auth.role_mappings") == {"airflow-analytics-ops": ["Op"]}
    assert get(v, "config.airflow.config.core") == {"max_map_length": 1200, "parallelism": 128}


def test_values_function_is_pure_and_deterministic():
    cfg_bag, secret_keys = stack_config("search")
    cfg, _ = config.load(cfg_bag, is_secret=lambda k: k in secret_keys, read_secret=lambda k: "x")
    private = airflow_values.private_values(
        cfg,
        fernet_key="F", webserver_secret_key="W", s3_access_key="A", s3_secret_key="S",
        oidc_client_secret="O", kerberos_keytab="K",
    )
    first = airflow_values.airflow_values(cfg, private)
    second = airflow_values.airflow_values(cfg, private)
    assert first == second
    first["config"]["airflow"]["instance_name"] = "mutated"
    assert airflow_values.airflow_values(cfg, private)["config"]["airflow"]["instance_name"] == "search"
    assert first["kerberos"]["keytab"] == "K" and first["config"]["private"]["airflow__core__fernet_key"] == "F"


def test_public_layers_win_over_private_ones():
    # helmfile layers private values first, so a public key with the same path wins
    merged = airflow_values.deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}, "d": [1]})
    assert merged == {"a": {"b": 3, "c": 2}, "d": [1]}
