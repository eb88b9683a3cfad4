"""The rollout command: canary first, then the rest one by one, stopping at the first failure."""

import io

from tools import rollout


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
