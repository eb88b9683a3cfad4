"""Stack configuration, parsed once into a frozen, validated model.

Every key the program reads is declared in ``KEYS`` below with its type, whether it is
secret, and a one-line hint on how to fix a bad value.  ``load()`` reads the whole Pulumi
config bag (project defaults from Pulumi.yaml overlaid with Pulumi.<stack>.yaml), rejects
unknown keys and bad values with a single line naming the key, and only then does the
program register resources.

The errors are ``ConfigError``, a ``pulumi.RunError``: the Pulumi language host prints a
RunError's message without a traceback, and the offline preview does the same.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import pulumi
import yaml

from components import config_raw, managed_values
from components.config_keys import (  # noqa: F401 - re-exported
    EXTERNAL_DB_PHASES, HADOOP_CLUSTERS, KEYS, LAST_EXTERNAL_DB_CHART, LEGACY_KEYS, PHASES, S3_KEY_PAIRS, Key,
)
from components.config_secrets import SECRET_PLACEHOLDER, S3KeyPair, Secrets, _load_secrets  # noqa: F401
from components.config_errors import PROJECT, ConfigError, current_stack, rm_fix, set_fix
from components.config_types import (  # noqa: F401 - re-exported: the model's domain types
    _PRINCIPAL_PRIMARY, _REALM, MAX_INSTANCE_LEN,
    _abs_path, _host_key, _image_tag, _in_range, _logs_dir, _pg_parameters, _pg_spec_overrides, _takeover_changes,
    _quantity, _unix_user, chart_version, dns_label, hostname, https_endpoint, https_url, image_version,
    ldap_group, version_tuple,
)

PROJECT_FILE = Path(__file__).resolve().parent.parent / "Pulumi.yaml"

# Secret values the offline preview could not decrypt (no passphrase given) arrive as this
# placeholder; validators of secret *content* skip it, everything else is still checked.


# --- domain types (components/config_types.py) ---------------------------------------


















@dataclass(frozen=True)
class Legacy:
    """The legacy VM instance being migrated."""

    host: str
    host_key: str
    db_host: str
    db_port: int
    db_name: str
    db_user: str
    logs_dir: str
    hiera_file: str
    pg_service: str


@dataclass(frozen=True)
class InstanceConfig:
    """One Airflow instance (one stack), validated."""

    # site facts
    environment: str
    chart_repository: str
    airflow_chart_version: str
    image_version: str
    docker_registry: str
    rgw_endpoint: str
    rgw_region: str
    kerberos_realm: str
    kdc_host: str
    rgw_admin_host: str
    idp_server: str
    smtp_host: str
    gitsync_image_tag: str
    xcom_sidecar_tag: str
    service_domain: str
    public_domain: str
    kubeconfig_dir: str
    release_timeout_seconds: int
    # the instance
    instance: str
    hadoop_cluster: str
    kerberos_principal: str
    op_ldap_role: str | None
    extra_role_mappings: Mapping[str, tuple[str, ...]]
    gateway_host: str
    extra_fqdns: tuple[str, ...]
    namespace_labels: Mapping[str, str]
    geoip: bool
    extra_values: Mapping[str, Any]
    # remote commands
    ssh_user: str
    kdc_host_key: str
    rgw_admin_host_key: str
    ssh_dial_timeout_seconds: int
    ssh_dial_error_limit: int
    remote_sudo: bool
    command_timeout_minutes: int
    # database
    postgresql_image_tag: str
    pgbouncer_image_tag: str
    pg_instances: int
    pg_storage_size: str
    pg_wal_storage_size: str
    pg_parameters: Mapping[str, str]
    pg_spec_overrides: Mapping[str, Any]
    pg_pooler_parameters: Mapping[str, str]
    # upgrades
    canary_stack: str
    image_history: tuple[str, ...]
    chart_history: tuple[str, ...]
    # migration
    phase: str
    legacy: "Legacy | None"
    # taking over a running instance: credentials only from config (checked at load)
    takeover: bool = False
    # intended differences from the running release's values: (path, reason), for takeover-diff
    takeover_changes: tuple[tuple[str, str], ...] = ()

    @property
    def uses_external_db(self) -> bool:
        return self.phase in EXTERNAL_DB_PHASES

    def phase_at_least(self, phase: str) -> bool:
        return PHASES.index(self.phase) >= PHASES.index(phase)

    # --- derived names (one place, so every component agrees) ---
    @property
    def namespace(self) -> str:
        return f"airflow-{self.instance}"

    @property
    def pg_service_name(self) -> str:
        return f"postgresql-airflow-{self.instance}"

    @property
    def deploy_user(self) -> str:
        # admin_ng's default deployUser is "<namespace>-deploy" (wmf-charts.md 3.1)
        return f"{self.namespace}-deploy"

    @property
    def service_fqdn(self) -> str:
        return f"airflow-{self.instance}.{self.service_domain}"

    @property
    def dags_folder(self) -> str:
        return self.instance.replace("-", "_")

    @property
    def oidc_client_id(self) -> str:
        return "airflow_" + self.instance.replace("-", "_")

    @property
    def logs_bucket(self) -> str:
        return f"logs.airflow-{self.instance}.{self.environment}"

    @property
    def pg_bucket(self) -> str:
        return f"postgresql-airflow-{self.instance}.{self.environment}"

    @property
    def runs_as_user(self) -> str:
        """The UNIX user tasks impersonate: the primary of the kerberos principal."""
        return self.kerberos_principal.split("/", 1)[0]

    @property
    def airflow_s3_user(self) -> str:
        return f"airflow-{self.instance}"

    @property
    def pg_s3_user(self) -> str:
        return self.pg_service_name

    @property
    def deploy_kubeconfig(self) -> str:
        # the same file helmfile uses: /etc/kubernetes/airflow-<x>-deploy-<env>.config
        return f"{self.kubeconfig_dir}/{self.namespace}-deploy-{self.environment}.config"

    @property
    def chart_version_tuple(self) -> tuple[int, int, int]:
        return version_tuple(self.airflow_chart_version)


# --- loading --------------------------------------------------------------------------


def all_config() -> dict[str, Any]:
    """The whole config bag the engine handed to this program (full keys)."""
    bag = dict(pulumi.runtime.config.get_config_env())
    bag.update(pulumi.runtime.config.CONFIG.get())
    return bag


def load(
    bag: Mapping[str, Any] | None = None,
    is_secret: Callable[[str], bool] | None = None,
    read_secret: Callable[[str], str] | None = None,
    stack: str | None = None,
) -> tuple[InstanceConfig, Secrets]:
    """Parse and validate the stack config; raise ConfigError on the first problem.

    ``bag`` defaults to the program's config, ``is_secret`` to the engine's list of secret
    keys, ``read_secret`` to ``pulumi.Config().require_secret``, ``stack`` (named in the
    hints: ``./dev config set -s STACK ...``) to the stack the program runs for.
    """
    stack = stack or current_stack()
    bag = all_config() if bag is None else bag
    is_secret = pulumi.runtime.is_config_secret if is_secret is None else is_secret
    prefix = f"{PROJECT}:"
    raw: dict[str, Any] = {}
    for full_key, value in bag.items():
        if not full_key.startswith(prefix):
            continue  # other namespaces (pulumi:, kubernetes:) belong to the engine and providers
        key = full_key[len(prefix):]
        if key not in KEYS:
            close = [k for k in KEYS if k.lower() == key.lower()]
            hint = f"did you mean {prefix}{close[0]}? " if close else "check the spelling against README's key table; "
            raise ConfigError(key, "unknown config key", hint + rm_fix(stack, key))
        raw[key] = value
    secret_keys = {k for k in raw if KEYS[k].secret or is_secret(prefix + k)}
    try:
        return _load(raw, secret_keys, is_secret, read_secret, stack)
    except ConfigError as exc:
        root = exc.key.split(".", 1)[0]
        if root in secret_keys and _mentions(str(exc), raw.get(root)):
            # never echo a secret: keep the key and the fix, drop the problem text that quotes the value
            raise ConfigError(exc.key, "has an invalid value (not shown: it is a secret)", exc.fix) from None
        raise


def _mentions(message: str, value: Any) -> bool:
    """Whether ``message`` quotes ``value`` or any string inside it (4 characters or more)."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            parsed = None
        if isinstance(parsed, (dict, list)):
            return _mentions(message, parsed) or value in message
        return len(value) >= 4 and value in message
    if isinstance(value, dict):
        return any(_mentions(message, k) or _mentions(message, v) for k, v in value.items())
    if isinstance(value, list):
        return any(_mentions(message, v) for v in value)
    return value is not None and len(str(value)) >= 4 and str(value) in message


def _load(raw: dict[str, Any], secret_keys: set[str], is_secret: Callable[[str], bool],
          read_secret: Callable[[str], str] | None, stack: str) -> tuple[InstanceConfig, Secrets]:
    prefix = f"{PROJECT}:"
    for key, spec in KEYS.items():
        if spec.required and (key not in raw or raw[key] is None or (isinstance(raw[key], str) and not raw[key].strip())):
            raise ConfigError(key, f"missing ({spec.help})", set_fix(stack, key, secret=spec.secret))
        if spec.secret and key in raw and not is_secret(prefix + key):
            raise ConfigError(key, "is stored in plain text",
                              f"{rm_fix(stack, key)}, then {set_fix(stack, key, secret=True, how='set it again with')}")
        if not spec.secret and key in raw and is_secret(prefix + key):
            # the program would use it in plain text (names, values, the tree): refuse rather than leak it
            raise ConfigError(key, "is stored as a secret (secure:) but the program uses it in plain text",
                              f"{set_fix(stack, key, how='store it in plain text with')} (secret chart values go in privateValues)")
    _check_canary_is_a_project_setting(raw, stack)

    try:
        # an undecrypted secret (offline preview without a passphrase) is a placeholder: no type to check
        typed = config_raw.validate(KEYS, {k: config_raw.from_wire(k, KEYS[k].kind, v) for k, v in raw.items()
                                           if v != SECRET_PLACEHOLDER})
    except config_raw.RawError as exc:
        raise ConfigError(exc.key, exc.problem, exc.fix) from None

    def get(key: str, default: Any = None) -> Any:
        return typed[key] if key in typed and typed[key] is not None else default

    instance = dns_label("instance", get("instance"), MAX_INSTANCE_LEN)
    environment = dns_label("environment", get("environment"))
    service_domain = hostname("serviceDomain", get("serviceDomain"))
    public_domain = hostname("publicDomain", get("publicDomain"))

    version = chart_version("airflowChartVersion", get("airflowChartVersion"))
    if version_tuple(version) < (0, 0, 65):
        # before 0.0.65 external_services was a flat map (e1ace7979); we only emit the component form
        raise ConfigError("airflowChartVersion", f"{version} predates the component-keyed external_services (0.0.65)", "use 0.0.65 or later")

    realm = get("kerberosRealm")
    if not _REALM.fullmatch(realm):
        raise ConfigError("kerberosRealm", f"{realm!r} is not a Kerberos realm", "use upper case, e.g. WIKIMEDIA")

    hadoop = get("hadoopCluster", "production")
    if hadoop not in HADOOP_CLUSTERS:
        raise ConfigError("hadoopCluster", f"{hadoop!r} is not a known Hadoop cluster", f"use one of {', '.join(HADOOP_CLUSTERS)}")

    service_fqdn = f"airflow-{instance}.{service_domain}"
    default_primary = "analytics-" + instance.removeprefix("analytics-")
    principal = get("kerberosPrincipal", f"{default_primary}/{service_fqdn}")
    m = re.fullmatch(r"^(?P<primary>[^/@\s]+)/(?P<host>[^/@\s]+)$", principal, re.ASCII)
    if not m or not _PRINCIPAL_PRIMARY.fullmatch(m.group("primary")):
        raise ConfigError("kerberosPrincipal", f"{principal!r} is not <user>/<host> (no realm)", f"e.g. analytics/{service_fqdn}")
    hostname("kerberosPrincipal", m.group("host"))

    op_role_raw = get("opLdapRole", f"airflow-{instance}-ops")
    op_ldap_role = ldap_group("opLdapRole", op_role_raw) if op_role_raw else None

    mappings: dict[str, tuple[str, ...]] = {}
    for group, roles in get("extraRoleMappings", {}).items():
        ldap_group("extraRoleMappings", group)
        if not isinstance(roles, list) or not roles or not all(r in ("Admin", "Op", "User", "Viewer", "Public") for r in roles):
            raise ConfigError("extraRoleMappings", f"roles of {group!r} must be a non-empty list of Admin/Op/User/Viewer/Public", "e.g. {airflow-analytics-ops: [Op]}")
        mappings[group] = tuple(roles)

    gateway_host = dns_label("gatewayHost", get("gatewayHost", f"airflow-{instance}"))
    fqdns = tuple(hostname("extraFqdns", h) for h in get("extraFqdns", [f"airflow-{instance}.{public_domain}"]))
    if not fqdns:
        raise ConfigError("extraFqdns", "is empty", "list at least the public FQDN, e.g. [airflow-search.wikimedia.org]")

    labels = get("namespaceLabels", {})
    for k, v in labels.items():
        if not re.fullmatch(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$", k, re.ASCII) or not isinstance(v, str) or not re.fullmatch(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$", v, re.ASCII):
            raise ConfigError("namespaceLabels", f"{k!r}: {v!r} is not a valid Kubernetes label", "use name[/prefix]: value with letters, digits, '-', '_' and '.'")

    extra_values = get("extraValues", {})
    if (path := managed_values.violation(extra_values)) is not None:
        raise ConfigError("extraValues", f"sets {path}, which the program manages", "remove it (secret chart values go in privateValues)")

    phase, legacy = _phase_and_legacy(get("phase", "complete"), get("legacy"), raw, instance, version, stack)

    timeout = get("releaseTimeoutSeconds")
    if not 60 <= timeout <= 3600:
        raise ConfigError("releaseTimeoutSeconds", f"{timeout} is outside 60..3600", "pick a finite timeout such as 900")

    cfg = InstanceConfig(
        environment=environment,
        chart_repository=https_url("chartRepository", get("chartRepository")),
        airflow_chart_version=version,
        image_version=image_version("imageVersion", get("imageVersion")),
        docker_registry=hostname("dockerRegistry", get("dockerRegistry")),
        rgw_endpoint=https_endpoint("rgwEndpoint", get("rgwEndpoint")),
        rgw_region=dns_label("rgwRegion", get("rgwRegion")),
        kerberos_realm=realm,
        kdc_host=hostname("kdcHost", get("kdcHost")),
        rgw_admin_host=hostname("rgwAdminHost", get("rgwAdminHost")),
        idp_server=hostname("idpServer", get("idpServer")),
        smtp_host=hostname("smtpHost", get("smtpHost")),
        gitsync_image_tag=_image_tag("gitsyncImageTag", get("gitsyncImageTag")),
        xcom_sidecar_tag=_image_tag("xcomSidecarTag", get("xcomSidecarTag")),
        service_domain=service_domain,
        public_domain=public_domain,
        kubeconfig_dir=_abs_path("kubeconfigDir", get("kubeconfigDir")),
        release_timeout_seconds=timeout,
        instance=instance,
        hadoop_cluster=hadoop,
        kerberos_principal=principal,
        op_ldap_role=op_ldap_role,
        extra_role_mappings=mappings,
        gateway_host=gateway_host,
        extra_fqdns=fqdns,
        namespace_labels=dict(labels),
        geoip=get("geoip", False),
        extra_values=extra_values,
        ssh_user=_unix_user("sshUser", get("sshUser")),
        kdc_host_key=_host_key("kdcHostKey", get("kdcHostKey")),
        rgw_admin_host_key=_host_key("rgwAdminHostKey", get("rgwAdminHostKey")),
        ssh_dial_timeout_seconds=_in_range("sshDialTimeoutSeconds", get("sshDialTimeoutSeconds"), 1, 300),
        ssh_dial_error_limit=_in_range("sshDialErrorLimit", get("sshDialErrorLimit"), 1, 100),
        remote_sudo=get("remoteSudo"),
        command_timeout_minutes=_in_range("commandTimeoutMinutes", get("commandTimeoutMinutes"), 1, 24 * 60),
        postgresql_image_tag=_image_tag("postgresqlImageTag", get("postgresqlImageTag")),
        pgbouncer_image_tag=_image_tag("pgbouncerImageTag", get("pgbouncerImageTag")),
        pg_instances=_in_range("pgInstances", get("pgInstances", 2), 1, 9),
        pg_storage_size=_quantity("pgStorageSize", get("pgStorageSize", "15Gi")),
        pg_wal_storage_size=_quantity("pgWalStorageSize", get("pgWalStorageSize", "30Gi")),
        pg_parameters=_pg_parameters(get("pgParameters", {})),
        pg_spec_overrides=_pg_spec_overrides(get("pgSpecOverrides", {})),
        pg_pooler_parameters=_pg_parameters(get("pgPoolerParameters", {}), "pgPoolerParameters"),
        canary_stack=dns_label("canaryStack", get("canaryStack")),
        image_history=tuple(image_version("imageHistory", v) for v in get("imageHistory", [])),
        chart_history=tuple(chart_version("chartHistory", v) for v in get("chartHistory", [])),
        phase=phase,
        legacy=legacy,
        takeover=get("takeover", False),
        takeover_changes=_takeover_changes("takeoverChanges", get("takeoverChanges", {})),
    )
    _check_credentials(raw, stack, phase, cfg.takeover)
    return cfg, _load_secrets(raw, typed, read_secret, stack)


def _check_credentials(raw: Mapping[str, Any], stack: str, phase: str, takeover: bool) -> None:
    """Key pairs come whole; while taking over, every credential the phase uses comes from config.

    Presence only (``raw``): an undecrypted secret of the offline preview counts as present."""
    def fix(key: str) -> str:
        return set_fix(stack, key, secret=True)

    for user, access, secret, _ in S3_KEY_PAIRS:
        for have, lack in ((access, secret), (secret, access)):
            if have in raw and lack not in raw:
                raise ConfigError(lack, f"missing: {have} is set and the {user} RGW user's key pair needs both halves",
                                  f"{fix(lack)}, or {rm_fix(stack, have, how='remove')} to have the pair generated")
    if not takeover:
        return
    # a generated credential would differ from the running instance's: the pods, the database's
    # encrypted fields and the out-of-band backup keep using the old one
    for key, what in (("fernetKey", "Fernet key (a new one makes every encrypted connection unreadable)"),
                      ("webserverSecretKey", "webserver secret key")):
        if key not in raw:
            raise ConfigError(key, f"missing: takeover is on, so it must be the running instance's {what}, never generated", fix(key))
    for user, access, secret, first_phase in S3_KEY_PAIRS:
        if PHASES.index(phase) >= PHASES.index(first_phase) and access not in raw:
            # (a lone secret key was refused above, so both halves are missing here)
            raise ConfigError(access, f"missing: takeover is on, so the {user} RGW user's existing key pair must come "
                                      f"from config (never generated; {secret} too)", fix(access))


def _phase_and_legacy(phase: str, legacy_raw: Mapping[str, Any] | None, raw: Mapping[str, Any], instance: str, chart: str,
                      stack: str) -> tuple[str, Legacy | None]:
    if phase not in PHASES:
        raise ConfigError("phase", f"{phase!r} is not a migration phase", f"use one of {', '.join(PHASES)}")
    if legacy_raw is None:
        if phase != "complete":
            raise ConfigError("legacy", f"is missing but phase {phase} migrates a legacy instance", "describe it (host, hostKey, dbHost, dbName, dbUser) or use phase complete for a new instance")
        if "legacyDbPassword" in raw:
            raise ConfigError("legacyDbPassword", "is set but there is no legacy instance", rm_fix(stack, "legacyDbPassword"))
        return phase, None
    try:
        lg = config_raw.legacy(legacy_raw, LEGACY_KEYS)
    except config_raw.RawError as exc:
        raise ConfigError(exc.key, exc.problem, exc.fix) from None
    for key, value in (("dbName", lg.dbName), ("dbUser", lg.dbUser)):
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value, re.ASCII):
            raise ConfigError(f"legacy.{key}", f"{value!r} is not a PostgreSQL identifier", "use lowercase letters, digits and '_'")
    port = _in_range("legacy.dbPort", lg.dbPort if lg.dbPort is not None else 5432, 1, 65535)
    logs_dir = _logs_dir("legacy.logsDir", lg.logsDir if lg.logsDir is not None else f"/srv/airflow-{instance}/logs")
    hiera = lg.hieraFile if lg.hieraFile is not None else f"hieradata/role/common/analytics_cluster/airflow/{instance}.yaml"
    if not re.fullmatch(r"[A-Za-z0-9_./-]+\.yaml", hiera, re.ASCII) or ".." in hiera.split("/") or hiera.startswith("/"):
        raise ConfigError("legacy.hieraFile", f"{hiera!r} is not a hiera file path", "e.g. hieradata/role/common/analytics_cluster/airflow/search.yaml")
    legacy = Legacy(
        host=hostname("legacy.host", lg.host),
        host_key=_host_key("legacy.hostKey", lg.hostKey),
        db_host=hostname("legacy.dbHost", lg.dbHost),
        db_port=port,
        db_name=lg.dbName,
        db_user=lg.dbUser,
        logs_dir=logs_dir,
        hiera_file=hiera,
        pg_service=dns_label("legacy.pgService", lg.pgService if lg.pgService is not None else "analytics"),
    )
    needs_password = phase in ("webserver", "scheduler", "database-import", "database")
    if needs_password and "legacyDbPassword" not in raw:
        raise ConfigError("legacyDbPassword", f"missing: phase {phase} connects to the legacy database", set_fix(stack, "legacyDbPassword", secret=True))
    if not needs_password and "legacyDbPassword" in raw:
        raise ConfigError("legacyDbPassword", "must be gone once the migration is complete", rm_fix(stack, "legacyDbPassword"))
    if phase != "complete":
        for key in ("fernetKey", "webserverSecretKey"):
            if key not in raw:
                raise ConfigError(key, f"missing: phase {phase} shares it with the legacy instance", set_fix(stack, key, secret=True, how="copy the legacy value with"))
    if phase in EXTERNAL_DB_PHASES and version_tuple(chart) > LAST_EXTERNAL_DB_CHART:
        raise ConfigError("airflowChartVersion", f"{chart} no longer reads the external-database values phase {phase} needs", "pin 0.0.120 or earlier in this stack until phase database")
    return phase, legacy






















@functools.lru_cache(maxsize=None)
def project_default(key: str) -> Any:
    """``key``'s default in Pulumi.yaml (the project file the program runs from)."""
    path = PROJECT_FILE
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        return doc["config"][key]["default"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ConfigError(key, f"cannot be read from {path.name} ({type(exc).__name__})", f"declare it under config: in {path.name}") from None


def _check_canary_is_a_project_setting(raw: Mapping[str, Any], stack: str) -> None:
    # A stack may not name itself (or another) the canary: the canary rule would not hold.
    if "canaryStack" in raw and raw["canaryStack"] != project_default("canaryStack"):
        raise ConfigError("canaryStack", "is a project setting and differs from Pulumi.yaml",
                          f"{rm_fix(stack, 'canaryStack')} (change the canary in Pulumi.yaml only)")
