"""The instance's PostgreSQL: a CloudNativePG cluster as native custom resources.

Mirrors what the Wikimedia ``cloudnative-pg-cluster`` chart (0.1.35) renders for a
``postgresql-airflow-<instance>`` release (wmf-charts.md 2.1-2.5): the Cluster with barman
object-store backups to its own bucket on RGW (CA bundle and the checksum env), the
ImageCatalog it references, the pgbouncer Pooler ``<cluster>-pooler-rw`` (transaction
mode), the daily ScheduledBackup, the two Secrets they reference, and the network policies.

Manifests are built by pure functions (tested against a schema of the CNPG fields in
tests/schemas); ``PostgresCluster`` registers them.  The Cluster is protected and ignores
later changes to ``spec.bootstrap``: bootstrap is init-only in CNPG, and the webhook rejects
a second bootstrap method (https://github.com/cloudnative-pg/cloudnative-pg/issues/8024).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pulumi
import pulumi_kubernetes as k8s

from components.config import InstanceConfig

CNPG_API = "postgresql.cnpg.io/v1"
CALICO_API = "crd.projectcalico.org/v1"
POSTGRES_MAJOR = 15
POSTGRES_IMAGE = "repos/data-engineering/postgresql-kubernetes/postgresql"
PGBOUNCER_IMAGE = "repos/data-engineering/pgbouncer"
CA_BUNDLE_FILE = Path(__file__).parent / "chart_values" / "wmf-ca-certificates.pem"

# boto3 >= 1.36 sends CRC checksums RGW rejects (https://github.com/cloudnative-pg/cloudnative-pg/issues/7715)
CLUSTER_ENV = {
    "TMPDIR": "/run",
    "AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "WHEN_REQUIRED",
}


def names(cfg: InstanceConfig) -> dict[str, str]:
    full = cfg.pg_service_name
    return {
        "cluster": full,
        "catalog": f"{full}-catalog",
        "pooler": f"{full}-pooler-rw",
        "scheduled_backup": f"{full}-daily-backup",
        "backup_secret": f"{full}-backup-s3-creds",
        "ca_secret": f"{full}-ca-bundle",
        "import_secret": f"{full}-bootstrap-import",
        "app_secret": f"{full}-app",  # created by the operator: username, password, host, dbname, uri
        "rw_service": f"{full}-rw",  # created by the operator
    }


EXTERNAL_CLUSTER = "external-database"
IMPORT_DATABASE = "app"  # microservice import restores into initdb.database (default app, owner app)


# While taking over a running instance (``takeover: true``, components/handover.py), the first
# update must win the server-side-apply conflicts on the fields Helm's field manager owned:
# ``pulumi.com/patchForce`` sets SSA Force for that resource (pulumi-kubernetes await.go
# ``patchForce``).  Only then: afterwards a conflict means another writer and must show.
PATCH_FORCE = "pulumi.com/patchForce"


def _meta(name: str, cfg: InstanceConfig) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": cfg.namespace,
        "labels": {"app.kubernetes.io/managed-by": "pulumi", "app.kubernetes.io/instance": cfg.pg_service_name},
    }
    if cfg.takeover:
        meta["annotations"] = {PATCH_FORCE: "true"}
    return meta


def image_catalog(cfg: InstanceConfig) -> dict[str, Any]:
    n = names(cfg)
    return {
        "apiVersion": CNPG_API,
        "kind": "ImageCatalog",
        "metadata": _meta(n["catalog"], cfg),
        "spec": {"images": [{"major": POSTGRES_MAJOR, "image": f"{cfg.docker_registry}/{POSTGRES_IMAGE}:{cfg.postgresql_image_tag}"}]},
    }


def bootstrap(cfg: InstanceConfig) -> dict[str, Any]:
    """How the cluster is created.  Init-only: the Cluster ignores later changes to it.

    database-import phase: CloudNativePG's microservice import (pg_dump/pg_restore) of the
    legacy database, as the chart's _bootstrap.tpl renders it (wmf-charts.md 2.2).
    Otherwise: a new, empty database.
    """
    initdb: dict[str, Any] = {"postInitSQL": [], "postInitApplicationSQL": []}
    if cfg.phase == "database-import":
        assert cfg.legacy is not None
        initdb["import"] = {
            "type": "microservice",
            "databases": [cfg.legacy.db_name],
            "source": {"externalCluster": EXTERNAL_CLUSTER},
        }
    return {"initdb": initdb}


def external_clusters(cfg: InstanceConfig) -> list[dict[str, Any]] | None:
    """The legacy database as an external cluster, for migrated instances.

    The password reference exists only while importing; the entry itself stays because the
    live (init-only, ignored) bootstrap keeps naming it as its import source.
    """
    if cfg.legacy is None or not cfg.phase_at_least("database-import"):
        return None
    entry: dict[str, Any] = {
        "name": EXTERNAL_CLUSTER,
        "connectionParameters": {
            "host": cfg.legacy.db_host,
            "port": str(cfg.legacy.db_port),
            "user": cfg.legacy.db_user,
            "dbname": cfg.legacy.db_name,
        },
    }
    if cfg.phase == "database-import":
        entry["password"] = {"name": names(cfg)["import_secret"], "key": "password"}
    return [entry]


# --- awaiting the operator -------------------------------------------------------------
# pulumi-kubernetes awaits a custom resource only when asked: without ``pulumi.com/waitFor`` a
# CR is "ready" as soon as the API server stores it (provider/pkg/metadata/overrides.go
# ``ReadyCondition``; PR https://github.com/pulumi/pulumi-kubernetes/pull/3134).  waitFor applies
# on create and on update; ``pulumi.com/timeoutSeconds`` bounds it (a resource's customTimeouts
# would win over it, overrides.go ``TimeoutDuration``; we set none on these).
WAIT_FOR = "pulumi.com/waitFor"
TIMEOUT_SECONDS = "pulumi.com/timeoutSeconds"
POOLER_INSTANCES = 3

# How long the Cluster may take to become Ready.  CloudNativePG sets the Ready condition only in
# phase "Cluster in healthy state", after the bootstrap (here: the microservice import, the
# <cluster>-1-import Job) and after every instance has joined (v1.27 cluster_controller.go,
# pkg/resources/status/transactions.go SetClusterReadyCondition).  Sized from the instance's
# data volume: pg_dump/pg_restore over the network at a pessimistic 10 MiB/s (~100 s/GiB; the
# 2-core measurement moved 200 MB in 4-6 s, kerberos-postgres-study.md section 5), then the
# replicas' pg_basebackup (~20 s/GiB), plus 30 min.  airflow-main (pgStorageSize 100Gi): 16,800 s
# (4 h 40 min); search (30Gi): 6,300 s.
READY_BASE_SECONDS = 1800
READY_SECONDS_PER_GIB = 150


def storage_gib(size: str) -> float:
    number, unit = int(size[:-2]), size[-2:]
    return number * {"Mi": 1 / 1024, "Gi": 1, "Ti": 1024}[unit]


def cluster_ready_timeout_seconds(cfg: InstanceConfig) -> int:
    return READY_BASE_SECONDS + int(storage_gib(cfg.pg_storage_size) * READY_SECONDS_PER_GIB)


def cluster(cfg: InstanceConfig) -> dict[str, Any]:
    n = names(cfg)
    spec: dict[str, Any] = {
        "instances": cfg.pg_instances,
        "imageCatalogRef": {"apiGroup": "postgresql.cnpg.io", "kind": "ImageCatalog", "name": n["catalog"], "major": POSTGRES_MAJOR},
        "imagePullPolicy": "IfNotPresent",
        "postgresUID": 100,
        "postgresGID": 102,
        "storage": {"size": cfg.pg_storage_size, "storageClass": "ceph-rbd-ssd"},
        "walStorage": {"size": cfg.pg_wal_storage_size, "storageClass": "ceph-rbd-ssd"},
        "resources": {"limits": {"cpu": "2000m", "memory": "8Gi"}, "requests": {"cpu": "2000m", "memory": "8Gi"}},
        "affinity": {"enablePodAntiAffinity": True, "podAntiAffinityType": "preferred", "topologyKey": "topology.kubernetes.io/zone"},
        "primaryUpdateMethod": "switchover",
        "primaryUpdateStrategy": "unsupervised",
        "logLevel": "info",
        "enableSuperuserAccess": True,
        "env": [{"name": k, "value": v} for k, v in CLUSTER_ENV.items()],
        "postgresql": {"shared_preload_libraries": []},
        "managed": {"roles": []},
        "bootstrap": bootstrap(cfg),
        "backup": {
            "target": "prefer-standby",
            "retentionPolicy": "60d",
            "barmanObjectStore": {
                "destinationPath": f"s3://{cfg.pg_bucket}/",
                "endpointURL": cfg.rgw_endpoint,
                "endpointCA": {"name": n["ca_secret"], "key": "ca-bundle.crt"},
                "s3Credentials": {
                    "accessKeyId": {"name": n["backup_secret"], "key": "ACCESS_KEY_ID"},
                    "secretAccessKey": {"name": n["backup_secret"], "key": "ACCESS_SECRET_KEY"},
                },
                "wal": {"compression": "gzip", "maxParallel": 1},
                "data": {"compression": "gzip", "jobs": 2},
            },
        },
    }
    if cfg.pg_parameters:
        spec["postgresql"]["parameters"] = dict(cfg.pg_parameters)
    if cfg.pg_spec_overrides:
        spec = _merge(spec, cfg.pg_spec_overrides)
    clusters = external_clusters(cfg)
    if clusters:
        spec["externalClusters"] = clusters
    meta = _meta(n["cluster"], cfg)
    meta["annotations"] = {
        **meta.get("annotations", {}),
        "prometheus.io/path": "/metrics", "prometheus.io/port": "9187", "prometheus.io/scrape": "true",
        # `up` ends when the database is usable: after an import, only once it has finished
        WAIT_FOR: "condition=Ready",
        TIMEOUT_SECONDS: str(cluster_ready_timeout_seconds(cfg)),
    }
    return {"apiVersion": CNPG_API, "kind": "Cluster", "metadata": meta, "spec": spec}


def pooler(cfg: InstanceConfig) -> dict[str, Any]:
    n = names(cfg)
    meta = _meta(n["pooler"], cfg)
    # The Release needs the pooler's Service before its pods start (they read its service-link
    # variables, wmf-charts.md 1.7).  CloudNativePG's Pooler has no conditions; status.instances
    # is the pgbouncer Deployment's .status.replicas (v1.27 internal/controller/pooler_status.go
    # updatePoolerStatus), and one reconcile pass creates the Deployment, then the Service named
    # like the Pooler (pooler_update.go updateOwnedObjects, pkg/specs/pgbouncer/services.go).
    # So all instances counted means both exist; the instance then reads that Service too.
    meta["annotations"] = {
        **meta.get("annotations", {}),
        WAIT_FOR: f"jsonpath={{.status.instances}}={POOLER_INSTANCES}",
        TIMEOUT_SECONDS: "600",
    }
    return {
        "apiVersion": CNPG_API,
        "kind": "Pooler",
        "metadata": meta,
        "spec": {
            "cluster": {"name": n["cluster"]},
            "instances": POOLER_INSTANCES,
            "type": "rw",
            "pgbouncer": {
                "poolMode": "transaction",
                "parameters": {"max_client_conn": "1000", "default_pool_size": "25", "log_connections": "0", "log_disconnections": "0", **cfg.pg_pooler_parameters},
            },
            "template": {
                "spec": {
                    "containers": [
                        {"name": "pgbouncer", "image": f"{cfg.docker_registry}/{PGBOUNCER_IMAGE}:{cfg.pgbouncer_image_tag}"}
                    ]
                }
            },
        },
    }


def scheduled_backup(cfg: InstanceConfig) -> dict[str, Any]:
    n = names(cfg)
    return {
        "apiVersion": CNPG_API,
        "kind": "ScheduledBackup",
        "metadata": _meta(n["scheduled_backup"], cfg),
        "spec": {
            "schedule": "0 0 0 * * *",
            "backupOwnerReference": "self",
            "cluster": {"name": n["cluster"]},
            "method": "barmanObjectStore",
            "immediate": True,
        },
    }


def network_policies(cfg: InstanceConfig) -> list[dict[str, Any]]:
    """The chart's policies: kube API egress, pooler/instance ingress, join and pooler to
    instance, and egress to the S3 external service for WALs and base backups (and to the
    legacy database while importing it)."""
    full = cfg.pg_service_name
    policies = [
        {
            "apiVersion": CALICO_API, "kind": "NetworkPolicy", "metadata": _meta(f"{full}-to-kubapi", cfg),
            "spec": {
                "types": ["Egress"],
                "selector": "cnpg.io/jobRole in { 'initdb', 'join', 'import', 'full-recovery' } || cnpg.io/podRole in { 'instance', 'pooler' }",
                "egress": [{"action": "Allow", "destination": {"services": {"name": "kubernetes", "namespace": "default"}}}],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _meta(f"{full}-ingress-pooler", cfg),
            "spec": {
                "podSelector": {"matchLabels": {"cnpg.io/podRole": "pooler"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"ports": [{"port": 5432, "protocol": "TCP"}]}],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _meta(f"{full}-ingress-instance", cfg),
            "spec": {
                "podSelector": {"matchLabels": {"cnpg.io/podRole": "instance"}},
                "policyTypes": ["Ingress"],
                # 8000: the instance manager's status API the operator polls; 9187: metrics
                "ingress": [{"ports": [{"port": 8000, "protocol": "TCP"}, {"port": 9187, "protocol": "TCP"}]}],
            },
        },
        {
            "apiVersion": CALICO_API, "kind": "NetworkPolicy", "metadata": _meta(f"{full}-join-to-instance", cfg),
            "spec": {
                "types": ["Ingress"],
                "selector": "cnpg.io/podRole == 'instance'",
                "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "cnpg.io/jobRole == 'join' || cnpg.io/podRole in { 'instance', 'pooler' }"}, "destination": {"ports": [5432]}}],
            },
        },
        {
            "apiVersion": CALICO_API, "kind": "NetworkPolicy", "metadata": _meta(f"{full}-egress-external-services-s3", cfg),
            "spec": {
                "types": ["Egress"],
                "selector": "cnpg.io/podRole == 'instance' || cnpg.io/jobRole in { 'full-recovery', 'import' }",
                "egress": [{"action": "Allow", "destination": {"services": {"name": "s3-eqiad-dpe", "namespace": "external-services"}}}],
            },
        },
    ]
    if cfg.phase == "database-import":
        assert cfg.legacy is not None
        policies.append({
            "apiVersion": CALICO_API, "kind": "NetworkPolicy",
            "metadata": _meta(f"{full}-egress-external-services-postgresql", cfg),
            "spec": {
                "types": ["Egress"],
                "selector": "cnpg.io/podRole == 'instance' || cnpg.io/jobRole in { 'full-recovery', 'import' }",
                "egress": [{"action": "Allow", "destination": {"services": {"name": f"postgresql-{cfg.legacy.pg_service}", "namespace": "external-services"}}}],
            },
        })
    return policies


@dataclass(frozen=True)
class PostgresClusterArgs:
    cfg: InstanceConfig
    s3_access_key: pulumi.Input[str]
    s3_secret_key: pulumi.Input[str]
    deploy_provider: k8s.Provider
    legacy_db_password: pulumi.Input[str] | None = None
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)


class PostgresCluster(pulumi.ComponentResource):
    cluster: k8s.apiextensions.CustomResource
    pooler: k8s.apiextensions.CustomResource
    pooler_service: k8s.core.v1.Service  # read: made by the operator, awaited through the Pooler

    def __init__(self, name: str, args: PostgresClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dpe:airflow:PostgresCluster", name, None, opts)
        cfg = args.cfg
        n = names(cfg)
        # every object waits for the preconditions (the admin_ng namespace) and the bucket
        child = pulumi.ResourceOptions(parent=self, provider=args.deploy_provider, depends_on=list(args.depends_on))

        def meta(m: Mapping[str, Any]) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(**{_snake(k): v for k, v in m.items()})

        creds = k8s.core.v1.Secret(
            f"{name}-backup-s3-creds",
            metadata=meta(_meta(n["backup_secret"], cfg)),
            type="Opaque",
            string_data={
                "ACCESS_KEY_ID": pulumi.Output.secret(args.s3_access_key),
                "ACCESS_SECRET_KEY": pulumi.Output.secret(args.s3_secret_key),
            },
            opts=child,
        )
        ca = k8s.core.v1.Secret(
            f"{name}-ca-bundle",
            metadata=meta(_meta(n["ca_secret"], cfg)),
            type="Opaque",
            string_data={"ca-bundle.crt": CA_BUNDLE_FILE.read_text(encoding="ascii")},
            opts=child,
        )
        catalog = _custom(f"{name}-image-catalog", image_catalog(cfg), child)
        cluster_deps: list[pulumi.Resource] = [creds, ca, catalog]
        if cfg.phase == "database-import":
            import_meta = _meta(n["import_secret"], cfg)
            # a label, not an annotation: the operator watches labelled Secrets for changes
            # (cloudnative-pg pkg/utils WatchedLabelName, cluster_predicates.go hasReloadLabelSet)
            import_meta["labels"] = {**import_meta["labels"], "cnpg.io/reload": "true"}
            cluster_deps.append(
                k8s.core.v1.Secret(
                    f"{name}-bootstrap-import",
                    metadata=meta(import_meta),
                    type="Opaque",
                    string_data={"password": pulumi.Output.secret(args.legacy_db_password)},
                    opts=child,
                )
            )
        self.cluster = _custom(
            f"{name}-cluster",
            cluster(cfg),
            pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(
                    protect=True,
                    ignore_changes=["spec.bootstrap"],
                    depends_on=cluster_deps,
                ),
            ),
        )
        self.pooler = _custom(f"{name}-pooler", pooler(cfg), pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.cluster])))
        # Read once the Pooler's wait is over: a missing Service fails the run here ("resource
        # '<ns>/<name>' does not exist", pulumi/pulumi step.go ReadStep.Apply) instead of Airflow
        # pods starting without its variables.  The operator owns it; Pulumi only reads it.
        self.pooler_service = k8s.core.v1.Service.get(
            f"{name}-pooler-service",
            f"{cfg.namespace}/{n['pooler']}",
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.pooler])),
        )
        _custom(f"{name}-scheduled-backup", scheduled_backup(cfg), pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.cluster])))
        for policy in network_policies(cfg):
            short = policy["metadata"]["name"].removeprefix(cfg.pg_service_name + "-")
            if policy["apiVersion"] == "networking.k8s.io/v1":
                spec = policy["spec"]
                k8s.networking.v1.NetworkPolicy(
                    f"{name}-netpol-{short}",
                    metadata=meta(policy["metadata"]),
                    spec=k8s.networking.v1.NetworkPolicySpecArgs(
                        pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=spec["podSelector"]["matchLabels"]),
                        policy_types=spec["policyTypes"],
                        ingress=[
                            k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                                ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=p["port"], protocol=p["protocol"]) for p in rule["ports"]]
                            )
                            for rule in spec["ingress"]
                        ],
                    ),
                    opts=child,
                )
            else:
                _custom(f"{name}-netpol-{short}", policy, child)
        self.register_outputs({"cluster": n["cluster"], "pooler": n["pooler"]})


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def _snake(key: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in key)


def _custom(name: str, manifest: Mapping[str, Any], opts: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
    m = manifest["metadata"]
    return k8s.apiextensions.CustomResource(
        name,
        api_version=manifest["apiVersion"],
        kind=manifest["kind"],
        metadata=k8s.meta.v1.ObjectMetaArgs(name=m["name"], namespace=m["namespace"], labels=m.get("labels"), annotations=m.get("annotations")),
        spec=manifest["spec"],
        opts=opts,
    )
