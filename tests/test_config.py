"""Bad config is rejected with one line naming the key and the fix, before any resource."""

import pytest

from components.config import ConfigError
from tests.conftest import run_stack, stack_config
from tools import stackconfig


def rejected(stack="search", **kw):
    run = run_stack(stack, **kw)
    assert isinstance(run.error, ConfigError), f"expected a ConfigError, got {run.error!r}"
    message = str(run.error)
    assert "\n" not in message, f"error must be one line: {message!r}"
    assert run.monitor.registered() == [], "no resource may be registered on bad config"
    return message


@pytest.mark.parametrize(
    "overrides, key, words",
    [
        ({"instance": "Search"}, "airflow:instance", "DNS label"),
        ({"instance": "search;rm -rf /"}, "airflow:instance", "DNS label"),
        ({"instance": "a" * 31}, "airflow:instance", "at most 30"),
        ({"instance": "-search"}, "airflow:instance", "DNS label"),
        ({"rgwEndpoint": "rgw.eqiad.dpe.anycast.wmnet"}, "airflow:rgwEndpoint", "https://"),
        ({"rgwEndpoint": "http://rgw.eqiad.dpe.anycast.wmnet"}, "airflow:rgwEndpoint", "https://"),
        ({"chartRepository": "ftp://x.example.org/"}, "airflow:chartRepository", "https://"),
        ({"kdcHost": "krb1001"}, "airflow:kdcHost", "fully qualified"),
        ({"kdcHost": "krb 1001.eqiad.wmnet"}, "airflow:kdcHost", "fully qualified"),
        ({"airflowChartVersion": "v0.0.177"}, "airflow:airflowChartVersion", "MAJOR.MINOR.PATCH"),
        ({"airflowChartVersion": "0.0.59"}, "airflow:airflowChartVersion", "0.0.65"),
        ({"imageVersion": "latest"}, "airflow:imageVersion", "@sha256:"),
        ({"imageVersion": "airflow-2.11.2-py3.11-2026-06-10-131616-6b0fbe1f9b58505d433c58641979ec063ddb15ee"}, "airflow:imageVersion", "@sha256:"),
        ({"hadoopCluster": "analytics"}, "airflow:hadoopCluster", "production, test, none"),
        ({"kerberosPrincipal": "analytics/airflow-search.discovery.wmnet@WIKIMEDIA"}, "airflow:kerberosPrincipal", "no realm"),
        ({"kerberosRealm": "wikimedia"}, "airflow:kerberosRealm", "upper case"),
        ({"releaseTimeoutSeconds": "0"}, "airflow:releaseTimeoutSeconds", "finite"),
        ({"releaseTimeoutSeconds": "soon"}, "airflow:releaseTimeoutSeconds", "integer"),
        ({"geoip": "yes"}, "airflow:geoip", "true or false"),
        ({"extraFqdns": "airflow-search.wikimedia.org"}, "airflow:extraFqdns", "list"),
        ({"extraRoleMappings": {"airflow-x-ops": ["Root"]}}, "airflow:extraRoleMappings", "Admin/Op"),
        ({"opLdapRole": "Airflow Ops"}, "airflow:opLdapRole", "LDAP group"),
        ({"namespaceLabels": {"bad key!": "x"}}, "airflow:namespaceLabels", "label"),
        ({"kubeconfigDir": "etc/kubernetes"}, "airflow:kubeconfigDir", "absolute"),
        ({"kdcHostKey": "AAAAC3NzaC1lZDI1NTE5AAAA"}, "airflow:kdcHostKey", "ssh-keyscan"),
        ({"sshUser": "root; id"}, "airflow:sshUser", "UNIX user"),
        ({"sshDialTimeoutSeconds": 0}, "airflow:sshDialTimeoutSeconds", "between 1 and 300"),
        ({"commandTimeoutMinutes": "forever"}, "airflow:commandTimeoutMinutes", "integer"),
        ({"pgStorageSize": "30GB"}, "airflow:pgStorageSize", "15Gi"),
        ({"pgInstances": 0}, "airflow:pgInstances", "between 1 and 9"),
        ({"pgParameters": {"max connections": "200"}}, "airflow:pgParameters", "postgresql.conf"),
        ({"postgresqlImageTag": "15 latest"}, "airflow:postgresqlImageTag", "image tag"),
        ({"extraValues": {"kerberos": {"keytab": "AAAA"}}}, "airflow:extraValues", "kerberos.keytab"),
        ({"extraValues": {"config": {"private": {"x": "y"}}}}, "airflow:extraValues", "config.private"),
        ({"instanceName": "search"}, "airflow:instanceName", "unknown config key"),
        ({"Instance": "search"}, "airflow:Instance", "did you mean airflow:instance"),
    ],
)
def test_bad_value_is_rejected_naming_the_key(overrides, key, words):
    message = rejected(overrides=overrides)
    assert message.startswith(f"{key}: "), message
    assert words in message, message


@pytest.mark.parametrize("key", ["instance", "rgwEndpoint", "oidcClientSecret", "sshPrivateKey", "kdcHostKey"])
def test_missing_required_key_says_how_to_set_it(key):
    message = rejected(drop=(key,))
    assert message.startswith(f"airflow:{key}: missing"), message
    assert "pulumi config set" in message


def test_secret_in_plain_text_is_rejected():
    config, secret_keys = stack_config("search")
    secret_keys.remove("airflow:oidcClientSecret")
    from tools import mockrun

    run = mockrun.run_program("airflow", "search", config, secret_keys)
    assert isinstance(run.error, ConfigError)
    assert str(run.error).startswith("airflow:oidcClientSecret: is stored in plain text")


def test_non_fernet_key_is_rejected_without_echoing_it():
    message = rejected(secret_overrides={"fernetKey": "not-a-fernet-key-but-a-secret"})
    assert message.startswith("airflow:fernetKey: is not a Fernet key")
    assert "not-a-fernet-key-but-a-secret" not in message


def test_non_key_ssh_private_key_is_rejected_without_echoing_it():
    message = rejected(secret_overrides={"sshPrivateKey": "hunter2-not-a-key"})
    assert message.startswith("airflow:sshPrivateKey: is not a PEM/OpenSSH private key")
    assert "hunter2" not in message


def test_short_webserver_key_is_rejected():
    message = rejected(secret_overrides={"webserverSecretKey": "tiny-key-9"})
    assert message.startswith("airflow:webserverSecretKey: is shorter than 32")
    assert "tiny-key-9" not in message


def test_unknown_stack_lists_known_stacks():
    with pytest.raises(stackconfig.StackError) as err:
        stackconfig.load("serch", None)
    assert "unknown stack 'serch'" in str(err.value)
    assert "search" in str(err.value) and "test-k8s" in str(err.value)


def test_foreign_namespaces_are_left_to_their_owners():
    # kubernetes:/pulumi: keys belong to providers and the engine, not to this program
    run = run_stack("search", overrides={})
    assert run.error is None
    config, secret_keys = stack_config("search")
    config["kubernetes:enableServerSideApply"] = "true"
    from tools import mockrun

    assert mockrun.run_program("airflow", "search", config, secret_keys).error is None


def test_valid_stacks_load_into_frozen_model():
    from components import config as c

    config, secret_keys = stack_config("test-k8s")
    cfg, _ = c.load(config, is_secret=lambda k: k in secret_keys, read_secret=lambda k: "x")
    with pytest.raises(AttributeError):
        cfg.instance = "other"  # frozen
    assert cfg.namespace == "airflow-test-k8s"
    assert cfg.op_ldap_role is None
    assert cfg.kerberos_principal == "analytics/airflow-test-k8s.discovery.wmnet"
