"""The kept renders of tools/render_cache.RenderCache (tests/conftest.py turns it on for the tests).

A replay is only sound if the program is deterministic and the replay does what a render does:
these tests render for real (``fresh``) and compare.
"""

from __future__ import annotations

import os
import pickle

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.conftest import stack_config
from tools import mockrun, platform_model, render_cache

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
    saved, mockrun.RENDER_CACHE = mockrun.RENDER_CACHE, render_cache.RenderCache()
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
    with pytest.raises(render_cache.RenderCacheError, match="changed in place"):
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
    with pytest.raises(render_cache.RenderCacheError, match="answers differently"):
        render("search", counting(100), fresh=False)


def test_a_test_that_patched_an_attribute_renders_afresh(monkeypatch):
    from tests import conftest

    cache = mockrun.RENDER_CACHE
    assert cache is not None and cache.allowed(), "the suite keeps renders"
    monkeypatch.setenv("AIRFLOW_RENDER_CACHE_TEST", "2")
    assert cache.allowed(), "an environment change is part of the key"
    monkeypatch.setattr(conftest, "EXAMPLE_PASSPHRASE", conftest.EXAMPLE_PASSPHRASE)
    assert not cache.allowed()


# --- the store the xdist workers share (RenderCache.shared_dir; tests/conftest.py) -----------

KEY = os.urandom(32)


def config_secret(stack: str, key: str) -> str:
    config, _ = stack_config(stack)
    return config[f"airflow:{key}"]


def use_cache(new: render_cache.RenderCache) -> render_cache.RenderCache | None:
    saved, mockrun.RENDER_CACHE = mockrun.RENDER_CACHE, new
    return saved


@pytest.mark.parametrize("stack", STACKS)
def test_a_render_kept_by_one_worker_is_replayed_by_the_other(stack, tmp_path):
    """Two caches on one directory stand for the two workers: the second runs no program."""
    first_worker, second_worker = (render_cache.RenderCache(shared_dir=tmp_path, shared_key=KEY),
                                   render_cache.RenderCache(shared_dir=tmp_path, shared_key=KEY))
    saved = use_cache(first_worker)
    try:
        kept = render(stack, fresh=False)
        assert [p.suffix for p in tmp_path.iterdir()] == [".render"], "one render, one file, no temporary left"
        mockrun.RENDER_CACHE = second_worker
        replayed = render(stack, fresh=False)
    finally:
        mockrun.RENDER_CACHE = saved
    assert (second_worker.misses, second_worker.hits, second_worker.shared_hits) == (0, 1, 1), \
        f"{stack}: the second worker replays the first one's render"
    assert replayed.monitor is not kept.monitor
    assert canonical(replayed) == canonical(kept) == canonical(render(stack))
    assert replayed.extra["mocks"].events == kept.extra["mocks"].events, "the replay does to its mocks what a render does"


def test_a_shared_render_is_sealed_and_one_that_does_not_match_its_fingerprint_is_refused(tmp_path):
    saved = use_cache(render_cache.RenderCache(shared_dir=tmp_path, shared_key=KEY))
    try:
        render("search", fresh=False)
        (path,) = tmp_path.iterdir()
        sealed = path.read_bytes()
        plain_secret = config_secret("search", "fernetKey")
        assert plain_secret.encode() not in sealed, "the file holds no decrypted secret"
        data = AESGCM(KEY).decrypt(sealed[:12], sealed[12:], bytes.fromhex(path.stem))
        assert plain_secret.encode() in data, "(the render does hold it: the seal is what hides it)"
        registrations, order, outputs, stack_urn, error, calls, fingerprint = pickle.loads(data)
        registrations[order[1]].protect = not registrations[order[1]].protect
        data = pickle.dumps((registrations, order, outputs, stack_urn, error, calls, fingerprint))
        nonce = os.urandom(12)
        path.write_bytes(nonce + AESGCM(KEY).encrypt(nonce, data, bytes.fromhex(path.stem)))
        mockrun.RENDER_CACHE = render_cache.RenderCache(shared_dir=tmp_path, shared_key=KEY)
        with pytest.raises(render_cache.RenderCacheError, match="fingerprint"):
            render("search", fresh=False)
        mockrun.RENDER_CACHE = render_cache.RenderCache(shared_dir=tmp_path, shared_key=os.urandom(32))
        with pytest.raises(render_cache.RenderCacheError, match="not written by this run"):
            render("search", fresh=False)
    finally:
        mockrun.RENDER_CACHE = saved


def test_a_render_whose_error_cannot_be_rebuilt_stays_in_its_worker(tmp_path):
    """ConfigError's constructor takes more than its message: it does not survive pickle, so
    such a render is kept in memory only (and runs again on the other worker)."""
    first_worker = render_cache.RenderCache(shared_dir=tmp_path, shared_key=KEY)
    saved = use_cache(first_worker)
    try:
        run = render("search", fresh=False, releaseTimeoutSeconds="soon")
    finally:
        mockrun.RENDER_CACHE = saved
    assert run.error is not None and "releaseTimeoutSeconds" in str(run.error)
    assert first_worker.misses == 1 and list(tmp_path.iterdir()) == []
