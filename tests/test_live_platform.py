"""A first `pulumi up` against the model of the live platform (tools/platform_model.py).

The mock runtime accepts everything; the model answers like the real providers: creating an
existing object fails, reading a missing one fails, custom resources are awaited only when
annotated, a Job is awaited to completion, and Airflow pods need the pooler Service.
"""

from __future__ import annotations

import pytest

from components import database, namespace
from tests.conftest import stack_config
from tests.test_migration_phases import phase_overrides
from tools import mockrun, platform_model, stackconfig

COMMAND = "command:remote:Command"
BUCKET = "aws:s3/bucket:Bucket"
ALL_STACKS = stackconfig.stacks()


def first_up(stack: str, platform: platform_model.LivePlatform, overrides=None, secrets=None) -> mockrun.Run:
    config, secret_keys = stack_config(stack, overrides, secret_overrides=secrets)
    return mockrun.run_program("airflow", stack, config, secret_keys, mocks=platform)


def changes_elsewhere(run: mockrun.Run) -> list[str]:
    """What would touch another system: remote commands, buckets and their providers, and
    every Kubernetes object the program creates (reads excluded)."""
    return [
        r.name for r in run.monitor.registered()
        if r.type in (COMMAND, BUCKET, "pulumi:providers:aws")
        or (r.type.startswith("kubernetes:") and not r.read)
    ]


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_first_up_of_a_new_instance_creates_nothing_that_exists_and_reads_nothing_missing(stack):
    platform = platform_model.new_instance_after_admin_ng()
    run = first_up(stack, platform)
    assert run.error is None, f"{stack}: the first up fails on the live platform: {run.error}"
    assert not [e for e in platform.events if e.startswith("read-missing")]
    # everything the run needed from an operator was awaited, nothing is left for "later"
    assert platform.pending == [], f"{stack}: not awaited: {[w for w, _ in platform.pending]}"
    ns = f"airflow-{stack}"
    assert ("Namespace", "", ns) in platform.objects and ("RoleBinding", ns, "deploy") in platform.objects
    assert (ns, "production") in platform.releases


@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_without_the_namespace_the_run_stops_with_the_admin_ng_line_before_any_change(stack):
    platform = platform_model.empty_platform()
    run = first_up(stack, platform)
    # The engine fails the read step ("resource '<id>' does not exist", step.go ReadStep.Apply)
    # and answers the program's pending RPCs with Unavailable (pulumi/pulumi engine test
    # TestReadNilOutputs): the read's own error, or the program's precondition line built on it
    assert isinstance(run.error, (platform_model.ProviderError, namespace.NamespaceNotReady)), repr(run.error)
    line = str(run.error)
    assert "\n" not in line and f"resource 'airflow-{stack}' does not exist" in line
    assert changes_elsewhere(run) == [], "nothing may change another system before the namespace check"
    outside = [e for e in platform.events if not e.startswith("register ") or e.startswith("register command:")]
    assert outside == [f"read-missing Namespace airflow-{stack}"], "only the read may reach the platform"


def test_a_namespace_without_the_geoip_labels_stops_the_run_naming_them():
    platform = platform_model.without(platform_model.new_instance_after_admin_ng(), ())
    inner = platform.seed

    def strip_labels(p):
        inner(p)
        p.get("Namespace", "", "airflow-test-k8s")["metadata"]["labels"] = {"pod-security.wmf.org/profile": "restricted"}

    platform.seed = strip_labels
    run = first_up("test-k8s", platform)
    assert isinstance(run.error, namespace.NamespaceNotReady)
    assert "pod-security.wmf.org/allow-hostpath-analytics=include" in str(run.error)
    assert changes_elsewhere(run) == []


def test_a_terminating_namespace_stops_the_run():
    platform = platform_model.new_instance_after_admin_ng()
    inner = platform.seed

    def terminating(p):
        inner(p)
        p.get("Namespace", "", "airflow-search")["status"] = {"phase": "Terminating"}

    platform.seed = terminating
    run = first_up("search", platform)
    assert isinstance(run.error, namespace.NamespaceNotReady) and "is Terminating" in str(run.error)
    assert changes_elsewhere(run) == []


def test_the_namespace_is_read_before_anything_touches_another_system():
    platform = platform_model.new_instance_after_admin_ng()
    assert first_up("search", platform).error is None
    first_change = next(i for i, e in enumerate(platform.events) if e.startswith(("register command:remote", "create ")))
    assert platform.events.index("read Namespace airflow-search") < first_change


# --- the model itself must be able to fail: each provider behaviour, shown to bite --------------


def without_wait_for(monkeypatch, manifest: str) -> None:
    """The program as it was before issue 10: ``database.<manifest>`` without pulumi.com/waitFor."""
    plain = getattr(database, manifest)

    def unawaited(cfg):
        built = plain(cfg)
        built["metadata"]["annotations"].pop(database.WAIT_FOR)
        return built

    monkeypatch.setattr(database, manifest, unawaited)


def test_model_refuses_a_create_of_an_existing_object():
    platform = platform_model.new_instance_after_admin_ng()
    inner = platform.seed

    def helm_made_cluster(p):
        inner(p)
        p.add({"apiVersion": database.CNPG_API, "kind": "Cluster",
               "metadata": {"name": "postgresql-airflow-search", "namespace": "airflow-search"}})

    platform.seed = helm_made_cluster
    run = first_up("search", platform)
    assert isinstance(run.error, platform_model.ProviderError)
    assert 'clusters "postgresql-airflow-search" already exists' in str(run.error)


def test_model_refuses_a_second_install_of_the_release():
    platform = platform_model.new_instance_after_admin_ng()
    platform.releases.add(("airflow-search", "production"))
    run = first_up("search", platform)
    assert "cannot re-use a name that is still in use" in str(run.error)


def test_without_wait_for_the_pooler_service_is_missing_when_the_release_needs_it(monkeypatch):
    without_wait_for(monkeypatch, "pooler")
    platform = platform_model.new_instance_after_admin_ng()
    run = first_up("search", platform)
    assert "resource 'airflow-search/postgresql-airflow-search-pooler-rw' does not exist" in str(run.error)
    assert not any(e.startswith("install Release") for e in platform.events), "the release must not start"


def test_database_import_ends_only_when_the_import_has_finished():
    overrides, secrets = phase_overrides("database-import")
    platform = platform_model.new_instance_after_admin_ng()
    assert first_up("search", platform, overrides, secrets).error is None
    cluster = platform.get("Cluster", "airflow-search", "postgresql-airflow-search")
    assert platform_model._ready(cluster), "up returned while the import was still running"
    assert platform.pending == []


def test_without_wait_for_database_import_returns_mid_import(monkeypatch):
    without_wait_for(monkeypatch, "cluster")
    overrides, secrets = phase_overrides("database-import")
    platform = platform_model.new_instance_after_admin_ng()
    assert first_up("search", platform, overrides, secrets).error is None
    cluster = platform.get("Cluster", "airflow-search", "postgresql-airflow-search")
    assert not platform_model._ready(cluster), "the model must show an unawaited import as unfinished"
    assert [w for w, _ in platform.pending] == ["Cluster airflow-search/postgresql-airflow-search"]


def test_database_phase_verification_job_runs_on_the_finished_import_only(monkeypatch):
    overrides, secrets = phase_overrides("database")
    platform = platform_model.new_instance_after_admin_ng()
    assert first_up("search", platform, overrides, secrets).error is None
    assert "job-complete airflow-search/postgresql-airflow-search-verify-import" in platform.events

    without_wait_for(monkeypatch, "cluster")
    platform = platform_model.new_instance_after_admin_ng()
    run = first_up("search", platform, overrides, secrets)
    assert "BackoffLimitExceeded" in str(run.error), "an unawaited import must fail the check, not pass it"
