"""Values for the Wikimedia ``airflow`` chart, built by pure functions of the config.

The layering mirrors what helmfile does for an instance (wmf-charts.md 2.6), earliest
first, later layers winning:

1. private values (the secrets: fernet and webserver keys in ``config.private``, S3 keys,
   OIDC client secret, base64 keytab);
2. general values the deployment server provides (the KDC for krb5.conf);
3. ``_airflow_common_/values-dse-k8s-eqiad.yaml``, with the site facts from config written
   back at their paths (their Pulumi.yaml defaults are that file's values);
4. the Hadoop layer (``_airflow_common_/values-analytics-<cluster>.yaml``);

The ``_airflow_common_`` files are verbatim copies of deployment-charts at the commit
``chart_values/_airflow_common_/SOURCE.yaml`` names (tools/upstream_values.py refreshes and
checks them), so the program deploys what helmfile deploys today.
5. the instance's own ``values-production.yaml``;
6. ``environmentName`` and ``pgServiceName``.

Secret leaves may be any object (a ``pulumi.Output`` in the program, a plain string in
tests); these functions never look inside them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml

from components.config import InstanceConfig

COMMON_DIR = Path(__file__).parent / "chart_values" / "_airflow_common_"
HADOOP_LAYERS = {"production": "values-analytics-production", "test": "values-analytics-test"}


@lru_cache(maxsize=None)
def _layer(name: str) -> dict[str, Any]:
    with open(COMMON_DIR / f"{name}.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


def _copy(node: Any) -> Any:
    # containers are copied, leaves shared: a secret leaf may be a pulumi.Output, which
    # cannot be deep-copied, and the cached layers must never be mutated through a result
    if isinstance(node, Mapping):
        return {k: _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of values files: mappings merge, everything else is replaced."""
    out = _copy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = _copy(value)
    return out


def private_values(
    cfg: InstanceConfig,
    *,
    fernet_key: Any,
    webserver_secret_key: Any,
    oidc_client_secret: Any,
    s3_access_key: Any = None,
    s3_secret_key: Any = None,
    kerberos_keytab: Any = None,
    legacy_db_password: Any = None,
) -> dict[str, Any]:
    """The secret-bearing values, at the chart paths the runbook's private hiera uses.

    What a phase does not run is left out: no keytab while kerberos is disabled (webserver
    phase), no S3 keys before remote logging, no database password once on CloudNativePG.
    """
    values: dict[str, Any] = {
        "config": {
            # each key becomes Secret airflow-production-secret-config and an upper-cased env var
            "private": {
                "airflow__core__fernet_key": fernet_key,
                "airflow__webserver__secret_key": webserver_secret_key,
            },
            "airflow": {},
            "oidc": {"client_secret": oidc_client_secret},
        },
    }
    if cfg.phase_at_least("scheduler"):
        values["config"]["airflow"]["aws_access_key_id"] = s3_access_key
        values["config"]["airflow"]["aws_secret_access_key"] = s3_secret_key
        values["kerberos"] = {"keytab": kerberos_keytab}
    if cfg.uses_external_db:
        # inlined by charts <= 0.0.120 into sql_alchemy_conn (wmf-charts.md 1.7)
        values["config"]["airflow"]["postgresqlPass"] = legacy_db_password
    if not values["config"]["airflow"]:
        del values["config"]["airflow"]
    return values


def general_values(cfg: InstanceConfig) -> dict[str, Any]:
    """What /etc/helmfile-defaults/general-<env>.yaml gives the chart and we must supply."""
    return {"kerberos": {"admin": cfg.kdc_host, "servers": [cfg.kdc_host]}}


def common_values(cfg: InstanceConfig) -> dict[str, Any]:
    site = {
        "docker": {"registry": cfg.docker_registry},
        "app": {
            "version": cfg.image_version,
            "executor_pod_image_version": cfg.image_version,
        },
        "config": {
            "airflow": {
                "config": {"smtp": {"smtp_host": cfg.smtp_host}},
                "local_settings": {"xcom_sidecar": {"tag": cfg.xcom_sidecar_tag}},
            },
            "connections": {
                "s3_dpe": {"extra": {"endpoint_url": cfg.rgw_endpoint, "region_name": cfg.rgw_region}},
            },
            "oidc": {"idp_server": cfg.idp_server},
        },
        "gitsync": {"image_tag": cfg.gitsync_image_tag},
        # the webserver's CAS egress follows the IDP: cas:[idp], or cas:[idp-test] for test-k8s
        "external_services": {"webserver": {"cas": [cfg.idp_server.split(".")[0]]}},
    }
    return deep_merge(_layer("values-dse-k8s-eqiad"), site)


def hadoop_values(cfg: InstanceConfig) -> dict[str, Any]:
    if cfg.hadoop_cluster == "none":
        return {}
    return _copy(_layer(HADOOP_LAYERS[cfg.hadoop_cluster]))


def _auth(cfg: InstanceConfig) -> dict[str, Any]:
    auth: dict[str, Any] = {}
    mappings: dict[str, list[str]] = {}
    if cfg.chart_version_tuple <= (0, 0, 120):
        # before a673f8b83 the Op group was not a chart default: instances listed it
        if cfg.op_ldap_role:
            mappings[cfg.op_ldap_role] = ["Op"]
    else:
        # None renders as YAML null (~): the chart then maps no group to Op (test-k8s); the
        # chart's own default (airflow-<instance>-ops) is left to the chart, as upstream does
        if cfg.op_ldap_role != f"airflow-{cfg.instance}-ops":
            auth["op_ldap_role"] = cfg.op_ldap_role
    for group, roles in cfg.extra_role_mappings.items():
        mappings[group] = list(roles)
    if mappings:
        auth["role_mappings"] = mappings
    return auth


def chart_defaults(instance: str) -> dict[str, str]:
    """What charts after 0.0.120 derive from ``instance_name`` (charts/airflow/values.yaml:
    ``config.airflow.dags_folder``, ``config.oidc.client_id``, ``config.airflow.config.kerberos.principal``,
    ``config.airflow.config.core.executor``), spelled as the chart's sprig ``replace`` does."""
    return {
        "dags_folder": instance.replace("-", "_"),
        "client_id": "airflow_" + instance.replace("-", "_"),
        "principal": f"analytics-{instance.replace('analytics-', '')}/airflow-{instance}.discovery.wmnet",
        "executor": "KubernetesExecutor",
    }


def instance_values(cfg: InstanceConfig) -> dict[str, Any]:
    """The instance's values-production.yaml for its migration phase (wmf-charts.md 5).

    Like the running instances' own files, it names only what differs from what the chart
    derives from ``instance_name``; charts <= 0.0.120 derive nothing, and get every name.
    """
    explicit = cfg.chart_version_tuple <= (0, 0, 120)
    derived = chart_defaults(cfg.instance)
    airflow: dict[str, Any] = {"instance_name": cfg.instance}
    values: dict[str, Any] = {"config": {"airflow": airflow}}
    if explicit or cfg.dags_folder != derived["dags_folder"]:
        airflow["dags_folder"] = cfg.dags_folder
    if explicit or cfg.oidc_client_id != derived["client_id"]:
        values["config"]["oidc"] = {"client_id": cfg.oidc_client_id}
    legacy = cfg.legacy

    if cfg.uses_external_db:
        assert legacy is not None  # guaranteed by config validation
        airflow["dbHost"] = legacy.db_host if legacy.db_port == 5432 else f"{legacy.db_host}:{legacy.db_port}"
        airflow["dbName"] = legacy.db_name
        airflow["dbUser"] = legacy.db_user
    auth = _auth(cfg)
    if auth:
        airflow["auth"] = auth

    if cfg.phase == "webserver":
        # phase 1: only the webserver on Kubernetes; it fetches task logs from the legacy
        # scheduler, with which it shares the webserver secret key
        airflow["config"] = {"logging": {"remote_logging": False}}
        values["external_services"] = {"webserver": {"postgresql": [legacy.pg_service], "airflow": [cfg.instance]}}
        values["kerberos"] = {"enabled": False}
        values["scheduler"] = {"remote_host": legacy.host, "enabled": False}
    else:
        airflow["config"] = {}
        if explicit:
            airflow["config"]["core"] = {"executor": derived["executor"]}
        if explicit or cfg.kerberos_principal != derived["principal"]:
            airflow["config"]["kerberos"] = {"principal": cfg.kerberos_principal}
        if not airflow["config"]:
            del airflow["config"]
        if cfg.uses_external_db:
            pg = {"postgresql": [legacy.pg_service]}
            values["external_services"] = {"webserver": dict(pg), "scheduler": dict(pg), "task-pod": dict(pg)}
    if cfg.uses_external_db:
        values["postgresql"] = {"cloudnative": False}
    if cfg.phase == "database-import":
        # nothing may write to the legacy database while CloudNativePG imports it: the
        # chart's scale-to-0 knob (webserver, scheduler, gitsync, kerberos, envoy)
        values["resources"] = {"replicas": 0}

    values["ingress"] = {"gatewayHosts": {"default": cfg.gateway_host, "extraFQDNs": list(cfg.extra_fqdns)}}
    if cfg.geoip:
        values["config"]["geoip"] = {"enabled": True}
    return values


def airflow_values(cfg: InstanceConfig, private: Mapping[str, Any]) -> dict[str, Any]:
    """All values passed to the airflow Release, layered like helmfile does."""
    values: dict[str, Any] = {}
    for layer in (
        private,
        general_values(cfg),
        common_values(cfg),
        hadoop_values(cfg),
        instance_values(cfg),
        cfg.extra_values,
        {"environmentName": cfg.environment, "pgServiceName": cfg.pg_service_name},
    ):
        values = deep_merge(values, layer)
    return values
