"""The rollout command: canary first, then the rest one by one, stopping at the first failure."""

import functools
import io

from tools import cli, rollout


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
