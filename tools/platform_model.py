"""A model of the live platform a stack meets, as Pulumi mocks: what real providers do.

Pulumi's mock runtime accepts every create; the platform does not.  ``LivePlatform`` holds
the objects that exist (the namespace admin_ng made, Helm-owned objects, buckets) and answers
each registration the way the real provider and engine would, every behaviour cited:

* **create of an existing Kubernetes object fails** with ``AlreadyExists``: pulumi-kubernetes
  >= 4.29 creates with a plain client create unless ``upsertExistingObjects`` is on
  (provider/pkg/await/await.go ``Creation``, l.241-290 at v4.32.0; PR
  https://github.com/pulumi/pulumi-kubernetes/pull/4278, issue #2926).  Preview swallows it
  (provider.go l.1811), so this is what ``up`` does;
* **create of a Helm release whose name is in use fails**: helm.v3.Release's create is a plain
  ``helm install`` (helm_release.go ``helmCreate``, ``action.NewInstall``): "cannot re-use a name
  that is still in use";
* **read of a missing object fails**: the provider's Read answers an empty response on 404
  (provider.go ``Read`` l.2060) and the engine fails the step with "resource '<id>' does not
  exist" (pulumi/pulumi pkg/resource/deploy/step.go ``ReadStep.Apply``);
* **custom resources are awaited only when annotated** with ``pulumi.com/waitFor``
  (provider/pkg/metadata/overrides.go ``ReadyCondition``): the operator's work (a Cluster's
  import and Ready condition, the Pooler's Deployment and Service) is done *by the time create
  returns* only for an awaited object; otherwise it is left ``pending``, i.e. it happens after
  ``up`` has moved on (``settle()`` plays it);
* **a Job is awaited** until Complete, and fails fast on BackoffLimitExceeded
  (provider/pkg/await/job.go): the verification Job succeeds only if the Cluster it compares
  has finished its import;
* **Airflow pods read the pooler Service's link variables at start** (wmf-charts.md 1.7): a
  release that runs pods on CloudNativePG while that Service or the ``-app`` Secret is missing
  fails its Helm wait and the atomic release rolls back.

* **a stack's own previous outputs** are what its last update recorded (the phase guard reads
  ``phase`` through the built-in ``pulumi:pulumi:readStackOutputs``, components/phase_guard.py):
  none before the first update; ``deployed_phase`` models it.

Every other registration (providers, random, Commands, buckets) is recorded in ``events``
in the order the engine would run it.  Not an engine: no state, no diff.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from pulumi.runtime import mocks as pm

from tools import mockrun

Key = tuple[str, str, str]  # (kind, namespace or "", name)

RELEASE = "kubernetes:helm.sh/v3:Release"
READ_STACK_OUTPUTS = "pulumi:pulumi:readStackOutputs"
RUNBOOK = "(the runbook's previous phase)"
BUCKET = "aws:s3/bucket:Bucket"
WAIT_FOR = "pulumi.com/waitFor"


class ProviderError(Exception):
    """What the real provider or engine would report for this registration (``resource`` is
    the "<type> <logical name>" the CLI prints the error under)."""

    def __init__(self, message: str, resource: str = ""):
        super().__init__(message)
        self.resource = resource


def key_of(kind: str, namespace: str | None, name: str) -> Key:
    return (kind, "" if kind == "Namespace" else (namespace or ""), name)


@dataclass
class LivePlatform(mockrun.Mocks):
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    releases: set[tuple[str, str]] = field(default_factory=set)  # (namespace, release name)
    buckets: set[str] = field(default_factory=set)
    seed: Callable[["LivePlatform"], None] | None = None  # fills ``objects`` on first use
    events: list[str] = field(default_factory=list)
    pending: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    # The stack's previous outputs as the backend keeps them, read by the phase guard: the
    # ``phase`` a previous update recorded (None: never deployed), or RUNBOOK: the phase before the
    # configured one on the runbook's path (none for webserver and for a new instance at complete),
    # i.e. the ``up`` that takes the stack one step forward, which the guard accepts.
    deployed_phase: str | None = RUNBOOK
    other_stacks: dict[str, dict[str, Any]] = field(default_factory=dict)  # full name -> outputs
    stack_reads: list[str] = field(default_factory=list)  # "<name> phase=<x>" per read
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # --- the state -------------------------------------------------------------------------
    def add(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.objects[key_of(obj["kind"], meta.get("namespace"), meta["name"])] = obj

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.objects.get(key_of(kind, namespace, name))

    def settle(self) -> list[str]:
        """Let the operators finish what nobody waited for (after ``up`` returned)."""
        done = [what for what, _ in self.pending]
        for _, effect in self.pending:
            effect()
        self.pending.clear()
        return done

    def render_state(self) -> dict[str, Any]:
        """What the answers to a render depend on (tools/render_cache.RenderCache): all but the logs."""
        return {k: v for k, v in vars(self).items() if k not in ("events", "stack_reads", "deleted", "_lock")}

    # --- the mock hooks ----------------------------------------------------------------------
    def new_resource(self, args: pm.MockResourceArgs):
        with self._lock:
            if self.seed is not None:
                seed, self.seed = self.seed, None
                seed(self)
            if args.resource_id:
                return self._read(args)
            try:
                self._create(args)
            except ProviderError as exc:
                exc.resource = exc.resource or f"{args.typ} {args.name}"
                raise
        return super().new_resource(args)

    def call(self, args: pm.MockCallArgs):
        if args.token != READ_STACK_OUTPUTS:
            return super().call(args)
        # the built-in provider's readStackOutputs (pulumi/pulumi pkg/resource/deploy/builtins.go
        # readStackReference): {name, outputs, secretOutputNames}; an unknown stack fails the read
        # (pkg/backend/backend.go GetStackOutputs: "unknown stack"), a never-updated one has no outputs
        # (pkg/backend/diy/state.go getSnapshotStackOutputs)
        import pulumi

        name = args.args.get("name")
        if name == f"organization/{pulumi.get_project()}/{pulumi.get_stack()}":
            phase = self.deployed_phase
            if phase == RUNBOOK:
                phase = runbook_previous_phase(pulumi.Config("airflow").get("phase") or "complete",
                                               pulumi.Config("airflow").get("legacy") is not None)
            outputs = {} if phase is None else {"phase": phase}
        elif name in self.other_stacks:
            outputs = self.other_stacks[name]
        else:
            raise ProviderError(f"unknown stack {name!r}", READ_STACK_OUTPUTS)
        self.stack_reads.append(f"{name} phase={outputs.get('phase') or 'none'}")
        return {"name": name, "outputs": outputs, "secretOutputNames": []}

    def _read(self, args: pm.MockResourceArgs):
        kind = args.typ.rsplit(":", 1)[-1]
        namespace, _, name = args.resource_id.rpartition("/")
        live = self.get(kind, namespace, name)
        if live is None:
            self.events.append(f"read-missing {kind} {args.resource_id}")
            # pulumi/pulumi pkg/resource/deploy/step.go ReadStep.Apply
            raise ProviderError(f"resource '{args.resource_id}' does not exist", f"{args.typ} {args.name}")
        self.events.append(f"read {kind} {args.resource_id}")
        return args.resource_id, copy.deepcopy(live)

    def _create(self, args: pm.MockResourceArgs) -> None:
        # the values as the provider receives them (secret wrappers off)
        typ, inputs = args.typ, mockrun.unmasked(mockrun._from_struct_value(args.inputs))
        if typ == RELEASE:
            self._create_release(args.name, inputs)
        elif typ == BUCKET:
            # NOT CITED: assumed from S3's CreateBucket on a name that exists (BucketAlreadyExists /
            # BucketAlreadyOwnedByYou, both failing pulumi-aws's create); RGW's answer for the owner
            # was not checked against its source or the real RGW of the integration tests
            bucket = inputs.get("bucket")
            if bucket in self.buckets:
                raise ProviderError(f"creating S3 Bucket ({bucket}): BucketAlreadyExists")
            self.buckets.add(bucket)
            self.events.append(f"create Bucket {bucket}")
        elif typ.startswith("kubernetes:") and not typ.startswith("pulumi:providers:"):
            self._create_object(inputs)
        else:
            self.events.append(f"register {typ} {args.name}")

    def _create_object(self, inputs: dict[str, Any]) -> None:
        kind = inputs.get("kind")
        meta = inputs.get("metadata") or {}
        name, namespace = meta.get("name"), meta.get("namespace")
        where = f"{namespace}/{name}" if namespace and kind != "Namespace" else name
        if self.get(kind, namespace, name) is not None:
            # pulumi-kubernetes provider/pkg/await/await.go Creation (plain create, no upsert)
            plural = kind.lower() + ("es" if kind.endswith("s") else "s")
            raise ProviderError(
                f"resource {where} was not successfully created by the Kubernetes API server: "
                f"{plural} \"{name}\" already exists"
            )
        obj = {k: copy.deepcopy(v) for k, v in inputs.items() if k in ("apiVersion", "kind", "metadata", "spec", "data", "stringData", "type")}
        self.add(obj)
        self.events.append(f"create {kind} {where}")
        awaited = WAIT_FOR in (meta.get("annotations") or {})
        effect = _OPERATOR_EFFECTS.get(kind)
        if effect is not None:
            run = lambda: effect(self, obj)  # noqa: E731
            if awaited:
                run()
            else:
                self.pending.append((f"{kind} {where}", run))
        if kind == "Job":
            self._await_job(obj)

    def _await_job(self, job: dict[str, Any]) -> None:
        """The database verification Job compares the legacy database with the Cluster."""
        namespace = job["metadata"]["namespace"]
        clusters = [o for (k, ns, _), o in self.objects.items() if k == "Cluster" and ns == namespace]
        if not clusters or not all(_ready(c) for c in clusters):
            # job.go: Failed=True with reason BackoffLimitExceeded fails the create at once
            raise ProviderError(
                f"Job {namespace}/{job['metadata']['name']} failed: BackoffLimitExceeded "
                "(the verifier found the import unfinished)"
            )
        self.events.append(f"job-complete {namespace}/{job['metadata']['name']}")

    def _create_release(self, resource_name: str, inputs: dict[str, Any]) -> None:
        namespace, name = inputs.get("namespace"), inputs.get("name")
        if (namespace, name) in self.releases:
            raise ProviderError(f"cannot re-use a name that is still in use ({namespace}/{name})")
        values = inputs.get("values") or {}
        cloudnative = (values.get("postgresql") or {}).get("cloudnative", True) is not False
        runs_pods = (values.get("resources") or {}).get("replicas") != 0
        if cloudnative and runs_pods:
            pg = values.get("pgServiceName")
            for kind, obj_name in (("Service", f"{pg}-pooler-rw"), ("Secret", f"{pg}-app")):
                if self.get(kind, namespace, obj_name) is None:
                    raise ProviderError(
                        f"release {namespace}/{name} failed, rolled back (atomic): pods started without "
                        f"{kind} {obj_name} (CloudNativePG had not made it yet)"
                    )
        self.releases.add((namespace, name))
        self.events.append(f"install Release {namespace}/{name}")


def runbook_previous_phase(phase: str, legacy: bool) -> str | None:
    """The phase a stack is in before the runbook's ``up`` to ``phase``: none before webserver (a
    migration's first up) or before a new instance's complete; the one before it otherwise."""
    from components.config_keys import PHASES

    if phase not in PHASES or phase == "webserver" or (phase == "complete" and not legacy):
        return None
    return PHASES[PHASES.index(phase) - 1]


def _ready(cluster: dict[str, Any]) -> bool:
    conditions = (cluster.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _cluster_effect(platform: LivePlatform, cluster: dict[str, Any]) -> None:
    """CloudNativePG: the app Secret and services early, Ready after bootstrap/import."""
    meta = cluster["metadata"]
    ns, name = meta["namespace"], meta["name"]
    platform.add({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-app", "namespace": ns}})
    for suffix in ("rw", "ro", "r"):
        platform.add({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"{name}-{suffix}", "namespace": ns}})
    cluster["status"] = {"phase": "Cluster in healthy state", "conditions": [{"type": "Ready", "status": "True"}]}


def _pooler_effect(platform: LivePlatform, pooler: dict[str, Any]) -> None:
    """CloudNativePG's pooler reconcile: the pgbouncer Deployment, then the Service."""
    meta = pooler["metadata"]
    ns, name = meta["namespace"], meta["name"]
    platform.add({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns}})
    platform.add({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}})
    pooler["status"] = {"instances": pooler.get("spec", {}).get("instances", 1)}


_OPERATOR_EFFECTS: dict[str, Callable[[LivePlatform, dict[str, Any]], None]] = {
    "Cluster": _cluster_effect,
    "Pooler": _pooler_effect,
}


# --- scenarios ---------------------------------------------------------------------------------
def admin_ng_objects(cfg) -> list[dict[str, Any]]:
    """What admin_ng's namespaces entry makes (helmfile.d/admin_ng/helmfile_namespaces.yaml):
    the Namespace with the entry's labels (the restricted PSS labels when the entry sets no
    pod-security.wmf.org/profile) and RoleBindings ``view`` and ``deploy``."""
    from components.namespace import DEPLOY_CLUSTER_ROLE, admin_ng_entry

    entry = admin_ng_entry(cfg)
    labels = dict(entry.get("labels") or {})
    if "pod-security.wmf.org/profile" not in labels:
        labels.update({f"pod-security.kubernetes.io/{m}": "restricted" for m in ("audit", "enforce", "warn")})
    ns = cfg.namespace

    def binding(name: str, role: str, user: str) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }

    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}, "status": {"phase": "Active"}},
        binding("view", "view", ns),
        binding("deploy", entry["deployClusterRole"] if "deployClusterRole" in entry else DEPLOY_CLUSTER_ROLE, cfg.deploy_user),
    ]


def new_instance_after_admin_ng(deployed_phase: str | None = RUNBOOK) -> LivePlatform:
    """A brand-new instance whose admin_ng and Kubernetes-user steps are done, nothing else.

    Seeded lazily from the program's own validated config (read when the first resource is
    registered, i.e. after ``config.load()`` has passed)."""

    def seed(platform: LivePlatform) -> None:
        from components import config

        cfg, _ = config.load()
        for obj in admin_ng_objects(cfg):
            platform.add(obj)

    return LivePlatform(seed=seed, deployed_phase=deployed_phase)


def empty_platform() -> LivePlatform:
    """Nothing done yet: not even the admin_ng namespace entry."""
    return LivePlatform()


def without(platform: LivePlatform, kinds: Iterable[str]) -> LivePlatform:
    """The same platform minus every object of these kinds (e.g. a namespace not made)."""
    inner = platform.seed

    def seed(p: LivePlatform) -> None:
        if inner is not None:
            inner(p)
        for key in [k for k in p.objects if k[0] in set(kinds)]:
            del p.objects[key]

    platform.seed = seed
    return platform
