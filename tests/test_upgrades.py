"""Upgrades are version bumps in config; the canary takes every version first."""

import dataclasses
import shlex
import re
import shutil

import pytest
import yaml

from components import airflow_values, config, upgrades
from components.config import ConfigError
from tests.conftest import run_stack, stack_config

NEW_IMAGE = "airflow-2.11.3-py3.11-2026-11-20-101010-" + "a" * 40 + "@sha256:" + "b" * 64


def load_cfg(stack, overrides=None):
    bag, secret_keys = stack_config(stack, overrides=overrides)
    cfg, _ = config.load(bag, is_secret=lambda k: k in secret_keys, read_secret=lambda k: "x")
    return cfg


def test_image_version_is_a_project_default():
    project = yaml.safe_load(open("Pulumi.yaml"))["config"]
    default = project["imageVersion"]["default"]
    assert load_cfg("search").image_version == default == load_cfg("test-k8s").image_version


def test_non_canary_stack_cannot_run_a_version_the_canary_has_not_run():
    run = run_stack("search", overrides={"imageVersion": NEW_IMAGE})
    assert isinstance(run.error, ConfigError)
    assert str(run.error) == (
        f"airflow:imageVersion: {NEW_IMAGE} has not run on the canary stack test-k8s; "
        "deploy it to test-k8s first (override imageVersion there), then to the other stacks"
    )
    assert run.monitor.registered() == []


def test_the_canary_takes_a_new_version_first():
    run = run_stack("test-k8s", overrides={"imageVersion": NEW_IMAGE})
    assert run.error is None
    values = run.monitor.one("kubernetes:helm.sh/v3:Release").inputs["values"]
    assert values["app"]["version"] == NEW_IMAGE


@pytest.fixture()
def project_copy(tmp_path):
    for name in ("Pulumi.yaml", "Pulumi.test-k8s.yaml", "Pulumi.search.yaml"):
        shutil.copy(name, tmp_path / name)
    return tmp_path


def test_once_the_canary_runs_it_other_stacks_may_follow(project_copy):
    canary = project_copy / "Pulumi.test-k8s.yaml"
    canary.write_text(canary.read_text().replace("config:\n", f"config:\n  airflow:imageVersion: {NEW_IMAGE}\n", 1))
    cfg = dataclasses.replace(load_cfg("search"), image_version=NEW_IMAGE)
    upgrades.check_canary_rule(cfg, "search", root=project_copy)  # no error


def test_a_version_the_canary_ran_before_stays_allowed(project_copy):
    old = load_cfg("test-k8s").image_version
    canary = project_copy / "Pulumi.test-k8s.yaml"
    canary.write_text(canary.read_text().replace(
        "config:\n", f"config:\n  airflow:imageVersion: {NEW_IMAGE}\n  airflow:imageHistory:\n    - {old}\n", 1))
    upgrades.check_canary_rule(load_cfg("search"), "search", root=project_copy)  # search still on the old one


def test_chart_versions_follow_the_same_rule():
    run = run_stack("search", overrides={"airflowChartVersion": "0.0.178"})
    assert str(run.error).startswith("airflow:airflowChartVersion: 0.0.178 has not run on the canary stack test-k8s")
    assert run_stack("search", overrides={"airflowChartVersion": "0.0.120", "phase": "complete"}).error is None  # in test-k8s's chartHistory


def test_history_belongs_on_the_canary_only():
    run = run_stack("search", overrides={"imageHistory": [load_cfg("search").image_version]})
    assert str(run.error).startswith("airflow:imageHistory: is only meaningful on the canary stack test-k8s")


def test_image_bump_changes_only_the_image_fields():
    cfg = load_cfg("search")
    private = airflow_values.private_values(cfg, fernet_key="F", webserver_secret_key="W", oidc_client_secret="O",
                                            s3_access_key="A", s3_secret_key="S", kerberos_keytab="K")
    before = airflow_values.airflow_values(cfg, private)
    after = airflow_values.airflow_values(dataclasses.replace(cfg, image_version=NEW_IMAGE), private)

    def flat(node, prefix=""):
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                out.update(flat(v, f"{prefix}{k}."))
            return out
        return {prefix.rstrip("."): node}

    a, b = flat(before), flat(after)
    changed = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
    assert changed == {"app.version", "app.executor_pod_image_version"}


def test_chart_bump_changes_only_the_release_version():
    base = run_stack("test-k8s").monitor.one("kubernetes:helm.sh/v3:Release")
    bumped = run_stack("test-k8s", overrides={"airflowChartVersion": "0.0.178"}).monitor.one("kubernetes:helm.sh/v3:Release")
    assert bumped.inputs["version"] == "0.0.178"
    assert {k: v for k, v in bumped.inputs.items() if k != "version"}.keys() == {k for k in base.inputs if k != "version"}
    assert repr(bumped.inputs["values"]) == repr(base.inputs["values"])


def test_a_stack_cannot_name_the_canary_only_pulumi_yaml_does():
    # naming itself the canary would let a stack run any version
    for canary in ("nope", "search"):
        run = run_stack("search", overrides={"canaryStack": canary})
        assert str(run.error).startswith("airflow:canaryStack: is a project setting and differs from Pulumi.yaml"), run.error
        assert run.monitor.registered() == []


# --- the canary moved on: the stacks still on its previous version ---------------------------

def _canary_moved_to(project_copy, image, history=None):
    canary = project_copy / "Pulumi.test-k8s.yaml"
    extra = f"  airflow:imageVersion: {image}\n"
    if history is not None:
        extra += "  airflow:imageHistory:\n" + "".join(f"    - {v}\n" for v in history)
    canary.write_text(canary.read_text().replace("config:\n", "config:\n" + extra, 1))
    return canary


def test_when_the_canary_moves_on_the_refusal_names_the_exact_history_line(project_copy):
    old = load_cfg("search").image_version  # the project default, which test-k8s ran until now
    _canary_moved_to(project_copy, NEW_IMAGE)
    with pytest.raises(ConfigError) as refused:
        upgrades.check_canary_rule(load_cfg("search"), "search", root=project_copy)
    message = str(refused.value)
    assert "has not run" not in message
    assert message == (
        f"airflow:imageVersion: {old} is the project default, which the canary stack test-k8s no longer runs "
        f"(it overrides imageVersion with {NEW_IMAGE}) and its imageHistory does not list; "
        f"if test-k8s ran it before, record it: add the line `    - {old}` under `airflow:imageHistory:` in "
        f"Pulumi.test-k8s.yaml (`./dev config set --path -s test-k8s 'imageHistory[0]' {old}` "
        f"(CLI: `pulumi config set --path -s test-k8s 'imageHistory[0]' {old}`)); "
        "if not, deploy it to test-k8s first"
    )


def test_the_named_line_is_the_fix(project_copy):
    old = load_cfg("search").image_version
    canary = _canary_moved_to(project_copy, NEW_IMAGE)
    # doing exactly what the message says: the line under airflow:imageHistory in the canary's file
    canary.write_text(canary.read_text().replace(
        f"  airflow:imageVersion: {NEW_IMAGE}\n",
        f"  airflow:imageVersion: {NEW_IMAGE}\n  airflow:imageHistory:\n    - {old}\n", 1))
    upgrades.check_canary_rule(load_cfg("search"), "search", root=project_copy)  # no error


def test_the_offline_command_in_the_refusal_is_the_fix(project_copy):
    """`./dev config set --path` as the message spells it, run on the canary's file: accepted after."""
    from tools import stackconfig
    from tests.conftest import EXAMPLE_PASSPHRASE

    old = load_cfg("search").image_version
    earlier = NEW_IMAGE.replace("a" * 40, "c" * 40)
    canary = _canary_moved_to(project_copy, NEW_IMAGE, history=[earlier])
    with pytest.raises(ConfigError) as refused:
        upgrades.check_canary_rule(load_cfg("search"), "search", root=project_copy)
    offline = re.search(r"`(\./dev config set --path [^`]*)`", str(refused.value)).group(1)
    argv = shlex.split(offline)[2:]  # set --path -s test-k8s 'imageHistory[1]' <old>
    assert argv[:4] == ["set", "--path", "-s", "test-k8s"], offline
    stackconfig.config_set_path(argv[3], argv[4], argv[5], passphrase=EXAMPLE_PASSPHRASE, root=project_copy)
    text = canary.read_text()
    assert f"    - {earlier}\n    - {old}\n" in text, f"the history line was not appended:\n{text}"
    upgrades.check_canary_rule(load_cfg("search"), "search", root=project_copy)  # no error now


def test_the_cli_index_appends_after_the_existing_history(project_copy):
    old = load_cfg("search").image_version
    earlier = NEW_IMAGE.replace("a" * 40, "c" * 40)
    _canary_moved_to(project_copy, NEW_IMAGE, history=[earlier])
    with pytest.raises(ConfigError, match=r"'imageHistory\[1\]' " + old):
        upgrades.check_canary_rule(load_cfg("search"), "search", root=project_copy)


def test_a_truly_untested_version_is_still_refused_even_while_the_canary_moves(project_copy):
    untested = NEW_IMAGE.replace("a" * 40, "d" * 40)
    cfg = dataclasses.replace(load_cfg("search"), image_version=untested)
    for moved in (False, True):
        if moved:
            _canary_moved_to(project_copy, NEW_IMAGE)
        with pytest.raises(ConfigError) as refused:
            upgrades.check_canary_rule(cfg, "search", root=project_copy)
        assert str(refused.value).startswith(f"airflow:imageVersion: {untested} has not run on the canary stack test-k8s; deploy it to test-k8s first")


def test_a_chart_the_canary_moved_from_gets_the_chart_history_line(project_copy):
    canary = project_copy / "Pulumi.test-k8s.yaml"
    default = load_cfg("search").airflow_chart_version
    canary.write_text(canary.read_text().replace("config:\n", "config:\n  airflow:airflowChartVersion: 0.0.178\n", 1))
    with pytest.raises(ConfigError) as refused:
        upgrades.check_canary_rule(load_cfg("search"), "search", root=project_copy)
    assert str(refused.value).startswith(f"airflow:airflowChartVersion: {default} is the project default, which the canary")
    assert f"`./dev config set --path -s test-k8s 'chartHistory[2]' {default}` (CLI: `pulumi config set --path -s test-k8s 'chartHistory[2]' {default}`)" in str(refused.value)
