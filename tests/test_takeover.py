"""Taking over a running instance (issue 12, parts 3 and 5): ``airflow:takeover`` and the RGW
users' existing key pairs in config.

* With ``takeover: true`` no credential is ever generated: a missing Fernet key, webserver key
  or key pair of an RGW user the phase uses is one line naming the key and the
  ``pulumi config set --secret -s <stack> <key>`` fix, before any resource is registered.
* With the pairs in config no random S3 key is registered and each RGW user's Command gets
  exactly the configured pair on its (secret) stdin, so the script finds the running user's pair
  and changes nothing (tests/integration/test_takeover_services.py runs that against real Ceph).
* A stack that generated its keys keeps working unchanged, and moving its generated pairs into
  config renames nothing: only the random resources leave the program.
"""

from __future__ import annotations

import pytest

from components import config as c
from tests.conftest import rendered, run_stack, stack_config
from tools import mockrun

COMMAND = "command:remote:Command"
RANDOM_TYPES = ("random:index/randomPassword:RandomPassword", "random:index/randomBytes:RandomBytes")
RANDOM_PROVIDER = "pulumi:providers:random"

# shaped like the pairs radosgw-admin generates (20 upper-case/digits; 40 of the base64 alphabet)
AIRFLOW_PAIR = ("AIRFLOWSEARCHACCESS1", "airflowSearchSecret+/0000000000000000000001")
PG_PAIR = ("PGSEARCHACCESSKEY001", "postgresqlSearchSecret000000000000000000002")
PAIRS = {
    "airflowS3AccessKey": AIRFLOW_PAIR[0], "airflowS3SecretKey": AIRFLOW_PAIR[1],
    "postgresqlS3AccessKey": PG_PAIR[0], "postgresqlS3SecretKey": PG_PAIR[1],
}
# search carries its legacy fernetKey and webserverSecretKey in config (phase complete)
TAKEOVER = {"takeover": True}


def failed(run: mockrun.Run) -> str:
    assert run.error is not None, "the program must refuse this config"
    assert isinstance(run.error, c.ConfigError), f"expected a ConfigError, got {run.error!r}"
    assert run.monitor.registered() == [], "nothing may be registered before the config is valid"
    message = str(run.error)
    assert "\n" not in message, "one line"
    return message


def rendered_ok(run: mockrun.Run) -> mockrun.RecordingMonitor:
    if run.error is not None:
        raise run.error
    return run.monitor


def rgw_command(mon: mockrun.RecordingMonitor, user: str) -> mockrun.Registration:
    return mon.named(f"search-rgw-{user}-user")


# --- the setting ---------------------------------------------------------------------------

def test_takeover_is_a_plain_boolean_off_by_default():
    spec = c.KEYS["takeover"]
    assert (spec.kind, spec.secret, spec.required) == ("bool", False, False)
    for stack in ("search", "test-k8s"):
        config, secret_keys = stack_config(stack)
        cfg, _ = c.load(config, is_secret=lambda k: k in secret_keys, read_secret=lambda k: "x")
        assert cfg.takeover is False, f"{stack}: takeover is off unless set"


def test_the_pair_keys_are_secret_and_optional():
    for key in PAIRS:
        assert c.KEYS[key].secret and not c.KEYS[key].required, key


@pytest.mark.parametrize("value", ["yes", "1", "on", "True"])
def test_takeover_must_be_a_real_boolean(value):
    config, secret_keys = stack_config("search")
    config["airflow:takeover"] = value
    with pytest.raises(c.ConfigError) as err:
        c.load(config, is_secret=lambda k: k in secret_keys, read_secret=lambda k: "x")
    assert err.value.key == "takeover"


# --- takeover refuses to generate ---------------------------------------------------------

@pytest.mark.parametrize("missing", ["fernetKey", "webserverSecretKey", *PAIRS])
def test_takeover_refuses_each_missing_credential_in_one_line(missing):
    secrets = {k: v for k, v in PAIRS.items() if k != missing}
    run = run_stack("search", overrides=TAKEOVER, drop=(missing,), secret_overrides=secrets)
    message = failed(run)
    assert message.startswith(f"airflow:{missing}: missing"), message
    assert message.endswith(f"`pulumi config set --secret -s search {missing}`)") or (
        f"`pulumi config set --secret -s search {missing}`), or remove" in message), message


@pytest.mark.parametrize("user, access, secret", [("airflow", "airflowS3AccessKey", "airflowS3SecretKey"),
                                                   ("postgresql", "postgresqlS3AccessKey", "postgresqlS3SecretKey")])
def test_takeover_refuses_a_wholly_missing_pair_naming_its_access_key(user, access, secret):
    secrets = {k: v for k, v in PAIRS.items() if k not in (access, secret)}
    message = failed(run_stack("search", overrides=TAKEOVER, secret_overrides=secrets))
    assert message.startswith(f"airflow:{access}: missing: takeover is on"), message
    assert secret in message, "the message names the other half too"
    assert message.endswith(f"set it with `./dev config set --secret -s search {access}` "
                            f"(CLI: `pulumi config set --secret -s search {access}`)"), message


def test_takeover_without_any_pair_names_the_airflow_users_first():
    message = failed(run_stack("search", overrides=TAKEOVER))
    assert message.startswith("airflow:airflowS3AccessKey: missing"), message


def test_takeover_needs_only_the_pairs_of_the_users_the_phase_has():
    # phase webserver has no RGW user yet; scheduler only the airflow one
    legacy_phase = {"airflowChartVersion": "0.0.120", **TAKEOVER}
    secret = {"legacyDbPassword": "legacy-db-password-example"}
    mon = rendered_ok(run_stack("search", overrides={**legacy_phase, "phase": "webserver"}, secret_overrides=secret))
    assert not [r for r in mon.registered() if r.type in RANDOM_TYPES or r.type == RANDOM_PROVIDER]

    airflow_only = {k: v for k, v in PAIRS.items() if k.startswith("airflow")}
    mon = rendered_ok(run_stack("search", overrides={**legacy_phase, "phase": "scheduler"},
                                secret_overrides={**secret, **airflow_only}))
    assert not [r for r in mon.registered() if r.type in RANDOM_TYPES or r.type == RANDOM_PROVIDER]

    message = failed(run_stack("search", overrides={**legacy_phase, "phase": "database-import"},
                               secret_overrides={**secret, **airflow_only}))
    assert message.startswith("airflow:postgresqlS3AccessKey: missing: takeover is on"), message


def test_takeover_missing_fernet_key_on_a_stack_that_generates_it():
    # test-k8s generates its Fernet key: under takeover that is refused, not done
    message = failed(run_stack("test-k8s", overrides=TAKEOVER, secret_overrides=PAIRS))
    assert message == ("airflow:fernetKey: missing: takeover is on, so it must be the running instance's Fernet key "
                       "(a new one makes every encrypted connection unreadable), never generated; "
                       "set it with `./dev config set --secret -s test-k8s fernetKey` "
                       "(CLI: `pulumi config set --secret -s test-k8s fernetKey`)")


# --- with the pairs in config ------------------------------------------------------------

@pytest.fixture(scope="module")
def taken_over() -> mockrun.RecordingMonitor:
    return rendered_ok(run_stack("search", overrides=TAKEOVER, secret_overrides=PAIRS))


def test_takeover_registers_no_random_resource_at_all(taken_over):
    randoms = [r.name for r in taken_over.registered() if r.type in RANDOM_TYPES or r.type == RANDOM_PROVIDER]
    assert randoms == [], f"nothing is generated while taking over: {randoms}"


@pytest.mark.parametrize("user, pair", [("airflow", AIRFLOW_PAIR), ("postgresql", PG_PAIR)])
def test_rgw_command_stdin_carries_exactly_the_configured_pair(taken_over, user, pair):
    cmd = rgw_command(taken_over, user)
    stdin = cmd.inputs["stdin"]
    assert isinstance(stdin, mockrun.SecretLeaf), "stdin carries the keys: it must be secret"
    assert stdin.value == f"{pair[0]}\n{pair[1]}\n", "the configured pair, access key line then secret key line"
    plain = repr(mockrun.masked(cmd.inputs))
    assert pair[0] not in plain and pair[1] not in plain, "no key anywhere else in the Command's inputs"
    assert cmd.protect, "the RGW user Command stays protected"


@pytest.mark.parametrize("bucket, pair", [("search-logs", AIRFLOW_PAIR), ("search-postgresql-backups", PG_PAIR)])
def test_each_bucket_provider_uses_its_users_configured_pair(taken_over, bucket, pair):
    [provider] = [r for r in taken_over.registered() if r.type == "pulumi:providers:aws" and r.name.startswith(bucket)]
    for field, value in zip(("accessKey", "secretKey"), pair):
        leaf = provider.inputs[field]
        assert isinstance(leaf, mockrun.SecretLeaf) and leaf.value == value, f"{provider.name}.{field}"


def test_release_and_backups_get_the_configured_pairs(taken_over):
    private = taken_over.one("kubernetes:helm.sh/v3:Release").inputs["values"]
    leaves = {p: v for p, v in zip(mockrun.secret_paths(private), _secret_values(private))}
    assert AIRFLOW_PAIR[0] in leaves.values() and AIRFLOW_PAIR[1] in leaves.values(), "the logs user's pair reaches Airflow"
    out = taken_over.stack_outputs["pgBucketCredentials"]
    assert isinstance(out, mockrun.SecretLeaf)
    assert (out.value["access_key"], out.value["secret_key"]) == PG_PAIR


def _secret_values(node):
    if isinstance(node, mockrun.SecretLeaf):
        return [mockrun.unmasked(node.value)]
    if isinstance(node, dict):
        return [v for x in node.values() for v in _secret_values(x)]
    if isinstance(node, list):
        return [v for x in node for v in _secret_values(x)]
    return []


def test_no_configured_key_appears_in_plain_inputs_or_outputs(taken_over):
    everything = repr([mockrun.masked(r.inputs) for r in taken_over.registered()])
    everything += repr(mockrun.masked(taken_over.stack_outputs))
    for value in PAIRS.values():
        assert value not in everything, "a configured key appears outside a secret"


# --- stacks that generated their keys ----------------------------------------------------

def test_without_the_keys_a_generating_stack_registers_what_it_did_before():
    mon = rendered("test-k8s")
    names = sorted(r.name for r in mon.registered() if r.type in RANDOM_TYPES)
    assert names == sorted([
        "test-k8s-fernet-key", "test-k8s-webserver-secret-key",
        "test-k8s-airflow-s3-access-key", "test-k8s-airflow-s3-secret-key",
        "test-k8s-postgresql-s3-access-key", "test-k8s-postgresql-s3-secret-key",
    ])
    assert all(r.protect for r in mon.registered() if r.type in RANDOM_TYPES)
    assert [r.name for r in mon.registered() if r.type == RANDOM_PROVIDER] == ["test-k8s-random"]


def test_pairs_in_config_without_takeover_generate_only_the_rest():
    mon = rendered_ok(run_stack("test-k8s", secret_overrides=PAIRS))
    names = sorted(r.name for r in mon.registered() if r.type in RANDOM_TYPES)
    assert names == ["test-k8s-fernet-key", "test-k8s-webserver-secret-key"], "no random S3 key"
    assert mon.named("test-k8s-rgw-airflow-user").inputs["stdin"].value == f"{AIRFLOW_PAIR[0]}\n{AIRFLOW_PAIR[1]}\n"


def test_moving_generated_pairs_into_config_changes_nothing_but_the_random_resources():
    """The generated values copied into config: every other resource keeps its URN, options and
    inputs (the RGW Commands' stdin included), so no protected resource is replaced or updated;
    only the four protected random S3 resources leave the program (README: unprotect them)."""
    before = rendered("test-k8s")
    copied = {}
    for user, prefix in (("airflow", "airflowS3"), ("postgresql", "postgresqlS3")):
        access, secret = before.named(f"test-k8s-rgw-{user}-user").inputs["stdin"].value.splitlines()
        copied.update({f"{prefix}AccessKey": access, f"{prefix}SecretKey": secret})
    after = rendered_ok(run_stack("test-k8s", secret_overrides=copied))

    gone = sorted({r.urn for r in before.registered()} - {r.urn for r in after.registered()})

    def view(mon):
        # dependencies on what leaves are dropped with it (they order, they never update)
        return {r.urn: (r.type, r.parent, r.provider, r.protect, r.retain_on_delete, r.delete_before_replace,
                        r.ignore_changes, r.replace_on_changes, r.additional_secret_outputs, r.custom_timeouts,
                        sorted(set(r.dependencies) - set(gone)), mockrun.unmasked(r.inputs))
                for r in mon.registered()}

    b, a = view(before), view(after)
    assert [u.rsplit("::", 1)[1] for u in gone] == sorted([
        "test-k8s-airflow-s3-access-key", "test-k8s-airflow-s3-secret-key",
        "test-k8s-postgresql-s3-access-key", "test-k8s-postgresql-s3-secret-key"])
    assert set(a) <= set(b), "nothing new"
    changed = [u for u in a if a[u] != b[u]]
    assert changed == [], f"resources that would be updated: {changed}"


# --- the pairs' shape --------------------------------------------------------------------

def load_search(**secrets: str):
    config, secret_keys = stack_config("search", secret_overrides=secrets)
    return c.load(config, is_secret=lambda k: k in secret_keys, read_secret=lambda k: config[k], stack="search")


BAD = [
    ("airflowS3AccessKey", "SHORT0001"),                       # < 16
    ("airflowS3AccessKey", "AIRFLOW-SEARCH-ACCESS"),           # '-'
    ("airflowS3AccessKey", "AIRFLOWSEARCHACCESS1\n"),          # trailing newline
    ("airflowS3AccessKey", "A" * 129),
    ("airflowS3SecretKey", "tooShortSecret"),                  # < 20
    ("airflowS3SecretKey", "Zq9SearchSecret00000000000000000000000=="),  # '=' padding
    ("airflowS3SecretKey", "Zq9SearchSecret 0000000000000000000000000"),
    ("postgresqlS3AccessKey", "PGSEARCHACCESSKEY٠٠1"),       # Arabic-Indic digits
    ("postgresqlS3SecretKey", "s" * 129),
]


@pytest.mark.parametrize("key, value", BAD)
def test_a_malformed_key_is_refused_without_echoing_it(key, value):
    secrets = {**PAIRS, key: value}
    with pytest.raises(c.ConfigError) as err:
        load_search(**secrets)
    assert err.value.key == key
    message = str(err.value)
    assert "\n" not in message
    assert value.strip() not in message and value[:8] not in message, "a secret value was echoed"
    for other in PAIRS.values():
        assert other not in message


@pytest.mark.parametrize("present, missing", [("airflowS3AccessKey", "airflowS3SecretKey"),
                                              ("airflowS3SecretKey", "airflowS3AccessKey"),
                                              ("postgresqlS3AccessKey", "postgresqlS3SecretKey"),
                                              ("postgresqlS3SecretKey", "postgresqlS3AccessKey")])
def test_half_a_pair_is_refused_even_without_takeover(present, missing):
    with pytest.raises(c.ConfigError) as err:
        load_search(**{present: PAIRS[present]})
    assert err.value.key == missing
    assert f"`pulumi config set --secret -s search {missing}`" in str(err.value)
    assert PAIRS[present] not in str(err.value)


def test_both_users_sharing_one_access_key_is_refused():
    with pytest.raises(c.ConfigError) as err:
        load_search(**{**PAIRS, "postgresqlS3AccessKey": AIRFLOW_PAIR[0]})
    assert err.value.key == "postgresqlS3AccessKey" and AIRFLOW_PAIR[0] not in str(err.value)


def test_a_pair_stored_in_plain_text_is_refused():
    run = run_stack("search", overrides={"airflowS3AccessKey": AIRFLOW_PAIR[0]},
                    secret_overrides={"airflowS3SecretKey": AIRFLOW_PAIR[1]})
    message = failed(run)
    assert message.startswith("airflow:airflowS3AccessKey: is stored in plain text"), message
    assert AIRFLOW_PAIR[0] not in message


def test_undecrypted_pairs_of_the_offline_preview_count_as_present():
    # without a passphrase the preview hands secrets over as a placeholder: not validated, present
    config, secret_keys = stack_config("search", overrides=TAKEOVER)
    for key in PAIRS:
        config[f"airflow:{key}"] = c.SECRET_PLACEHOLDER
        secret_keys.append(f"airflow:{key}")
    cfg, secrets = c.load(config, is_secret=lambda k: k in secret_keys, read_secret=lambda k: c.SECRET_PLACEHOLDER)
    assert cfg.takeover and secrets.airflow_s3_keys is not None and secrets.postgresql_s3_keys is not None

