"""The instance's Namespace: made by admin_ng, read (never created or owned) by this program.

admin_ng's ``namespaces:`` entry (runbook step 1, manual step "admin_ng namespace entry")
creates the Namespace, its labels, limit ranges and quotas, and the RoleBindings ``view`` (read
user ``<ns>``) and ``deploy`` (ClusterRole ``deploy-airflow`` for ``<ns>-deploy``):
operations-deployment-charts ``helmfile.d/admin_ng/helmfile_namespaces.yaml``.  It exists
before the first ``pulumi up``, so a program-created Namespace would fail: since
pulumi-kubernetes 4.29 (https://github.com/pulumi/pulumi-kubernetes/pull/4278, issue #2926)
a create of an existing object is a plain client create that fails with ``AlreadyExists``
(provider/pkg/await/await.go ``Creation``) unless ``upsertExistingObjects`` is on, and
turning that on would make Pulumi a second owner of admin_ng's objects.

So the program *reads* the Namespace (``Namespace.get``: a Read step, which runs in previews
too) through the instance's deploy kubeconfig.  The deploy user may: its RoleBinding grants
``deploy-airflow`` (core ``*``, helmfile_rbac.yaml) and a namespaced RoleBinding covers
``GET /api/v1/namespaces/<its namespace>`` (the request's namespace attribute is the name,
k8s.io/apiserver requestinfo.go; "read access to namespaces at the namespace scope means you
can read *this* namespace", bootstrappolicy/policy.go).

``checked`` is the precondition every other resource depends on: it resolves to the read
Namespace once it exists, is ``Active`` and carries the labels the instance needs, and fails
the run with one line naming the admin_ng step otherwise.  A read of a missing object fails
in the engine with "resource '<id>' does not exist" (pulumi/pulumi pkg/resource/deploy/step.go
``ReadStep.Apply``; the provider's Read returns an empty response on 404, provider.go
``Read``), so nothing that depends on it is ever registered.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Mapping

import pulumi
import pulumi_kubernetes as k8s

from components.config import InstanceConfig

DEPLOY_CLUSTER_ROLE = "deploy-airflow"
ADMIN_NG_STEP = "admin_ng namespace entry"

# admin_ng values/dse-k8s-eqiad/values.yaml, anchor ``analytics-pss-labels``: the restricted
# profile minus the host-path bans, plus the custom policy that admits a read-only
# /usr/share/GeoIP hostPath (charts/validating-admission-policies, allow-hostpath-analytics).
ANALYTICS_PSS_LABELS = {
    "pod-security.wmf.org/profile": "restricted",
    "pod-security.wmf.org/restrict-volume-types-restricted-volumes": "exclude",
    "pod-security.wmf.org/disallow-host-path": "exclude",
    "pod-security.wmf.org/allow-hostpath-analytics": "include",
}


class NamespaceNotReady(pulumi.RunError):
    """The admin_ng precondition does not hold: one line, no traceback."""


def required_labels(cfg: InstanceConfig) -> dict[str, str]:
    """The labels admin_ng must put on the namespace for this instance."""
    return {**(ANALYTICS_PSS_LABELS if cfg.geoip else {}), **cfg.namespace_labels}


def admin_ng_entry(cfg: InstanceConfig) -> dict[str, Any]:
    """The instance's ``namespaces:`` entry in admin_ng's values (the manual step's snippet)."""
    entry: dict[str, Any] = {"deployClusterRole": DEPLOY_CLUSTER_ROLE, "tlsExtraSANs": list(cfg.extra_fqdns)}
    labels = required_labels(cfg)
    if labels:
        entry["labels"] = labels
    return entry


def problem(cfg: InstanceConfig, live: Mapping[str, Any]) -> str | None:
    """What is wrong with the live Namespace object (None: it is what the instance needs)."""
    phase = (live.get("status") or {}).get("phase")
    if phase not in (None, "Active"):
        return f"namespace {cfg.namespace} is {phase}"
    labels = (live.get("metadata") or {}).get("labels") or {}
    missing = {k: v for k, v in required_labels(cfg).items() if labels.get(k) != v}
    if missing:
        return f"namespace {cfg.namespace} lacks the labels " + ", ".join(f"{k}={v}" for k, v in sorted(missing.items()))
    return None


def precondition_error(cfg: InstanceConfig, what: str) -> NamespaceNotReady:
    return NamespaceNotReady(
        f"{what}: apply the manual step '{ADMIN_NG_STEP}' "
        f"(helmfile.d/admin_ng/values/{cfg.environment}/values.yaml, namespaces.{cfg.namespace}) "
        f"and deploy admin_ng first; nothing else was changed"
    )


@dataclass(frozen=True)
class NamespaceArgs:
    cfg: InstanceConfig
    deploy_provider: k8s.Provider


class InstanceNamespace(pulumi.ComponentResource):
    namespace: k8s.core.v1.Namespace
    checked: pulumi.Output[k8s.core.v1.Namespace]

    def __init__(self, name: str, args: NamespaceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dpe:airflow:Namespace", name, None, opts)
        cfg = args.cfg
        self.namespace = k8s.core.v1.Namespace.get(
            f"{name}-namespace",
            cfg.namespace,
            opts=pulumi.ResourceOptions(parent=self, provider=args.deploy_provider),
        )
        self.checked = _checked(self.namespace, cfg)
        self.register_outputs({"namespace": cfg.namespace})


def _checked(read: k8s.core.v1.Namespace, cfg: InstanceConfig) -> pulumi.Output[k8s.core.v1.Namespace]:
    """An Output of the read Namespace that fails with the precondition line instead."""

    async def check() -> k8s.core.v1.Namespace:
        try:
            metadata = await read.metadata.future(with_unknowns=True)
            status = await read.status.future(with_unknowns=True)
        except Exception as exc:  # the read itself failed: the namespace is missing or unreadable
            raise precondition_error(cfg, f"namespace {cfg.namespace} cannot be read ({exc})") from None
        live = {"metadata": _plain(metadata), "status": _plain(status)}
        if (issue := problem(cfg, live)) is not None:
            raise precondition_error(cfg, issue)
        return read

    future = asyncio.ensure_future(check())

    async def known() -> bool:
        await future
        return True

    async def secret() -> bool:
        return False

    # no resources of its own: a dependent waits on the check, then on the read it returns
    return pulumi.Output(set(), future, asyncio.ensure_future(known()), asyncio.ensure_future(secret()))


def _plain(value: Any) -> Any:
    """Output types (ObjectMeta, NamespaceStatus: dict subclasses) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
