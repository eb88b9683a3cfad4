"""The hand-over of a running instance from helmfile: ordered, ready commands, nothing deleted."""

import shlex

import pytest

from components import handover
from tests.conftest import run_stack, stack_cfg
from tests.test_takeover import PAIRS, TAKEOVER, rendered_ok


@pytest.fixture(scope="module")
def taken_over():
    return rendered_ok(run_stack("search", overrides=TAKEOVER, secret_overrides=PAIRS))


def test_handover_is_six_ordered_steps_ending_with_the_helmfile_retirement():
    steps = handover.steps(stack_cfg("search"))
    assert [s["step"].split(":")[0] for s in steps] == [f"Take-over {i}/6" for i in range(1, 7)]
    assert "helmfile.d/dse-k8s-services/airflow-search" in steps[-1]["key"]
    assert "helmfile.d/dse-k8s-services/postgresql-airflow-search" in steps[-1]["key"]


def test_helm_forgets_the_database_release_through_its_records_only():
    snippet = handover.steps(stack_cfg("search"))[1]["snippet"]
    commands = [shlex.split(line.split("#")[0]) for line in snippet.splitlines()]
    deletes = [c for c in commands if "delete" in c]
    # the only delete is of Helm's storage records of the database release: never the objects,
    # never `helm uninstall` (which would delete the Cluster, and with it its volumes)
    assert deletes == [["KUBECONFIG=/etc/kubernetes/airflow-search-deploy-dse-k8s-eqiad.config", "kubectl", "-n",
                        "airflow-search", "delete", "secret", "-l", "owner=helm,name=postgresql-airflow-search"]]
    assert "uninstall" not in snippet and "production" not in snippet


def test_import_uses_the_plan_and_the_takeover_setting_is_switched_on_then_off():
    steps = handover.steps(stack_cfg("search"))
    assert "pulumi config set -s search takeover true" in steps[2]["snippet"]
    assert "./dev import-plan -s search --out import-search.json" in steps[2]["snippet"]
    # the import itself through import-plan --import: the buckets need their users' pairs
    assert "./dev import-plan -s search --out import-search.json --import" in steps[2]["snippet"]
    assert "./dev takeover-diff -s search --live-values live-values.yaml" in steps[3]["snippet"]
    assert "pulumi config set -s search takeover false" in steps[4]["snippet"]


# --- what the take-over setting switches on for the first update -----------------------------


def test_takeover_forces_ssa_ownership_on_every_kubernetes_object_and_only_then(taken_over):
    from tests.conftest import rendered

    forced = [r for r in taken_over.registered() if r.type.startswith("kubernetes:") and not r.read
              and r.type != "kubernetes:helm.sh/v3:Release"]
    assert forced, "the take-over renders Kubernetes objects"
    for reg in forced:
        annotations = reg.inputs["metadata"].get("annotations") or {}
        assert annotations.get("pulumi.com/patchForce") == "true", f"{reg.name} must win Helm's field conflicts"
    for reg in rendered("search").registered():
        if reg.type.startswith("kubernetes:") and not reg.read and reg.type != "kubernetes:helm.sh/v3:Release":
            assert "pulumi.com/patchForce" not in (reg.inputs["metadata"].get("annotations") or {}), \
                f"{reg.name}: no force outside a take-over"


def test_takeover_steps_come_in_order_around_the_first_up(taken_over):
    # steps 1-4 end with the first `up`: last of the before-first-up group; 5-6 open after-up
    out = taken_over.stack_outputs["manualSteps"]
    names = [s["step"] for s in out]
    handover_steps = [s["step"] for s in handover.steps(stack_cfg("search"))]
    positions = [names.index(h) for h in handover_steps]
    assert positions == sorted(positions), "the hand-over steps keep their order"
    due = {s["step"]: s["due"] for s in out}
    assert [due[h] for h in handover_steps] == ["before-first-up"] * 4 + ["after-up"] * 2
    before = [s["step"] for s in out if s["due"] == "before-first-up"]
    assert before[-4:] == handover_steps[:4], "the prerequisites come first, then take-over 1-4"
