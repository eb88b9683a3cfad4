"""The offline preview command: tree, --out files, masking, one-line errors."""

import functools
import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE_PASSPHRASE, copy_tree, run_command
from tools import cli, preview, stackconfig

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, passphrase=None, cwd=ROOT, subprocess_=False):
    """`python -m tools.preview args` (in this process unless ``subprocess_``, or for another tree)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    if passphrase:
        env["PULUMI_CONFIG_PASSPHRASE"] = passphrase
    if cwd != ROOT:
        env["PYTHONPATH"] = str(cwd)
    if subprocess_ or cwd != ROOT:
        return subprocess.run([sys.executable, "-m", "tools.preview", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=120)
    return run_command("tools.preview", *args, env=env, cwd=cwd)


@pytest.mark.processes
def test_preview_prints_the_tree_with_options():
    proc = run_cli("-s", "search", subprocess_=True)  # the real process, once
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "* dpe:airflow:Instance search" in out
    # the namespace is admin_ng's: a read (`>`, as pulumi preview marks reads), no create, no admin provider
    assert "> kubernetes:core/v1:Namespace search-namespace  [provider=search-k8s-deploy]" in out
    assert '{"id": "airflow-search"}' in out
    assert "+ kubernetes:core/v1:Namespace" not in out and "RoleBinding" not in out and "k8s-admin" not in out
    assert "> kubernetes:core/v1:Service search-postgresql-pooler-service" in out
    assert "+ kubernetes:postgresql.cnpg.io/v1:Cluster search-postgresql-cluster  [provider=search-k8s-deploy; protect; ignoreChanges=spec.bootstrap;" in out
    assert "+ command:remote:Command search-kerberos-keytab  [provider=search-command; protect; deleteBeforeReplace; secretOutputs=stdout,stderr,connection; dependsOn=search-namespace;" in out
    assert "Manual steps (systems this program cannot reach), grouped by when they are due:\n" \
           "Before the first `pulumi up` (it needs them: the deploy kubeconfig, the namespace, the OIDC secret, the SSH user's sudo rules):\n" \
           "1. Kubernetes read and deploy users\n" in out
    assert out.index("After `pulumi up`") < out.index("At migration phase complete") < out.index("At retirement")
    # the phase guard's read, as the offline model answers it (search is a migrated instance at complete)
    assert "Phase guard: recorded phase database (offline model: the runbook's previous phase;" in out
    assert "placeholders" in out  # no passphrase: secrets were not decrypted


def test_unknown_stack_exits_non_zero_with_one_line():
    proc = run_cli("-s", "nope")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: unknown stack 'nope'")
    assert "Traceback" not in proc.stderr


def test_bad_config_exits_non_zero_with_one_line(tmp_path, monkeypatch):
    # a copy of the project with a broken stack file
    for name in ("Pulumi.yaml", "Pulumi.search.yaml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    text = (tmp_path / "Pulumi.search.yaml").read_text().replace("airflow:instance: search", "airflow:instance: Search_1")
    (tmp_path / "Pulumi.bad.yaml").write_text(text)
    monkeypatch.setattr(stackconfig, "ROOT", tmp_path)
    load = stackconfig.load
    monkeypatch.setattr(stackconfig, "load", lambda stack, pw, root=tmp_path: load(stack, pw, root))
    err = io.StringIO()
    code = preview.main(["-s", "bad"], stdout=io.StringIO(), stderr=err)
    assert code == 2
    assert err.getvalue() == "error: airflow:instance: 'Search_1' is not a DNS label of at most 30 characters; use lowercase letters, digits and '-', starting with a letter (e.g. search)\n"


def test_wrong_passphrase_is_one_line():
    proc = run_cli("-s", "search", passphrase="wrong")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: Pulumi.search.yaml: incorrect passphrase (PULUMI_CONFIG_PASSPHRASE)"


def test_out_writes_values_and_manifests_with_secrets_masked(tmp_path):
    proc = run_cli("-s", "test-k8s", "--out", str(tmp_path), passphrase=EXAMPLE_PASSPHRASE)
    assert proc.returncode == 0, proc.stderr
    assert "checked with the passphrase" in proc.stdout
    values = yaml.safe_load((tmp_path / "helm" / "test-k8s-airflow-release.values.yaml").read_text())
    assert values["config"]["private"] == {"airflow__core__fernet_key": "[secret]", "airflow__webserver__secret_key": "[secret]"}
    assert values["kerberos"]["keytab"] == "[secret]"
    assert values["config"]["airflow"]["instance_name"] == "test-k8s"
    # reads are not the program's objects: no manifest for the namespace
    assert not list((tmp_path / "manifests").glob("Namespace-*")) and not list((tmp_path / "manifests").glob("RoleBinding-*"))
    cluster = yaml.safe_load((tmp_path / "manifests" / "Cluster-test-k8s-postgresql-cluster.yaml").read_text())
    assert cluster["metadata"]["annotations"]["pulumi.com/waitFor"] == "condition=Ready"
    # no decrypted secret value appears in anything written or printed
    sc = stackconfig.load("test-k8s", EXAMPLE_PASSPHRASE)
    written = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file()) + proc.stdout + proc.stderr
    for key in sc.secret_keys:
        assert sc.config[key] not in written, f"{key} leaked into the preview"


def test_out_values_are_exactly_the_release_inputs(tmp_path):
    from tools import mockrun

    run = preview.render("search", EXAMPLE_PASSPHRASE)
    preview.write_out(run, tmp_path)
    rel = run.monitor.one("kubernetes:helm.sh/v3:Release")
    on_disk = yaml.safe_load((tmp_path / "helm" / "search-airflow-release.values.yaml").read_text())
    assert on_disk == mockrun.masked(rel.inputs["values"])


# --- one line for every input problem, checked before anything is rendered (tools/cli.py) ----

def guarded_preview(*argv):
    """The command as `python -m tools.preview` runs it: main under the guard."""
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(functools.partial(preview.main, stdout=out, stderr=err), list(argv), stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def no_render(monkeypatch):
    """Rendering is a bug here: the command line must be refused before it."""
    def render(*args, **kwargs):
        raise AssertionError("rendered before the command line was checked")
    monkeypatch.setattr(preview, "render", render)


WEBSERVER = ("--set", "phase=webserver", "--set", "airflowChartVersion=0.0.120", "--set-secret", "legacyDbPassword")


@pytest.mark.parametrize("item, line", [
    ("phase=[1", "error: --set phase: the value is not valid YAML (expected ',' or ']', but got '<stream end>'); "
                 "quote it to pass text, e.g. --set 'phase=\"...\"'\n"),
    ("phase=a: b: c", "error: --set phase: the value is not valid YAML (mapping values are not allowed here); "
                      "quote it to pass text, e.g. --set 'phase=\"...\"'\n"),
    ("phase=\tx", "error: --set phase: the value is not valid YAML (found character '\\t' that cannot start any token); "
                  "quote it to pass text, e.g. --set 'phase=\"...\"'\n"),
    ("extraValues=[&a [1, 2], *a]", "error: --set extraValues: YAML anchors and aliases are not accepted; write the value out\n"),
    ("extraValues=" + "[" * 40 + "]" * 40, "error: --set extraValues: the value nests deeper than 32 levels\n"),
    ("phase=2024-01-01", "error: --set phase: the value holds a YAML date, not text, a number, a boolean, a list or an "
                         "object; quote it to pass text, e.g. --set 'phase=\"...\"'\n"),
    ("extraValues={1: a}", "error: --set extraValues: an object key is not text (int); quote it to pass text, e.g. "
                           "--set 'extraValues=\"...\"'\n"),
    ("phase", "error: --set 'phase': use KEY=VALUE\n"),
    ("=webserver", "error: --set: the key before '=' is empty; use KEY=VALUE\n"),
    ("a b=1", "error: --set 'a b': not a config key (KEY or namespace:KEY, letters, digits, '_', '.', '-')\n"),
], ids=["unclosed", "mapping", "tab", "alias", "deep", "date", "int-key", "no-equals", "empty-key", "bad-key"])
def test_a_bad_set_is_one_line_before_rendering(item, line, no_render):
    assert guarded_preview("-s", "search", "--set", item) == (2, "", line)


def test_set_secret_on_an_unknown_stack_is_one_line():
    proc = run_cli("-s", "no-such-stack", "--set-secret", "legacyDbPassword")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: unknown stack 'no-such-stack'")


def test_out_that_is_a_file_is_refused_before_anything_is_printed(tmp_path, no_render):
    target = tmp_path / "render.txt"
    target.write_text("mine\n")
    code, out, err = guarded_preview("-s", "search", "--out", str(target))
    assert (code, out) == (2, "")
    assert err == f"error: --out {target}: exists and is not a directory; give a new or empty directory\n"
    assert target.read_text() == "mine\n"


def test_out_that_cannot_be_created_is_refused_before_anything_is_printed(tmp_path, no_render):
    # the tests run as root, which ignores mode bits: a path under a regular file is unwritable for anyone
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, out, err = guarded_preview("-s", "search", "--out", str(blocker / "sub" / "render"))
    assert (code, out) == (2, "")
    assert err == f"error: --out {blocker / 'sub' / 'render'}: cannot be created: {blocker} is not a directory\n"


def test_the_real_command_refuses_a_bad_out_in_one_line(tmp_path):
    target = tmp_path / "file"
    target.write_text("")
    proc = run_cli("-s", "search", "--out", str(target / "sub"))
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == f"error: --out {target / 'sub'}: cannot be created: {target} is not a directory\n"


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.rglob("*")) if p.is_file()}


def test_out_refuses_a_non_empty_directory_it_did_not_write_and_leaves_it_alone(tmp_path, no_render):
    foreign = tmp_path / "mine"
    (foreign / "helm").mkdir(parents=True)
    (foreign / "notes.txt").write_text("keep me\n")
    (foreign / "helm" / "search-airflow-release.values.yaml").write_text("hand-written\n")
    before = snapshot(foreign)
    code, out, err = guarded_preview("-s", "search", "--out", str(foreign))
    assert (code, out) == (2, "")
    assert err == (f"error: --out {foreign}: the directory is not empty and the preview did not write it "
                   f"(no valid {preview.MANIFEST}); give a new or empty directory\n")
    assert snapshot(foreign) == before


def test_out_refuses_its_own_directory_once_a_foreign_file_is_added(tmp_path):
    code, _, err = guarded_preview("-s", "search", "--no-inputs", "--out", str(tmp_path / "r"))
    assert code == 0, err
    (tmp_path / "r" / "helm" / "my-notes.yaml").write_text("mine\n")
    before = snapshot(tmp_path / "r")
    code, out, err = guarded_preview("-s", "search", "--out", str(tmp_path / "r"))
    assert (code, out) == (2, "")
    assert err == f"error: --out {tmp_path / 'r'}: holds helm/my-notes.yaml, which the preview did not write; give a new or empty directory\n"
    assert snapshot(tmp_path / "r") == before


@pytest.mark.parametrize("listed", ["../outside.txt", "/etc/hostname", "helm/../../outside.txt", ""])
def test_a_forged_manifest_deletes_nothing(tmp_path, listed, no_render):
    (tmp_path / "outside.txt").write_text("keep\n")
    out_dir = tmp_path / "r"
    out_dir.mkdir()
    (out_dir / preview.MANIFEST).write_text(f"{preview.MANIFEST_HEADER}\n{listed}\n")
    code, _, err = guarded_preview("-s", "search", "--out", str(out_dir))
    assert code == 2 and "the preview did not write it" in err
    assert (tmp_path / "outside.txt").read_text() == "keep\n"


def test_rerendering_into_its_own_out_replaces_the_earlier_files(tmp_path):
    """The README's phase walk into one --out directory: no file of an earlier phase stays."""
    reused = tmp_path / "reused"

    def render_into(directory, *extra):
        code, out, err = guarded_preview("-s", "search", "--no-inputs", "--out", str(directory), *extra)
        assert code == 0, err
        assert f"files under {directory}\n" in out
        return snapshot_text(directory)

    def snapshot_text(directory):
        return {k: v for k, (v, _) in snapshot(directory).items()}

    fresh_webserver = render_into(tmp_path / "fresh-webserver", *WEBSERVER)
    fresh_complete = render_into(tmp_path / "fresh-complete")
    assert set(fresh_webserver) != set(fresh_complete)  # the phases write different files

    assert render_into(reused, *WEBSERVER) == fresh_webserver
    assert render_into(reused) == fresh_complete            # webserver's files are gone
    assert render_into(reused, *WEBSERVER) == fresh_webserver  # and complete's, the other way
    listed = (reused / preview.MANIFEST).read_text().splitlines()
    assert listed[0] == preview.MANIFEST_HEADER
    assert sorted(listed[1:]) == sorted(k for k in fresh_webserver if k != preview.MANIFEST)
    assert not [d for d in reused.rglob("*") if d.is_dir() and not any(d.iterdir())], "empty directories left"


def test_all_into_a_directory_a_single_render_wrote_replaces_it(tmp_path, monkeypatch):
    monkeypatch.setattr(stackconfig, "stacks", lambda root=ROOT: ["search", "test-k8s"])
    assert guarded_preview("-s", "search", "--no-inputs", "--out", str(tmp_path))[0] == 0
    code, out, err = guarded_preview("--all", "--no-inputs", "--out", str(tmp_path))
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [preview.MANIFEST, "search", "test-k8s"]


def test_stacks_renders_those_stacks_as_all_does(tmp_path):
    code, out, err = guarded_preview("--stacks", "test-k8s", "search", "test-k8s", "--no-inputs", "--out", str(tmp_path))
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [preview.MANIFEST, "search", "test-k8s"]
    assert "Rendered test-k8s in" in out and "Rendered search in" in out and "Rendered 2/2 stacks" in out
    code, _, err = guarded_preview("--stacks", "search", "no-such-stack", "--no-inputs")
    assert code == 2 and err.startswith("error: no-such-stack: unknown stack 'no-such-stack'"), err


def test_all_goes_on_after_a_bug_in_one_stack_and_exits_1(monkeypatch):
    monkeypatch.setattr(stackconfig, "stacks", lambda root=ROOT: ["search", "test-k8s"])
    render = preview.render

    def buggy(stack, *args, **kwargs):
        if stack == "search":
            raise ZeroDivisionError("division by zero")
        return render(stack, *args, **kwargs)

    monkeypatch.setattr(preview, "render", buggy)
    code, out, err = guarded_preview("--all", "--no-inputs")
    assert code == 1
    assert err == ("error: search: internal error (a bug, please report it): ZeroDivisionError: division by zero; "
                   "rerun with --debug for the traceback\n")
    assert "Rendered test-k8s in" in out and "Rendered 1/2 stacks" in out


@pytest.fixture
def broken_stack_files(tree_copy):
    """Two broken stack files, in a copy of the working tree (other tests, in this process, in
    the other xdist worker or in a concurrent run, list every Pulumi.*.yaml of the repository)."""
    tag = uuid.uuid4().hex[:8]
    files = {
        f"zz-broken-yaml-{tag}": "config:\n\tairflow:instance: x\n",              # a tab: not YAML
        f"zz-broken-config-{tag}": "config:\n  airflow:phase: sideways\n",         # YAML, bad config
    }
    for name, text in files.items():
        (tree_copy / f"Pulumi.{name}.yaml").write_text(text)
    return list(files)


@pytest.fixture
def tree_copy(tmp_path):
    """The program's files of the working tree (the virtualenv linked), with two good stacks:
    the canary and search (every stack renders the same way; tests/test_fleet.py renders them all)."""
    copy = copy_tree(tmp_path / "tree")
    for path in copy.glob("Pulumi.*.yaml"):
        if path.name not in ("Pulumi.test-k8s.yaml", "Pulumi.search.yaml"):
            path.unlink()
    return copy


@pytest.mark.processes
def test_all_renders_every_good_stack_and_reports_each_broken_one(broken_stack_files, tree_copy, tmp_path):
    good = [s for s in stackconfig.stacks(tree_copy) if s not in broken_stack_files]
    assert good == ["search", "test-k8s"]
    proc = run_cli("--all", "--no-inputs", "--out", str(tmp_path / "r"), cwd=tree_copy)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and "Traceback" not in proc.stderr
    bad_yaml, bad_config = broken_stack_files
    assert lines[0].startswith(f"error: {bad_config}: airflow:") or lines[1].startswith(f"error: {bad_config}: airflow:")
    assert any(line.startswith(f"error: {bad_yaml}: ") and "not valid YAML" in line for line in lines)
    for stack in good:
        assert f"Rendered {stack} in" in proc.stdout
        assert (tmp_path / "r" / stack / "tree.txt").is_file()
    assert f"Rendered {len(good)}/{len(good) + 2} stacks" in proc.stdout
    assert not any((tmp_path / "r" / name).exists() for name in broken_stack_files)
