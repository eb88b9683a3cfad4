"""The kept renders of tools/mockrun.RenderCache (tests/conftest.py turns it on for the tests).

A replay is only sound if the program is deterministic and the replay does what a render does:
these tests render for real (``fresh``) and compare.
"""

from __future__ import annotations

import pytest

from tests.conftest import stack_config
from tools import mockrun, platform_model

STACKS = ("search", "test-k8s")  # the canary and another: their renders differ in every part


def canonical(run: mockrun.Run) -> list:
    """Everything a render registers, comparable across renders (secret leaves by value and
    path; dependency lists sorted: the SDK builds them from sets of resources)."""
    out = []
    for r in run.monitor.registered():
        out.append((r.urn, r.type, r.name, r.custom, r.parent, r.provider, mockrun.unmasked(r.inputs),
                    mockrun.secret_paths(r.inputs), r.protect, r.retain_on_delete, r.delete_before_replace,
                    r.ignore_changes, r.replace_on_changes, sorted(r.additional_secret_outputs), sorted(r.dependencies),
                    {k: sorted(v) for k, v in r.property_dependencies.items()}, r.custom_timeouts, r.read_id))
    outputs = {k: (mockrun.unmasked(v), mockrun.secret_paths(v)) for k, v in run.monitor.outputs.items()}
    return [out, outputs, repr(run.error)]


def render(stack: str, mocks=None, fresh: bool = True, **overrides) -> mockrun.Run:
    config, secret_keys = stack_config(stack, overrides or None)
    cache = mockrun.RENDER_CACHE
    if fresh:
        mockrun.RENDER_CACHE = None
    try:
        return mockrun.run_program("airflow", stack, config, secret_keys, mocks=mocks)
    finally:
        mockrun.RENDER_CACHE = cache


@pytest.fixture
def cache():
    """A cache of this test's own (the suite's keeps renders of other tests)."""
    saved, mockrun.RENDER_CACHE = mockrun.RENDER_CACHE, mockrun.RenderCache()
    yield mockrun.RENDER_CACHE
    mockrun.RENDER_CACHE = saved


@pytest.mark.parametrize("stack", STACKS)
def test_the_program_is_deterministic(stack):
    first, second = render(stack), render(stack)
    assert first.monitor is not second.monitor
    assert canonical(first) == canonical(second)
    assert first.monitor.order == second.monitor.order, "registration order"
    assert first.extra["mocks"].events == second.extra["mocks"].events, "what the platform saw, in order"


@pytest.mark.parametrize("stack", STACKS)
def test_a_replay_is_the_render_and_does_to_the_mocks_what_a_render_does(stack, cache):
    kept = render(stack, fresh=False)
    assert (cache.hits, cache.misses) == (0, 1)
    replayed = render(stack, fresh=False)
    assert (cache.hits, cache.misses) == (1, 1)
    assert replayed.monitor is kept.monitor
    real = render(stack)
    assert canonical(replayed) == canonical(real)
    new, old = replayed.extra["mocks"], real.extra["mocks"]
    assert new is not kept.extra["mocks"]
    assert new.events == old.events and new.objects == old.objects and new.releases == old.releases
    assert new.buckets == old.buckets and new.stack_reads == old.stack_reads


def test_a_failed_render_is_replayed_with_its_error(cache):
    def missing_namespace():
        return platform_model.without(platform_model.new_instance_after_admin_ng(), ["Namespace"])

    first = render("search", missing_namespace(), fresh=False)
    again = render("search", missing_namespace(), fresh=False)
    assert cache.hits == 1
    assert first.error is not None and again.error is first.error
    assert again.extra["mocks"].events == render("search", missing_namespace()).extra["mocks"].events


def test_other_mock_state_config_or_environment_is_another_render(cache, monkeypatch):
    base = render("search", fresh=False)
    platform = platform_model.new_instance_after_admin_ng()
    platform.buckets.add("logs.airflow-search.dse-k8s-eqiad")  # someone else's bucket of that name
    taken = render("search", platform, fresh=False)
    assert taken.error is not None and "BucketAlreadyExists" in str(taken.error)
    other = render("search", fresh=False, releaseTimeoutSeconds=1234)
    assert canonical(other) != canonical(base)
    monkeypatch.setenv("AIRFLOW_RENDER_CACHE_TEST", "1")
    render("search", fresh=False)
    assert (cache.hits, cache.misses) == (0, 4)


def test_a_kept_render_changed_in_place_is_refused(cache):
    run = render("test-k8s", fresh=False)
    run.monitor.registered()[1].inputs["changed"] = True
    with pytest.raises(mockrun.RenderCacheError, match="changed in place"):
        render("test-k8s", fresh=False)


class _Counting(platform_model.LivePlatform):
    """A platform whose answers depend on something its render_state() leaves out: a replay of
    its render cannot be trusted."""

    count = 0

    def render_state(self):
        return {k: v for k, v in super().render_state().items() if k != "count"}

    def new_resource(self, args):
        self.count += 1
        id_, outputs = super().new_resource(args)
        if args.typ.startswith("random:"):
            outputs = {**outputs, "count": self.count}
        return id_, outputs


def test_mocks_that_answer_otherwise_on_replay_fail_loudly(cache):
    def counting(start: int) -> _Counting:
        mocks = _Counting(seed=platform_model.new_instance_after_admin_ng().seed)
        mocks.count = start
        return mocks

    assert render("search", counting(0), fresh=False).error is None
    with pytest.raises(mockrun.RenderCacheError, match="answers differently"):
        render("search", counting(100), fresh=False)


def test_a_test_that_patched_an_attribute_renders_afresh(monkeypatch):
    from tests import conftest

    cache = mockrun.RENDER_CACHE
    assert cache is not None and cache.allowed(), "the suite keeps renders"
    monkeypatch.setenv("AIRFLOW_RENDER_CACHE_TEST", "2")
    assert cache.allowed(), "an environment change is part of the key"
    monkeypatch.setattr(conftest, "EXAMPLE_PASSPHRASE", conftest.EXAMPLE_PASSPHRASE)
    assert not cache.allowed()
