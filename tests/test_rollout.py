"""The rollout command: canary first, then the rest one by one, stopping at the first failure."""

import functools
import io

import pytest

from tools import cli, preview_diff, rollout


class Recorder:
    def __init__(self, fail_on=()):
        self.calls, self.fail_on = [], set(fail_on)

    def __call__(self, stack, preview):
        self.calls.append((stack, preview))
        if stack in self.fail_on:
            raise RuntimeError(f"update failed\nerror: {stack} release timed out")


def test_canary_goes_first_then_the_others_in_order():
    rec = Recorder()
    result = rollout.rollout(["search", "main", "test-k8s", "dumps"], "test-k8s", rec, log=io.StringIO())
    assert [s for s, _ in rec.calls] == ["test-k8s", "dumps", "main", "search"]
    assert result.ok and result.done == ["test-k8s", "dumps", "main", "search"]


def test_canary_is_rolled_out_even_when_not_asked_for():
    rec = Recorder()
    rollout.rollout(["search"], "test-k8s", rec, log=io.StringIO())
    assert [s for s, _ in rec.calls] == ["test-k8s", "search"]


def test_a_failing_canary_stops_everything():
    rec = Recorder(fail_on={"test-k8s"})
    log = io.StringIO()
    result = rollout.rollout(["search", "main", "test-k8s"], "test-k8s", rec, log=log)
    assert rec.calls == [("test-k8s", False)]
    assert result.failed == "test-k8s" and result.skipped == ["main", "search"]
    assert "error: test-k8s release timed out" in log.getvalue()


def test_stops_at_the_first_failure_after_the_canary():
    rec = Recorder(fail_on={"main"})
    result = rollout.rollout(["search", "main", "dumps", "test-k8s"], "test-k8s", rec, log=io.StringIO())
    assert [s for s, _ in rec.calls] == ["test-k8s", "dumps", "main"]
    assert result.done == ["test-k8s", "dumps"] and result.skipped == ["search"]


def test_preview_mode_is_passed_to_the_runner():
    rec = Recorder()
    rollout.rollout(["search"], "test-k8s", rec, preview=True, log=io.StringIO())
    assert rec.calls == [("test-k8s", True), ("search", True)]


def test_cli_exit_codes_with_an_injected_runner():
    out, err = io.StringIO(), io.StringIO()
    assert rollout.main([], runner=Recorder(), stdout=out, stderr=err) == 0
    assert out.getvalue().splitlines()[0].startswith("==> up test-k8s (1/")
    assert rollout.main([], runner=Recorder(fail_on={"search"}), stdout=io.StringIO(), stderr=err) == 1
    assert rollout.main(["--stacks", "nope"], runner=Recorder(), stdout=io.StringIO(), stderr=err) == 2


def test_without_the_pulumi_cli_it_says_so_in_one_line(monkeypatch):
    monkeypatch.setattr(rollout.shutil, "which", lambda name: None)
    err = io.StringIO()
    assert rollout.main([], stdout=io.StringIO(), stderr=err) == 2
    assert err.getvalue().count("\n") == 1 and "the Pulumi CLI is not installed" in err.getvalue()


def test_canary_comes_from_project_config():
    assert rollout.canary_stack() == "test-k8s"


def guarded(argv, **kwargs):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(functools.partial(rollout.main, stdout=out, stderr=err, **kwargs), argv, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_a_project_without_a_canary_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "Pulumi.yaml").write_text("name: airflow\nruntime: python\nconfig: {}\n")
    monkeypatch.setattr(rollout, "ROOT", tmp_path)
    monkeypatch.setattr(rollout.stackconfig, "stacks", lambda root=tmp_path: ["search"])
    assert guarded([], runner=Recorder()) == (
        2, "", "error: Pulumi.yaml names no canary stack (config: canaryStack); the rollout starts with it\n")


def test_a_bug_is_one_line_and_exit_1_before_any_stack_is_touched(monkeypatch):
    monkeypatch.setattr(rollout, "canary_stack", lambda root=None: 1 / 0)
    rec = Recorder()
    code, out, err = guarded([], runner=rec)
    assert (code, out, rec.calls) == (1, "", [])
    assert err == ("error: internal error (a bug, please report it): ZeroDivisionError: division by zero; "
                   "rerun with --debug for the traceback\n")


def test_a_failing_stack_is_a_failed_rollout_not_a_bug():
    code, out, err = guarded([], runner=Recorder(fail_on={"search"}))
    assert code == 1 and err == "" and "!!! search failed: error: search release timed out" in out


# --- --dry-run: no CLI, the order and each stack's offline diff -------------------------------

def fake_trees(changed: dict[str, str]):
    """A render_tree that writes one file per stack; ``changed`` stacks differ in the working tree."""
    from tools import rollout as r

    def render_tree(tree, out, stacks=None):
        head = tree == r.ROOT
        render_tree.asked.append(list(stacks) if stacks is not None else None)
        for stack in ("test-k8s", "search", "main", "dumps"):
            (out / stack / "helm").mkdir(parents=True, exist_ok=True)
            text = changed[stack] if head and stack in changed else "app:\n  version: old\n"
            (out / stack / "helm" / "production.values.yaml").write_text(text)
        return None

    render_tree.asked = []
    return render_tree


def dry(argv, render_tree):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(functools.partial(rollout.main, stdout=out, stderr=err, render_tree=render_tree), argv, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.processes
def test_dry_run_prints_the_order_canary_first_and_each_stacks_diff(monkeypatch):
    monkeypatch.setattr(rollout.shutil, "which", lambda name: None)  # no CLI needed
    trees = fake_trees({"main": "app:\n  version: new\n"})
    code, out, err = dry(["--dry-run", "--base", "HEAD", "--stacks", "search", "main", "dumps"], trees)
    assert (code, err) == (0, "")
    # each side renders the stacks of the rollout only, not the whole fleet
    assert trees.asked == [["test-k8s", "dumps", "main", "search"]] * 2
    lines = out.splitlines()
    assert lines[0] == "rollout order (4 stacks, canary first): test-k8s, dumps, main, search"
    heads = [line for line in lines if line.startswith("==> ")]
    assert heads == ["==> dry run test-k8s (1/4, canary): no change", "==> dry run dumps (2/4): no change",
                     "==> dry run main (3/4): 1 rendered file(s) differ", "==> dry run search (4/4): no change"]
    main_diff = out[out.index("==> dry run main"):out.index("==> dry run search")]
    assert "-  version: old\n+  version: new\n" in main_diff and "helm/production.values.yaml" in main_diff
    assert lines[-1] == "dry run: 1 of 4 stack(s) change: main; nothing was applied"


@pytest.mark.processes
def test_dry_run_never_runs_a_stack():
    rec = Recorder()
    code, _, _ = dry(["--dry-run", "--base", "HEAD", "--stacks", "search"], fake_trees({}))
    assert code == 0 and rec.calls == []


@pytest.mark.processes
def test_dry_run_unreadable_input_is_one_line_exit_2():
    code, out, err = dry(["--dry-run", "--base", "no-such-rev"], fake_trees({}))
    assert (code, out) == (2, "") and err == "error: no git revision 'no-such-rev' to compare with (--base)\n"
    code, out, err = dry(["--dry-run", "--stacks", "nope"], fake_trees({}))
    assert code == 2 and err.count("\n") == 1 and "unknown stack 'nope'" in err
    broken = lambda tree, out, stacks=None: preview_diff.RenderFailure(2, "search: airflow:phase: 'x' is not a phase")  # noqa: E731
    code, out, err = dry(["--dry-run", "--base", "HEAD"], broken)
    assert (code, out) == (2, "") and err == "error: the working tree does not render: search: airflow:phase: 'x' is not a phase\n"
    code, out, err = dry(["--base", "HEAD"], fake_trees({}))
    assert code == 2 and err == "error: python -m tools.rollout: --base goes with --dry-run\n"
    code, out, err = dry(["--dry-run", "--preview"], fake_trees({}))
    assert code == 2 and err.count("\n") == 1 and "not allowed with argument" in err


@pytest.mark.processes
def test_dry_run_with_a_base_that_does_not_render_shows_additions():
    def render_tree(tree, out, stacks=None):
        if tree != rollout.ROOT:
            return preview_diff.RenderFailure(2, "old bug")
        return fake_trees({})(tree, out, stacks)

    code, out, _ = dry(["--dry-run", "--base", "HEAD", "--stacks", "search"], render_tree)
    assert code == 0 and "note: base HEAD did not render (old bug); showing the working tree as additions" in out
    assert "==> dry run search (2/2): 1 rendered file(s) differ" in out


@pytest.mark.processes
def test_dry_run_for_real_renders_both_sides_without_the_cli(monkeypatch):
    # the real renderer (tools/preview_diff.py: one `tools.preview --stacks test-k8s search` per side);
    # HEAD against the working tree
    monkeypatch.setattr(rollout.shutil, "which", lambda name: None)
    code, out, err = dry(["--dry-run", "--base", "HEAD", "--stacks", "search"], None)
    assert (code, err) == (0, ""), err
    assert out.splitlines()[0] == "rollout order (2 stacks, canary first): test-k8s, search"
    assert "==> dry run test-k8s (1/2, canary): " in out and "==> dry run search (2/2): " in out
    assert out.splitlines()[-1].endswith("; nothing was applied")
