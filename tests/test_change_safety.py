"""Safety across change: an image upgrade, a chart upgrade and an edit of every non-secret
config key never remove or replace a protected data resource, and never change the Fernet
key, the webserver key or the keytab.  Keys that name *where* the instance lives (its
identity) are listed apart: changing them would replace protected resources, which the
engine refuses because they are protected; the tests prove that too, so the list is honest.
"""

import pytest

from components.config import KEYS
from tests.conftest import run_stack
from tools import mockrun

COMMAND = "command:remote:Command"
NEW_IMAGE = "airflow-2.11.3-py3.11-2026-11-20-101010-" + "a" * 40 + "@sha256:" + "b" * 64

# one valid edit per non-secret key (applied to the canary test-k8s, which may take any version)
EDITS = {
    "chartRepository": "https://helm-charts.example.wikimedia.org/stable/",
    "airflowChartVersion": "0.0.178",
    "imageVersion": NEW_IMAGE,
    "dockerRegistry": "docker-registry.wikimedia.org",
    "rgwEndpoint": "https://rgw.codfw.dpe.anycast.wmnet",
    "kdcHost": "krb2002.codfw.wmnet",
    "rgwAdminHost": "cephosd1002.eqiad.wmnet",
    "idpServer": "idp.wikimedia.org",
    "smtpHost": "mx-out2001.wikimedia.org",
    "gitsyncImageTag": "2026-01-01-000000-" + "c" * 40,
    "xcomSidecarTag": "20261101",
    "publicDomain": "wikimedia.net",
    "releaseTimeoutSeconds": 1200,
    "canaryStack": "test-k8s",
    "sshUser": "deploy-airflow",
    "kdcHostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKBzx8K3q4nJQDAvVcb+CilCTNg7pFSspesGsHaer2kZ",
    "rgwAdminHostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFNETdiwUsLhun9/EE9oBhM1Sg0AovrcygzDq+o/gcJ+",
    "sshDialTimeoutSeconds": 30,
    "sshDialErrorLimit": 3,
    "remoteSudo": False,
    "commandTimeoutMinutes": 30,
    "postgresqlImageTag": "15.10-1",
    "pgbouncerImageTag": "2026-01-01-000000-" + "d" * 40,
    "hadoopCluster": "production",
    "opLdapRole": "airflow-test-k8s-ops",
    "extraRoleMappings": {"airflow-analytics-ops": ["Op"]},
    "gatewayHost": "airflow-testk8s",
    "extraFqdns": ["airflow-test-k8s.wikimedia.org", "airflow-test.wikimedia.org"],
    "namespaceLabels": {"pod-security.wmf.org/profile": "baseline"},
    "geoip": False,
    "extraValues": {"config": {"airflow": {"config": {"core": {"parallelism": 64}}}}},
    "pgInstances": 3,
    "pgStorageSize": "40Gi",
    "pgWalStorageSize": "60Gi",
    "pgParameters": {"max_connections": "300"},
    "pgSpecOverrides": {"resources": {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}}},
    "pgPoolerParameters": {"default_pool_size": "50"},
    "imageHistory": [NEW_IMAGE],
    "chartHistory": ["0.0.120", "0.0.177"],
    "takeoverChanges": {"config.auth.op_ldap_role": "documentation for takeover-diff; deploys nothing"},
}
# Where the instance lives: a change means a different namespace, bucket, realm or
# principal, i.e. a new instance.  Protected resources make the engine refuse it.
IDENTITY = {
    "instance": "test-k9s",  # also refused by the program: the stack is named after the instance
    "environment": "dse-k8s-codfw",
    "kerberosRealm": "WIKIMEDIA.TEST",
    "serviceDomain": "svc.eqiad.wmnet",
    "kerberosPrincipal": "analytics-test/airflow-test-k8s.discovery.wmnet",
    "rgwRegion": "dpe2",
    "kubeconfigDir": "/etc/kubernetes/other",
}
# covered elsewhere: secrets (test_generated_secrets, test_remote_commands) and the
# migration keys (test_migration_phases walks every phase pair); takeover only refuses to
# generate a credential (test_takeover: moving pairs into config changes nothing else)
ELSEWHERE = {"phase", "legacy", "takeover", "allowPhaseChange"}  # allowPhaseChange: tests/test_phase_guard.py


def test_every_non_secret_key_is_covered():
    plain = {k for k, spec in KEYS.items() if not spec.secret}
    assert plain == set(EDITS) | set(IDENTITY) | ELSEWHERE


def replacement_inputs(reg, mon):
    i = reg.inputs
    if reg.type == "aws:s3/bucket:Bucket":
        provider = mon.registrations[reg.provider.rsplit("::", 1)[0]]
        # pulumi-aws 7 gives every resource the provider's region; a new region replaces it
        return {"bucket": i.get("bucket"), "provider": provider.urn, "region": provider.inputs.get("region")}
    if reg.type == COMMAND:
        return {"triggers": mockrun.masked(i.get("triggers"))}
    if reg.type.startswith("kubernetes:"):
        return {"name": i["metadata"]["name"], "namespace": i["metadata"].get("namespace"), "kind": i.get("kind")}
    if reg.type.startswith("random:"):
        return dict(i)
    return {}


def identity_of(mon):
    out = {r.urn: replacement_inputs(r, mon) for r in mon.registered() if r.protect}
    keytab = [r for r in mon.by_type(COMMAND) if r.name.endswith("-kerberos-keytab")]
    # the keytab only changes when its principals (triggers) change: -norandkey, normalized
    out["keytab"] = mockrun.masked(keytab[0].inputs.get("triggers")) if keytab else None
    return out


_BASE = {}


def base():
    if "m" not in _BASE:
        run = run_stack("test-k8s")
        assert run.error is None
        _BASE["m"] = run.monitor
    return _BASE["m"]


def edited(key, value):
    run = run_stack("test-k8s", overrides={key: value})
    assert run.error is None, f"edit {key}={value!r} was rejected: {run.error}"
    return run.monitor


@pytest.mark.parametrize("key", sorted(EDITS))
def test_edit_keeps_protected_resources_and_secrets(key):
    before, after = identity_of(base()), identity_of(edited(key, EDITS[key]))
    assert set(before) <= set(after), f"editing {key} removes {sorted(set(before) - set(after))}"
    for urn, inputs in before.items():
        assert after[urn] == inputs, f"editing {key} would replace {urn.rsplit('::', 1)[-1]}"


@pytest.mark.parametrize("key", sorted(IDENTITY))
def test_identity_edit_touches_protected_resources_so_the_engine_refuses_it(key):
    run = run_stack("test-k8s", overrides={key: IDENTITY[key]})
    if run.error is not None:  # refused by the program itself
        assert str(run.error).startswith(f"airflow:{key}: ")
        return
    before, after = identity_of(base()), identity_of(run.monitor)
    changed = [u for u in before if u not in after or after[u] != before[u]]
    if key == "kubeconfigDir":
        # a different kubeconfig means a different cluster: pulumi-kubernetes replaces every
        # object of the provider, which protect refuses for the Namespace and the Cluster
        providers = [r for r in run.monitor.by_type("pulumi:providers:kubernetes")]
        assert all(p.inputs["kubeconfig"].startswith("/etc/kubernetes/other/") for p in providers)
        return
    assert changed, f"{key} was listed as identity but changes no protected resource"


def test_instance_edit_is_refused_by_the_program():
    run = run_stack("test-k8s", overrides={"instance": "test-k9s"})
    assert str(run.error).startswith("airflow:instance: 'test-k9s' differs from the stack name 'test-k8s'")
    assert run.monitor.registered() == []


def test_fernet_and_webserver_keys_survive_every_edit():
    names = ("test-k8s-fernet-key", "test-k8s-webserver-secret-key")
    for key, value in EDITS.items():
        mon = edited(key, value)
        for name in names:
            reg = mon.named(name)
            assert reg.protect and reg.inputs == base().named(name).inputs, f"editing {key} changes {name}"
