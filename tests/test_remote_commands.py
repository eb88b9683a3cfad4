"""Every remote Command: pinned host key, finite timeouts, secrets on stdin only, hidden output."""

import pytest
import yaml

from tests.conftest import STACKS, rendered, stack_config
from tools import mockrun

COMMAND = "command:remote:Command"


def commands(stack):
    found = rendered(stack).by_type(COMMAND)
    assert found, f"{stack} has no remote Commands"
    return found


def all_secret_values(stack):
    """Every secret the program handles: decrypted config secrets and (mock) generated ones."""
    config, secret_keys = stack_config(stack)
    values = {config[k] for k in secret_keys}
    mon = rendered(stack)
    for urn, reg in mon.resources.items():  # MockMonitor's own record of outputs
        if mon.registrations.get(urn) and mon.registrations[urn].type.startswith("random:"):
            for key in ("result", "base64", "hex"):
                if key in reg.state:
                    values.add(reg.state[key])
    return {v for v in values if v and len(v) >= 8}


@pytest.mark.parametrize("stack", STACKS)
def test_commands_pin_the_host_key_and_bound_the_dial(stack):
    project = yaml.safe_load(open("Pulumi.yaml"))["config"]
    keys = {project["kdcHostKey"]["default"], project["rgwAdminHostKey"]["default"]}
    for cmd in commands(stack):
        conn = cmd.inputs["connection"]
        assert isinstance(conn, mockrun.SecretLeaf), f"{cmd.name}: the connection holds the private key; it must be secret"
        conn = conn.value
        assert conn["hostKey"] in keys, f"{cmd.name}: host key must be pinned"
        assert conn["perDialTimeout"] == 15 and conn["dialErrorLimit"] == 5, f"{cmd.name}: explicit dial timeout/limit"
        assert conn["user"] == "pulumi-airflow"
        assert cmd.custom_timeouts.get("create") == "10m", f"{cmd.name}: custom create timeout"


@pytest.mark.parametrize("stack", STACKS)
def test_commands_touching_secrets_hide_output_and_mark_it_secret(stack):
    for cmd in commands(stack):
        assert cmd.inputs["logging"] == "none", f"{cmd.name}: output of a secret-touching command must not be logged"
        assert {"stdout", "stderr"} <= set(cmd.additional_secret_outputs), f"{cmd.name}: stdout/stderr must be secret outputs"
        assert cmd.inputs.get("addPreviousOutputInEnv") is False, f"{cmd.name}: previous (secret) stdout must not reach the env"


@pytest.mark.parametrize("stack", STACKS)
def test_no_secret_in_any_command_line(stack):
    secrets = all_secret_values(stack)
    assert secrets, "the test needs secret values to look for"
    for cmd in commands(stack):
        for step in ("create", "update", "delete"):
            text = cmd.inputs.get(step) or ""
            assert isinstance(text, str), f"{cmd.name}.{step} must be plain script text (secrets go on stdin)"
            for value in secrets:
                assert value not in text, f"{cmd.name}.{step} contains a secret value"


@pytest.mark.parametrize("stack", STACKS)
def test_stdin_carrying_keys_is_secret(stack):
    with_stdin = [cmd for cmd in commands(stack) if "stdin" in cmd.inputs]
    assert {c.name for c in with_stdin} >= {f"{stack}-rgw-airflow-user", f"{stack}-rgw-postgresql-user"}
    for cmd in with_stdin:
        assert isinstance(cmd.inputs["stdin"], mockrun.SecretLeaf), f"{cmd.name}: stdin carries keys; it must be secret"


@pytest.mark.parametrize("stack", STACKS)
def test_no_secret_value_reaches_any_input_unmarked(stack):
    secrets = all_secret_values(stack)
    for reg in rendered(stack).registered():
        plain = repr(mockrun.masked(reg.inputs))
        for value in secrets:
            assert value not in plain, f"{reg.type} {reg.name} carries a secret outside a secret input"


@pytest.mark.parametrize("stack", STACKS)
def test_data_bearing_commands_are_protected_and_delete_before_replace(stack):
    cmds = {c.name: c for c in commands(stack)}
    expected = {f"{stack}-rgw-airflow-user", f"{stack}-rgw-postgresql-user", f"{stack}-kerberos-keytab"}
    assert expected <= set(cmds), f"missing commands: {expected - set(cmds)}"
    for name in expected:
        assert cmds[name].protect, f"{name} must be protected"
        assert cmds[name].delete_before_replace, f"{name}: create and delete hit the same uid/principal"


@pytest.mark.parametrize("stack", STACKS)
def test_privileged_scripts_run_through_sudo_without_secrets_on_the_line(stack):
    for cmd in commands(stack):
        assert cmd.inputs["create"].startswith("sudo -n /bin/bash -c "), f"{cmd.name} must run through sudo -n"


def test_scripts_always_run_under_bash_with_or_without_sudo():
    from components import remote

    assert remote.wrap("echo hi", use_sudo=False, name="x") == "/bin/bash -c 'echo hi' x"
    assert remote.wrap("echo 'hi'", use_sudo=True, name="a b") == "sudo -n /bin/bash -c 'echo '\"'\"'hi'\"'\"'' 'a b'"
