"""The phase guard: one migration phase at a time, forward only, known from the stack's own
previous ``phase`` output (components/phase_guard.py), modelled by tools/platform_model.py."""

import pytest

from components import phase_guard
from components.config import ConfigError
from components.config_keys import PHASES
from tests.conftest import stack_config
from tests.test_migration_phases import phase_overrides
from tools import mockrun, platform_model


def run_at(phase, deployed=platform_model.RUNBOOK, extra=None):
    overrides, secrets = phase_overrides(phase)
    config, secret_keys = stack_config("search", overrides={**overrides, **(extra or {})}, secret_overrides=secrets)
    platform = platform_model.new_instance_after_admin_ng(deployed_phase=deployed)
    return mockrun.run_program("airflow", "search", config, secret_keys, mocks=platform), platform


def test_a_jump_is_refused_in_one_line_naming_the_next_phase_before_any_resource():
    run, platform = run_at("database", deployed="webserver")
    assert isinstance(run.error, ConfigError)
    assert str(run.error) == ("airflow:phase: webserver is deployed and database would skip scheduler, database-import; "
                              "the next phase is scheduler: `pulumi config set -s search phase scheduler`")
    assert run.monitor.registered() == [] and platform.events == []
    # nothing exported: the engine keeps the previous outputs of a failed update, so the recorded phase stays
    assert "phase" not in run.monitor.stack_outputs


@pytest.mark.parametrize("deployed,phase", [(PHASES[i], PHASES[j]) for i in range(5) for j in range(5) if j > i + 1])
def test_every_jump_names_the_phase_after_the_deployed_one(deployed, phase):
    with pytest.raises(ConfigError, match=rf"the next phase is {PHASES[PHASES.index(deployed) + 1]}: "):
        phase_guard.check("search", phase, deployed, legacy=True)


@pytest.mark.parametrize("deployed,phase", list(zip(PHASES, PHASES[1:])))
def test_one_step_forward_is_accepted_and_recorded(deployed, phase):
    run, platform = run_at(phase, deployed=deployed)
    assert run.error is None, run.error
    assert run.monitor.stack_outputs["phase"] == phase  # what the next up reads back
    assert platform.stack_reads == [f"organization/airflow/search phase={deployed}"]


@pytest.mark.parametrize("phase", PHASES)
def test_staying_at_the_deployed_phase_is_accepted(phase):
    run, _ = run_at(phase, deployed=phase)
    assert run.error is None, run.error


@pytest.mark.parametrize("deployed,phase", [("scheduler", "webserver"), ("database", "database-import"), ("complete", "database")])
def test_going_back_is_refused(deployed, phase):
    run, _ = run_at(phase, deployed=deployed)
    assert str(run.error) == (f"airflow:phase: {deployed} is deployed and a migration does not go back to {phase}; "
                              f"keep phase {deployed} (`pulumi config set -s search phase {deployed}`)")
    assert run.monitor.registered() == []


def test_a_first_up_starts_a_migration_at_webserver_or_a_new_instance_at_complete():
    for phase in ("webserver", "complete"):
        run, _ = run_at(phase, deployed=None)
        assert run.error is None, (phase, run.error)
    run, _ = run_at("database-import", deployed=None)
    assert str(run.error) == ("airflow:phase: database-import cannot be the first phase this stack deploys (nothing recorded yet); "
                              "start at webserver: `pulumi config set -s search phase webserver`")
    # a new instance (no legacy block) is told to start at complete
    with pytest.raises(ConfigError, match="start at complete: `pulumi config set -s x phase complete`"):
        phase_guard.check("x", "scheduler", None, legacy=False)


def test_the_guard_reads_the_outputs_of_this_very_stack_by_its_full_name():
    _, platform = run_at("complete", deployed="database")
    assert platform.stack_reads == ["organization/airflow/search phase=database"]


def test_the_override_allows_exactly_the_transition_it_names_and_is_refused_once_spent():
    run, _ = run_at("scheduler", deployed=None, extra={"allowPhaseChange": "none->scheduler"})
    assert run.error is None, run.error
    run, _ = run_at("database", deployed="webserver", extra={"allowPhaseChange": "webserver->database"})
    assert run.error is None, run.error
    # spent (the next up of the same phase) or naming another change: refused, never silently kept
    run, _ = run_at("database", deployed="database", extra={"allowPhaseChange": "webserver->database"})
    assert str(run.error) == ("airflow:allowPhaseChange: allows 'webserver->database' but this up is database->database; "
                              "remove it (`pulumi config rm -s search allowPhaseChange`) unless you mean this exact change")
    run, _ = run_at("complete", deployed="webserver", extra={"allowPhaseChange": "webserver->database"})
    assert str(run.error).startswith("airflow:allowPhaseChange: allows 'webserver->database' but this up is webserver->complete")


def test_the_default_model_is_the_runbooks_previous_phase():
    assert [platform_model.runbook_previous_phase(p, legacy=True) for p in PHASES] == [
        None, "webserver", "scheduler", "database-import", "database"]
    assert platform_model.runbook_previous_phase("complete", legacy=False) is None  # a brand-new instance


def test_another_stacks_name_is_an_unknown_stack_in_the_model():
    # the guard must name this stack: reading any other (e.g. without the organization) fails as the backend does
    platform = platform_model.LivePlatform()

    def program():
        import pulumi
        pulumi.runtime.invoke(phase_guard.READ_STACK_OUTPUTS, {"name": "search"})

    run = mockrun.run_program("airflow", "search", {}, program=program, mocks=platform)
    assert "unknown stack 'search'" in str(run.error)
