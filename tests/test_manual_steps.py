"""Steps no API reaches: exact file, key and snippet, secrets masked."""

import pytest
import yaml

from tests.conftest import rendered, stack_cfg, stack_config

PREREQUISITES = [
    "Kubernetes read and deploy users",
    "admin_ng namespace entry (namespace, labels, deploy ClusterRole, TLS certificate SANs)",
    "ceph-csi rbd tenant namespace (CNPG volumes, ceph-rbd-ssd)",
    "ceph-csi cephfs tenant namespace (DAGs and kerberos PVCs, ceph-cephfs-ssd)",
    "CloudNativePG operator watches the namespace",
    "IDP (CAS) OIDC service registration",
]
AFTER_UP = [
    "DNS records (internal discovery name and public name)",
    "LDAP group for Op access",
    "ATS redirect from the public name to the Kubernetes ingress",
    "Out-of-band backup of the PostgreSQL bucket",
]
SUDO_RULES = [  # components/host_access.py: the SSH user's sudoers rules, one step per host
    "sudo rules for pulumi-airflow on the RGW admin host cephosd1001.eqiad.wmnet",
    "sudo rules for pulumi-airflow on the KDC krb1001.eqiad.wmnet",
]
BEFORE_FIRST_UP = PREREQUISITES + SUDO_RULES
EXPECTED_STEPS = BEFORE_FIRST_UP + AFTER_UP


def steps(stack):
    return {s["step"]: s for s in rendered(stack).stack_outputs["manualSteps"]}


def test_every_unreachable_runbook_step_is_emitted():
    assert list(steps("test-k8s")) == EXPECTED_STEPS + ["Retiring the instance: what stays after `pulumi destroy`"]
    # search was migrated: the legacy clean-up follows
    assert list(steps("search")) == EXPECTED_STEPS + [
        "Remove the legacy instance's secrets from puppet",
        "Remove the helmfile-era private values, if they still exist",
        "Retire the legacy database",
        "Retiring the instance: what stays after `pulumi destroy`",
    ]


def test_admin_ng_namespace_entry_is_exact_yaml():
    s = steps("search")["admin_ng namespace entry (namespace, labels, deploy ClusterRole, TLS certificate SANs)"]
    assert s["where"] == "operations/deployment-charts: helmfile.d/admin_ng/values/dse-k8s-eqiad/values.yaml"
    assert yaml.safe_load(s["snippet"]) == {
        "namespaces": {"airflow-search": {"deployClusterRole": "deploy-airflow", "tlsExtraSANs": ["airflow-search.wikimedia.org"]}}
    }
    # GeoIP instances: admin_ng's analytics-pss-labels (the hostPath exception for /usr/share/GeoIP)
    geoip = steps("test-k8s")["admin_ng namespace entry (namespace, labels, deploy ClusterRole, TLS certificate SANs)"]
    assert yaml.safe_load(geoip["snippet"])["namespaces"]["airflow-test-k8s"]["labels"] == {
        "pod-security.wmf.org/profile": "restricted",
        "pod-security.wmf.org/restrict-volume-types-restricted-volumes": "exclude",
        "pod-security.wmf.org/disallow-host-path": "exclude",
        "pod-security.wmf.org/allow-hostpath-analytics": "include",
    }


def test_retiring_lists_what_destroy_keeps_with_the_commands_to_remove_it():
    s = steps("search")["Retiring the instance: what stays after `pulumi destroy`"]["snippet"]
    assert "sudo radosgw-admin user rm --uid=airflow-search --purge-data" in s
    assert "sudo radosgw-admin user rm --uid=postgresql-airflow-search --purge-data" in s
    assert "sudo kadmin.local -r WIKIMEDIA delprinc -force HTTP/airflow-search.discovery.wmnet@WIKIMEDIA" in s
    assert "logs.airflow-search.dse-k8s-eqiad" in s


def test_tenant_and_watched_namespaces():
    s = steps("test-k8s")
    rbd = s["ceph-csi rbd tenant namespace (CNPG volumes, ceph-rbd-ssd)"]
    assert rbd["where"].endswith("dse-k8s-eqiad/ceph-csi-rbd-values.yaml")
    assert yaml.safe_load(rbd["snippet"]) == {"tenantNamespaces": ["airflow-test-k8s"]}
    cephfs = s["ceph-csi cephfs tenant namespace (DAGs and kerberos PVCs, ceph-cephfs-ssd)"]
    assert cephfs["where"].endswith("dse-k8s-eqiad/ceph-csi-cephfs-values.yaml")
    cnpg = s["CloudNativePG operator watches the namespace"]
    assert cnpg["where"].endswith("dse-k8s-eqiad/cloudnative-pg-values.yaml")
    assert "- airflow-test-k8s" in cnpg["snippet"]


def test_backup_entry_names_the_pg_bucket_and_masks_keys():
    s = steps("search")["Out-of-band backup of the PostgreSQL bucket"]
    assert s["where"].endswith("hieradata/role/common/mariadb/misc/analytics/backup.yaml")
    entry = yaml.safe_load(s["snippet"])["profile::ceph::backup::s3_local::sources"]
    assert list(entry) == ["postgresql-airflow-search.dse-k8s-eqiad"]
    keys = entry["postgresql-airflow-search.dse-k8s-eqiad"]
    assert keys["access_key"].startswith("<secret: pulumi stack output --show-secrets pgBucketCredentials")


def test_idp_step_gives_the_command_that_stores_the_client_secret():
    s = steps("search")["IDP (CAS) OIDC service registration"]
    assert "/etc/cas/services/airflow_search-*.json | jq -r .clientSecret" in s["snippet"]
    assert "pulumi config set --secret -s search oidcClientSecret" in s["snippet"]


def test_ldap_step_follows_op_ldap_role():
    assert "airflow-search-ops" in steps("search")["LDAP group for Op access"]["snippet"]
    assert steps("test-k8s")["LDAP group for Op access"]["snippet"] == "nothing to do"


def test_manual_steps_carry_no_secret():
    config, secret_keys = stack_config("search")
    text = repr(rendered("search").stack_outputs["manualSteps"])
    for key in secret_keys:
        assert config[key] not in text, f"{key} leaked into the manual steps"


# --- when each step is due ------------------------------------------------------------------

from components import handover, manual_steps  # noqa: E402
from components.config_keys import PHASES  # noqa: E402
from tests.conftest import run_stack  # noqa: E402
from tests.test_migration_phases import phase_overrides  # noqa: E402

CLOSED_DUE_SET = {"before-first-up", "after-up", *(f"phase:{p}" for p in PHASES), "retirement"}


def _phase_steps(phase, **extra):
    overrides, secrets = phase_overrides(phase)
    run = run_stack("search", overrides={**overrides, **extra.get("overrides", {})},
                    secret_overrides={**secrets, **extra.get("secrets", {})})
    assert run.error is None, run.error
    return run.monitor.stack_outputs["manualSteps"]


def _takeover_steps():
    from tests.test_takeover import PAIRS, TAKEOVER

    run = run_stack("search", overrides=TAKEOVER, secret_overrides=PAIRS)
    assert run.error is None, run.error
    return run.monitor.stack_outputs["manualSteps"]


def test_the_due_tags_are_a_closed_set_in_a_fixed_order():
    assert tuple(manual_steps.DUE_ORDER) == (
        "before-first-up", "after-up", "phase:webserver", "phase:scheduler", "phase:database-import",
        "phase:database", "phase:complete", "retirement")
    assert set(manual_steps.DUE_HEADINGS) == CLOSED_DUE_SET
    assert (handover.BEFORE_FIRST_UP, handover.AFTER_UP) == (manual_steps.BEFORE_FIRST_UP, manual_steps.AFTER_UP)


@pytest.mark.parametrize("phase", PHASES)
def test_every_step_of_every_phase_is_due_at_a_known_time_and_listed_in_due_order(phase):
    out = _phase_steps(phase)
    assert all(s.get("due") in CLOSED_DUE_SET for s in out), [s["step"] for s in out if s.get("due") not in CLOSED_DUE_SET]
    ranks = [manual_steps.DUE_ORDER.index(s["due"]) for s in out]
    assert ranks == sorted(ranks), [s["due"] for s in out]
    # the prerequisites of the first up lead, whatever the phase
    first = [s["step"] for s in out if s["due"] == "before-first-up"]
    assert out[:len(first)] == [s for s in out if s["due"] == "before-first-up"]
    assert first[:6] == PREREQUISITES, first
    # then the SSH user's sudo rules on each host this phase runs steps on (the legacy VM too, while migrating)
    hosts = [name.split(" on the ", 1)[1] for name in first[6:]]
    assert all(name.startswith("sudo rules for pulumi-airflow on the ") for name in first[6:]), first
    assert hosts == ["RGW admin host cephosd1001.eqiad.wmnet", "KDC krb1001.eqiad.wmnet"] + (
        [] if phase == "complete" else ["legacy Airflow VM an-airflow1005.eqiad.wmnet"]), hosts
    # a phase's own steps are tagged with that phase and no other phase's steps appear
    legacy = [s for s in out if s["due"].startswith("phase:")]
    assert legacy and {s["due"] for s in legacy} == {f"phase:{phase}"} if phase != "database" else not legacy


def test_the_example_stacks_steps_carry_their_due_tags():
    by_step = {s["step"]: s["due"] for s in rendered("search").stack_outputs["manualSteps"]}
    assert {by_step[s] for s in BEFORE_FIRST_UP} == {"before-first-up"}
    assert {by_step[s] for s in AFTER_UP} == {"after-up"}
    assert by_step["Retire the legacy database"] == "phase:complete"
    assert by_step["Retiring the instance: what stays after `pulumi destroy`"] == "retirement"
    assert _phase_steps("webserver")[-1]["due"] == "phase:webserver"  # webserver has no retirement step yet
    assert [s["due"] for s in _phase_steps("scheduler") if s["step"].startswith("Announce")] == ["phase:scheduler"]


def test_a_takeover_does_its_handover_around_the_first_up():
    out = _takeover_steps()
    names = [s["step"] for s in out]
    handover_names = [s["step"] for s in handover.steps(stack_cfg("search"))]
    # prerequisites (a running instance has met them: checks), then take-over 1-4 ending with the first up
    n = len(BEFORE_FIRST_UP)
    assert names[:n + 4] == BEFORE_FIRST_UP + handover_names[:4]
    # 5-6 (end the take-over, retire the helmfile dirs) lead what is due after the up
    assert names[n + 4:n + 6] == handover_names[4:] and [s["due"] for s in out[n + 4:n + 6]] == ["after-up", "after-up"]
    assert names[n + 6:n + 10] == AFTER_UP


def test_the_preview_text_groups_the_steps_under_their_headings_in_due_order():
    out = rendered("search").stack_outputs["manualSteps"]
    n = len(EXPECTED_STEPS)
    text = manual_steps.render_text(out[n:] + out[:n])  # the later groups first: render_text sorts
    headings = [line for line in text.splitlines() if not line[:1].isdigit() and not line.startswith(" ")]
    assert headings == [
        "Before the first `pulumi up` (it needs them: the deploy kubeconfig, the namespace, the OIDC secret, the SSH user's sudo rules):",
        "After `pulumi up` (once the instance runs):",
        "At migration phase complete (around its `pulumi up`):",
        "At retirement (only when the instance is retired for good):",
    ]
    numbered = [line.split(". ", 1)[1] for line in text.splitlines() if line[:1].isdigit()]
    assert numbered[:n] == EXPECTED_STEPS  # numbered through, in due order
    first_after = f"{len(BEFORE_FIRST_UP) + 1}. DNS records"
    assert text.index("After `pulumi up`") < text.index(first_after) < text.index("At migration phase complete")


# --- the SSH user's sudo rules (issue 14) ---

def test_each_remote_host_gets_its_sudo_rules_step_with_the_exact_rendered_file():
    from components import host_access, sudoers

    cfg = stack_cfg("search")
    out = steps("search")
    accesses = host_access.hosts(cfg)
    assert [a.kind for a in accesses] == ["RGW admin host", "KDC"], "search (complete) runs steps on the RGW admin host and the KDC"
    for access in accesses:
        step = out[f"sudo rules for {cfg.ssh_user} on the {access.kind} {access.host}"]
        assert step["due"] == "before-first-up", step["step"]
        assert step["key"] == f"/etc/sudoers.d/{access.rules.file_name}", step["step"]
        assert step["snippet"].startswith(sudoers.render(access.rules)), f"{step['step']}: not the rendered rules"
        assert "NOPASSWD" in step["snippet"] and "ALL = (root) NOPASSWD: ALL" not in step["snippet"], step["step"]

