"""Offline preview diff and the CI's touched-stack selection."""

import functools
import io
import subprocess
import sys

import pytest

from tools import cli, preview_diff, touched_stacks

STACKS = ["main", "search", "test-k8s"]


def test_a_stack_file_touches_only_that_stack():
    assert touched_stacks.touched(["Pulumi.search.yaml", "README.md", "tests/test_x.py"], STACKS) == ["search"]


def test_a_program_change_touches_every_stack():
    assert touched_stacks.touched(["components/database.py"], STACKS) == STACKS
    assert touched_stacks.touched(["Pulumi.yaml"], STACKS) == STACKS


def test_docs_and_tests_touch_nothing():
    assert touched_stacks.touched(["README.md", "tests/test_fleet.py", "bench/preview.py"], STACKS) == []


def test_diff_dirs_shows_changes_additions_and_removals(tmp_path):
    base, head = tmp_path / "base", tmp_path / "head"
    (base / "search" / "helm").mkdir(parents=True)
    (head / "search" / "helm").mkdir(parents=True)
    (base / "search" / "helm" / "v.yaml").write_text("app:\n  version: old\n")
    (head / "search" / "helm" / "v.yaml").write_text("app:\n  version: new\n")
    (base / "gone.yaml").write_text("x: 1\n")
    (head / "new.yaml").write_text("y: 2\n")
    out = io.StringIO()
    assert preview_diff.diff_dirs(base, head, out) == 3
    text = out.getvalue()
    assert "-  version: old\n+  version: new\n" in text
    assert "== Removed in the working tree: gone.yaml" in text and "== Added in the working tree: new.yaml" in text


def test_same_render_twice_has_no_diff(tmp_path):
    # renders are deterministic: the CI diff shows only real changes
    from tools import preview

    for side in ("a", "b"):
        run = preview.render("search", None)
        preview.write_out(run, tmp_path / side)
    assert preview_diff.diff_dirs(tmp_path / "a", tmp_path / "b", io.StringIO()) == 0


@pytest.mark.processes
def test_cli_against_head_reports_a_count():
    # the real process, both sides rendered for real (two stacks: every stack is the same code path)
    proc = subprocess.run([sys.executable, "-m", "tools.preview_diff", "--base", "HEAD", "--stacks", "search", "test-k8s"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "rendered file(s) differ between HEAD and the working tree" in proc.stdout


def test_a_stack_the_base_does_not_have_renders_nothing_there(tmp_path):
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "preview.py").write_text("raise SystemExit('must not run')\n")
    assert preview_diff.render_tree(tmp_path, tmp_path / "out", ["brand-new"]) is None
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.processes
def test_cli_unknown_revision_is_one_line():
    err = io.StringIO()
    assert preview_diff.main(["--base", "no-such-rev"], stdout=io.StringIO(), stderr=err) == 2
    assert err.getvalue() == "error: no git revision 'no-such-rev' to compare with\n"


def test_gitlab_ci_runs_the_tests_and_previews_touched_stacks():
    # GitLab itself cannot run here: check the file parses and calls commands that exist
    import yaml

    ci = yaml.safe_load(open(".gitlab-ci.yml"))
    assert ci["test"]["script"] == ["bash .ci/run"]
    preview_script = "\n".join(ci["pulumi-preview"]["script"])
    assert "tools.touched_stacks --base" in preview_script and "pulumi preview --diff" in preview_script
    assert "tools.preview_diff --base" in "\n".join(ci["offline-preview-diff"]["script"])
    assert ci["variables"]["AWS_REQUEST_CHECKSUM_CALCULATION"] == "when_required"


def test_the_preview_manifest_is_not_a_rendered_file(tmp_path):
    from tools import preview

    assert preview_diff.PREVIEW_MANIFEST == preview.MANIFEST
    for side, listed in (("a", "tree.txt"), ("b", "tree.txt\nhelm/x.yaml")):
        (tmp_path / side).mkdir()
        (tmp_path / side / "tree.txt").write_text("same\n")
        (tmp_path / side / preview.MANIFEST).write_text(f"{preview.MANIFEST_HEADER}\n{listed}\n")
    assert preview_diff.diff_dirs(tmp_path / "a", tmp_path / "b", io.StringIO()) == 0


@pytest.mark.processes
def test_a_working_tree_that_does_not_render_is_one_line_with_the_preview_exit_code(monkeypatch):
    for code in (2, 1):
        failure = preview_diff.RenderFailure(code, "search: airflow:phase: 'x' is not a phase\nsecond line")
        monkeypatch.setattr(preview_diff, "render_tree", lambda tree, out, stacks=None: failure)
        err = io.StringIO()
        assert cli.run(functools.partial(preview_diff.main, stdout=io.StringIO(), stderr=err), ["--base", "HEAD"], stderr=err) == code
        assert err.getvalue() == "error: the working tree does not render: search: airflow:phase: 'x' is not a phase second line\n"


@pytest.mark.processes
def test_touched_stacks_with_an_unknown_base_is_one_line(capsys):
    assert cli.run(touched_stacks.main, ["--base", "no-such-rev"]) == 2
    assert capsys.readouterr().err == "error: git diff against 'no-such-rev' failed\n"
