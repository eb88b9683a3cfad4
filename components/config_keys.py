"""The declared keys of the stack config: name, type, secret or not, required or not, and a hint.

Every key under the ``airflow:`` namespace is here; the loader (components/config.py) refuses
anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    kind: str  # str | bool | int | list | object
    secret: bool = False
    required: bool = False
    help: str = ""


# Every key under the "airflow:" namespace.  Anything else is rejected.
KEYS: dict[str, Key] = {
    # project-level (Pulumi.yaml) site facts, overridable per stack
    "environment": Key("str", required=True, help="Kubernetes cluster environment, e.g. dse-k8s-eqiad"),
    "chartRepository": Key("str", required=True, help="Helm chart repository URL"),
    "airflowChartVersion": Key("str", required=True, help="pinned version of the airflow chart"),
    "imageVersion": Key("str", required=True, help="airflow image app.version"),
    "dockerRegistry": Key("str", required=True, help="docker registry host"),
    "rgwEndpoint": Key("str", required=True, help="Ceph RGW S3 endpoint URL"),
    "rgwRegion": Key("str", required=True, help="RGW zonegroup api_name used as S3 region"),
    "kerberosRealm": Key("str", required=True, help="Kerberos realm"),
    "kdcHost": Key("str", required=True, help="KDC/admin host running kadmin.local"),
    "rgwAdminHost": Key("str", required=True, help="host running radosgw-admin"),
    "idpServer": Key("str", required=True, help="CAS/OIDC server"),
    "smtpHost": Key("str", required=True, help="SMTP relay for Airflow alerts"),
    "gitsyncImageTag": Key("str", required=True, help="git-sync image tag"),
    "xcomSidecarTag": Key("str", required=True, help="xcom sidecar image tag"),
    "serviceDomain": Key("str", required=True, help="internal service discovery domain"),
    "publicDomain": Key("str", required=True, help="public domain of the web UIs"),
    "kubeconfigDir": Key("str", required=True, help="directory holding the deploy kubeconfig airflow-<instance>-deploy-<env>.config"),
    "releaseTimeoutSeconds": Key("int", required=True, help="Helm release timeout in seconds"),
    "canaryStack": Key("str", required=True, help="the stack that takes every upgrade first"),
    "sshUser": Key("str", required=True, help="SSH user on the KDC, the RGW admin host and the legacy VM (its sudo rules: manual steps)"),
    "kdcHostKey": Key("str", required=True, help="pinned SSH host public key of kdcHost"),
    "rgwAdminHostKey": Key("str", required=True, help="pinned SSH host public key of rgwAdminHost"),
    "sshDialTimeoutSeconds": Key("int", required=True, help="SSH per-dial timeout"),
    "sshDialErrorLimit": Key("int", required=True, help="SSH dial attempts before failing"),
    "remoteSudo": Key("bool", required=True, help="call the privileged tools of the remote scripts through sudo -n (the scripts run as sshUser; false only when sshUser is root)"),
    "commandTimeoutMinutes": Key("int", required=True, help="timeout of each remote Command"),
    "postgresqlImageTag": Key("str", required=True, help="tag of the PostgreSQL 15 image (common_images.postgresql)"),
    "pgbouncerImageTag": Key("str", required=True, help="tag of the pgbouncer image"),
    # per instance (Pulumi.<stack>.yaml)
    "instance": Key("str", required=True, help="instance name, e.g. search"),
    "hadoopCluster": Key("str", help="production | test | none"),
    "kerberosPrincipal": Key("str", help="principal Airflow tasks run as, without realm"),
    "opLdapRole": Key("str", help="LDAP group mapped to the Op role; empty string for none"),
    "extraRoleMappings": Key("object", help="extra LDAP group -> roles mappings"),
    "gatewayHost": Key("str", help="ingress gateway host label"),
    "extraFqdns": Key("list", help="public FQDNs of the web UI"),
    "namespaceLabels": Key("object", help="labels admin_ng must set on the Namespace besides the GeoIP ones geoip implies"),
    "geoip": Key("bool", help="mount the GeoIP database"),
    "extraValues": Key("object", help="extra airflow chart values, merged last"),
    "pgInstances": Key("int", help="CNPG instances (default 2)"),
    "pgStorageSize": Key("str", help="CNPG data volume size (default 15Gi)"),
    "pgWalStorageSize": Key("str", help="CNPG WAL volume size (default 30Gi)"),
    "pgParameters": Key("object", help="postgresql.conf parameters of the CNPG cluster"),
    "pgSpecOverrides": Key("object", help="extra CNPG Cluster spec fields (resources, affinity), merged last"),
    "pgPoolerParameters": Key("object", help="pgbouncer parameters overriding the defaults"),
    # upgrades (on the canary stack only): versions it ran before, newest last
    "imageHistory": Key("list", help="image versions the canary has run"),
    "chartHistory": Key("list", help="airflow chart versions the canary has run"),
    # migration of a legacy (VM) instance, in phases
    "phase": Key("str", help="migration phase: webserver | scheduler | database-import | database | complete"),
    "legacy": Key("object", help="the legacy instance: host, hostKey, dbHost, dbName, dbUser, logsDir, ..."),
    # the phase guard's override for one transition (components/phase_guard.py), e.g. "none->scheduler"
    "allowPhaseChange": Key("str", help="allow exactly this phase change the guard refuses: '<deployed or none>-><phase>'; remove it after the up"),
    # taking over an instance helmfile deployed: its credentials come from config, none is generated
    "takeover": Key("bool", help="true while taking over a running instance: every credential from config, none generated (default false)"),
    "takeoverChanges": Key("object", help="what the first up intends to change in the running release's values: {path as takeover-diff prints it: reason}"),
    # secrets (pulumi config set --secret)
    "oidcClientSecret": Key("str", secret=True, required=True, help="OIDC client secret from the IDP"),
    "sshPrivateKey": Key("str", secret=True, required=True, help="SSH private key of sshUser"),
    # optional: generated (and protected) when absent; set them to carry a legacy instance's keys
    "fernetKey": Key("str", secret=True, help="Airflow fernet key (generated when absent)"),
    "webserverSecretKey": Key("str", secret=True, help="Airflow webserver secret key (generated when absent)"),
    "legacyDbPassword": Key("str", secret=True, help="password of the legacy database user"),
    "privateValues": Key("object", secret=True, help="extra secret airflow chart values (connections, extra secrets)"),
    # optional: the existing S3 key pairs of the two RGW users (a running instance's); generated
    # (and protected) when absent.  Four string keys rather than one object per user: each is set
    # with one `pulumi config set --secret KEY` prompt (never argv), is one `secure:` value, and a
    # missing or malformed half is named exactly.
    "airflowS3AccessKey": Key("str", secret=True, help="access key of RGW user airflow-<instance> (generated when absent)"),
    "airflowS3SecretKey": Key("str", secret=True, help="secret key of RGW user airflow-<instance> (generated when absent)"),
    "postgresqlS3AccessKey": Key("str", secret=True, help="access key of RGW user postgresql-airflow-<instance> (generated when absent)"),
    "postgresqlS3SecretKey": Key("str", secret=True, help="secret key of RGW user postgresql-airflow-<instance> (generated when absent)"),
}

# The RGW users' key pairs in config: (user, access key, secret key, first phase that needs it).
S3_KEY_PAIRS = (
    ("airflow", "airflowS3AccessKey", "airflowS3SecretKey", "scheduler"),
    ("postgresql", "postgresqlS3AccessKey", "postgresqlS3SecretKey", "database-import"),
)
# the shapes the RGW user script accepts (components/rgw_user.py): checked here first, so a bad
# key is one config line before anything runs, not a failed remote Command
_S3_ACCESS_KEY = re.compile(r"[A-Za-z0-9]{16,128}", re.ASCII)
_S3_SECRET_KEY = re.compile(r"[A-Za-z0-9+/]{20,128}", re.ASCII)

PHASES = ("webserver", "scheduler", "database-import", "database", "complete")
# Phases where Airflow still uses the legacy database: only airflow charts <= 0.0.120 read
# the external-database keys (removed by 064967a26, wmf-charts.md "Key finding").
EXTERNAL_DB_PHASES = ("webserver", "scheduler", "database-import")
LAST_EXTERNAL_DB_CHART = (0, 0, 120)
LEGACY_KEYS = {
    "host": "the legacy Airflow VM, e.g. an-airflow1005.eqiad.wmnet",
    "hostKey": "its pinned SSH host key",
    "dbHost": "the legacy database host, e.g. an-db1001.eqiad.wmnet",
    "dbPort": "the legacy database port (default 5432)",
    "dbName": "the legacy database, e.g. airflow_search",
    "dbUser": "the legacy database user, e.g. airflow_search",
    "logsDir": "the legacy logs directory (default /srv/airflow-<instance>/logs)",
    "hieraFile": "the puppet private hiera file of the instance's secrets",
    "pgService": "external_services name of the legacy database (default analytics)",
}

HADOOP_CLUSTERS = ("production", "test", "none")
