"""The whole fleet: one stack file per Airflow instance of wmf-charts.md 4.2, each holding only
what differs, each rendering under mocks with its instance's real differences.

Stacks are discovered from the repository (``tools.stackconfig.stacks()``), not from
conftest's two example stacks, so a new Pulumi.<instance>.yaml is covered by every generic
test without editing a list here.  The 13 reference instances (REFERENCE_INSTANCES) are a
fixture of their own, used only by the tests about those instances: a new instance's stack
breaks none of them (tests/test_new_instance.py proves it).
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization

from components import airflow_values, config, namespace
from tests.conftest import EXAMPLE_PASSPHRASE, KUBERNETES_VERSION, rendered, stack_cfg
from tests.schemas import cnpg
from tools import mockrun, stackconfig

RELEASE = "kubernetes:helm.sh/v3:Release"
CLUSTER = "kubernetes:postgresql.cnpg.io/v1:Cluster"
POOLER = "kubernetes:postgresql.cnpg.io/v1:Pooler"
NAMESPACE = "kubernetes:core/v1:Namespace"
BUCKET = "aws:s3/bucket:Bucket"

# wmf-charts.md 4.2: the airflow-<name> helmfile dirs of helmfile.d/dse-k8s-services
# (airflow-dev is a devenv namespace with no airflow helmfile, so it is not an instance here).
# The reference fleet: only the tests about these instances use it; a new stack is not in it.
REFERENCE_INSTANCES = frozenset({
    "analytics-product", "analytics-test", "dumps", "fr-tech", "main", "ml", "platform-eng",
    "research", "search", "sre", "test-k8s", "wikidata", "wmde",
})
FLEET = stackconfig.stacks()
PRODUCTION_HADOOP = sorted(set(REFERENCE_INSTANCES) - {"analytics-test", "test-k8s", "dumps"})
PSS_LABELS = {"pod-security.wmf.org/profile": "restricted", "pod-security.wmf.org/allow-hostpath-analytics": "include"}

# Keys of files this change does not own that restate a program-derived default; the
# lead was told.  A stack file may only shrink this list, never grow it.
KNOWN_REDUNDANT = {("search", "phase")}  # named on purpose: the key an operator changes to walk the phases


# --- helpers -----------------------------------------------------------------------------


def values(stack: str) -> dict[str, Any]:
    return rendered(stack).one(RELEASE).inputs["values"]


def cluster(stack: str) -> dict[str, Any]:
    return rendered(stack).one(CLUSTER).inputs


def get(node: Any, dotted: str) -> Any:
    for part in dotted.split("|"):
        node = node[part]
    return node


def at(stack: str, path: str) -> Any:
    """A Release value by '|'-separated path (chart keys contain dots, e.g. common.io)."""
    return get(values(stack), path)


def raw_stack_file(stack: str) -> dict[str, Any]:
    with open(stackconfig.ROOT / f"Pulumi.{stack}.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)["config"]


@functools.lru_cache(maxsize=None)
def decrypted(stack: str) -> stackconfig.StackConfig:
    return stackconfig.load(stack, EXAMPLE_PASSPHRASE)


def load_config(bag: dict[str, str], secret_keys: list[str]) -> config.InstanceConfig:
    cfg, _ = config.load(bag, is_secret=lambda k: k in secret_keys, read_secret=lambda k: "x")
    return cfg


# --- the fleet ---------------------------------------------------------------------------


def test_every_reference_instance_has_its_stack_file():
    assert len(REFERENCE_INSTANCES) == 13
    assert REFERENCE_INSTANCES <= set(FLEET), f"stack files missing: {sorted(REFERENCE_INSTANCES - set(FLEET))}"


@pytest.mark.parametrize("stack", FLEET)
def test_each_stack_names_its_own_instance(stack):
    assert raw_stack_file(stack)["airflow:instance"] == stack, f"Pulumi.{stack}.yaml must set airflow:instance {stack}"


@pytest.mark.parametrize("stack", FLEET)
def test_every_stack_renders_under_mocks(stack):
    mon = rendered(stack)  # raises the program's error, if any
    v = mon.one(RELEASE).inputs["values"]
    assert v["config"]["airflow"]["instance_name"] == stack
    assert v["pgServiceName"] == f"postgresql-airflow-{stack}"
    assert mon.one(NAMESPACE).read_id == f"airflow-{stack}"


@pytest.mark.parametrize("stack", FLEET)
def test_every_cnpg_cluster_and_pooler_matches_the_cnpg_schema(stack):
    for type_ in (CLUSTER, POOLER):
        manifest = mockrun.unmasked(rendered(stack).one(type_).inputs)
        assert cnpg.problems(manifest) == [], f"{stack}: {manifest['kind']} does not match the CNPG API types"


@pytest.mark.parametrize("stack", FLEET)
def test_cnpg_overrides_are_valid_kubernetes_core_types(stack):
    # pgSpecOverrides passes resources and affinity.nodeAffinity through to CNPG, which takes
    # the core ResourceRequirements and NodeAffinity types: check them as a Pod would carry them
    spec = cluster(stack)["spec"]
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
        "spec": {
            "containers": [{"name": "postgres", "image": "probe", "resources": spec["resources"]}],
            **({"affinity": {"nodeAffinity": spec["affinity"]["nodeAffinity"]}} if "nodeAffinity" in spec["affinity"] else {}),
        },
    }
    try:
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{stack}: CNPG resources/nodeAffinity are not valid core types: {str(exc).splitlines()[0]}")


# --- a stack file holds only what differs ------------------------------------------------


@pytest.mark.parametrize("stack", FLEET)
def test_stack_files_hold_no_key_equal_to_the_project_default(stack):
    defaults = stackconfig._project_defaults(stackconfig.project_file())
    same = sorted(k for k, v in raw_stack_file(stack).items() if k in defaults and v == defaults[k])
    assert same == [], f"Pulumi.{stack}.yaml restates Pulumi.yaml defaults: {same}"


@pytest.mark.parametrize("stack", FLEET)
def test_stack_files_hold_no_key_the_program_would_derive_anyway(stack):
    # Drop each plain key in turn: if the validated config does not change, the key only
    # restated a default (Pulumi.yaml's or one config.py derives, e.g. the principal).
    sc = decrypted(stack)
    bag, secret_keys = dict(sc.config), list(sc.secret_keys)
    defaults = stackconfig._project_defaults(stackconfig.project_file())
    full = load_config(bag, secret_keys)
    redundant = []
    for key in raw_stack_file(stack):
        short = key.split(":", 1)[1]
        if key in secret_keys or short == "instance":
            continue
        without = {k: v for k, v in bag.items() if k != key}
        if key in defaults:  # a project-level key falls back to Pulumi.yaml, as with the CLI
            without[key] = stackconfig._to_wire(defaults[key])
        try:
            without_cfg = load_config(without, secret_keys)
        except config.ConfigError:
            continue  # the key is needed
        if without_cfg == full:
            redundant.append((stack, short))
    unexpected = sorted(set(redundant) - KNOWN_REDUNDANT)
    assert unexpected == [], f"Pulumi.{stack}.yaml holds keys equal to what the program derives: {unexpected}"


# --- secrets -----------------------------------------------------------------------------


@pytest.mark.parametrize("stack", FLEET)
def test_every_secret_a_stack_sets_is_a_secure_value(stack):
    from components.config_keys import KEYS

    raw = raw_stack_file(stack)
    for key in (k for k, spec in KEYS.items() if spec.secret and f"airflow:{k}" in raw):
        entry = raw[f"airflow:{key}"]
        assert isinstance(entry, dict) and set(entry) == {"secure"}, f"Pulumi.{stack}.yaml: {key} must be a secure value"
    for key in ("oidcClientSecret", "sshPrivateKey"):  # required: nothing generates them
        assert f"airflow:{key}" in raw, f"Pulumi.{stack}.yaml: {key} is required"


# every reference instance but the canary existed before this program (helmfile); a new instance
# has its keys generated, so this is about the reference fleet only
@pytest.mark.parametrize("stack", sorted(REFERENCE_INSTANCES - {"test-k8s"}))
def test_helmfile_deployed_instances_carry_their_keys_as_secrets(stack):
    # it must keep its Fernet key (or the connections in its database become unreadable) and
    # its webserver key
    raw = raw_stack_file(stack)
    plain = decrypted(stack).config
    for key in ("oidcClientSecret", "sshPrivateKey", "fernetKey", "webserverSecretKey"):
        entry = raw.get(f"airflow:{key}")
        assert isinstance(entry, dict) and set(entry) == {"secure"}, f"Pulumi.{stack}.yaml: {key} must be a secure value"
    Fernet(plain["airflow:fernetKey"].encode())  # raises unless 32 url-safe base64 bytes
    assert len(plain["airflow:webserverSecretKey"]) >= 32
    serialization.load_ssh_private_key(plain["airflow:sshPrivateKey"].encode(), password=None)


WITH_PRIVATE_VALUES = [s for s in FLEET if "airflow:privateValues" in raw_stack_file(s)]


@pytest.mark.parametrize("stack", WITH_PRIVATE_VALUES)
def test_private_values_are_secret_and_obviously_examples(stack):
    sc = decrypted(stack)
    assert "airflow:privateValues" in sc.secret_keys, f"{stack}: privateValues must be a secure value"

    def leaves(node, path=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(v, f"{path}.{k}" if path else k)
        else:
            yield path, node

    secret_release_paths = set(mockrun.secret_paths(values(stack)))
    for path, leaf in leaves(json.loads(sc.config["airflow:privateValues"])):
        assert isinstance(leaf, str) and (
            "EXAMPLE" in leaf or leaf.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        ), f"{stack}: privateValues.{path} must be an example placeholder (these stacks use the examples-only passphrase)"
        # and it reaches the Release only as a secret
        assert path in secret_release_paths, f"{stack}: {path} is not a secret Release value"


_TPL_REF = re.compile(r"\.Values\.([A-Za-z0-9_.]+)")


def _strings(node: Any):
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


@pytest.mark.parametrize("stack", FLEET)
def test_every_value_a_template_reads_is_set(stack):
    # extra_secrets / extra_k8s_secrets / connections are tpl'd by the chart against the merged
    # values: a reference to a private value that is not there renders an empty credential
    v = values(stack)
    refs = {ref for text in _strings(mockrun.masked(v)) for ref in _TPL_REF.findall(text)}
    assert refs, f"{stack}: the common kafka connections alone template the instance name"
    for ref in sorted(refs):
        node: Any = v
        for part in ref.split("."):
            assert isinstance(node, dict) and part in node, f"{stack}: a template reads .Values.{ref}, which is not set"
            node = node[part]


# --- distinct names across the fleet -----------------------------------------------------


def test_namespaces_buckets_and_principals_are_distinct_across_the_fleet():
    seen: dict[str, dict[str, str]] = {"namespace": {}, "bucket": {}, "principal": {}, "gateway host": {},
                                      "pg service": {}, "oidc client": {}, "dags folder": {}}

    def claim(kind: str, name: str, stack: str) -> None:
        assert name not in seen[kind], f"{kind} {name} is used by both {seen[kind][name]} and {stack}"
        seen[kind][name] = stack

    for stack in FLEET:
        mon = rendered(stack)
        v = mon.one(RELEASE).inputs["values"]
        derived = airflow_values.chart_defaults(v["config"]["airflow"]["instance_name"])  # what the chart fills in
        claim("namespace", mon.one(NAMESPACE).read_id, stack)
        for bucket in mon.by_type(BUCKET):
            claim("bucket", bucket.inputs["bucket"], stack)
        claim("principal", v["config"]["airflow"]["config"].get("kerberos", {}).get("principal", derived["principal"]), stack)
        claim("gateway host", v["ingress"]["gatewayHosts"]["default"], stack)
        claim("pg service", v["pgServiceName"], stack)
        claim("oidc client", v["config"]["oidc"].get("client_id", derived["client_id"]), stack)
        claim("dags folder", v["config"]["airflow"].get("dags_folder", derived["dags_folder"]), stack)
    assert len(seen["bucket"]) == 2 * len(FLEET), "every instance has a logs bucket and a PostgreSQL bucket"


# --- per-instance differences (wmf-charts.md 4.2 and 2.5) --------------------------------


def test_main_is_airflow_wikimedia_org_with_the_analytics_principal_and_the_big_database():
    assert at("main", "ingress|gatewayHosts") == {"default": "airflow", "extraFQDNs": ["airflow.wikimedia.org"]}
    assert at("main", "config|airflow|config|kerberos|principal") == "analytics/airflow.discovery.wmnet"
    assert at("main", "config|airflow|auth|op_ldap_role") == "airflow-analytics-ops"
    assert at("main", "config|airflow|config|core|parallelism") == 256
    assert at("main", "config|geoip|enabled") is True
    # the labels the namespace must carry, set by admin_ng (its analytics-pss-labels anchor)
    assert namespace.required_labels(stack_cfg("main")).items() >= PSS_LABELS.items()
    assert "datahub_ingest_superset.yaml" in at("main", "config|extra_secrets")
    assert "gcs-token-search-console" in at("main", "config|extra_k8s_secrets")
    assert at("main", "external_services|task-pod|druid") == ["analytics", "public"]
    assert at("main", "discovery|listeners")[:4] == ["mw-api-int", "noc", "schema", "analytics-web"]
    spec = cluster("main")["spec"]
    assert spec["storage"]["size"] == "100Gi"
    assert spec["postgresql"]["parameters"] == {"max_connections": "200", "shared_buffers": "2048MB"}
    # verbatim as postgresql-airflow-main runs it: a CRD quantity is stored as written, so "12"
    # would be a change of the live Cluster
    assert spec["resources"] == {"limits": {"cpu": "12000m", "memory": "10Gi"}, "requests": {"cpu": "12000m", "memory": "10Gi"}}
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "capabilities.nic", "operator": "NotIn", "values": ["1G"]}]}]
    assert spec["affinity"]["enablePodAntiAffinity"] is True, "the override must merge into, not replace, the default affinity"
    pooler = rendered("main").one(POOLER).inputs["spec"]["pgbouncer"]["parameters"]
    assert pooler["default_pool_size"] == "50" and pooler["max_client_conn"] == "1000"


def test_analytics_test_runs_both_executors_on_the_test_hadoop_cluster():
    assert at("analytics-test", "config|airflow|config|core|executor") == "KubernetesExecutor,LocalExecutor"
    assert at("analytics-test", "worker|config|hadoop|core")["fs.defaultFS"] == "hdfs://analytics-test-hadoop/"
    # the derived Op group (airflow-analytics-test-ops) is left to the chart
    assert at("analytics-test", "config|airflow|auth") == {"role_mappings": {"airflow-analytics-ops": ["Op"]}}
    assert at("analytics-test", "config|airflow|config|kerberos|principal") == "analytics/airflow-analytics-test.discovery.wmnet"
    assert at("analytics-test", "config|airflow|config|core|parallelism") == 128
    assert at("analytics-test", "scheduler|limits") == {"cpu": 8, "memory": "8Gi"}
    assert at("analytics-test", "config|airflow|extra_rbac") == [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]}]
    assert at("analytics-test", "gitsync|extra_dags_folders") == ["main"]
    assert at("analytics-test", "config|geoip|enabled") is True
    scheduler_egress = at("analytics-test", "external_services|scheduler")
    assert scheduler_egress["kerberos"] == ["kdc"], "LocalExecutor tasks in the scheduler need the KDC"
    assert scheduler_egress["hadoop-master"] == ["analytics-test"], "the test Hadoop layer's scheduler egress must survive the merge"
    assert cluster("analytics-test")["spec"]["postgresql"]["parameters"].keys() >= {"pg_stat_statements.max", "pg_stat_statements.track"}


def test_dumps_has_no_hadoop_layer_and_no_postgresql_overrides():
    v = values("dumps")
    # the common layer's generic hadoop keys stay; no cluster is configured
    hadoop = v["worker"]["config"]["hadoop"]
    assert "fs.defaultFS" not in hadoop["core"] and "dfs.nameservices" not in hadoop["hdfs"], "dumps gets no Hadoop cluster"
    assert "host_aliases" not in v and "hadoop_shell" not in v
    assert not {"analytics-hive", "analytics-test-hive", "datahub_gms"} & set(v["config"]["connections"])
    assert "hive" not in v["external_services"]["task-pod"]
    assert at("dumps", "external_services|task-pod|dumps") == ["wikimedia"]
    assert at("dumps", "config|airflow|config|core|parallelism") == 128
    assert at("dumps", "app|limits|memory") == "4Gi"
    # upstream's misplaced config.auth.op_ldap_role is ignored by the chart: the derived group
    # (airflow-dumps-ops) applies, left to the chart; the dead key is a listed takeover change
    assert "auth" not in v["config"]["airflow"] and "auth" not in v["config"]
    assert dict(stack_cfg("dumps").takeover_changes).keys() == {"config.auth.op_ldap_role"}
    spec = cluster("dumps")["spec"]
    assert (spec["storage"]["size"], spec["walStorage"]["size"]) == ("15Gi", "30Gi")
    assert "parameters" not in spec["postgresql"]


def test_ml_runs_a_triggerer_and_reaches_thanos_swift():
    assert at("ml", "triggerer|enabled") is True
    assert at("ml", "config|connections|thanos_swift|extra|endpoint_url") == "https://thanos-swift.discovery.wmnet"
    assert isinstance(at("ml", "config|connections|thanos_swift|password"), mockrun.SecretLeaf)
    assert at("ml", "external_services|task-pod|thanos-swift") == ["eqiad", "codfw"]


def test_research_keeps_xcoms_in_the_database():
    assert at("research", "config|airflow|config|core|xcom_backend") == "airflow.models.xcom.BaseXCom"
    assert at("research", "config|airflow|config|common.io") is None, "common.io: ~ removes the common S3 XCom threshold"
    assert at("research", "external_services|task-pod|airflow") == ["analytics"]
    assert at("research", "external_services|task-pod|gitlab") == ["wikimedia"]


def test_search_has_the_larger_database():
    assert cluster("search")["spec"]["storage"]["size"] == "30Gi"


def test_sre_rsyncs_to_the_puppetservers_with_a_secret_key_and_a_larger_wal_volume():
    assert at("sre", "rsync|enabled") is True
    target = at("sre", "rsync|ssh|targets|puppetservers")
    assert target["user"] == "analytics-sre-rsync" and len(target["known_hosts"]) == 6
    key = target["private_key"]["content"]
    assert isinstance(key, mockrun.SecretLeaf)
    serialization.load_ssh_private_key(key.value.encode(), password=None)
    assert cluster("sre")["spec"]["walStorage"]["size"] == "40Gi"


def test_fr_tech_reaches_its_minio_with_the_fr_tech_ca():
    conn = at("fr-tech", "config|connections|s3_fr_tech")
    assert conn["extra"]["endpoint_url"] == "https://franio1001.frack.eqiad.wmnet:9000"
    assert isinstance(conn["login"], mockrun.SecretLeaf) and isinstance(conn["password"], mockrun.SecretLeaf)
    assert at("fr-tech", "external_services|task-pod|minio") == ["fr-tech-eqiad"]
    pem = at("fr-tech", "worker|config|extra_files|/etc/ssl/certs/fr-tech|ca.pem")
    ca = x509.load_pem_x509_certificate(pem.encode())
    assert "frpm1002.frack.eqiad.wmnet" in ca.subject.rfc4514_string()


def test_platform_eng_reaches_opensearch_in_both_datacenters():
    conns = at("platform-eng", "config|connections")
    opensearch = {k: c for k, c in conns.items() if k.startswith("opensearch_")}
    assert len(opensearch) == 5
    for name, conn in opensearch.items():
        assert conn["login"] == "opensearch" and isinstance(conn["password"], mockrun.SecretLeaf), name
    assert at("platform-eng", "gitsync|extra_dags_folders") == ["main"]
    assert at("platform-eng", "networkpolicy|egress|dst_nets") == [{"cidr": "10.2.1.91/32", "ports": [{"port": 30443, "protocol": "TCP"}]}]


def test_wikidata_exposes_its_s3_connection_as_an_extra_secret():
    conn = at("wikidata", "config|connections|wikidata_platform_s3_dpe")
    assert conn["extra"]["endpoint_url"] == "https://rgw.eqiad.dpe.anycast.wmnet"
    assert isinstance(conn["login"], mockrun.SecretLeaf) and isinstance(conn["password"], mockrun.SecretLeaf)
    assert "wikidata_platform_s3_dpe.login" in at("wikidata", "config|extra_secrets|wikidata_platform_s3_dpe.yaml")


def test_analytics_product_and_wmde_use_the_url_downloader():
    for stack in ("analytics-product", "wmde"):
        assert at(stack, "worker|proxy|urldownloader|enabled") is True, stack
    assert at("analytics-product", "external_services|task-pod|gitlab") == ["wikimedia"]
    assert at("analytics-product", "config|connections|wme_metrics|conn_type") == "http"
    assert at("wmde", "external_services|task-pod|dumps") == ["wikimedia"]


@pytest.mark.parametrize("stack", PRODUCTION_HADOOP)
def test_production_hadoop_instances_get_the_analytics_hadoop_layer(stack):
    assert at(stack, "worker|config|hadoop|core")["fs.defaultFS"] == "hdfs://analytics-hadoop/"
    # the hadoop shell is on by chart default; the layer opens its egress to the cluster
    assert at(stack, "external_services|hadoop-shell|hadoop-master") == ["analytics"]


@pytest.mark.parametrize("stack", sorted(REFERENCE_INSTANCES - {"main", "analytics-test", "test-k8s"}))
def test_other_instances_keep_the_derived_names(stack):
    v = values(stack)
    assert v["ingress"]["gatewayHosts"] == {"default": f"airflow-{stack}", "extraFQDNs": [f"airflow-{stack}.wikimedia.org"]}
    primary = "analytics-" + stack.removeprefix("analytics-")
    cfg = stack_cfg(stack)
    assert (cfg.kerberos_principal, cfg.op_ldap_role) == (f"{primary}/airflow-{stack}.discovery.wmnet", f"airflow-{stack}-ops")
    # ... which are the chart's derived defaults, so the values leave them to the chart
    assert "kerberos" not in v["config"]["airflow"].get("config", {}) and "auth" not in v["config"]["airflow"]


@pytest.mark.parametrize(("stack", "release"), [("ml", "model-training-pvc"), ("sre", "webrequest-to-cdn-pvc"), ("sre", "data-transfer-pvc")])
def test_helmfile_objects_outside_the_chart_are_listed_as_not_managed(stack, release):
    # the program does not create them yet: the stack file must say so, or an operator
    # retiring the helmfile would delete them unknowingly
    text = (stackconfig.ROOT / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8")
    header = text.split("\nconfig:", 1)[0]
    assert "Not managed by this program yet" in header and release in header, f"Pulumi.{stack}.yaml must list {release} as not managed"
