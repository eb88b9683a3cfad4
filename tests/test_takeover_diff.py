"""`./dev takeover-diff`: what the first `up` changes in a running instance (issue 12, part 4).

The live files are built from the program's own render (what `helm get values` / `kubectl get -o
yaml` would print had the program deployed it), then changed one path at a time."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE_PASSPHRASE, run_command
from tools import cli, mockrun, preview, stackconfig, takeover_diff

ROOT = Path(__file__).resolve().parent.parent
STACK = "search"
FERNET = ("config", "private", "airflow__core__fernet_key")


@pytest.fixture(scope="module")
def run():
    return preview.render(STACK, EXAMPLE_PASSPHRASE)


def program_values(run):
    return mockrun.unmasked(run.monitor.one(preview.RELEASE_TYPE).inputs["values"])


def secret_values(run):
    return [str(v) for r in run.monitor.registered() for v in takeover_diff._secret_leaves(r.inputs)
            if isinstance(v, str) and len(v) >= 4]


def live_objects(run):
    items = []
    for reg in takeover_diff.managed_objects(run):
        if reg.inputs.get("kind") not in takeover_diff.LISTED_KINDS:
            continue
        obj = mockrun.unmasked(copy.deepcopy(reg.inputs))
        # what the API server adds, which the diff ignores
        obj["metadata"].update({"uid": "0f3c", "resourceVersion": "123", "generation": 4,
                                "creationTimestamp": "2025-01-01T00:00:00Z",
                                "managedFields": [{"manager": "helm", "operation": "Update"}]})
        obj["status"] = {"phase": "Cluster in healthy state"}
        items.append(obj)
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


def diff(tmp_path, monkeypatch, capsys, values, objects=None, header=False):
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", EXAMPLE_PASSPHRASE)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    path = tmp_path / "values.yaml"
    path.write_text(("USER-SUPPLIED VALUES:\n" if header else "") + yaml.safe_dump(values))
    argv = ["-s", STACK, "--live-values", str(path)]
    if objects is not None:
        (tmp_path / "objects.yaml").write_text(yaml.safe_dump(objects))
        argv += ["--live-objects", str(tmp_path / "objects.yaml")]
    code = cli.run_module("tools.takeover_diff", argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def changes(out):
    """The change lines, without the note on whether the stack lists them as intended."""
    return [line.strip().split("    # ")[0] for line in out.splitlines() if line.strip()[:2] in ("+ ", "- ", "~ ")]


def test_identical_values_change_nothing(run, tmp_path, monkeypatch, capsys):
    out = diff(tmp_path, monkeypatch, capsys, program_values(run))
    assert changes(out) == []
    assert "Values: 0 to add, 0 to remove, 0 to change" in out
    # the keytab is a script's output: the offline render cannot know it, and says so without a value
    assert "? kerberos.keytab: (secret) not compared" in out
    for secret in secret_values(run):
        assert secret not in out


def test_helm_header_accepted(run, tmp_path, monkeypatch, capsys):
    assert changes(diff(tmp_path, monkeypatch, capsys, program_values(run), header=True)) == []


def test_one_changed_value_is_one_line(run, tmp_path, monkeypatch, capsys):
    live = program_values(run)
    old = live["config"]["airflow"]["instance_name"]
    live["config"]["airflow"]["instance_name"] = "old-name"
    out = diff(tmp_path, monkeypatch, capsys, live)
    assert changes(out) == [f'~ config.airflow.instance_name: "old-name" -> "{old}"']
    assert "0 to add, 0 to remove, 1 to change" in out
    assert "instance_name: \"old-name\" -> \"%s\"    # NOT LISTED in airflow:takeoverChanges" % old in out
    assert "; 1 not listed as intended, 0 listed but unchanged" in out


def test_added_and_removed_paths(run, tmp_path, monkeypatch, capsys):
    live = program_values(run)
    dropped = live["ingress"]["gatewayHosts"].pop("default")
    live["config"]["airflow"]["legacy_setting"] = [1, 2]
    out = diff(tmp_path, monkeypatch, capsys, live)
    assert sorted(changes(out)) == sorted([f'+ ingress.gatewayHosts.default: "{dropped}"',
                                           "- config.airflow.legacy_setting: [1, 2]"])
    assert "1 to add, 1 to remove, 0 to change" in out


def test_secret_that_differs_shows_no_value(run, tmp_path, monkeypatch, capsys):
    live = program_values(run)
    program_secret = live["config"]["private"]["airflow__core__fernet_key"]
    live["config"]["private"]["airflow__core__fernet_key"] = "live-fernet-key-not-to-show"
    out = diff(tmp_path, monkeypatch, capsys, live)
    assert changes(out) == ["~ config.private.airflow__core__fernet_key: (secret) differs"]
    assert "live-fernet-key-not-to-show" not in out and program_secret not in out
    for secret in secret_values(run):
        assert secret not in out


def test_secret_path_live_only_or_below_shows_no_value(run, tmp_path, monkeypatch, capsys):
    live = program_values(run)
    live["config"]["private"]["airflow__core__fernet_key"] = {"nested": "live-nested-secret"}
    out = diff(tmp_path, monkeypatch, capsys, live)
    assert "live-nested-secret" not in out
    assert "(secret)" in "".join(changes(out))


def test_unit_diff_tree_secret_leaf():
    program = {"a": mockrun.SecretLeaf("program-value"), "b": 1}
    d = takeover_diff.diff_tree(program, {"a": "live-value", "b": 1})
    assert d.lines == ["~ a: (secret) differs"]
    d = takeover_diff.diff_tree(program, {"a": "program-value", "b": 2})
    assert d.lines == ["~ b: 2 -> 1"] and d.unchanged == 1
    d = takeover_diff.diff_tree(program, {"b": 1})
    assert d.lines == ["+ a: (secret)"]
    d = takeover_diff.diff_tree({"a": mockrun.SecretLeaf(mockrun.SECRET)}, {"a": "x"}, secrets_known=False)
    assert d.lines == ["? a: (secret) not compared, its value is known only when deployed"]


def test_identical_objects_change_nothing(run, tmp_path, monkeypatch, capsys):
    out = diff(tmp_path, monkeypatch, capsys, program_values(run), live_objects(run))
    assert changes(out) == []
    assert "Objects: 0 to add, 0 to remove, 0 to change" in out
    assert "managedFields" not in out and "status" not in out and "resourceVersion" not in out


def test_changed_instances_is_one_line(run, tmp_path, monkeypatch, capsys):
    objects = live_objects(run)
    cluster = next(i for i in objects["items"] if i["kind"] == "Cluster")
    want = cluster["spec"]["instances"]
    cluster["spec"]["instances"] = want + 1
    cluster["spec"]["serverDefault"] = "x"  # a field the program does not set
    cluster["metadata"]["labels"]["helm.sh/chart"] = "cloudnative-pg-cluster-0.1"
    out = diff(tmp_path, monkeypatch, capsys, program_values(run), objects)
    assert changes(out) == [f"~ spec.instances: {want + 1} -> {want}"]
    assert f"Cluster/{cluster['metadata']['name']}:" in out
    assert 'spec.serverDefault: "x" (kept by the server, not managed)' in out
    assert "0 to add, 0 to remove, 1 to change" in out and "2 kept by the server" in out


def test_missing_object_is_reported(run, tmp_path, monkeypatch, capsys):
    objects = live_objects(run)
    objects["items"] = [i for i in objects["items"] if i["kind"] != "Pooler"]
    out = diff(tmp_path, monkeypatch, capsys, program_values(run), objects)
    assert "not running (`pulumi import` of it would fail)" in out


def run_cli(*args, subprocess_=False):
    """`python -m tools.takeover_diff args`: in this process, or as the real process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    if not subprocess_:
        return run_command("tools.takeover_diff", *args, env=env, cwd=ROOT)
    return subprocess.run([sys.executable, "-m", "tools.takeover_diff", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.processes
def test_the_real_command_reports_a_bad_file_in_one_line(tmp_path):
    proc = run_cli("-s", STACK, "--live-values", str(tmp_path / "missing.yaml"), subprocess_=True)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: ") and "missing.yaml" in proc.stderr


@pytest.mark.parametrize("content", [
    None,  # missing file
    "",  # empty
    "a: [1\n",  # not YAML
    "- a\n- b\n",  # not a mapping
    "a: 1\na: 2\n",  # duplicate key
    "just a string\n",
    b"a: \xff\n",  # not UTF-8
])
def test_bad_values_file_is_one_line_exit_2(tmp_path, content):
    path = tmp_path / "values.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    proc = run_cli("-s", STACK, "--live-values", str(path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("content", ["kind: List\nitems: 3\n", "kind: List\nitems:\n- 1\n", "items: []\nitems: []\n"])
def test_bad_objects_file_is_one_line_exit_2(tmp_path, content):
    (tmp_path / "values.yaml").write_text("a: 1\n")
    (tmp_path / "objects.yaml").write_text(content)
    proc = run_cli("-s", STACK, "--live-values", str(tmp_path / "values.yaml"),
                   "--live-objects", str(tmp_path / "objects.yaml"))
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: ")


def test_dev_script_dispatches():
    text = (ROOT / "dev").read_text()
    assert "-m tools.takeover_diff" in text


@pytest.mark.parametrize("stack", stackconfig.stacks())
def test_every_stack_identical_is_no_change(stack):
    run = preview.render(stack, EXAMPLE_PASSPHRASE)
    d = takeover_diff.values_diff(run, program_values(run))
    assert (d.added, d.removed, d.changed) == (0, 0, 0), d.lines
    items = live_objects(run)["items"]
    o = takeover_diff.objects_diff(run, items)
    assert (o.added, o.removed, o.changed) == (0, 0, 0), o.lines
    secrets = secret_values(run)
    assert not [s for s in secrets if any(s in line for line in d.lines + o.lines)]
