"""JSON Schemas (draft 2020-12) of the CloudNativePG and Calico objects the program renders.

There is no API server in the tests, so the rendered ``postgresql.cnpg.io/v1`` Cluster,
Pooler, ScheduledBackup and ImageCatalog (and the ``crd.projectcalico.org/v1``
NetworkPolicies) are checked here against the fields the upstream Go API types define:
field names from the ``json:"..."`` tags, enums from ``+kubebuilder:validation:Enum``,
minimums/patterns from the other kubebuilder markers.  Every object level we emit is
closed (``additionalProperties: false``), so a misspelt or misplaced field fails instead
of being silently pruned by the API server (structural CRDs drop unknown fields).

Sources (read from the stored copies of the upstream repositories):

* cloudnative-pg/cloudnative-pg ``api/v1/cluster_types.go`` (ClusterSpec and its parts),
  ``pooler_types.go``, ``scheduledbackup_types.go``, ``imagecatalog_types.go``,
  ``backup_types.go`` (BackupMethod; barman types are aliases of barman-cloud's),
  ``common_types.go`` (Metadata), ``base_types.go`` (LocalObjectReference, key selectors);
* cloudnative-pg/barman-cloud ``pkg/api/config.go`` (BarmanObjectStoreConfiguration,
  S3Credentials, WalBackupConfiguration, DataBackupConfiguration);
* cloudnative-pg/machinery ``pkg/api/api.go`` (SecretKeySelector);
* a few admission-webhook rules that are not in the CRD but reject the object all the
  same, each marked "webhook" below (``api/v1/cluster_webhook.go``,
  ``pooler_webhook.go``, ``scheduledbackup_webhook.go``);
* projectcalico/api ``pkg/apis/projectcalico/v3/networkpolicy.go`` and
  ``policy_common.go`` for the Calico NetworkPolicy (the crd.projectcalico.org/v1 CRD
  stores the same spec as projectcalico.org/v3).

Fields we never emit are listed (so a real neighbour is not mistaken for a typo) but only
typed as object/array/scalar, not detailed.  Kubernetes core types embedded in CNPG specs
(EnvVar, ResourceRequirements, the Pooler's PodSpec) are modelled for the fields we use;
the tests also run those fragments through kubernetes_validate's schema.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import jsonschema

DIALECT = "https://json-schema.org/draft/2020-12/schema"
CNPG_API = "postgresql.cnpg.io/v1"
CALICO_API = "crd.projectcalico.org/v1"

# --- building blocks ----------------------------------------------------------------


def _object(properties: Mapping[str, Any], required: Iterable[str] = (), **keywords: Any) -> dict[str, Any]:
    """A closed object: only ``properties`` are allowed."""
    schema: dict[str, Any] = {"type": "object", "properties": dict(properties), "additionalProperties": False}
    required = list(required)
    if required:
        schema["required"] = required
    schema.update(keywords)
    return schema


def _array(items: Mapping[str, Any], **keywords: Any) -> dict[str, Any]:
    return {"type": "array", "items": dict(items), **keywords}


def _enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def _any_case(word: str) -> str:
    """A regex matching ``word`` case-insensitively (no inline flags: ECMA-262 has none)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


STRING = {"type": "string"}
NON_EMPTY = {"type": "string", "minLength": 1}
BOOLEAN = {"type": "boolean"}
INTEGER = {"type": "integer"}
INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
STRINGS = _array(STRING)
STRING_MAP = {"type": "object", "additionalProperties": STRING}
OBJECT = {"type": "object"}  # a neighbour we never emit: typed, not detailed
OBJECTS = _array(OBJECT)

# resource.Quantity's canonical syntax (k8s.io/apimachinery/pkg/api/resource), the pattern
# CRDs carry for int-or-string quantities.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
QUANTITY = {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": QUANTITY_PATTERN}]}
# StorageConfiguration.size is a Go string; the Cluster webhook parses it as a Quantity.
QUANTITY_STRING = {"type": "string", "pattern": QUANTITY_PATTERN}

DNS1123_SUBDOMAIN = {
    "type": "string", "maxLength": 253,
    "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
}
DNS1123_LABEL = {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}


def _object_meta(name: Mapping[str, Any] = DNS1123_SUBDOMAIN) -> dict[str, Any]:
    """The ObjectMeta fields the program sets (server-populated fields are not ours to send)."""
    return _object(
        {"name": dict(name), "namespace": DNS1123_LABEL, "labels": STRING_MAP, "annotations": STRING_MAP},
        required=["name"],
    )


def _resource(api_version: str, kind: str, spec: Mapping[str, Any], source: str,
              metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {
        "$schema": DIALECT,
        "$id": f"urn:airflow-tests:schema:{api_version}:{kind}",
        "title": f"{api_version} {kind}",
        "description": f"Derived from {source}",
        **_object(
            {
                "apiVersion": {"const": api_version},
                "kind": {"const": kind},
                "metadata": dict(metadata) if metadata is not None else _object_meta(),
                "spec": dict(spec),
            },
            required=["apiVersion", "kind", "metadata", "spec"],
        ),
    }


# --- references (api/v1/base_types.go; machinery pkg/api/api.go) --------------------------

# Name is `json:"name"` (required); an empty name never resolves, so we also demand one.
LOCAL_REF = _object({"name": NON_EMPTY}, required=["name"])
SECRET_KEY_SELECTOR = _object({"name": NON_EMPTY, "key": NON_EMPTY}, required=["name", "key"])
CONFIGMAP_KEY_SELECTOR = _object({"name": NON_EMPTY, "key": NON_EMPTY}, required=["name", "key"])

# --- Kubernetes core types embedded in CNPG specs (k8s.io/api/core/v1) -------------------

PULL_POLICY = _enum("Always", "Never", "IfNotPresent")  # corev1.PullPolicy (cluster_types.go: "One of ...")
RESOURCE_LIST = {"type": "object", "additionalProperties": QUANTITY}
RESOURCES = _object({"limits": RESOURCE_LIST, "requests": RESOURCE_LIST, "claims": OBJECTS})


def _env_var(name: Mapping[str, Any] = NON_EMPTY) -> dict[str, Any]:
    return _object({"name": dict(name), "value": STRING, "valueFrom": OBJECT}, required=["name"])


CONTAINER = _object(
    {
        "name": NON_EMPTY, "image": NON_EMPTY, "imagePullPolicy": PULL_POLICY,
        "command": STRINGS, "args": STRINGS, "workingDir": STRING,
        "env": _array(_env_var()), "envFrom": OBJECTS, "resources": RESOURCES,
        "ports": OBJECTS, "volumeMounts": OBJECTS, "securityContext": OBJECT,
        "livenessProbe": OBJECT, "readinessProbe": OBJECT, "startupProbe": OBJECT, "lifecycle": OBJECT,
    },
    required=["name"],
)
POD_SPEC = _object(
    {
        "containers": _array(CONTAINER, minItems=1), "initContainers": _array(CONTAINER),
        "volumes": OBJECTS, "affinity": OBJECT, "nodeSelector": STRING_MAP, "tolerations": OBJECTS,
        "securityContext": OBJECT, "serviceAccountName": STRING, "priorityClassName": STRING,
        "topologySpreadConstraints": OBJECTS, "terminationGracePeriodSeconds": INT64,
        "imagePullSecrets": OBJECTS,
    },
    required=["containers"],
)
# common_types.go Metadata: what CNPG templates accept instead of a full ObjectMeta
TEMPLATE_METADATA = _object({"name": STRING, "labels": STRING_MAP, "annotations": STRING_MAP})

# --- Cluster (api/v1/cluster_types.go) ---------------------------------------------------

# ImageCatalogRef: an inline TypedLocalObjectReference plus `major`; its XValidation rules
# pin kind to ImageCatalog|ClusterImageCatalog and apiGroup to postgresql.cnpg.io (a CEL
# rule on an absent apiGroup fails, so it is effectively required).
IMAGE_CATALOG_REF = _object(
    {
        "apiGroup": {"const": "postgresql.cnpg.io"},
        "kind": _enum("ImageCatalog", "ClusterImageCatalog"),
        "name": NON_EMPTY,
        "major": INTEGER,
    },
    required=["apiGroup", "kind", "name", "major"],
)

STORAGE = _object(
    {"storageClass": STRING, "size": QUANTITY_STRING, "resizeInUseVolumes": BOOLEAN, "pvcTemplate": OBJECT}
)

AFFINITY = _object(
    {
        "enablePodAntiAffinity": BOOLEAN,
        "topologyKey": STRING,
        "nodeSelector": STRING_MAP,
        "nodeAffinity": OBJECT,
        "tolerations": OBJECTS,
        # no Enum marker; the doc comment and the webhook (validateAntiAffinity) allow
        # PodAntiAffinityTypePreferred / PodAntiAffinityTypeRequired
        "podAntiAffinityType": _enum("preferred", "required"),
        "additionalPodAntiAffinity": OBJECT,
        "additionalPodAffinity": OBJECT,
    }
)

POSTGRES_CONFIGURATION = _object(
    {
        "parameters": STRING_MAP,  # map[string]string: numbers must be sent as strings
        "synchronous": OBJECT,
        "pg_hba": STRINGS,
        "pg_ident": STRINGS,
        "syncReplicaElectionConstraint": OBJECT,
        "shared_preload_libraries": STRINGS,
        "ldap": OBJECT,
        "promotionTimeout": INT32,
        "enableAlterSystem": BOOLEAN,
        "extensions": OBJECTS,
    }
)

# Import (logical import from an external cluster): source, type and databases are required
IMPORT = _object(
    {
        "source": _object({"externalCluster": NON_EMPTY}, required=["externalCluster"]),
        "type": _enum("microservice", "monolith"),
        "databases": STRINGS,
        "roles": STRINGS,
        "postImportApplicationSQL": STRINGS,
        "schemaOnly": BOOLEAN,
        "pgDumpExtraOptions": STRINGS,
        "pgRestoreExtraOptions": STRINGS,
        "pgRestorePredataOptions": STRINGS,
        "pgRestoreDataOptions": STRINGS,
        "pgRestorePostdataOptions": STRINGS,
    },
    required=["source", "type", "databases"],
    # webhook (validateMicroservice): exactly one database and no roles
    **{
        "if": {"properties": {"type": {"const": "microservice"}}},
        "then": {"properties": {"databases": {"minItems": 1, "maxItems": 1}, "roles": {"maxItems": 0}}},
    },
)

INITDB = _object(
    {
        "database": STRING, "owner": STRING, "secret": LOCAL_REF, "options": STRINGS,
        "dataChecksums": BOOLEAN, "encoding": STRING, "localeCollate": STRING, "localeCType": STRING,
        "locale": STRING, "localeProvider": STRING, "icuLocale": STRING, "icuRules": STRING,
        "builtinLocale": STRING,
        "walSegmentSize": {"type": "integer", "minimum": 1, "maximum": 1024},
        "postInitSQL": STRINGS, "postInitApplicationSQL": STRINGS, "postInitTemplateSQL": STRINGS,
        "import": IMPORT,
        "postInitApplicationSQLRefs": OBJECT, "postInitTemplateSQLRefs": OBJECT, "postInitSQLRefs": OBJECT,
    },
    # webhook (validateApplicationDatabase): database and owner come together
    dependentRequired={"database": ["owner"], "owner": ["database"]},
)

# BootstrapConfiguration: "Only a single bootstrap method can be defined" (the webhook rejects two)
BOOTSTRAP = _object({"initdb": INITDB, "recovery": OBJECT, "pg_basebackup": OBJECT}, maxProperties=1)

# barman-cloud pkg/api/config.go
S3_CREDENTIALS = _object(
    {
        "accessKeyId": SECRET_KEY_SELECTOR,
        "secretAccessKey": SECRET_KEY_SELECTOR,
        "region": SECRET_KEY_SELECTOR,
        "sessionToken": SECRET_KEY_SELECTOR,
        "inheritFromIAMRole": BOOLEAN,
    },
    # webhook (ValidateAwsCredentials): both keys, or inheritFromIAMRole, never both
    oneOf=[
        {"required": ["accessKeyId", "secretAccessKey"]},
        {"required": ["inheritFromIAMRole"], "properties": {"inheritFromIAMRole": {"const": True}}},
    ],
)
ENCRYPTION = _enum("AES256", "aws:kms")
WAL_BACKUP = _object(
    {
        "compression": _enum("bzip2", "gzip", "lz4", "snappy", "xz", "zstd"),
        "encryption": ENCRYPTION,
        "maxParallel": {"type": "integer", "minimum": 1},
        "archiveAdditionalCommandArgs": STRINGS,
        "restoreAdditionalCommandArgs": STRINGS,
    }
)
DATA_BACKUP = _object(
    {
        "compression": _enum("bzip2", "gzip", "snappy"),
        "encryption": ENCRYPTION,
        "jobs": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        "immediateCheckpoint": BOOLEAN,
        "additionalCommandArgs": STRINGS,
    }
)
BARMAN_OBJECT_STORE = _object(
    {
        # BarmanCredentials, inlined
        "googleCredentials": OBJECT,
        "s3Credentials": S3_CREDENTIALS,
        "azureCredentials": OBJECT,
        "endpointURL": STRING,
        "endpointCA": SECRET_KEY_SELECTOR,
        "destinationPath": NON_EMPTY,  # +kubebuilder:validation:MinLength=1
        "serverName": STRING,
        "wal": WAL_BACKUP,
        "data": DATA_BACKUP,
        "tags": STRING_MAP,
        "historyTags": STRING_MAP,
    },
    required=["destinationPath"],
)

BACKUP_TARGET = _enum("primary", "prefer-standby")
BACKUP = _object(
    {
        "volumeSnapshot": OBJECT,
        "barmanObjectStore": BARMAN_OBJECT_STORE,
        "retentionPolicy": {"type": "string", "pattern": r"^[1-9][0-9]*[dwm]$"},
        "target": BACKUP_TARGET,
    }
)

MONITORING = _object(
    {
        "disableDefaultQueries": BOOLEAN,
        "customQueriesConfigMap": _array(CONFIGMAP_KEY_SELECTOR),
        "customQueriesSecret": _array(SECRET_KEY_SELECTOR),
        "enablePodMonitor": BOOLEAN,
        "tls": OBJECT,
        "podMonitorMetricRelabelings": OBJECTS,
        "podMonitorRelabelings": OBJECTS,
        "metricsQueriesTTL": STRING,
    }
)

ROLE = _object(
    {
        "name": NON_EMPTY, "comment": STRING, "ensure": _enum("present", "absent"),
        "passwordSecret": LOCAL_REF, "connectionLimit": INT64, "validUntil": STRING, "inRoles": STRINGS,
        "inherit": BOOLEAN, "disablePassword": BOOLEAN, "superuser": BOOLEAN, "createdb": BOOLEAN,
        "createrole": BOOLEAN, "login": BOOLEAN, "replication": BOOLEAN, "bypassrls": BOOLEAN,
    },
    required=["name"],
)
MANAGED = _object({"roles": _array(ROLE), "services": OBJECT})

# corev1.SecretKeySelector (the external cluster's references are core types, not CNPG's)
CORE_SECRET_KEY_SELECTOR = _object({"name": STRING, "key": NON_EMPTY, "optional": BOOLEAN}, required=["key"])

EXTERNAL_CLUSTER = _object(
    {
        "name": NON_EMPTY,
        "connectionParameters": STRING_MAP,
        "sslCert": CORE_SECRET_KEY_SELECTOR,
        "sslKey": CORE_SECRET_KEY_SELECTOR,
        "sslRootCert": CORE_SECRET_KEY_SELECTOR,
        "password": CORE_SECRET_KEY_SELECTOR,
        "barmanObjectStore": BARMAN_OBJECT_STORE,
        "plugin": _object(
            {"name": NON_EMPTY, "enabled": BOOLEAN, "isWALArchiver": BOOLEAN, "parameters": STRING_MAP},
            required=["name"],
        ),
    },
    required=["name"],
)

# webhook (isReservedEnvironmentVariable): PG*, CNPG_*, POD_NAME, NAMESPACE, CLUSTER_NAME,
# compared upper-cased, are the operator's
RESERVED_ENV_PATTERN = (
    f"^({_any_case('pg')}|{_any_case('cnpg_')})"
    f"|^({_any_case('pod_name')}|{_any_case('namespace')}|{_any_case('cluster_name')})$"
)
CLUSTER_ENV_VAR = _env_var({"type": "string", "minLength": 1, "not": {"pattern": RESERVED_ENV_PATTERN}})

CLUSTER_SPEC = _object(
    {
        "description": STRING,
        "inheritedMetadata": _object({"labels": STRING_MAP, "annotations": STRING_MAP}),
        "imageName": STRING,
        "imageCatalogRef": IMAGE_CATALOG_REF,
        "imagePullPolicy": PULL_POLICY,
        "schedulerName": STRING,
        "postgresUID": INT64,
        "postgresGID": INT64,
        "instances": {"type": "integer", "minimum": 1},
        "minSyncReplicas": {"type": "integer", "minimum": 0},
        "maxSyncReplicas": {"type": "integer", "minimum": 0},
        "postgresql": POSTGRES_CONFIGURATION,
        "replicationSlots": OBJECT,
        "bootstrap": BOOTSTRAP,
        "replica": OBJECT,
        "superuserSecret": LOCAL_REF,
        "enableSuperuserAccess": BOOLEAN,
        "certificates": OBJECT,
        "imagePullSecrets": _array(LOCAL_REF),
        "storage": STORAGE,
        "serviceAccountTemplate": OBJECT,
        "walStorage": STORAGE,
        "ephemeralVolumeSource": OBJECT,
        "startDelay": INT32,
        "stopDelay": INT32,
        "smartShutdownTimeout": INT32,
        "switchoverDelay": INT32,
        "failoverDelay": INT32,
        "livenessProbeTimeout": INT32,
        "affinity": AFFINITY,
        "topologySpreadConstraints": OBJECTS,
        "resources": RESOURCES,
        "ephemeralVolumesSizeLimit": OBJECT,
        "priorityClassName": STRING,
        "primaryUpdateStrategy": _enum("unsupervised", "supervised"),
        "primaryUpdateMethod": _enum("switchover", "restart"),
        "backup": BACKUP,
        "nodeMaintenanceWindow": OBJECT,
        "monitoring": MONITORING,
        "externalClusters": _array(EXTERNAL_CLUSTER),
        "logLevel": _enum("error", "warning", "info", "debug", "trace"),
        "projectedVolumeTemplate": OBJECT,
        "env": _array(CLUSTER_ENV_VAR),
        "envFrom": OBJECTS,
        "managed": MANAGED,
        "seccompProfile": OBJECT,
        "podSecurityContext": OBJECT,
        "securityContext": OBJECT,
        "tablespaces": OBJECTS,
        "enablePDB": BOOLEAN,
        "plugins": OBJECTS,
        "probes": OBJECT,
    },
    required=["instances"],
    # XValidation on ClusterSpec: imageName and imageCatalogRef are mutually exclusive
    **{"not": {"required": ["imageName", "imageCatalogRef"]}},
)

# webhook (validateName): a DNS-1035 label of at most 50 characters (it names Services)
CLUSTER_NAME = {"type": "string", "maxLength": 50, "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$"}

CLUSTER = _resource(CNPG_API, "Cluster", CLUSTER_SPEC, "cloudnative-pg api/v1/cluster_types.go, barman-cloud pkg/api/config.go",
                    metadata=_object_meta(CLUSTER_NAME))

# --- Pooler (api/v1/pooler_types.go) -----------------------------------------------------

# webhook (AllowedPgbouncerGenericConfigurationParameters in pooler_webhook.go); releases
# only ever add to this list
PGBOUNCER_PARAMETERS = (
    "application_name_add_host", "autodb_idle_timeout", "client_idle_timeout", "client_login_timeout",
    "default_pool_size", "disable_pqexec", "idle_transaction_timeout", "ignore_startup_parameters",
    "log_connections", "log_disconnections", "log_pooler_errors", "log_stats", "max_client_conn",
    "max_db_connections", "max_user_connections", "min_pool_size", "query_timeout", "query_wait_timeout",
    "reserve_pool_size", "reserve_pool_timeout", "server_check_delay", "server_check_query",
    "server_connect_timeout", "server_fast_close", "server_idle_timeout", "server_lifetime",
    "server_login_retry", "server_reset_query", "server_reset_query_always", "server_round_robin",
    "stats_period", "tcp_keepalive", "tcp_keepcnt", "tcp_keepidle", "tcp_keepintvl", "tcp_user_timeout",
    "verbose",
)

PGBOUNCER = _object(
    {
        "poolMode": _enum("session", "transaction"),  # PgBouncerPoolMode Enum=session;transaction
        "serverTLSSecret": LOCAL_REF,
        "serverCASecret": LOCAL_REF,
        "clientCASecret": LOCAL_REF,
        "clientTLSSecret": LOCAL_REF,
        "authQuerySecret": LOCAL_REF,
        "authQuery": STRING,
        "parameters": {"type": "object", "additionalProperties": STRING, "propertyNames": {"enum": list(PGBOUNCER_PARAMETERS)}},
        "pg_hba": STRINGS,
        "paused": BOOLEAN,
    },
    # webhook (validatePgBouncer): an auth query needs its secret and vice versa
    dependentRequired={"authQuery": ["authQuerySecret"], "authQuerySecret": ["authQuery"]},
)

POOLER_SPEC = _object(
    {
        "cluster": LOCAL_REF,
        "type": _enum("rw", "ro", "r"),  # PoolerType Enum=rw;ro;r
        "instances": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "template": _object({"metadata": TEMPLATE_METADATA, "spec": POD_SPEC}),
        "pgbouncer": PGBOUNCER,
        "deploymentStrategy": OBJECT,
        "monitoring": _object(
            {"enablePodMonitor": BOOLEAN, "podMonitorMetricRelabelings": OBJECTS, "podMonitorRelabelings": OBJECTS}
        ),
        "serviceTemplate": OBJECT,
        "serviceAccountName": STRING,
    },
    required=["cluster", "pgbouncer"],
)

POOLER = _resource(CNPG_API, "Pooler", POOLER_SPEC, "cloudnative-pg api/v1/pooler_types.go")

# --- ScheduledBackup (api/v1/scheduledbackup_types.go) -----------------------------------

# webhook: robfig/cron's Parse, whose spec *starts with seconds*: 6 fields (5 when the
# day-of-week is left out) or an @descriptor.  A Kubernetes-style 5-field schedule
# therefore parses, but shifted by one field.
SCHEDULE = {"type": "string", "pattern": r"^(@[a-z]+( .+)?|\S+( +\S+){4,5})$"}

SCHEDULED_BACKUP_SPEC = _object(
    {
        "suspend": BOOLEAN,
        "immediate": BOOLEAN,
        "schedule": SCHEDULE,
        "cluster": LOCAL_REF,
        "backupOwnerReference": _enum("none", "self", "cluster"),
        "target": BACKUP_TARGET,
        "method": _enum("barmanObjectStore", "volumeSnapshot", "plugin"),  # backup_types.go BackupMethod
        "pluginConfiguration": _object({"name": NON_EMPTY, "parameters": STRING_MAP}, required=["name"]),
        "online": BOOLEAN,
        "onlineConfiguration": _object({"waitForArchive": BOOLEAN, "immediateCheckpoint": BOOLEAN}),
    },
    required=["schedule", "cluster"],
)

SCHEDULED_BACKUP = _resource(CNPG_API, "ScheduledBackup", SCHEDULED_BACKUP_SPEC,
                             "cloudnative-pg api/v1/scheduledbackup_types.go")

# --- ImageCatalog (api/v1/imagecatalog_types.go) -----------------------------------------

IMAGE_CATALOG_SPEC = _object(
    {
        "images": _array(
            _object(
                {"image": NON_EMPTY, "major": {"type": "integer", "minimum": 10}, "extensions": OBJECTS},
                required=["image", "major"],
            ),
            minItems=1,
            maxItems=8,
        )
    },
    required=["images"],
)

IMAGE_CATALOG = _resource(CNPG_API, "ImageCatalog", IMAGE_CATALOG_SPEC, "cloudnative-pg api/v1/imagecatalog_types.go")

# --- Calico NetworkPolicy (projectcalico/api pkg/apis/projectcalico/v3) ----------------------

# numorstring.Port: a number or a "from:to" range / named port string
CALICO_PORT = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 65535}, {"type": "string", "minLength": 1}]}
# numorstring.Protocol: one of these names or a number 1-255
CALICO_PROTOCOL = {
    "anyOf": [_enum("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite"), {"type": "integer", "minimum": 1, "maximum": 255}]
}
CALICO_ICMP = _object({"type": {"type": "integer", "minimum": 0, "maximum": 254}, "code": {"type": "integer", "minimum": 0, "maximum": 255}})
_ENTITY_MATCHES = ("selector", "notSelector", "namespaceSelector", "ports", "notPorts", "nets", "notNets", "serviceAccounts")


def _calico_entity(services: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "nets": STRINGS,
        "selector": STRING,
        "namespaceSelector": STRING,
        "ports": _array(CALICO_PORT),
        "notNets": STRINGS,
        "notSelector": STRING,
        "notPorts": _array(CALICO_PORT),
        "serviceAccounts": _object({"names": STRINGS, "selector": STRING}),
    }
    if not services:
        return _object(properties)
    properties["services"] = _object({"name": STRING, "namespace": STRING})
    # "ServiceSelector cannot be specified on the same rule as Selector, NotSelector,
    # NamespaceSelector, Ports, NotPorts, Nets, NotNets or ServiceAccounts."
    return _object(properties, dependentSchemas={"services": {"not": {"anyOf": [{"required": [k]} for k in _ENTITY_MATCHES]}}})


def _calico_rule(services: bool) -> dict[str, Any]:
    entity = _calico_entity(services)
    has_ports = {"anyOf": [{"required": [side], "properties": {side: {"required": ["ports"]}}} for side in ("source", "destination")]}
    return _object(
        {
            "action": _enum("Allow", "Deny", "Log", "Pass"),
            "ipVersion": {"enum": [4, 6]},
            "protocol": CALICO_PROTOCOL,
            "icmp": CALICO_ICMP,
            "notProtocol": CALICO_PROTOCOL,
            "notICMP": CALICO_ICMP,
            "source": entity,
            "destination": entity,
            "http": OBJECT,
            "metadata": _object({"annotations": STRING_MAP}),
        },
        required=["action"],
        # "Protocol ... Required if any of the EntityRules contain Ports"
        **{"if": has_ports, "then": {"required": ["protocol"]}},
    )


CALICO_SPEC = _object(
    {
        "order": {"type": "number"},
        # EntityRule.Services: "Only valid on egress rules."
        "ingress": _array(_calico_rule(services=False)),
        "egress": _array(_calico_rule(services=True)),
        "selector": STRING,
        "types": _array(_enum("Ingress", "Egress"), uniqueItems=True),
        "serviceAccountSelector": STRING,
    }
)

CALICO_NETWORK_POLICY = _resource(CALICO_API, "NetworkPolicy", CALICO_SPEC,
                                  "projectcalico/api pkg/apis/projectcalico/v3 networkpolicy.go, policy_common.go")

# --- lookup ------------------------------------------------------------------------------

SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    (CNPG_API, "Cluster"): CLUSTER,
    (CNPG_API, "Pooler"): POOLER,
    (CNPG_API, "ScheduledBackup"): SCHEDULED_BACKUP,
    (CNPG_API, "ImageCatalog"): IMAGE_CATALOG,
    (CALICO_API, "NetworkPolicy"): CALICO_NETWORK_POLICY,
}


def schema_for(manifest: Mapping[str, Any]) -> dict[str, Any]:
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    if key not in SCHEMAS:
        raise KeyError(f"no schema for {key[0]} {key[1]}")
    return SCHEMAS[key]


def problems(manifest: Mapping[str, Any]) -> list[str]:
    """Every schema violation of ``manifest`` as ``path: message`` (empty when valid)."""
    validator = jsonschema.Draft202012Validator(schema_for(manifest))
    found = []
    for error in validator.iter_errors(manifest):
        path = ".".join(str(p) for p in error.absolute_path) or "(root)"
        found.append(f"{path}: {error.message}")
    return sorted(found)
