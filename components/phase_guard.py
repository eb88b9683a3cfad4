"""The phase guard: a stack moves one migration phase at a time, forward only.

The phases (components/config_keys.py ``PHASES``) are cumulative: each one's ``pulumi up`` does
its own work on top of the previous phase's (README "Migrating an existing instance").  A jump
skips work nothing else redoes: webserver straight to ``database`` would create the CloudNativePG
Cluster without the ``initdb.import`` stanza (phase ``database-import``), i.e. an empty database,
stopped only by the verification Job.  Going back is refused too: the runbook has no backward
step and each phase leaves what a previous one cannot undo (the legacy services stopped at
``scheduler``, writes to the new database after the cut-over at ``database``, the legacy host
forgotten at ``complete``), and protect stops the engine deleting the RGW users, buckets and
keys anyway.

**How the program knows the deployed phase: the stack's own previous outputs.**  The program
exports ``phase`` (__main__.py); here it reads that output of the *current* stack, before any
resource is registered, through the engine's built-in invoke ``pulumi:pulumi:readStackOutputs``,
the same backend read a ``pulumi.StackReference`` does:

* pulumi/pulumi pkg/resource/deploy/builtins.go: ``Invoke`` routes ``readStackOutputs`` to
  ``readStackReference`` (-> backendClient.GetStackOutputs), and invokes of package ``pulumi`` go
  to that built-in provider (pkg/resource/deploy/providers/registry.go ``loadProvider``).  Nothing
  stops a stack naming itself: GetStackOutputs (pkg/backend/backend.go) parses the name and reads
  the stack's last checkpoint; the self-managed backend reads it without taking the update lock
  (pkg/backend/diy/state.go ``getSnapshotStackOutputs``).
* The very first update: the stack exists (``pulumi stack init``) but has no deployment yet;
  ``getSnapshotStackOutputs`` answers an empty map (``checkpoint.Latest == nil``), and
  ``DeserializeStackOutputs`` an empty one when there is no root Stack resource
  (pkg/resource/stack/deployment.go).  So "no ``phase`` output" means "never deployed".
* During the update the checkpoint still holds the previous outputs: the Stack resource is
  a SameStep, which keeps the old outputs (pkg/resource/deploy/step.go ``SameStep.Apply``), and
  the new outputs replace them only when the update finishes; after a *failed* update the old
  outputs are kept and only the outputs the program did send replace theirs
  (pkg/resource/deploy/step_executor.go ``executeRegisterResourceOutputs``, "If there was an
  error, ... leave old outputs untouched").  A refused run exports nothing (the guard raises
  before ``pulumi.export``), so it never moves the recorded phase; a run that reached the exports
  records its phase even if a resource failed later, so re-running the same phase (the retry)
  is allowed, and the next phase re-does the unfinished work first (the phases are cumulative).
* It works the same in ``pulumi preview`` (invokes run in preview) and in ``pulumi up``.

Why an invoke and not ``pulumi.StackReference``: the resource's outputs are an Output, known only
after the program goes on registering resources (refusing "before any resource" would need a
private ``_sync_await``), and the state would keep a copy of every output of the stack (among them
the secret ``pgBucketCredentials``) in a StackReference resource.  The invoke is synchronous
(``pulumi.runtime.invoke``), registers nothing and stores nothing.

Rejected: a label on a live object (a ``.get`` of a missing object fails the whole run, see
tools/platform_model.py, so a first ``up`` could never pass, and a read is an Output again); a
"deployed phase" key in stack config (a second declaration the operator must keep in step by
hand, true only if they remember, and nothing records a failed or refused ``up``).

A first ``up`` (no recorded phase) may start at ``webserver`` (the runbook's migration starts
there) or ``complete`` (a new instance, or a take-over of one already on Kubernetes).

Override, for one transition only: ``airflow:allowPhaseChange: "<deployed>-><phase>"`` (``none``
for a first up), e.g. an instance whose earlier phases were done before this stack existed,
whose state was re-created by ``pulumi import`` (which runs no program, so records no phase), or
an operator who has undone a phase by hand.  It must name exactly the transition this ``up``
makes, and is refused once spent (the next ``up`` asks to remove it), so it cannot linger.
"""

from __future__ import annotations

import pulumi

from components.config import PROJECT, ConfigError
from components.config_keys import PHASES

READ_STACK_OUTPUTS = "pulumi:pulumi:readStackOutputs"  # pkg/resource/deploy/builtins.go
OVERRIDE_KEY = "allowPhaseChange"
START_PHASES = ("webserver", "complete")
NONE = "none"  # the "deployed phase" of a stack never deployed, in an override


def stack_name() -> str:
    # the fully qualified name the backend parses; the self-managed backend's organization is
    # always "organization" (pkg/backend/diy/state.go: "diy has no organizations really")
    return f"{pulumi.get_organization() or 'organization'}/{pulumi.get_project()}/{pulumi.get_stack()}"


def deployed_phase() -> str | None:
    """The ``phase`` output of this stack's last update that got as far as its exports; None if none."""
    result = pulumi.runtime.invoke(READ_STACK_OUTPUTS, {"name": stack_name()})
    outputs = (result.value or {}).get("outputs") or {}
    phase = outputs.get("phase")
    return phase if isinstance(phase, str) and phase else None


def check(stack: str, phase: str, deployed: str | None, legacy: bool, override: str | None = None) -> None:
    """Raise a one-line ConfigError unless ``deployed`` -> ``phase`` is allowed."""
    transition = f"{deployed or NONE}->{phase}"
    rm = f"`pulumi config rm -s {stack} {OVERRIDE_KEY}`"
    if override is not None:
        if override.replace(" ", "") == transition:
            return
        raise ConfigError(OVERRIDE_KEY, f"allows {override!r} but this up is {transition}",
                          f"remove it ({rm}) unless you mean this exact change")
    if deployed is None:
        if phase in START_PHASES:
            return
        start = "webserver" if legacy else "complete"
        raise ConfigError("phase", f"{phase} cannot be the first phase this stack deploys (nothing recorded yet)",
                          f"start at {start}: `pulumi config set -s {stack} phase {start}`")
    if deployed not in PHASES:
        raise ConfigError("phase", f"the stack's recorded phase {deployed!r} is not a phase",
                          f"if you know what is deployed, set {OVERRIDE_KEY} to '<phase>->{phase}'")
    have, want = PHASES.index(deployed), PHASES.index(phase)
    if want == have or want == have + 1:
        return
    if want > have + 1:
        nxt = PHASES[have + 1]
        raise ConfigError("phase", f"{deployed} is deployed and {phase} would skip {', '.join(PHASES[have + 1:want])}",
                          f"the next phase is {nxt}: `pulumi config set -s {stack} phase {nxt}`")
    raise ConfigError("phase", f"{deployed} is deployed and a migration does not go back to {phase}",
                      f"keep phase {deployed} (`pulumi config set -s {stack} phase {deployed}`)")


def require_one_phase_step(cfg, stack: str) -> None:
    """The guard as the program runs it: after config validation, before any resource."""
    override = pulumi.Config(PROJECT).get(OVERRIDE_KEY)
    check(stack, cfg.phase, deployed_phase(), cfg.legacy is not None, override)
