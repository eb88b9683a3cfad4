"""The instance's CloudNativePG database: every rendered custom resource is valid against the
CNPG (and Calico) API types, and the Cluster, Pooler, backups and Secrets are wired together.

There is no API server here: tests/schemas/cnpg.py holds JSON Schemas written from the CNPG
Go API types; core objects go through kubernetes_validate like tests/test_kubernetes_objects.py.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from typing import Any, Callable

import jsonschema
import kubernetes_validate
import pytest

from components import config, database
from tests.conftest import KUBERNETES_VERSION, rendered, run_stack, stack_config
from tests.schemas import cnpg
from tools.mockrun import Registration, SecretLeaf, masked, secret_paths

STACKS = ("search", "test-k8s")
CNPG_TYPE = "kubernetes:postgresql.cnpg.io/v1:"
CALICO_TYPE = "kubernetes:crd.projectcalico.org/v1:NetworkPolicy"
SECRET_TYPE = "kubernetes:core/v1:Secret"
K8S_NETPOL_TYPE = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
RELEASE_TYPE = "kubernetes:helm.sh/v3:Release"
RGW = "https://rgw.eqiad.dpe.anycast.wmnet"


@functools.lru_cache(maxsize=None)
def instance_config(stack: str) -> config.InstanceConfig:
    bag, secret_keys = stack_config(stack)
    cfg, _ = config.load(bag, is_secret=lambda k: k in secret_keys, read_secret=lambda k: "x")
    return cfg


def pure_manifests(cfg: config.InstanceConfig) -> list[dict[str, Any]]:
    """What the pure functions build, custom resources only (the k8s NetworkPolicies are typed args)."""
    return [
        database.image_catalog(cfg),
        database.cluster(cfg),
        database.pooler(cfg),
        database.scheduled_backup(cfg),
        *[p for p in database.network_policies(cfg) if p["apiVersion"] == cnpg.CALICO_API],
    ]


def custom_resources(stack: str) -> list[Registration]:
    """Every CNPG and Calico object the program registers, whichever component owns it."""
    return [r for r in rendered(stack).registered() if r.type.startswith(CNPG_TYPE) or r.type == CALICO_TYPE]


def database_children(stack: str, *types: str) -> list[Registration]:
    """The PostgresCluster component's own resources of the given types."""
    return [r for r in rendered(stack).registered()
            if r.type in types and "dpe:airflow:PostgresCluster" in r.parent.split("::")[2]]


def cnpg_object(stack: str, kind: str) -> Registration:
    return rendered(stack).one(CNPG_TYPE + kind)


def secret_named(stack: str, name: str) -> Registration:
    found = [r for r in rendered(stack).by_type(SECRET_TYPE) if r.inputs["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one Secret {name}, found {[r.name for r in found]}"
    return found[0]


def secret_shape(node: Any) -> Any:
    """The structure with every value under a secret replaced by a placeholder of the same
    JSON type: enough for schema validation, nothing of the secret itself."""
    if isinstance(node, SecretLeaf):
        return _placeholders(node.value)
    if isinstance(node, dict):
        return {k: secret_shape(v) for k, v in node.items()}
    if isinstance(node, list):
        return [secret_shape(v) for v in node]
    return node


def _placeholders(node: Any) -> Any:
    if isinstance(node, SecretLeaf):
        return _placeholders(node.value)
    if isinstance(node, dict):
        return {k: _placeholders(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_placeholders(v) for v in node]
    return "[secret]" if isinstance(node, str) else node


def k8s_validate(manifest: dict[str, Any], what: str) -> None:
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:  # the full message embeds the whole schema
        pytest.fail(f"{what} is not a valid {manifest['kind']}: {str(exc).splitlines()[0]}")


def as_pod(spec: dict[str, Any], name: str = "probe") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


# --- schema validity -------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(cnpg.SCHEMAS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_schemas_are_well_formed_draft_2020_12(key):
    schema = cnpg.SCHEMAS[key]
    assert schema["$schema"] == cnpg.DIALECT
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("stack", STACKS)
def test_every_rendered_custom_resource_matches_its_schema(stack):
    regs = custom_resources(stack)
    kinds = sorted((r.inputs["apiVersion"], r.inputs["kind"]) for r in regs
                   if r in database_children(stack, r.type))
    assert kinds == sorted(
        [(cnpg.CNPG_API, k) for k in ("Cluster", "Pooler", "ScheduledBackup", "ImageCatalog")]
        + [(cnpg.CALICO_API, "NetworkPolicy")] * 3
    ), f"unexpected custom resources: {kinds}"
    for reg in regs:
        assert secret_paths(reg.inputs) == [], f"{reg.name}: a custom resource must carry no secret"
        assert cnpg.problems(reg.inputs) == [], f"{reg.name} does not match the {reg.inputs['kind']} schema"


@pytest.mark.parametrize("stack", STACKS)
def test_program_registers_exactly_what_the_pure_functions_build(stack):
    # the schema tests below run on the pure functions; this ties them to what is registered
    registered = {(r.inputs["kind"], r.inputs["metadata"]["name"]): r.inputs for r in custom_resources(stack)}
    for manifest in pure_manifests(instance_config(stack)):
        key = (manifest["kind"], manifest["metadata"]["name"])
        assert registered.get(key) == manifest, f"registered {key} differs from database.{manifest['kind']}()"


def test_longest_instance_name_still_fits_cnpg_name_limits():
    # config caps the instance at 30 characters; the Cluster webhook caps its name at 50
    # and the pooler's Service name is a 63-character DNS label
    cfg = dataclasses.replace(instance_config("search"), instance="a" * 30)
    for manifest in pure_manifests(cfg):
        assert cnpg.problems(manifest) == [], f"{manifest['kind']} {manifest['metadata']['name']}"
    assert len(database.names(cfg)["pooler"]) <= 63


def test_postgresql_parameters_reach_the_cluster_as_strings():
    cfg = dataclasses.replace(instance_config("search"), pg_parameters={"max_connections": "200", "work_mem": "64MB"})
    manifest = database.cluster(cfg)
    assert manifest["spec"]["postgresql"]["parameters"] == {"max_connections": "200", "work_mem": "64MB"}
    assert cnpg.problems(manifest) == []


# --- the schemas reject what the API server or the CNPG webhook would ------------------------


def put(path: str, value: Any) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        parent, key = _locate(doc, path)
        parent[key] = value
    return mutate


def drop(path: str) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        parent, key = _locate(doc, path)
        del parent[key]
    return mutate


def move(src: str, dst: str) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        parent, key = _locate(doc, src)
        value = parent.pop(key)
        put(dst, value)(doc)
    return mutate


def _locate(doc: Any, path: str) -> tuple[Any, Any]:
    parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = doc
    for part in parts[:-1]:
        node = node[part]
    return node, parts[-1]


def kind_builder(kind: str) -> Callable[[config.InstanceConfig], dict]:
    return {
        "Cluster": database.cluster,
        "Pooler": database.pooler,
        "ScheduledBackup": database.scheduled_backup,
        "ImageCatalog": database.image_catalog,
    }[kind]


def importing(cfg: config.InstanceConfig) -> config.InstanceConfig:
    """The search stack's legacy instance, in the database-import phase."""
    assert cfg.legacy is not None, "the search stack describes its legacy instance"
    return dataclasses.replace(cfg, phase="database-import")


def import_cluster(cfg: config.InstanceConfig) -> dict:
    return database.cluster(importing(cfg))


def calico_policy(suffix: str) -> Callable[[config.InstanceConfig], dict]:
    def build(cfg: config.InstanceConfig) -> dict:
        return next(p for p in database.network_policies(cfg) if p["metadata"]["name"].endswith(suffix))
    return build


BAD_OBJECTS = [
    # (id, builder, mutation, a fragment the problem report must contain)
    ("cluster-typo-field", kind_builder("Cluster"), put("spec.primaryUpdateStratgy", "unsupervised"), "primaryUpdateStratgy"),
    ("cluster-misplaced-endpoint", kind_builder("Cluster"),
     move("spec.backup.barmanObjectStore.endpointURL", "spec.backup.endpointURL"), "endpointURL"),
    ("cluster-instances-as-string", kind_builder("Cluster"), put("spec.instances", "2"), "spec.instances: '2' is not of type 'integer'"),
    ("cluster-zero-instances", kind_builder("Cluster"), put("spec.instances", 0), "spec.instances"),
    ("cluster-parameter-as-number", kind_builder("Cluster"), put("spec.postgresql.parameters", {"max_connections": 200}),
     "spec.postgresql.parameters.max_connections: 200 is not of type 'string'"),
    ("cluster-wal-only-compression-for-data", kind_builder("Cluster"),
     put("spec.backup.barmanObjectStore.data.compression", "lz4"), "spec.backup.barmanObjectStore.data.compression"),
    ("cluster-retention-policy-prose", kind_builder("Cluster"), put("spec.backup.retentionPolicy", "60 days"), "spec.backup.retentionPolicy"),
    ("cluster-backup-target", kind_builder("Cluster"), put("spec.backup.target", "standby"), "spec.backup.target"),
    ("cluster-log-level", kind_builder("Cluster"), put("spec.logLevel", "verbose"), "spec.logLevel"),
    ("cluster-update-method", kind_builder("Cluster"), put("spec.primaryUpdateMethod", "rolling"), "spec.primaryUpdateMethod"),
    ("cluster-image-name-and-catalog", kind_builder("Cluster"), put("spec.imageName", "postgres:15"),
     "should not be valid under {'required': ['imageName', 'imageCatalogRef']}"),
    ("cluster-catalog-kind", kind_builder("Cluster"), put("spec.imageCatalogRef.kind", "Catalog"), "spec.imageCatalogRef.kind"),
    ("cluster-catalog-without-major", kind_builder("Cluster"), drop("spec.imageCatalogRef.major"), "'major' is a required property"),
    ("cluster-half-s3-credentials", kind_builder("Cluster"),
     drop("spec.backup.barmanObjectStore.s3Credentials.secretAccessKey"), "spec.backup.barmanObjectStore.s3Credentials"),
    ("cluster-ca-selector-without-key", kind_builder("Cluster"),
     drop("spec.backup.barmanObjectStore.endpointCA.key"), "'key' is a required property"),
    ("cluster-no-destination", kind_builder("Cluster"),
     drop("spec.backup.barmanObjectStore.destinationPath"), "'destinationPath' is a required property"),
    ("cluster-reserved-env", kind_builder("Cluster"), put("spec.env.0.name", "PGDATA"), "spec.env.0.name"),
    ("cluster-two-bootstrap-methods", kind_builder("Cluster"), put("spec.bootstrap.recovery", {"source": "old"}), "spec.bootstrap"),
    ("cluster-anti-affinity-type", kind_builder("Cluster"), put("spec.affinity.podAntiAffinityType", "soft"), "podAntiAffinityType"),
    ("cluster-storage-size", kind_builder("Cluster"), put("spec.storage.size", "30 GB"), "spec.storage.size"),
    ("cluster-name-too-long", kind_builder("Cluster"), put("metadata.name", "a" * 51), "metadata.name"),
    ("cluster-name-with-dot", kind_builder("Cluster"), put("metadata.name", "postgresql.airflow"), "metadata.name"),
    ("import-two-databases-in-microservice-mode", import_cluster,
     put("spec.bootstrap.initdb.import.databases", ["airflow_search", "other"]), "spec.bootstrap.initdb.import.databases"),
    ("import-roles-in-microservice-mode", import_cluster, put("spec.bootstrap.initdb.import.roles", ["airflow"]),
     "spec.bootstrap.initdb.import.roles"),
    ("import-without-type", import_cluster, drop("spec.bootstrap.initdb.import.type"), "'type' is a required property"),
    ("import-source-as-string", import_cluster, put("spec.bootstrap.initdb.import.source", "external-database"),
     "spec.bootstrap.initdb.import.source"),
    ("external-cluster-port-as-number", import_cluster, put("spec.externalClusters.0.connectionParameters.port", 5432),
     "spec.externalClusters.0.connectionParameters.port: 5432 is not of type 'string'"),
    ("external-cluster-password-without-key", import_cluster, drop("spec.externalClusters.0.password.key"),
     "'key' is a required property"),
    ("pooler-pool-mode", kind_builder("Pooler"), put("spec.pgbouncer.poolMode", "statement-ish"), "spec.pgbouncer.poolMode: 'statement-ish'"),
    ("pooler-instances-as-string", kind_builder("Pooler"), put("spec.instances", "3"), "spec.instances: '3' is not of type 'integer'"),
    ("pooler-type", kind_builder("Pooler"), put("spec.type", "rwx"), "spec.type"),
    ("pooler-without-pgbouncer", kind_builder("Pooler"), drop("spec.pgbouncer"), "'pgbouncer' is a required property"),
    ("pooler-reserved-pgbouncer-parameter", kind_builder("Pooler"), put("spec.pgbouncer.parameters.listen_port", "6432"), "listen_port"),
    ("pooler-typo-in-template", kind_builder("Pooler"), put("spec.template.spec.container", []), "container"),
    ("scheduled-backup-method", kind_builder("ScheduledBackup"), put("spec.method", "barman"), "spec.method"),
    ("scheduled-backup-owner", kind_builder("ScheduledBackup"), put("spec.backupOwnerReference", "owner"), "spec.backupOwnerReference"),
    ("scheduled-backup-without-cluster", kind_builder("ScheduledBackup"), drop("spec.cluster"), "'cluster' is a required property"),
    ("scheduled-backup-short-schedule", kind_builder("ScheduledBackup"), put("spec.schedule", "0 0 *"), "spec.schedule"),
    ("scheduled-backup-immediate-as-string", kind_builder("ScheduledBackup"), put("spec.immediate", "true"), "spec.immediate"),
    ("catalog-old-major", kind_builder("ImageCatalog"), put("spec.images.0.major", 9), "spec.images.0.major"),
    ("catalog-empty", kind_builder("ImageCatalog"), put("spec.images", []), "spec.images"),
    ("calico-lowercase-action", calico_policy("to-kubapi"), put("spec.egress.0.action", "allow"), "spec.egress.0.action"),
    ("calico-ports-without-protocol", calico_policy("join-to-instance"), drop("spec.ingress.0.protocol"), "'protocol' is a required property"),
    ("calico-services-on-ingress", calico_policy("join-to-instance"),
     put("spec.ingress.0.source.services", {"name": "x", "namespace": "y"}), "services"),
    ("calico-services-with-ports", calico_policy("to-kubapi"), put("spec.egress.0.destination.ports", [443]), "spec.egress.0.destination"),
    ("calico-policy-type-case", calico_policy("to-kubapi"), put("spec.types", ["egress"]), "spec.types.0"),
]


@pytest.mark.parametrize("build, mutate, fragment", [b[1:] for b in BAD_OBJECTS], ids=[b[0] for b in BAD_OBJECTS])
def test_schema_rejects_a_broken_object(build, mutate, fragment):
    manifest = copy.deepcopy(build(instance_config("search")))
    assert cnpg.problems(manifest) == [], "the unbroken object must be valid"
    mutate(manifest)
    found = cnpg.problems(manifest)
    assert any(fragment in p for p in found), f"expected a problem mentioning {fragment!r}, got {found}"


GOOD_NEIGHBOURS = [
    ("cluster-enable-pdb", kind_builder("Cluster"), put("spec.enablePDB", True)),
    ("cluster-wal-encryption", kind_builder("Cluster"), put("spec.backup.barmanObjectStore.wal.encryption", "aws:kms")),
    ("cluster-superuser-secret", kind_builder("Cluster"), put("spec.superuserSecret", {"name": "su"})),
    ("cluster-managed-role", kind_builder("Cluster"),
     put("spec.managed.roles", [{"name": "airflow", "ensure": "present", "login": True, "passwordSecret": {"name": "pw"}}])),
    ("cluster-initdb-database-and-owner", kind_builder("Cluster"),
     put("spec.bootstrap.initdb", {"database": "airflow", "owner": "airflow"})),
    ("pooler-paused", kind_builder("Pooler"), put("spec.pgbouncer.paused", True)),
    ("pooler-template-labels", kind_builder("Pooler"), put("spec.template.metadata", {"labels": {"a": "b"}})),
    ("scheduled-backup-suspend", kind_builder("ScheduledBackup"), put("spec.suspend", True)),
    ("scheduled-backup-descriptor", kind_builder("ScheduledBackup"), put("spec.schedule", "@daily")),
    ("calico-order", calico_policy("to-kubapi"), put("spec.order", 100)),
]


@pytest.mark.parametrize("build, mutate", [g[1:] for g in GOOD_NEIGHBOURS], ids=[g[0] for g in GOOD_NEIGHBOURS])
def test_schema_accepts_real_fields_the_program_does_not_use(build, mutate):
    # closed objects must not mistake a genuine CNPG/Calico field for a typo
    manifest = copy.deepcopy(build(instance_config("search")))
    mutate(manifest)
    assert cnpg.problems(manifest) == []


# --- migration: the database-import phase --------------------------------------------------


def test_import_phase_imports_the_legacy_database_from_its_external_cluster():
    cfg = importing(instance_config("search"))
    manifest = database.cluster(cfg)
    assert cnpg.problems(manifest) == []
    spec = manifest["spec"]
    imp = spec["bootstrap"]["initdb"]["import"]
    assert imp["type"] == "microservice" and imp["databases"] == ["airflow_search"]
    external = {c["name"]: c for c in spec["externalClusters"]}
    assert imp["source"]["externalCluster"] in external, "the import source must be one of spec.externalClusters"
    source = external[imp["source"]["externalCluster"]]
    assert source["connectionParameters"] == {
        "host": "an-db1001.eqiad.wmnet", "port": "5432", "user": "airflow_search", "dbname": "airflow_search",
    }
    assert source["password"] == {"name": "postgresql-airflow-search-bootstrap-import", "key": "password"}
    for policy in database.network_policies(cfg):
        if policy["apiVersion"] == cnpg.CALICO_API:
            assert cnpg.problems(policy) == [], policy["metadata"]["name"]


LEGACY_PASSWORD = "example-legacy-db-password-0123"


@functools.lru_cache(maxsize=None)
def import_phase_run():
    # phases that still read the legacy database need a chart <= 0.0.120 (components/config.py)
    run = run_stack("search", overrides={"phase": "database-import", "airflowChartVersion": "0.0.120"},
                    secret_overrides={"legacyDbPassword": LEGACY_PASSWORD})
    if run.error is not None:
        raise run.error
    return run.monitor


def test_import_phase_renders_schema_valid_objects_and_a_secret_import_password():
    mon = import_phase_run()
    for reg in mon.registered():
        if reg.type.startswith(CNPG_TYPE) or reg.type == CALICO_TYPE:
            assert cnpg.problems(reg.inputs) == [], f"{reg.name} does not match the {reg.inputs['kind']} schema"
            assert LEGACY_PASSWORD not in repr(masked(reg.inputs)), f"{reg.name} carries the legacy password"
    cluster = mon.one(CNPG_TYPE + "Cluster")
    ref = cluster.inputs["spec"]["externalClusters"][0]["password"]
    [secret] = [r for r in mon.by_type(SECRET_TYPE) if r.inputs["metadata"]["name"] == ref["name"]]
    assert secret.inputs["metadata"]["namespace"] == cluster.inputs["metadata"]["namespace"]
    assert secret_paths(secret.inputs) == ["stringData"]
    assert secret.inputs["stringData"].value == {ref["key"]: LEGACY_PASSWORD}
    assert secret.urn in cluster.explicit_depends_on, "the Cluster must be created after its import password"
    assert secret.inputs["metadata"]["labels"]["cnpg.io/reload"] == "true", "CNPG reloads Secrets labelled cnpg.io/reload"
    k8s_validate(secret_shape(secret.inputs), secret.name)


def test_complete_phase_keeps_the_external_cluster_without_its_password():
    cfg = instance_config("search")
    assert cfg.phase == "complete"
    spec = database.cluster(cfg)["spec"]
    assert "import" not in spec["bootstrap"]["initdb"]
    assert [c.get("password") for c in spec["externalClusters"]] == [None], "the import password must be gone"


# --- the Cluster ------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_cluster_is_protected_and_ignores_later_bootstrap_changes(stack):
    cluster = cnpg_object(stack, "Cluster")
    assert cluster.protect, "the Cluster holds the Airflow database: it must be protected"
    # bootstrap is init-only and the webhook rejects a second method (cloudnative-pg#8024)
    assert cluster.ignore_changes == ["spec.bootstrap"]
    assert cluster.inputs["metadata"]["name"] == f"postgresql-airflow-{stack}"
    assert cluster.inputs["metadata"]["namespace"] == f"airflow-{stack}"


@pytest.mark.parametrize("stack", STACKS)
def test_cluster_runs_the_catalog_image_of_postgresql_15(stack):
    cluster = cnpg_object(stack, "Cluster").inputs
    catalog = cnpg_object(stack, "ImageCatalog").inputs
    ref = cluster["spec"]["imageCatalogRef"]
    assert ref == {"apiGroup": "postgresql.cnpg.io", "kind": "ImageCatalog", "name": catalog["metadata"]["name"], "major": 15}
    assert catalog["metadata"]["namespace"] == cluster["metadata"]["namespace"]
    assert [i["major"] for i in catalog["spec"]["images"]] == [15]
    assert catalog["spec"]["images"][0]["image"].startswith("docker-registry.discovery.wmnet/repos/data-engineering/")


@pytest.mark.parametrize("stack", STACKS)
def test_cluster_carries_the_rgw_checksum_env(stack):
    # boto3 >= 1.36 sends CRC checksums RGW rejects (cloudnative-pg#7715)
    env = {e["name"]: e.get("value") for e in cnpg_object(stack, "Cluster").inputs["spec"]["env"]}
    assert env["AWS_REQUEST_CHECKSUM_CALCULATION"] == "WHEN_REQUIRED"
    assert env["AWS_RESPONSE_CHECKSUM_VALIDATION"] == "WHEN_REQUIRED"


@pytest.mark.parametrize("stack, size", [("search", "30Gi"), ("test-k8s", "20Gi")])
def test_cluster_storage_comes_from_config(stack, size):
    spec = cnpg_object(stack, "Cluster").inputs["spec"]
    assert spec["storage"]["size"] == size, f"{stack} data volume"
    assert spec["walStorage"]["size"] == "30Gi", f"{stack} WAL volume"


@pytest.mark.parametrize("stack", STACKS)
def test_backups_go_to_the_instance_bucket_on_rgw(stack):
    spec = cnpg_object(stack, "Cluster").inputs["spec"]
    store = spec["backup"]["barmanObjectStore"]
    cluster = f"postgresql-airflow-{stack}"
    assert store["destinationPath"] == f"s3://postgresql-airflow-{stack}.dse-k8s-eqiad/"
    assert store["endpointURL"] == RGW
    assert store["endpointCA"] == {"name": f"{cluster}-ca-bundle", "key": "ca-bundle.crt"}
    assert store["s3Credentials"] == {
        "accessKeyId": {"name": f"{cluster}-backup-s3-creds", "key": "ACCESS_KEY_ID"},
        "secretAccessKey": {"name": f"{cluster}-backup-s3-creds", "key": "ACCESS_SECRET_KEY"},
    }


@pytest.mark.parametrize("stack", STACKS)
def test_cluster_waits_for_its_secrets_catalog_and_bucket(stack):
    mon = rendered(stack)
    cluster = cnpg_object(stack, "Cluster")
    needed = {r.urn for r in mon.by_type(SECRET_TYPE)} | {cnpg_object(stack, "ImageCatalog").urn}
    needed.add(next(r.urn for r in mon.by_type("aws:s3/bucket:Bucket") if r.name == f"{stack}-postgresql-backups-bucket"))
    missing = needed - set(cluster.explicit_depends_on)
    assert not missing, f"the Cluster must be created after {sorted(missing)}"


# --- the Secrets the Cluster references ---------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_referenced_secrets_exist_in_the_cluster_namespace_with_the_referenced_keys(stack):
    cluster = cnpg_object(stack, "Cluster").inputs
    store = cluster["spec"]["backup"]["barmanObjectStore"]
    selectors = [store["endpointCA"], *store["s3Credentials"].values()]
    for selector in selectors:
        secret = secret_named(stack, selector["name"])
        assert secret.inputs["metadata"]["namespace"] == cluster["metadata"]["namespace"], selector["name"]
        data = secret.inputs["stringData"]
        keys = data.value if isinstance(data, SecretLeaf) else data
        assert selector["key"] in keys, f"Secret {selector['name']} has no key {selector['key']}"


@pytest.mark.parametrize("stack", STACKS)
def test_backup_credentials_arrive_as_secrets_from_the_postgresql_key_pair(stack):
    creds = secret_named(stack, f"postgresql-airflow-{stack}-backup-s3-creds")
    assert secret_paths(creds.inputs) == ["stringData"], "the S3 keys must be secret in the state"
    assert "stringData" in creds.additional_secret_outputs
    assert set(creds.inputs["stringData"].value) == {"ACCESS_KEY_ID", "ACCESS_SECRET_KEY"}
    names = {u.rsplit("::", 1)[-1] for u in creds.dependencies}
    assert {f"{stack}-postgresql-s3-access-key", f"{stack}-postgresql-s3-secret-key"} <= names, names
    assert not any("airflow-s3" in n for n in names), "the database must not get the Airflow logs bucket's keys"


@pytest.mark.parametrize("stack", STACKS)
def test_backup_keys_appear_in_no_other_kubernetes_object(stack):
    creds = secret_named(stack, f"postgresql-airflow-{stack}-backup-s3-creds")
    values = [v for v in creds.inputs["stringData"].value.values()]
    assert all(len(v) >= 16 for v in values)
    for reg in rendered(stack).registered():
        if reg.type.startswith("kubernetes:") and reg.urn != creds.urn:
            text = repr(masked(reg.inputs))
            assert not any(v in text for v in values), f"{reg.name} carries a backup key in the clear"


@pytest.mark.parametrize("stack", STACKS)
def test_ca_bundle_is_the_public_wmf_bundle(stack):
    ca = secret_named(stack, f"postgresql-airflow-{stack}-ca-bundle")
    # pulumi_kubernetes marks a Secret's whole stringData secret whatever its source
    # (core/v1/Secret.py wraps string_data in Output.secret); what makes the bundle
    # public is where it comes from: the repository file, no secret resource
    bundle = ca.inputs["stringData"].value["ca-bundle.crt"]
    assert bundle == database.CA_BUNDLE_FILE.read_text(encoding="ascii")
    assert bundle.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE KEY" not in bundle
    secret_sources = [u for u in ca.dependencies if "RandomPassword" in u or "command:" in u]
    assert secret_sources == [], f"the CA bundle must not derive from {secret_sources}"


# --- the Pooler and the ScheduledBackup -------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_pooler_is_the_transaction_mode_rw_pooler_of_the_cluster(stack):
    pooler = cnpg_object(stack, "Pooler")
    cluster = cnpg_object(stack, "Cluster")
    meta, spec = pooler.inputs["metadata"], pooler.inputs["spec"]
    assert meta["name"] == f"postgresql-airflow-{stack}-pooler-rw"
    assert meta["namespace"] == cluster.inputs["metadata"]["namespace"]
    assert spec["type"] == "rw"
    assert spec["pgbouncer"]["poolMode"] == "transaction"
    assert spec["cluster"] == {"name": cluster.inputs["metadata"]["name"]}
    # pooler webhook: "the pooler resource cannot have the same name of a cluster"
    assert meta["name"] != spec["cluster"]["name"]
    assert cluster.urn in pooler.explicit_depends_on


@pytest.mark.parametrize("stack", STACKS)
def test_scheduled_backup_targets_the_cluster_daily_at_midnight(stack):
    backup = cnpg_object(stack, "ScheduledBackup")
    cluster = cnpg_object(stack, "Cluster")
    spec = backup.inputs["spec"]
    assert spec["cluster"] == {"name": cluster.inputs["metadata"]["name"]}
    assert backup.inputs["metadata"]["namespace"] == cluster.inputs["metadata"]["namespace"]
    assert spec["method"] == "barmanObjectStore"
    # CNPG's cron has a leading seconds field: second 0, minute 0, hour 0, every day
    assert spec["schedule"].split() == ["0", "0", "0", "*", "*", "*"]
    assert cluster.urn in backup.explicit_depends_on


@pytest.mark.parametrize("stack", STACKS)
def test_airflow_release_waits_for_the_awaited_pooler_and_reads_its_service(stack):
    # Airflow pods read the pooler Service's link env vars at start (wmf-charts.md 1.7)
    mon = rendered(stack)
    release = mon.one(RELEASE_TYPE)
    service = mon.named(f"{stack}-postgresql-pooler-service")
    assert service.read and service.read_id == f"airflow-{stack}/postgresql-airflow-{stack}-pooler-rw"
    assert service.urn in release.explicit_depends_on, "the release must wait for the pooler's Service"
    pooler = cnpg_object(stack, "Pooler")
    assert pooler.urn in service.dependencies, "the Service is read only once the Pooler's wait is over"
    annotations = pooler.inputs["metadata"]["annotations"]
    assert annotations["pulumi.com/waitFor"] == f"jsonpath={{.status.instances}}={pooler.inputs['spec']['instances']}"
    assert 0 < int(annotations["pulumi.com/timeoutSeconds"]) <= 3600


@pytest.mark.parametrize("stack", STACKS)
def test_cluster_is_awaited_ready_with_a_timeout_sized_for_its_data(stack):
    cluster = cnpg_object(stack, "Cluster")
    annotations = cluster.inputs["metadata"]["annotations"]
    assert annotations["pulumi.com/waitFor"] == "condition=Ready", "pulumi-kubernetes awaits a CR only when asked"
    assert not cluster.custom_timeouts, "customTimeouts would override pulumi.com/timeoutSeconds"
    size = database.storage_gib(cluster.inputs["spec"]["storage"]["size"])
    assert int(annotations["pulumi.com/timeoutSeconds"]) == 1800 + int(size * 150)


def test_the_largest_instance_gets_hours_for_its_import():
    cluster = run_stack("main").monitor.one("kubernetes:postgresql.cnpg.io/v1:Cluster")
    assert cluster.inputs["metadata"]["annotations"]["pulumi.com/timeoutSeconds"] == "16800"  # 100Gi: 4 h 40 min


# --- core objects and core fragments against the Kubernetes schema -----------------------


@pytest.mark.parametrize("stack", STACKS)
def test_core_objects_validate_against_the_kubernetes_schema(stack):
    core = database_children(stack, SECRET_TYPE, K8S_NETPOL_TYPE)
    assert sorted(r.inputs["metadata"]["name"] for r in core) == sorted(
        f"postgresql-airflow-{stack}-{n}" for n in ("backup-s3-creds", "ca-bundle", "ingress-pooler", "ingress-instance")
    )
    for reg in core:
        k8s_validate(secret_shape(reg.inputs), reg.name)


@pytest.mark.parametrize("stack", STACKS)
def test_core_types_inside_cnpg_specs_validate_against_the_kubernetes_schema(stack):
    pooler = cnpg_object(stack, "Pooler").inputs["spec"]["template"]
    k8s_validate(as_pod(pooler["spec"]), "the Pooler's pod template")
    cluster = cnpg_object(stack, "Cluster").inputs["spec"]
    container = {"name": "postgres", "env": cluster["env"], "resources": cluster["resources"],
                 "imagePullPolicy": cluster["imagePullPolicy"]}
    k8s_validate(as_pod({"containers": [container]}), "the Cluster's env/resources")


@pytest.mark.parametrize("stack", STACKS)
def test_database_objects_use_the_deploy_provider_in_the_instance_namespace(stack):
    regs = database_children(stack, SECRET_TYPE, K8S_NETPOL_TYPE, CALICO_TYPE,
                             *(CNPG_TYPE + k for k in ("Cluster", "Pooler", "ScheduledBackup", "ImageCatalog")))
    assert len(regs) == 11, [r.name for r in regs]
    for reg in regs:
        assert reg.inputs["metadata"]["namespace"] == f"airflow-{stack}", reg.name
        assert re.search(rf"::{stack}-k8s-deploy::", reg.provider), f"{reg.name} must use the deploy provider"


@pytest.mark.parametrize("stack", STACKS)
def test_calico_policies_only_carry_rules_for_their_types(stack):
    for reg in rendered(stack).by_type(CALICO_TYPE):
        spec = reg.inputs["spec"]
        present = {t for t, key in (("Ingress", "ingress"), ("Egress", "egress")) if spec.get(key)}
        assert present and present <= set(spec["types"]), f"{reg.name}: rules {present} vs types {spec['types']}"
