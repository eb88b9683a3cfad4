"""The take-over of a RUNNING, Helm-owned instance, in the tests' live-platform model (issue 12, parts 2 and 7).

``tools/platform_model.py`` models a platform a first ``pulumi up`` meets; this module adds what
mocks do not have and a take-over needs: the instance as helmfile left it (every object the
program manages exists, owned by Helm), a Pulumi state, ``pulumi import --file``, and an update
run of the real program whose registrations are classified against that state.  It is a test
model, not an engine: each behaviour below is the smallest piece of the upstream code that the
take-over depends on, and cites it.  Sources read (snapshots brought by the ``fetch`` tool):

* pulumi-kubernetes ``v4.32.0-27-g94977969d`` (commit 94977969d6; the SDK here is 4.34.2);
* pulumi/pulumi ``pkg/v3.259.0-14-g1b5949891b``;
* Helm ``v3.19.5`` (the Helm 3 line helmfile runs);
* cloudnative-pg ``v1.30.0-86-ga95a534db``;
* Kubernetes docs, "Server-Side Apply" (https://kubernetes.io/docs/reference/using-api/server-side-apply/).

Where a behaviour is assumed rather than read, the comment says ``NOT CITED``.
"""

from __future__ import annotations

import base64
import copy
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from pulumi.runtime import mocks as pm

from tools import mockrun
from tools.platform_model import BUCKET, RELEASE, LivePlatform, ProviderError, key_of

Path = tuple[str, ...]

COMMAND = "command:remote:Command"
PROVIDER_PREFIX = "pulumi:providers:"
PATCH_FORCE = "pulumi.com/patchForce"
KEEP = "helm.sh/resource-policy"
HELM = "helm"
# pulumi-kubernetes PR #2271 ("Always set a field manager name"): in SSA mode the manager is
# "pulumi-kubernetes-<random suffix>"; one fixed name stands for it here
PULUMI_MANAGER = "pulumi-kubernetes-model"
CLUSTER_KIND = "Cluster"
# the API groups pulumi-kubernetes knows built-in schemas for (kinds.KnownGroupVersions): only
# those are normalized (provider.go shouldNormalize) and imported with their fields (Read)
BUILTIN_API_VERSIONS = {"v1", "apps/v1", "batch/v1", "networking.k8s.io/v1", "rbac.authorization.k8s.io/v1", "policy/v1"}


class HelmError(Exception):
    """What the helm CLI would print and exit non-zero with."""


class ModelGap(Exception):
    """A hand-over command this model does not know: the test must fail, not guess."""


# --- paths ---------------------------------------------------------------------------------------
def leaves(node: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Leaf paths of a JSON object; lists are atomic (compared whole)."""
    if isinstance(node, dict) and node:
        out: dict[Path, Any] = {}
        for k, v in node.items():
            out.update(leaves(v, prefix + (k,)))
        return out
    return {prefix: node}


def get_path(node: Any, path: Path) -> Any:
    for p in path:
        if not isinstance(node, dict) or p not in node:
            return _MISSING
        node = node[p]
    return node


def set_path(node: dict, path: Path, value: Any) -> None:
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = copy.deepcopy(value)


def del_path(node: dict, path: Path) -> None:
    for p in path[:-1]:
        node = node.get(p)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)


class _Missing:
    def __repr__(self) -> str:
        return "<absent>"


_MISSING = _Missing()


def dotted(path: Path) -> str:
    return ".".join(path)


# --- what pulumi-kubernetes does to inputs -------------------------------------------------------
def prune(source: Any, target: Any) -> Any:
    """provider/pkg/provider/util.go ``pruneMap``: the live object cut down to the shape of the
    old inputs (keys absent from the inputs are dropped; lists are kept as they are)."""
    if not isinstance(source, dict) or not isinstance(target, dict):
        return source
    return {k: (prune(v, target[k]) if isinstance(v, dict) and isinstance(target[k], dict) else v)
            for k, v in source.items() if k in target}


def normalize(obj: dict[str, Any]) -> dict[str, Any]:
    """provider.go ``normalizeInputs`` + clients/unstructured.go ``normalizeSecretStringData``: a
    Secret's ``stringData`` becomes base64 ``data`` (what the API server stores, k8s
    pkg/apis/core/v1/conversion.go); read-only metadata is dropped."""
    obj = copy.deepcopy(mockrun.unmasked(obj))
    if obj.get("kind") == "Secret" and obj.get("apiVersion") == "v1" and obj.get("stringData"):
        data = obj.setdefault("data", {})
        for k, v in obj.pop("stringData").items():
            data[k] = base64.b64encode(str(v).encode()).decode()
    for k in ("creationTimestamp", "deletionGracePeriodSeconds", "deletionTimestamp", "generation",
              "managedFields", "resourceVersion", "uid"):
        (obj.get("metadata") or {}).pop(k, None)
    return obj


def force_new_paths(obj: dict[str, Any]) -> list[Path]:
    """provider/pkg/provider/diff.go ``forceNewProperties``: ``.metadata.name``/``.namespace`` for
    every kind (``metadataForceNewProperties``), plus the built-in kinds' immutable fields (the
    ``forceNew`` table).  Only the kinds a take-over meets are copied here; a Secret's
    ``.type``/``.stringData``/``.data`` replace it unless the provider sets ``enableSecretMutable``
    (this program's provider does not, components/providers.py).  Custom resources (CNPG,
    Calico) have no entry: only their name and namespace replace them."""
    paths: list[Path] = [("metadata", "name"), ("metadata", "namespace")]
    kind, api = obj.get("kind"), obj.get("apiVersion")
    table: dict[tuple[str, str], list[Path]] = {
        ("v1", "Secret"): [("type",), ("stringData",), ("data",)],
        ("v1", "Service"): [("spec", "clusterIP")],
        ("v1", "PersistentVolumeClaim"): [("spec", "accessModes"), ("spec", "selector"), ("spec", "storageClassName"), ("spec", "volumeName")],
        ("rbac.authorization.k8s.io/v1", "RoleBinding"): [("roleRef",)],
        ("batch/v1", "Job"): [("spec", "completions"), ("spec", "parallelism"), ("spec", "selector"), ("spec", "template")],
        ("apps/v1", "Deployment"): [("spec", "selector")],
    }
    return paths + table.get((api, kind), [])


def _under(path: Path, prefix: Path) -> bool:
    return path[: len(prefix)] == prefix


def k8s_diff(old_inputs: dict, live: dict, new_inputs: dict, ignore_changes: Iterable[str] = ()) -> tuple[list[Path], list[Path]]:
    """provider.go ``(*kubeProvider).Diff``: the new inputs against the live object pruned to the
    old inputs' shape (a JSON merge patch: a key the pruned live has and the inputs lack is a
    delete), minus ``ignoreChanges``; a changed path under a force-new property is a replace.
    Returns (changed paths, replacing paths)."""
    new = normalize(new_inputs)
    old_pruned = prune(normalize(live), normalize(old_inputs))
    if new.get("metadata", {}).get("name"):
        # "be sure that the old live object has the previous name" (Diff, before inputPatch)
        old_pruned.setdefault("metadata", {})["name"] = live["metadata"]["name"]
    a, b = leaves(old_pruned), leaves(new)
    changed = sorted(p for p in set(a) | set(b) if a.get(p, _MISSING) != b.get(p, _MISSING))
    # a map present on one side only shows as its leaves; an emptied map ({} vs absent) too
    ignored = [tuple(i.split(".")) for i in ignore_changes]
    changed = [p for p in changed if not any(_under(p, i) for i in ignored)]
    replaces = [p for p in changed if any(_under(p, f) for f in force_new_paths(new))]
    return changed, replaces


# --- server-side apply ---------------------------------------------------------------------------
def ssa_apply(live: dict, applied: dict, manager: str, force: bool, ignore_changes: Iterable[str] = ()) -> list[Path]:
    """Server-side apply of ``applied`` by ``manager`` onto ``live`` (changed in place); returns
    the paths whose value changed.

    * pulumi-kubernetes await.go ``ssaUpdate``: ``fixCSAFieldManagers`` first takes over only
      the managers "kubectl", "before-first-apply" and pulumi's own CSA names -- never "helm";
      ``handleSSAIgnoreFields`` drops an ignored field another manager owns (and we do not), else
      applies its live value; then Patch(ApplyPatchType) with ``Force: patchForce(...)``, where
      ``patchForce`` is true iff the inputs carry ``pulumi.com/patchForce: "true"`` or the
      provider sets ``enablePatchForce`` (never in this program) -- on a real update, not preview;
      a conflict comes back through ``handleSSAErr`` as "server-side apply field conflict detected".
    * Kubernetes SSA ("Field management", "Conflicts"): "fields that have a different value and are
      owned by another manager will result in a conflict"; forced, "the value of any conflicted
      field will be overridden, and the ownership will be transferred"; several appliers setting a
      field to the same value share it; a field dropped from an applier's configuration is removed
      unless another manager still owns it.
    """
    applied = normalize(applied)
    managed = live.setdefault("metadata", {}).setdefault("managedFields", [])
    theirs: dict[Path, set[str]] = {}
    ours_before: set[Path] = set()
    for entry in managed:
        for p in entry["fields"]:
            if entry["manager"] == manager:
                ours_before.add(p)
            else:
                theirs.setdefault(p, set()).add(entry["manager"])
    for ignore in ignore_changes:
        path = tuple(ignore.split("."))
        live_value = get_path(live, path)
        if live_value is _MISSING:
            continue
        if any(_under(p, path) for p in theirs) and not any(_under(p, path) for p in ours_before):
            del_path(applied, path)
        else:
            set_path(applied, path, live_value)
    fields = leaves(applied)
    conflicts = sorted((p, m) for p, v in fields.items() if p in theirs and get_path(live, p) != v for m in theirs[p])
    if conflicts and not force:
        name = live["metadata"]["name"]
        detail = "; ".join(f'conflict with "{m}": .{dotted(p)}' for p, m in conflicts)
        raise ProviderError(
            "server-side apply field conflict detected, see https://www.pulumi.com/registry/packages/kubernetes/"
            "how-to-guides/managing-resources-with-server-side-apply/#handle-field-conflicts-on-existing-resources; "
            f'The resource managed by field manager "{manager}" had an apply conflict: Apply failed with '
            f"{len(conflicts)} conflict(s) on {live['kind']} {name}: {detail}")
    changed = [p for p, v in fields.items() if get_path(live, p) != v]
    for p in changed:
        set_path(live, p, fields[p])
        for entry in managed:  # a changed value moves ownership to the applier
            if entry["manager"] != manager and p in entry["fields"]:
                entry["fields"].remove(p)
    for p in ours_before - set(fields):  # dropped from our configuration
        if p not in theirs:
            del_path(live, p)
            changed.append(p)
    managed[:] = [e for e in managed if e["manager"] != manager and e["fields"]]
    managed.append({"manager": manager, "operation": "Apply", "fields": sorted(fields)})
    return changed


# --- the running instance -----------------------------------------------------------------------
def helm_record_name(release: str, version: int) -> str:
    # Helm v3.19.5 pkg/storage/storage.go makeKey: "sh.helm.release.v1.<name>.v<version>"
    return f"sh.helm.release.v1.{release}.v{version}"


@dataclass
class RunningPlatform(LivePlatform):
    """A platform on which one instance runs as helmfile deployed it."""

    rgw_users: dict[str, dict[str, str]] = field(default_factory=dict)  # uid -> {access key: secret key}
    deleted: list[str] = field(default_factory=list)  # "<kind> <ns>/<name>" in the order they went

    # Helm's storage: Secrets labelled owner=helm,name=<release> (Helm v3.19.5
    # pkg/storage/driver/secrets.go newSecretsObject).  The release body (gzipped, base64 in
    # data.release) is kept decoded under "release" here.
    def records(self, namespace: str, release: str) -> list[dict[str, Any]]:
        out = [o for (k, ns, _), o in self.objects.items() if k == "Secret" and ns == namespace
               and (o["metadata"].get("labels") or {}).get("owner") == "helm"
               and o["metadata"]["labels"].get("name") == release]
        return sorted(out, key=lambda o: int(o["metadata"]["labels"]["version"]))

    def add_record(self, namespace: str, release: str, body: dict[str, Any]) -> None:
        version = len(self.records(namespace, release)) + 1
        self.add({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
                  "metadata": {"name": helm_record_name(release, version), "namespace": namespace,
                               "labels": {"owner": "helm", "name": release, "status": "deployed", "version": str(version)}},
                  "release": copy.deepcopy(body)})
        self._sync_releases()

    def _sync_releases(self) -> None:
        self.releases = {(o["metadata"]["namespace"], o["metadata"]["labels"]["name"])
                         for (k, _, _), o in self.objects.items() if k == "Secret"
                         and (o["metadata"].get("labels") or {}).get("owner") == "helm"}

    def latest(self, namespace: str, release: str) -> dict[str, Any] | None:
        recs = self.records(namespace, release)
        return recs[-1]["release"] if recs else None

    def remove(self, key) -> None:
        obj = self.objects.pop(key, None)
        if obj is not None:
            self.deleted.append(f"{key[0]} {key[1]}/{key[2]}" if key[1] else f"{key[0]} {key[2]}")

    def garbage_collect(self) -> None:
        """The Kubernetes garbage collector: an object whose controller owner is gone is deleted
        (Helm deletes with background propagation, v3.19.5 pkg/action/uninstall.go
        ``parseCascadingFlag``).  A PersistentVolume whose claim is gone is deleted when its
        reclaim policy is Delete (NOT CITED: Kubernetes "Persistent Volumes" reclaiming; the
        dynamically provisioned default)."""
        while True:
            gone = []
            for key, obj in self.objects.items():
                for ref in obj["metadata"].get("ownerReferences") or []:
                    if self.get(ref["kind"], key[1], ref["name"]) is None:
                        gone.append(key)
                claim = (obj.get("spec") or {}).get("claimRef")
                if obj["kind"] == "PersistentVolume" and claim and obj["spec"].get("persistentVolumeReclaimPolicy") == "Delete" \
                        and self.get("PersistentVolumeClaim", claim["namespace"], claim["name"]) is None:
                    gone.append(key)
            if not gone:
                return
            for key in gone:
                self.remove(key)

    # the hand-over's helm and kubectl commands ------------------------------------------------
    def helm_upgrade_keep(self, namespace: str, release: str) -> None:
        """``helm upgrade`` of the release with ``helm.sh/resource-policy: keep`` on every object:
        a new revision whose stored manifest carries the annotation, applied to the objects by
        Helm's manager."""
        body = self.latest(namespace, release)
        if body is None:
            raise HelmError(f'Error: UPGRADE FAILED: "{release}" has no deployed releases')  # v3.19.5 upgrade.go prepareUpgrade
        body = copy.deepcopy(body)
        for head in body["manifest"]:
            head.setdefault("annotations", {})[KEEP] = "keep"
            live = self.get(head["kind"], namespace, head["name"])
            if live is not None:
                live["metadata"].setdefault("annotations", {})[KEEP] = "keep"
                _own(live, HELM, [("metadata", "annotations", KEEP)])
        self.add_record(namespace, release, body)

    def delete_records(self, namespace: str, release: str) -> list[str]:
        """``kubectl -n NS delete secret -l owner=helm,name=REL``: Helm's storage records only."""
        gone = []
        for rec in self.records(namespace, release):
            gone.append(rec["metadata"]["name"])
            self.remove(key_of("Secret", namespace, rec["metadata"]["name"]))
        self._sync_releases()
        return gone

    def helm_uninstall(self, namespace: str, release: str) -> list[str]:
        """Helm v3.19.5 pkg/action/uninstall.go ``(*Uninstall).Run``: no record -> "uninstall:
        Release not loaded: <name>: release: not found" (driver.ErrReleaseNotFound);
        ``deleteRelease`` splits the LATEST stored manifest, keeps what
        ``filterManifestsToKeep`` (resource_policy.go) finds annotated ``helm.sh/resource-policy:
        keep`` in that manifest (not on the live object), deletes the rest, then purges the records
        (KeepHistory false).  Returns what was deleted, dependents included."""
        body = self.latest(namespace, release)
        if body is None:
            raise HelmError(f"Error: uninstall: Release not loaded: {release}: release: not found")
        before = len(self.deleted)
        for head in body["manifest"]:
            if (head.get("annotations") or {}).get(KEEP, "").strip().lower() == "keep":
                continue
            self.remove(key_of(head["kind"], namespace, head["name"]))
        self.delete_records(namespace, release)
        self.garbage_collect()
        return self.deleted[before:]


def _own(obj: dict, manager: str, paths: Iterable[Path]) -> None:
    managed = obj["metadata"].setdefault("managedFields", [])
    entry = next((e for e in managed if e["manager"] == manager), None)
    if entry is None:
        entry = {"manager": manager, "operation": "Update", "fields": []}
        managed.append(entry)
    entry["fields"] = sorted(set(entry["fields"]) | set(paths))


def managed_registrations(run: mockrun.Run) -> list[mockrun.Registration]:
    """What the program manages and a take-over must find running: every custom resource it
    registers that is not a read, not a provider, not a component."""
    return [r for r in run.monitor.registered() if r.custom and not r.read and not r.type.startswith(PROVIDER_PREFIX)]


def rgw_user_of(reg: mockrun.Registration) -> tuple[str, str, str] | None:
    """(uid, access key, secret key) of an RGW user Command (components/rgw_user.py: ``uid=`` in
    its script, the pair on stdin)."""
    script = mockrun.unmasked(reg.inputs.get("create"))
    stdin = mockrun.unmasked(reg.inputs.get("stdin"))
    m = re.search(r"^uid=(\S+)$", script or "", re.M)
    if reg.type != COMMAND or not m or not isinstance(stdin, str):
        return None
    access, secret = stdin.splitlines()[:2]
    return shlex.split(m.group(1))[0], access, secret


def running_instance(desired: mockrun.Run, fresh: LivePlatform, db_release: str, chart_versions: dict[str, str] | None = None) -> RunningPlatform:
    """The instance as helmfile left it, derived from what the program registers (``desired``, a
    render with takeover on) and from ``fresh``, the platform that render ran on (admin_ng's
    objects, the objects created, the operator's own).  Every Kubernetes object the program
    manages is re-labelled as Helm's chart renders it: ``app.kubernetes.io/managed-by: Helm``,
    ``meta.helm.sh/release-name``/``-namespace`` (Helm v3.19.5 pkg/action/validate.go
    ``existingResourceConflict`` checks exactly these), every field owned by manager "helm"
    (operation Update: Helm 3 writes with create/patch, not apply); the program's own
    ``pulumi.com/patchForce`` is not on them (Helm never set it).  Both releases get a record."""
    fresh.settle()
    platform = RunningPlatform()
    for obj in fresh.objects.values():
        platform.add(normalize_live(obj))
    release_reg = None
    heads: list[dict[str, Any]] = []
    namespace = ""
    for reg in managed_registrations(desired):
        if reg.type == RELEASE:
            release_reg = reg
        elif reg.type == BUCKET:
            platform.buckets.add(mockrun.unmasked(reg.inputs["bucket"]))
        elif reg.type.startswith("kubernetes:"):
            meta = reg.inputs["metadata"]
            namespace = meta["namespace"]
            live = platform.get(reg.inputs["kind"], namespace, meta["name"])
            assert live is not None, f"{reg.name}: the fresh render did not create it"
            labels = live["metadata"].setdefault("labels", {})
            labels["app.kubernetes.io/managed-by"] = "Helm"
            labels["helm.sh/chart"] = "cloudnative-pg-cluster"
            annotations = live["metadata"].setdefault("annotations", {})
            annotations.pop(PATCH_FORCE, None)
            annotations.update({"meta.helm.sh/release-name": db_release, "meta.helm.sh/release-namespace": namespace})
            live["metadata"]["managedFields"] = []
            _own(live, HELM, [p for p in leaves({k: v for k, v in live.items() if k not in ("status", "release")})
                              if p[:2] != ("metadata", "managedFields")])
            heads.append({"kind": live["kind"], "name": meta["name"], "annotations": {}})
        elif (user := rgw_user_of(reg)) is not None:
            uid, access, secret = user
            platform.rgw_users[uid] = {access: secret}
    assert release_reg is not None, "the program registers no Helm Release"
    rel = mockrun.unmasked(release_reg.inputs)
    platform.add_record(rel["namespace"], rel["name"], {"chart": rel["chart"], "version": rel["version"],
                                                        "values": rel.get("values") or {}, "manifest": []})
    platform.add_record(namespace, db_release, {"chart": "cloudnative-pg-cluster", "version": (chart_versions or {}).get(db_release, "0"),
                                                "values": {}, "manifest": heads})
    _cnpg_volumes(platform, namespace)
    return platform


def normalize_live(obj: dict[str, Any]) -> dict[str, Any]:
    """As the API server stores it: a Secret's stringData lands in data (k8s conversion.go)."""
    live = normalize(obj)
    if "status" in obj:
        live["status"] = copy.deepcopy(obj["status"])
    return live


def _cnpg_volumes(platform: RunningPlatform, namespace: str) -> None:
    """What CloudNativePG made for each Cluster: one PVC per instance, ``<cluster>-<serial>`` (and
    ``-wal`` with walStorage), each with the Cluster as controller owner (cloudnative-pg
    pkg/reconciler/persistentvolumeclaim/build.go ``Build`` -> ``WithClusterInheritance`` ->
    api/v1/cluster_funcs.go ``SetInheritedDataAndOwnership`` -> pkg/utils/ownership.go
    ``SetAsOwnedBy``); its app Secret and services too (internal/controller/cluster_create.go,
    pkg/specs/services.go, same call).  Deleting the Cluster deletes them."""
    for (kind, ns, name), cluster in list(platform.objects.items()):
        if kind != CLUSTER_KIND or ns != namespace:
            continue
        owner = [{"apiVersion": cluster["apiVersion"], "kind": CLUSTER_KIND, "name": name, "controller": True}]
        for suffix in ("app", "rw", "ro", "r"):
            for dep_kind in ("Secret", "Service"):
                dep = platform.get(dep_kind, ns, f"{name}-{suffix}")
                if dep is not None:
                    dep["metadata"]["ownerReferences"] = copy.deepcopy(owner)
        spec = cluster.get("spec") or {}
        for serial in range(1, int(spec.get("instances", 1)) + 1):
            for volume in ("",) + (("-wal",) if spec.get("walStorage") else ()):
                pvc = f"{name}-{serial}{volume}"
                pv = f"pv-{ns}-{pvc}"
                platform.add({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                              "metadata": {"name": pvc, "namespace": ns, "ownerReferences": copy.deepcopy(owner)},
                              "spec": {"volumeName": pv}, "status": {"phase": "Bound"}})
                platform.add({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
                              "spec": {"claimRef": {"namespace": ns, "name": pvc}, "persistentVolumeReclaimPolicy": "Delete"}})


def volumes(platform: LivePlatform, namespace: str) -> list[tuple[str, str, str]]:
    return sorted(k for k in platform.objects if k[0] in ("PersistentVolumeClaim", "PersistentVolume")
                  and (k[1] == namespace or k[0] == "PersistentVolume"))


# --- the engine side: state, import, update --------------------------------------------------
@dataclass
class StateEntry:
    urn: str
    type: str
    name: str
    id: str
    inputs: dict[str, Any]
    origin: str  # "imported" | "created" (component, provider, or a create step)
    protect: bool = False


@dataclass
class Step:
    op: str  # create | update | replace | same | delete | read
    urn: str
    type: str
    name: str
    paths: list[str] = field(default_factory=list)
    force: bool = False

    def __str__(self) -> str:
        extra = f" [{', '.join(self.paths)}]" if self.paths else ""
        return f"{self.op} {self.type} {self.name}{extra}"


def _urn(stack: str, project: str, chain: str, name: str) -> str:
    return f"urn:pulumi:{stack}::{project}::{chain}::{name}"


class _Answers(mockrun.Mocks):
    """During an update the engine answers reads from the platform (``Resource.get``: the
    Namespace, the pooler Service) and hands registrations to the step generator, which this
    model runs over the recorded registrations afterwards (``Engine.up``)."""

    def __init__(self, platform: RunningPlatform):
        self.platform = platform

    # the kinds the program reads with ``Resource.get`` (components/namespace.py, database.py)
    READ_KINDS = ("Namespace", "Service")

    def render_state(self) -> Any:
        """What the answers depend on (tools/render_cache.RenderCache): reads see the objects only,
        and only those of the kinds the program reads (an update of the hand-over changes other
        objects; were the program to read another kind, a replay would find a different answer
        and fail loudly: add the kind here)."""
        return {k: v for k, v in self.platform.objects.items() if k[0] in self.READ_KINDS}

    def new_resource(self, args: pm.MockResourceArgs):
        if args.resource_id:
            return self.platform._read(args)
        return super().new_resource(args)


@dataclass
class UpResult:
    steps: list[Step]
    error: BaseException | None
    run: mockrun.Run | None = None
    dry_run: bool = False

    def of(self, op: str) -> list[Step]:
        return [s for s in self.steps if s.op == op]

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


@dataclass
class Engine:
    platform: RunningPlatform
    stack: str
    project: str = "airflow"
    state: dict[str, StateEntry] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    replaced_providers: set[str] = field(default_factory=set)

    # pulumi import --file ------------------------------------------------------------------------
    def import_file(self, document: dict[str, Any]) -> list[StateEntry]:
        """pulumi/pulumi pkg/cmd/pulumi/operations/import.go ``parseImportFile`` (parent/provider
        are names of entries, the URN is the parent's type chain + type + name) and
        pkg/resource/deploy/step.go ``ImportStep.Apply``: the provider reads the id; a missing
        object fails the import with "resource '<id>' does not exist".  Components and providers
        (no id) are registered with their inputs.  Imported resources are protected (import.go
        ``Protect: imp.Protect``; the CLI's default)."""
        entries = {e["name"]: e for e in document["resources"]}
        chains: dict[str, str] = {}

        def chain(e: dict[str, Any]) -> str:
            if e["name"] not in chains:
                parent = entries.get(e.get("parent", ""))
                chains[e["name"]] = (chain(parent) + "$" if parent else "") + e["type"]
            return chains[e["name"]]

        done = []
        for e in document["resources"]:
            urn = _urn(self.stack, self.project, chain(e), e["name"])
            if "id" not in e:
                inputs = copy.deepcopy(e.get("inputs") or {})
                self.state[urn] = StateEntry(urn, e["type"], e["name"], "", inputs, "created")
                continue
            inputs = self._read_for_import(e)
            self.state[urn] = StateEntry(urn, e["type"], e["name"], e["id"], inputs, "imported", protect=True)
            done.append(self.state[urn])
            self.history.append(f"import {e['type']} {e['name']} id={e['id']}")
        return done

    def _read_for_import(self, e: dict[str, Any]) -> dict[str, Any]:
        typ, rid = e["type"], e["id"]
        missing = ProviderError(f"resource '{rid}' does not exist", f"{typ} {e['name']}")  # step.go ImportStep.Apply
        if typ == RELEASE:
            namespace, _, name = rid.partition("/")
            body = self.platform.latest(namespace, name)
            if body is None:  # helm_release.go Read: resourceReleaseLookup not found -> deleteResponse
                raise missing
            # helm_release.go Read (import): setReleaseAttributes (name, namespace, chart
            # metadata name, values = the release's user-supplied config, version) + importRelease,
            # serializeImportInputs, setDefaults (timeout defaultTimeoutSeconds = 300)
            return {"name": name, "namespace": namespace, "chart": body["chart"], "version": body["version"],
                    "values": copy.deepcopy(body["values"]), "timeout": 300}
        if typ == BUCKET:
            if rid not in self.platform.buckets:
                raise missing
            # NOT CITED: the bridged aws_s3_bucket import reads the bucket by name; forceDestroy
            # is not an API attribute and takes the schema default (false)
            return {"bucket": rid, "forceDestroy": False}
        if typ.startswith("kubernetes:"):
            namespace, _, name = rid.rpartition("/")
            kind = typ.rsplit(":", 1)[-1]
            live = self.platform.get(kind, namespace, name)
            if live is None:  # provider.go Read: 404 -> deleteResponse
                raise missing
            api = live["apiVersion"]
            inputs: dict[str, Any] = {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": namespace}}
            if api in BUILTIN_API_VERSIONS:
                # provider.go Read, readFromCluster: every input property of the kind's schema is
                # copied from the live object, then creationTimestamp, generation, managedFields,
                # resourceVersion, uid and last-applied are removed.  A custom resource has no
                # schema entry: its inputs stay kind + name + namespace.
                for k in ("metadata", "spec", "data", "stringData", "type", "immutable", "roleRef", "subjects"):
                    if k in live:
                        inputs[k] = copy.deepcopy(live[k])
                inputs = normalize(inputs)
            return inputs
        raise ModelGap(f"no import model for {typ}")

    # pulumi up ----------------------------------------------------------------------------------
    def up(self, run_program: Callable[[pm.Mocks], mockrun.Run], dry_run: bool = False) -> UpResult:
        """One ``pulumi up`` (``dry_run``: ``pulumi preview``): the real program runs under mocks
        that answer its reads from the platform; then each registration, in order, becomes the
        step pulumi/pulumi pkg/resource/deploy/step_generator.go ``generateSteps`` makes: not in
        the state -> create; in it -> the provider's Diff (``diff``) decides same / update /
        replace (a replace of a protected resource is refused, ``generateStepsFromDiff``); what
        the state holds and the program no longer registers is deleted (``GenerateDeletes``)."""
        platform, state = self.platform, self.state
        if dry_run:
            saved = (copy.deepcopy(platform.objects), copy.deepcopy(platform.buckets), copy.deepcopy(platform.rgw_users),
                     copy.deepcopy(state), list(platform.deleted), list(self.history))
        run = run_program(_Answers(platform))
        steps: list[Step] = []
        error: BaseException | None = run.error
        try:
            if error is None:
                seen = set()
                for reg in run.monitor.registered():
                    seen.add(reg.urn)
                    if reg.read:
                        steps.append(Step("read", reg.urn, reg.type, reg.name))
                        continue
                    step = self._step(reg)
                    steps.append(step)
                for urn in [u for u in state if u not in seen]:
                    entry = state[urn]
                    if entry.protect:
                        raise ProviderError(f"unable to delete resource {urn}: it is protected", f"{entry.type} {entry.name}")
                    steps.append(Step("delete", urn, entry.type, entry.name))
                    del state[urn]
        except (ProviderError, HelmError) as exc:
            error = exc
        finally:
            if dry_run:
                (platform.objects, platform.buckets, platform.rgw_users, self.state, platform.deleted, self.history) = saved
                platform._sync_releases()
        self.history += [str(s) for s in steps if s.op not in ("same", "read")]
        return UpResult(steps, error, run, dry_run)

    def _step(self, reg: mockrun.Registration) -> Step:
        inputs = mockrun.unmasked(reg.inputs)
        entry = self.state.get(reg.urn)
        if entry is None:
            self._create(reg, inputs)
            self.state[reg.urn] = StateEntry(reg.urn, reg.type, reg.name, reg.name, inputs, "created", reg.protect)
            return Step("create", reg.urn, reg.type, reg.name)
        if not reg.custom:
            entry.protect = reg.protect
            return Step("same", reg.urn, reg.type, reg.name)
        if reg.type.startswith(PROVIDER_PREFIX):
            old, new = leaves(entry.inputs), leaves(inputs)
            changed = sorted(dotted(p) for p in set(old) | set(new) if old.get(p, _MISSING) != new.get(p, _MISSING))
            entry.inputs = inputs
            # pulumi-kubernetes provider.go ``DiffConfig``: a changed kubeconfig, context or
            # cluster replaces the provider (it compares the active cluster's settings; any change
            # counts here), and a replaced provider replaces every resource it manages
            # (pulumi/pulumi step_generator.go ``providerChanged``).  The aws providers trading the
            # import's profile for their key pairs are updated, not replaced: the bridge's
            # DiffConfig (pulumi-terraform-bridge configDiffer.forcesProviderReplace) replaces only
            # on config marked ForcesProviderReplace, which pulumi-aws sets on none of them.
            if reg.type == PROVIDER_PREFIX + "kubernetes" and {"kubeconfig", "context", "cluster"} & set(changed):
                self.replaced_providers.add(reg.urn)
                return Step("replace", reg.urn, reg.type, reg.name, changed)
            return Step("update" if changed else "same", reg.urn, reg.type, reg.name, changed)
        if reg.provider.rsplit("::", 1)[0] in self.replaced_providers:
            step = Step("replace", reg.urn, reg.type, reg.name, ["provider"])
            if entry.protect or reg.protect:
                raise ProviderError(f"unable to replace resource {reg.urn} as it is currently marked for protection",
                                    f"{reg.type} {reg.name}")
            return step
        if reg.type == RELEASE:
            step = self._diff_release(reg, entry, inputs)
        elif reg.type == BUCKET:
            step = self._diff_bucket(reg, entry, inputs)
        elif reg.type.startswith("kubernetes:"):
            step = self._diff_object(reg, entry, inputs)
        elif reg.type == COMMAND:
            # pulumi-command v1.2.1-136 provider/pkg/provider/remote/command.go: only ``triggers``
            # is replaceOnChanges; any other changed input is an Update (commandController.go
            # ``(*Command).Update``: the ``update`` script, else ``create``, runs again)
            old, new = leaves(entry.inputs), leaves(inputs)
            changed = sorted(dotted(p) for p in set(old) | set(new) if old.get(p, _MISSING) != new.get(p, _MISSING))
            if any(p.startswith("triggers") for p in changed):
                step = Step("replace", reg.urn, reg.type, reg.name, changed)
            elif changed:
                self._create(reg, inputs)
                step = Step("update", reg.urn, reg.type, reg.name, changed)
            else:
                step = Step("same", reg.urn, reg.type, reg.name)
        else:
            raise ModelGap(f"{reg.type} {reg.name}: in the state, but no diff model")
        if step.op == "replace" and (entry.protect or reg.protect):
            # step_generator.go generateStepsFromDiff: a protected resource cannot be replaced
            raise ProviderError(f"unable to replace resource {reg.urn} as it is currently marked for protection",
                                f"{reg.type} {reg.name}")
        entry.inputs, entry.protect = inputs, reg.protect
        return step

    def _create(self, reg: mockrun.Registration, inputs: dict[str, Any]) -> None:
        platform = self.platform
        if reg.type == RELEASE:
            platform._create_release(reg.name, inputs)
            platform.add_record(inputs["namespace"], inputs["name"], {"chart": inputs["chart"], "version": inputs.get("version"),
                                                                      "values": inputs.get("values") or {}, "manifest": []})
        elif reg.type == BUCKET or (reg.type.startswith("kubernetes:") and not reg.type.startswith(PROVIDER_PREFIX)):
            platform._create(pm.MockResourceArgs(reg.type, reg.name, inputs))
        elif (user := rgw_user_of(reg)) is not None:
            # components/rgw_user.py (checked on Ceph 16.2.15): `key create` with an access key the
            # user has replaces that key's secret in place; a new access key ADDS a pair
            uid, access, secret = user
            keys = platform.rgw_users.setdefault(uid, {})
            if keys.get(access) != secret:
                platform.events.append(f"rgw-user-changed {uid}")
            keys[access] = secret
        else:
            platform.events.append(f"register {reg.type} {reg.name}")

    def _diff_object(self, reg: mockrun.Registration, entry: StateEntry, inputs: dict[str, Any]) -> Step:
        kind, meta = inputs["kind"], inputs["metadata"]
        live = self.platform.get(kind, meta.get("namespace"), meta["name"])
        if live is None:
            # the engine would not know; the provider's update would 404.  Not a take-over path.
            raise ProviderError(f"{kind} {meta.get('namespace')}/{meta['name']} is in the state but gone", f"{reg.type} {reg.name}")
        changed, replaces = k8s_diff(entry.inputs, live, inputs, reg.ignore_changes)
        if replaces:
            return Step("replace", reg.urn, reg.type, reg.name, [dotted(p) for p in replaces])
        if not changed:
            return Step("same", reg.urn, reg.type, reg.name)
        force = ((inputs.get("metadata") or {}).get("annotations") or {}).get(PATCH_FORCE) == "true"  # metadata.IsAnnotationTrue
        ssa_apply(live, inputs, PULUMI_MANAGER, force, reg.ignore_changes)
        return Step("update", reg.urn, reg.type, reg.name, [dotted(p) for p in changed], force)

    def _diff_release(self, reg: mockrun.Registration, entry: StateEntry, inputs: dict[str, Any]) -> Step:
        """helm_release.go ``(*helmReleaseProvider).Diff``: any change is DIFF_SOME; only
        ``.name``/``.namespace`` replace (``forceNewFields``).  Update = ``helmUpdate``, a ``helm
        upgrade`` (action.NewUpgrade) of the release Helm has in its records."""
        old, new = leaves(entry.inputs), leaves(inputs)
        changed = sorted(dotted(p) for p in set(old) | set(new) if old.get(p, _MISSING) != new.get(p, _MISSING))
        replaces = [p for p in changed if p in ("name", "namespace")]
        if replaces:
            return Step("replace", reg.urn, reg.type, reg.name, replaces)
        if not changed:
            return Step("same", reg.urn, reg.type, reg.name)
        body = self.platform.latest(inputs["namespace"], inputs["name"])
        if body is None:
            raise HelmError(f'UPGRADE FAILED: "{inputs["name"]}" has no deployed releases')  # v3.19.5 upgrade.go prepareUpgrade
        self.platform.add_record(inputs["namespace"], inputs["name"], {**copy.deepcopy(body), "chart": inputs["chart"],
                                                                       "version": inputs.get("version"), "values": inputs.get("values") or {}})
        return Step("update", reg.urn, reg.type, reg.name, changed)

    def _diff_bucket(self, reg: mockrun.Registration, entry: StateEntry, inputs: dict[str, Any]) -> Step:
        changed = sorted(k for k in set(entry.inputs) | set(inputs) if entry.inputs.get(k) != inputs.get(k))
        # NOT CITED: terraform-provider-aws aws_s3_bucket `bucket` is ForceNew (not read here)
        if "bucket" in changed:
            return Step("replace", reg.urn, reg.type, reg.name, changed)
        return Step("update" if changed else "same", reg.urn, reg.type, reg.name, changed)


# --- the hand-over of components/handover.py, step by step ------------------------------------
@dataclass
class Handover:
    """Runs the commands of ``components.handover.steps`` against the model, in their order.

    ``render(takeover)`` renders the stack (tools.preview.render-like, with the running
    instance's credentials); ``program(takeover)`` returns the ``run_program`` for an update."""

    engine: Engine
    render: Callable[[bool], mockrun.Run]
    program: Callable[[bool], Callable[[pm.Mocks], mockrun.Run]]
    takeover: bool = False
    plan: dict[str, Any] | None = None
    log: list[tuple[str, str, Any]] = field(default_factory=list)  # (step, command, outcome)
    ups: list[UpResult] = field(default_factory=list)

    def run(self, steps: list[dict[str, str]], before_step: Callable[[int, "Handover"], None] | None = None) -> None:
        for i, step in enumerate(steps):
            if before_step is not None:
                before_step(i, self)
            raw = [ln for ln in step["snippet"].splitlines() if ln.strip() and not ln.strip().startswith("#")]
            if step["where"] == "operations/deployment-charts":
                self.log.append((step["step"], "(deployment-charts change: helmfile no longer applies)", None))
                continue
            for line in raw:
                command, _, comment = line.partition("   #")
                outcome = self._command(step["step"], command.strip())
                if "must show no change" in comment:
                    changes = [str(s) for s in outcome.steps if s.op not in ("same", "read")]
                    if changes:
                        raise ModelGap(f"{step['step']}: `{command.strip()}` must show no change, the model shows {changes}")
                self.log.append((step["step"], command.strip(), outcome))

    def _command(self, title: str, line: str) -> Any:
        words = shlex.split(line)
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # KUBECONFIG=...
        p = self.engine.platform
        opts = _options(words)
        if words[:1] == ["kubectl"] and "delete" in words and "secret" in words and "-l" in opts:
            selector = dict(kv.split("=", 1) for kv in opts["-l"].split(","))
            if selector.get("owner") != "helm":
                raise ModelGap(f"{title}: `{line}`")
            return p.delete_records(opts["-n"], selector["name"])
        if words[:1] == ["kubectl"] and "get" in words:
            return "read-only"
        if words[:1] == ["helm"] and "status" in words:
            release = words[words.index("status") + 1]
            return "release: not found" if p.latest(opts["-n"], release) is None else "deployed"
        if words[:1] == ["helm"] and "get" in words and "values" in words:
            return "read-only"
        if words[:1] == ["helm"] and "upgrade" in words and KEEP in line:
            release = words[words.index("upgrade") + 1]
            return p.helm_upgrade_keep(opts["-n"], release)
        if words[:1] == ["helm"] and "uninstall" in words:
            release = words[words.index("uninstall") + 1]
            return p.helm_uninstall(opts["-n"], release)
        if words[:3] == ["pulumi", "config", "set"]:
            if "--secret" in words:
                return "credential from config (the test's)"
            key, value = [w for w in words[3:] if not w.startswith("-") and w != opts.get("-s")][:2]
            if key == "takeover":
                self.takeover = value == "true"
                return f"takeover={self.takeover}"
            raise ModelGap(f"{title}: `{line}`")
        if words[:2] == ["./dev", "import-plan"]:
            from tools import import_plan

            self.plan = import_plan.build(self.render(self.takeover), self.engine.stack).document()
            if "--import" in words:  # the plan, then `pulumi import --file` of it (tools/import_plan.run_import)
                return self.engine.import_file(self.plan)
            return "plan"
        if words[:2] == ["pulumi", "import"]:
            assert self.plan is not None, f"{title}: import before the plan"
            return self.engine.import_file(self.plan)
        if words[:2] == ["./dev", "takeover-diff"]:
            return "read-only"
        if words[:2] in (["pulumi", "preview"], ["pulumi", "up"]):
            result = self.engine.up(self.program(self.takeover), dry_run=words[1] == "preview")
            self.ups.append(result)
            if result.error is not None:
                raise result.error
            return result
        raise ModelGap(f"{title}: no model for `{line}`")


def _options(words: list[str]) -> dict[str, str]:
    out = {}
    for i, w in enumerate(words[:-1]):
        if w.startswith("-") and not words[i + 1].startswith("-"):
            out[w] = words[i + 1]
    return out
