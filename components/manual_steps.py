"""The runbook steps no API reaches, as exact, ready-to-apply instructions.

They become the ``manualSteps`` stack output (and show in the offline preview).  Secrets are
never in them: where a snippet needs one it says which secret stack output holds it
(``pulumi stack output --show-secrets <name>``).  Each step names the repository, the file,
the key and the snippet to add.

Each step carries ``due``, one of ``DUE_ORDER``: when in the instance's life it is done.  The
output is one flat list sorted by that order (steps of one group keep the order they are done
in), so a consumer reads it top to bottom or groups it by ``due``; ``DUE_HEADINGS`` gives each
group's heading, and ``render_text`` prints the groups under them (the offline preview).
"""

from __future__ import annotations

from typing import Any

import yaml

from components import handover, host_access, kerberos, rgw_user
from components.config import InstanceConfig
from components.config_keys import PHASES
from components.namespace import ADMIN_NG_STEP, admin_ng_entry

DEPLOYMENT_CHARTS = "operations/deployment-charts"
PUPPET_PRIVATE = "puppet private repository (/srv/git/private on the puppetserver)"
PUPPET = "operations/puppet"

# when a step is due, in the order the groups come; "phase:<p>" for each migration phase
BEFORE_FIRST_UP = "before-first-up"
AFTER_UP = "after-up"
RETIREMENT = "retirement"
DUE_ORDER: tuple[str, ...] = (BEFORE_FIRST_UP, AFTER_UP, *(f"phase:{p}" for p in PHASES), RETIREMENT)
DUE_HEADINGS: dict[str, str] = {
    BEFORE_FIRST_UP: "Before the first `pulumi up` (it needs them: the deploy kubeconfig, the namespace, the OIDC secret, the SSH user's sudo rules)",
    AFTER_UP: "After `pulumi up` (once the instance runs)",
    **{f"phase:{p}": f"At migration phase {p} (around its `pulumi up`)" for p in PHASES},
    RETIREMENT: "At retirement (only when the instance is retired for good)",
}


def _due(due: str, steps: list[dict[str, str]]) -> list[dict[str, str]]:
    assert due in DUE_ORDER, due
    return [{**s, "due": due} for s in steps]


def in_due_order(steps: list[dict[str, str]]) -> list[dict[str, str]]:
    """Sorted by ``DUE_ORDER``; within a group, the order given (a stable sort)."""
    return sorted(steps, key=lambda s: DUE_ORDER.index(s["due"]))


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=200)


def _secret_ref(output: str, field: str) -> str:
    return f"<secret: pulumi stack output --show-secrets {output} | jq -r .{field}>"


def manual_steps(cfg: InstanceConfig) -> list[dict[str, str]]:
    ns = cfg.namespace
    public = cfg.extra_fqdns[0]
    steps: list[dict[str, str]] = [
        {
            "step": "Kubernetes read and deploy users",
            "where": f"{PUPPET_PRIVATE}: the Kubernetes infrastructure users of {cfg.environment} (file not named by the runbook)",
            "key": f"{ns} / {ns}-deploy",
            "snippet": (
                f"Create the read user '{ns}' and the deploy user '{cfg.deploy_user}' tokens for {cfg.environment}; "
                f"puppet then writes {cfg.deploy_kubeconfig} on the deployment servers (used by this stack's deploy provider)."
            ),
        },
        {
            "step": f"{ADMIN_NG_STEP} (namespace, labels, deploy ClusterRole, TLS certificate SANs)",
            "where": f"{DEPLOYMENT_CHARTS}: helmfile.d/admin_ng/values/{cfg.environment}/values.yaml",
            "key": f"namespaces.{ns}",
            # the namespace, its labels and the deploy RoleBinding: this program only reads them
            "snippet": _yaml({"namespaces": {ns: admin_ng_entry(cfg)}})
            + f"# then deploy admin_ng: helmfile -e {cfg.environment} -i apply (helmfile.d/admin_ng);\n"
            + "# `pulumi up` changes nothing until this namespace exists with these labels\n",
        },
        {
            "step": "ceph-csi rbd tenant namespace (CNPG volumes, ceph-rbd-ssd)",
            "where": f"{DEPLOYMENT_CHARTS}: helmfile.d/admin_ng/values/{cfg.environment}/ceph-csi-rbd-values.yaml",
            "key": "tenantNamespaces (kube-system first, then sorted)",
            "snippet": _yaml({"tenantNamespaces": [ns]}),
        },
        {
            "step": "ceph-csi cephfs tenant namespace (DAGs and kerberos PVCs, ceph-cephfs-ssd)",
            "where": f"{DEPLOYMENT_CHARTS}: helmfile.d/admin_ng/values/{cfg.environment}/ceph-csi-cephfs-values.yaml",
            "key": "tenantNamespaces (kube-system first, then sorted)",
            "snippet": _yaml({"tenantNamespaces": [ns]}),
        },
        {
            "step": "CloudNativePG operator watches the namespace",
            "where": f"{DEPLOYMENT_CHARTS}: helmfile.d/admin_ng/values/{cfg.environment}/cloudnative-pg-values.yaml",
            "key": "watchedNamespaces (cloudnative-pg-operator first, then sorted)",
            "snippet": _yaml({"watchedNamespaces": [ns]}) + f"then deploy admin_ng: helmfile -e {cfg.environment} -i apply (helmfile.d/admin_ng)",
        },
        {
            "step": "DNS records (internal discovery name and public name)",
            "where": "operations/dns: templates/wmnet (discovery) and templates/wikimedia.org (public) (inferred files)",
            "key": f"{cfg.service_fqdn}, {public}",
            "snippet": (
                f"{cfg.service_fqdn}: the {cfg.environment} ingress, like the other airflow-*.{cfg.service_domain} records\n"
                f"{public}: the CDN (same record as the other airflow-*.{cfg.public_domain} names)"
            ),
        },
        {
            "step": "LDAP group for Op access",
            "where": "LDAP (offboard/ldap tooling)",
            "key": cfg.op_ldap_role or "(none: opLdapRole is empty)",
            "snippet": f"create the group {cfg.op_ldap_role} and add the instance's operators" if cfg.op_ldap_role else "nothing to do",
        },
        {
            "step": "IDP (CAS) OIDC service registration",
            "where": f"{PUPPET}: hieradata/role/common/idp.yaml on {cfg.idp_server}",
            "key": f"profile::idp::services.{cfg.oidc_client_id}",
            "snippet": (
                f"register service id {cfg.oidc_client_id} for https://{public}/; after puppet ran on the idp servers:\n"
                f"  sudo cat /etc/cas/services/{cfg.oidc_client_id}-*.json | jq -r .clientSecret \\\n"
                f"    | pulumi config set --secret -s {cfg.instance} oidcClientSecret"
            ),
        },
        {
            "step": "ATS redirect from the public name to the Kubernetes ingress",
            "where": f"{PUPPET}: the trafficserver backend mapping rules (file not named by the runbook; follow the previous airflow redirect patch)",
            "key": public,
            "snippet": f"map https://{public} to the {cfg.environment} ingress ({cfg.gateway_host}); wait ~30 min for puppet on the cache hosts",
        },
    ]
    if cfg.phase_at_least("database-import"):
        steps.append({
            "step": "Out-of-band backup of the PostgreSQL bucket",
            "where": f"{PUPPET_PRIVATE}: hieradata/role/common/mariadb/misc/analytics/backup.yaml",
            "key": f"profile::ceph::backup::s3_local::sources.{cfg.pg_bucket}",
            "snippet": _yaml(
                {
                    "profile::ceph::backup::s3_local::sources": {
                        cfg.pg_bucket: {
                            "access_key": _secret_ref("pgBucketCredentials", "access_key"),
                            "secret_key": _secret_ref("pgBucketCredentials", "secret_key"),
                        }
                    }
                }
            ),
        })
    # Due before the first up: what the program needs to run at all (the deploy kubeconfig, the
    # namespace with its labels and tenants, the OIDC client secret, a required config key).  After
    # up: what makes the running instance reachable and backed up.
    after = ("DNS records", "LDAP group", "ATS redirect", "Out-of-band backup")
    before = [s for s in steps if not s["step"].startswith(after)]
    later = [s for s in steps if s["step"].startswith(after)]
    # A take-over: its hand-over (steps 1-4 end with the first up, 5-6 follow it) after the
    # prerequisites, which a running instance has already met (they are checks then).
    takeover = handover.steps(cfg) if cfg.takeover else []
    tagged = (
        _due(BEFORE_FIRST_UP, before)
        # the SSH user's sudo rules on each host the remote steps run on (components/host_access.py)
        + _due(BEFORE_FIRST_UP, host_access.manual_steps(cfg))
        + [s for s in takeover if s["due"] == BEFORE_FIRST_UP]
        + [s for s in takeover if s["due"] == AFTER_UP]
        + _due(AFTER_UP, later)
        + legacy_steps(cfg)
        + retirement_steps(cfg)
    )
    return in_due_order(tagged)


def retirement_steps(cfg: InstanceConfig) -> list[dict[str, str]]:
    """What ``pulumi destroy`` keeps, and how to remove it by hand once the instance is retired.

    The delete commands of the RGW user and keytab Commands print the same on stderr, but
    pulumi-command shows a delete's output only while it runs (pulumi-command v1.2.1
    remote/commandController.go Delete; the output reaches the user only in a failure's error).
    """
    lines: list[str] = [
        "Only when the instance is retired for good; `pulumi destroy` deletes none of these (protected, retained).",
        f"Buckets are retained: {cfg.logs_bucket}" + (f", {cfg.pg_bucket}" if cfg.phase_at_least("database-import") else ""),
    ]
    if cfg.phase_at_least("scheduler"):
        lines += rgw_user.kept_instructions(cfg.airflow_s3_user)
        lines += kerberos.kept_instructions(cfg.kerberos_realm, kerberos.principals(cfg.runs_as_user, cfg.service_fqdn, cfg.kerberos_realm))
    if cfg.phase_at_least("database-import"):
        lines += rgw_user.kept_instructions(cfg.pg_s3_user)
    if not cfg.phase_at_least("scheduler"):
        return []
    return [{
        "due": RETIREMENT,
        "step": "Retiring the instance: what stays after `pulumi destroy`",
        "where": f"{cfg.rgw_admin_host} and {cfg.kdc_host}",
        "key": f"{cfg.airflow_s3_user}, {cfg.pg_s3_user}, principals of {cfg.service_fqdn}",
        "snippet": "\n".join(lines),
    }]


def legacy_steps(cfg: InstanceConfig) -> list[dict[str, str]]:
    """What an operator does by hand at each migration phase (runbook "Migrating an existing instance")."""
    legacy = cfg.legacy
    if legacy is None:
        return []
    inst = cfg.instance
    secrets_key = f"profile::airflow::instances_secrets.{inst}.secret_key"
    if cfg.phase == "webserver":
        return [{
            "due": "phase:webserver",
            "step": "Share the webserver secret key with the legacy scheduler",
            "where": f"{PUPPET_PRIVATE}: {legacy.hiera_file}",
            "key": secrets_key,
            "snippet": _yaml({"profile::airflow::instances_secrets": {inst: {"secret_key": f"<secret: pulumi config get -s {inst} webserverSecretKey>"}}})
            + f"then run puppet on {legacy.host} and restart every airflow service there (the k8s webserver reads task logs from it)",
        }]
    if cfg.phase == "scheduler":
        return [{
            "due": "phase:scheduler",
            "step": "Announce the scheduler downtime, then check DAGs on Kubernetes",
            "where": "Slack and IRC; then https://" + cfg.extra_fqdns[0],
            "key": f"{legacy.host}: airflow-{{webserver,kerberos,scheduler}}@*",
            "snippet": (
                "`pulumi up` stops the legacy services between the two log sync passes: announce it first.\n"
                f"Once DAGs run on Kubernetes, submit a puppet patch removing profile::airflow::instances.{inst} "
                f"({PUPPET}: {legacy.hiera_file})"
            ),
        }]
    if cfg.phase == "database-import":
        return [{
            "due": "phase:database-import",
            "step": "Announce the database downtime",
            "where": "Slack and IRC",
            "key": f"{legacy.db_host}/{legacy.db_name}",
            "snippet": "`pulumi up` scales Airflow to 0 replicas before CloudNativePG imports the legacy database; "
            "Airflow stays down until phase database verifies the import and cuts over.",
        }]
    if cfg.phase == "database":
        return []
    # complete: legacy clean-up
    return _due("phase:complete", [
        {
            "step": "Remove the legacy instance's secrets from puppet",
            "where": f"{PUPPET_PRIVATE}: {legacy.hiera_file}",
            "key": f"profile::airflow::instances_secrets.{inst}",
            "snippet": _yaml({"profile::airflow::instances_secrets": {inst: "<delete this whole entry>"}}),
        },
        {
            "step": "Remove the helmfile-era private values, if they still exist",
            "where": f"{PUPPET_PRIVATE}: hieradata/role/common/deployment_server/kubernetes.yaml",
            "key": f"dse-k8s.{cfg.namespace} and dse-k8s.{cfg.pg_service_name}",
            "snippet": (
                f"delete dse-k8s.{cfg.pg_service_name}.{cfg.environment}.cluster.initdb.import.password and "
                f"dse-k8s.{cfg.namespace}.{cfg.environment}.config.airflow.postgresqlPass; "
                "this stack holds every secret the instance needs"
            ),
        },
        {
            "step": "Retire the legacy database",
            "where": f"{legacy.db_host}",
            "key": f"{legacy.db_name} (user {legacy.db_user})",
            "snippet": f"after the team's retention period: pg_dump it to the backup host, then drop database {legacy.db_name} and role {legacy.db_user}",
        },
    ])


def render_text(steps: list[dict[str, str]]) -> str:
    """Human-readable form, as printed by the preview: the steps under the heading of when they
    are due, in ``DUE_ORDER``, numbered through."""
    out = []
    group = None
    for i, s in enumerate(in_due_order(steps), 1):
        if s["due"] != group:
            group = s["due"]
            out.append(f"{DUE_HEADINGS[group]}:\n")
        out.append(f"{i}. {s['step']}\n   where: {s['where']}\n   key:   {s['key']}\n")
        out.extend(f"   | {line}\n" for line in s["snippet"].rstrip("\n").splitlines())
    return "".join(out)
