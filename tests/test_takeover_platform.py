"""Taking over a RUNNING instance, in the live-platform model (issue 12, parts 2 and 7).

Every stack in the tree is seeded as helmfile left it (tools/takeover_model.py
``running_instance``: every object the program manages exists, owned by Helm; both releases'
records; the buckets; the RGW users), then put through ``pulumi import --file`` of its
``./dev import-plan`` file and the program's update, and through the whole hand-over of
components/handover.py in its order.  The model cites, for each behaviour, the provider or Helm
source it copies; the negative tests show it can fail.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path

import pytest

from components import config as c
from components import database, handover
from tests.conftest import stack_config
from tests.test_takeover import PAIRS
from tools import import_plan, mockrun, platform_model
from tools import takeover_model as tm
from tools.platform_model import BUCKET, RELEASE

ROOT = Path(__file__).resolve().parent.parent
ALL_STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
# the running instance's Fernet and webserver keys, for stacks whose file does not carry them
# (shaped like the real ones: a urlsafe-base64 32-byte Fernet key)
RUNNING_KEYS = {"fernetKey": base64.urlsafe_b64encode(b"running-instance-fernet-key-0001").decode(),
                "webserverSecretKey": "running-instance-webserver-secret-key-01"}
PROTECTED_KINDS = ("Cluster", "PersistentVolumeClaim", "PersistentVolume")


def test_every_stack_file_is_covered():
    assert len(ALL_STACKS) >= 13 and "search" in ALL_STACKS and "test-k8s" in ALL_STACKS, ALL_STACKS


# --- the stack, its config and the running instance ------------------------------------------

def credentials_config(stack: str, takeover: bool) -> tuple[dict[str, str], list[str]]:
    """The stack's config with the running instance's credentials (as handover step 3 sets them)."""
    config, _ = stack_config(stack)
    secrets = dict(PAIRS)
    secrets.update({k: v for k, v in RUNNING_KEYS.items() if f"airflow:{k}" not in config})
    return stack_config(stack, {"takeover": takeover}, secret_overrides=secrets)


def program(stack: str):
    def for_takeover(takeover: bool):
        config, secret_keys = credentials_config(stack, takeover)
        return lambda mocks: mockrun.run_program("airflow", stack, config, secret_keys, mocks=mocks)
    return for_takeover


def render(stack: str):
    """What ./dev import-plan renders (tools/preview.render: the real program under the model
    of a fresh namespace)."""
    def rendered(takeover: bool) -> mockrun.Run:
        config, secret_keys = credentials_config(stack, takeover)
        run = mockrun.run_program("airflow", stack, config, secret_keys)
        if run.error is not None:
            raise run.error
        return run
    return rendered


def instance_cfg(stack: str) -> c.InstanceConfig:
    config, secret_keys = credentials_config(stack, True)
    cfg, _ = c.load(config, is_secret=lambda k: k in secret_keys, read_secret=lambda k: config.get(k, config.get(f"airflow:{k}")))
    return cfg


def running(stack: str) -> tuple[tm.RunningPlatform, mockrun.Run, c.InstanceConfig]:
    cfg = instance_cfg(stack)
    fresh = platform_model.new_instance_after_admin_ng()
    config, secret_keys = credentials_config(stack, True)
    desired = mockrun.run_program("airflow", stack, config, secret_keys, mocks=fresh)
    assert desired.error is None, f"{stack}: the render fails: {desired.error}"
    return tm.running_instance(desired, fresh, cfg.pg_service_name), desired, cfg


def imported(stack: str) -> tuple[tm.Engine, mockrun.Run, c.InstanceConfig]:
    platform, desired, cfg = running(stack)
    engine = tm.Engine(platform, stack)
    engine.import_file(import_plan.build(desired, stack).document())
    return engine, desired, cfg


def what_must_survive(platform: tm.RunningPlatform, cfg: c.InstanceConfig) -> dict[str, object]:
    ns = cfg.namespace
    return {
        "objects": {k: copy.deepcopy(o.get("spec")) for k, o in platform.objects.items()
                    if k[0] in PROTECTED_KINDS and (k[1] == ns or k[0] == "PersistentVolume")},
        "buckets": set(platform.buckets),
        "rgw_users": copy.deepcopy(platform.rgw_users),
        "release": platform.latest(ns, "production") is not None,
    }


def assert_survived(before: dict, platform: tm.RunningPlatform, cfg: c.InstanceConfig, when: str) -> None:
    now = what_must_survive(platform, cfg)
    gone = sorted(set(before["objects"]) - set(now["objects"]))
    assert not gone, f"{cfg.instance}: {when}: deleted {gone}"
    assert now["buckets"] == before["buckets"], f"{cfg.instance}: {when}: buckets {before['buckets']} -> {now['buckets']}"
    assert now["rgw_users"] == before["rgw_users"], f"{cfg.instance}: {when}: an RGW user's keys changed"
    assert now["release"], f"{cfg.instance}: {when}: Helm no longer has release production (its Pulumi Release would be gone)"


# --- the seed --------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", ALL_STACKS)
def test_running_instance_holds_every_managed_object_owned_by_helm(stack):
    platform, desired, cfg = running(stack)
    managed = tm.managed_registrations(desired)
    for reg in managed:
        if reg.type.startswith("kubernetes:") and reg.type != RELEASE:
            meta = reg.inputs["metadata"]
            live = platform.get(reg.inputs["kind"], meta["namespace"], meta["name"])
            assert live is not None, f"{stack}: {reg.name} does not run"
            assert live["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm", reg.name
            assert live["metadata"]["annotations"]["meta.helm.sh/release-name"] == cfg.pg_service_name, reg.name
            assert [m["manager"] for m in live["metadata"]["managedFields"]] == ["helm"], reg.name
            assert tm.PATCH_FORCE not in live["metadata"]["annotations"], reg.name
    assert platform.latest(cfg.namespace, "production") is not None, "release records of production"
    heads = platform.latest(cfg.namespace, cfg.pg_service_name)["manifest"]
    assert len(heads) == len([r for r in managed if r.type.startswith("kubernetes:") and r.type != RELEASE])
    assert platform.buckets == {cfg.logs_bucket, cfg.pg_bucket}
    assert set(platform.rgw_users) == {cfg.airflow_s3_user, cfg.pg_s3_user}
    assert tm.volumes(platform, cfg.namespace), f"{stack}: the Cluster has no volumes in the model"


# --- import and the first update ----------------------------------------------------------------

@pytest.mark.parametrize("stack", ALL_STACKS)
def test_first_update_after_import_creates_nothing_that_exists_and_updates_the_release_in_place(stack):
    engine, desired, cfg = imported(stack)
    before = what_must_survive(engine.platform, cfg)
    result = engine.up(program(stack)(True))
    assert result.error is None, f"{stack}: the first update fails: {result.error}"

    assert result.of("delete") == [], f"{stack}: deletes {[str(s) for s in result.of('delete')]}"
    assert result.of("replace") == [], f"{stack}: replaces {[str(s) for s in result.of('replace')]}"
    live_kinds = [s for s in result.of("create") if s.type.startswith("kubernetes:") or s.type in (BUCKET, RELEASE)]
    assert live_kinds == [], f"{stack}: creates what runs: {[str(s) for s in live_kinds]}"
    imported_urns = {u for u, e in engine.state.items() if e.origin == "imported"}
    managed = {r.urn for r in tm.managed_registrations(desired) if r.type.startswith("kubernetes:") or r.type == BUCKET}
    assert managed <= imported_urns, f"{stack}: not imported: {sorted(managed - imported_urns)}"

    [release] = [s for s in result.steps if s.type == RELEASE]
    assert release.op == "update", f"{stack}: Release {release.name}: {release}"
    for step in result.steps:
        if step.type.startswith("kubernetes:") and step.type != RELEASE and step.op == "update":
            assert step.force, f"{stack}: {step.name} updated without patchForce"
    assert engine.platform.latest(cfg.namespace, "production")["values"] == mockrun.unmasked(
        desired.monitor.one(RELEASE).inputs["values"]), "the upgrade stores the program's values"
    assert_survived(before, engine.platform, cfg, "first update")


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_without_patch_force_the_first_update_fails_on_helms_fields(stack, monkeypatch):
    engine, _, cfg = imported(stack)
    plain = database._meta

    def without_force(name, c_):
        meta = plain(name, c_)
        meta.pop("annotations", None)
        return meta

    monkeypatch.setattr(database, "_meta", without_force)
    result = engine.up(program(stack)(True))
    assert isinstance(result.error, platform_model.ProviderError), f"{stack}: expected an SSA conflict, got {result.error!r}"
    message = str(result.error)
    assert "server-side apply field conflict detected" in message and 'conflict with "helm"' in message, message
    assert ".metadata.labels.app.kubernetes.io/managed-by" in message, message


def test_model_import_fails_for_an_object_that_does_not_run():
    platform, desired, cfg = running("search")
    pooler = database.names(cfg)["pooler"]
    del platform.objects[("Pooler", cfg.namespace, pooler)]
    engine = tm.Engine(platform, "search")
    with pytest.raises(platform_model.ProviderError) as err:
        engine.import_file(import_plan.build(desired, "search").document())
    assert f"resource '{cfg.namespace}/{pooler}' does not exist" in str(err.value)


def test_model_import_of_the_release_needs_helms_records_of_production():
    platform, desired, cfg = running("search")
    platform.delete_records(cfg.namespace, "production")
    engine = tm.Engine(platform, "search")
    with pytest.raises(platform_model.ProviderError) as err:
        engine.import_file(import_plan.build(desired, "search").document())
    assert f"resource '{cfg.namespace}/production' does not exist" in str(err.value)


# --- the whole hand-over, in components/handover.py's order --------------------------------------

def handed_over(stack: str, check=None) -> tuple[tm.Handover, c.InstanceConfig]:
    platform, _, cfg = running(stack)
    before = what_must_survive(platform, cfg)
    h = tm.Handover(tm.Engine(platform, stack), render(stack), program(stack))
    steps = handover.steps(cfg)

    def after_each(i, h_):
        assert_survived(before, platform, cfg, f"before {steps[i]['step']}")
        if check is not None:
            check(i, h_)

    h.run(steps, before_step=after_each)
    assert_survived(before, platform, cfg, "after the hand-over")
    return h, cfg


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_handover_sequence_never_deletes_or_replaces_the_data(stack):
    h, cfg = handed_over(stack)
    platform = h.engine.platform
    assert [u for u in h.ups if u.error is not None] == []
    for up in h.ups:
        bad = [str(s) for s in up.steps if s.op in ("delete", "replace")]
        assert bad == [], f"{stack}: an update of the hand-over deletes or replaces: {bad}"
    [first_up] = [u for u in h.ups if not u.dry_run and any(s.force for s in u.steps)]
    assert [s for s in first_up.steps if s.type == RELEASE][0].op == "update"
    assert platform.latest(cfg.namespace, cfg.pg_service_name) is None, "Helm still has the database release"
    assert platform.deleted == [f"Secret {cfg.namespace}/{tm.helm_record_name(cfg.pg_service_name, 1)}"], \
        f"{stack}: the hand-over deleted more than Helm's record of the database release: {platform.deleted}"
    # after the retirement, a stray `helm uninstall` of the database release finds nothing to delete
    with pytest.raises(tm.HelmError, match="release: not found"):
        platform.helm_uninstall(cfg.namespace, cfg.pg_service_name)
    assert platform.deleted == [f"Secret {cfg.namespace}/{tm.helm_record_name(cfg.pg_service_name, 1)}"]


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_after_takeover_is_off_no_update_carries_patch_force_and_the_next_changes_nothing(stack):
    h, cfg = handed_over(stack)
    assert h.takeover is False, "the hand-over ends with takeover false"
    # step 5's `pulumi up` (takeover false): the first update's patchForce comes off, nothing else
    ups = [u for u in h.ups if not u.dry_run]
    assert len(ups) == 2, f"{stack}: expected the hand-over's two updates (takeover on, then off), got {len(ups)}"
    first, second = ups
    assert any(s.force for s in first.steps) and not any(s.force for s in second.steps)
    carrying = [r.name for r in second.run.monitor.registered() if tm.PATCH_FORCE in repr(mockrun.masked(r.inputs))]
    assert carrying == [], f"{stack}: still patchForce: {carrying}"
    changes = [s for s in second.steps if s.op not in ("same", "read")]
    assert all(s.op == "update" and s.paths == [f"metadata.annotations.{tm.PATCH_FORCE}"] and not s.force for s in changes), \
        f"{stack}: the update after takeover false changes more than the patchForce annotation: {[str(s) for s in changes]}"
    for kind, ns, name in [k for k in h.engine.platform.objects if k[1] == cfg.namespace]:
        annotations = h.engine.platform.objects[(kind, ns, name)]["metadata"].get("annotations") or {}
        assert tm.PATCH_FORCE not in annotations, f"{stack}: {kind} {name} keeps patchForce"
    again = h.engine.up(program(stack)(False))
    assert again.error is None, f"{stack}: {again.error}"
    assert [str(s) for s in again.steps if s.op not in ("same", "read")] == [], f"{stack}: the next update still changes"


# --- the model bites: Helm deletes what it owns ------------------------------------------------------

@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_helm_uninstall_before_helm_forgets_the_release_deletes_the_cluster_and_its_volumes(stack):
    platform, _, cfg = running(stack)
    cluster = ("Cluster", cfg.namespace, cfg.pg_service_name)
    volumes = tm.volumes(platform, cfg.namespace)
    deleted = platform.helm_uninstall(cfg.namespace, cfg.pg_service_name)
    assert cluster not in platform.objects, f"{stack}: Cluster {cfg.pg_service_name} survived helm uninstall"
    for kind, ns, name in volumes:
        assert (kind, ns, name) not in platform.objects, f"{stack}: {kind} {name} survived its Cluster"
    assert f"Cluster {cfg.namespace}/{cfg.pg_service_name}" in deleted
    assert platform.latest(cfg.namespace, "production") is not None, "the other release is untouched"


def test_helm_uninstall_in_the_middle_of_the_handover_deletes_the_cluster_only_before_step_2():
    def uninstall_before_step_2(i, h):
        if i == 1:
            h.engine.platform.helm_uninstall("airflow-search", "postgresql-airflow-search")

    with pytest.raises(AssertionError, match="deleted"):
        handed_over("search", check=uninstall_before_step_2)

    def uninstall_after_step_2(i, h):
        if i == 2:
            with pytest.raises(tm.HelmError, match="release: not found"):
                h.engine.platform.helm_uninstall("airflow-search", "postgresql-airflow-search")

    handed_over("search", check=uninstall_after_step_2)


def test_keep_policy_in_the_stored_manifest_makes_uninstall_leave_every_object():
    platform, _, cfg = running("search")
    objects = set(platform.objects)
    platform.helm_upgrade_keep(cfg.namespace, cfg.pg_service_name)
    deleted = platform.helm_uninstall(cfg.namespace, cfg.pg_service_name)
    assert [d for d in deleted if not d.startswith(f"Secret {cfg.namespace}/sh.helm.release.v1.")] == []
    assert {k for k in objects if not k[2].startswith("sh.helm.release.v1.postgresql")} <= set(platform.objects)
