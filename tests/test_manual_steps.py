"""Steps no API reaches: exact file, key and snippet, secrets masked."""

import yaml

from tests.conftest import rendered, stack_config

EXPECTED_STEPS = [
    "Kubernetes read and deploy users",
    "admin_ng namespace entry (namespace, labels, deploy ClusterRole, TLS certificate SANs)",
    "ceph-csi rbd tenant namespace (CNPG volumes, ceph-rbd-ssd)",
    "ceph-csi cephfs tenant namespace (DAGs and kerberos PVCs, ceph-cephfs-ssd)",
    "CloudNativePG operator watches the namespace",
    "DNS records (internal discovery name and public name)",
    "LDAP group for Op access",
    "IDP (CAS) OIDC service registration",
    "ATS redirect from the public name to the Kubernetes ingress",
    "Out-of-band backup of the PostgreSQL bucket",
]


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
