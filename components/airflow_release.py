"""The Airflow Helm release: the Wikimedia ``airflow`` chart as a helm.v3.Release.

A v3 Release (not a v4 Chart) because the chart relies on Helm semantics (release
history, hooks such as the service-checker test; pulumi/pulumi-kubernetes#3284), and
``atomic`` rolls a failed upgrade back instead of leaving a half-applied release
(pulumi/pulumi-kubernetes#1697, #2054).  The timeout is finite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pulumi
import pulumi_kubernetes as k8s

RELEASE_NAME = "production"
CHART = "airflow"


@dataclass(frozen=True)
class AirflowReleaseArgs:
    namespace: pulumi.Input[str]
    chart_repository: str
    chart_version: str
    values: Mapping[str, Any]
    timeout_seconds: int
    deploy_provider: k8s.Provider
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)


class AirflowRelease(pulumi.ComponentResource):
    release: k8s.helm.v3.Release

    def __init__(self, name: str, args: AirflowReleaseArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dpe:airflow:Release", name, None, opts)
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            name=RELEASE_NAME,
            chart=CHART,
            version=args.chart_version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=args.chart_repository),
            namespace=args.namespace,
            create_namespace=False,
            values=args.values,
            # The WMF values use `~` to switch chart defaults off (op_ldap_role on test-k8s).  No
            # allow_null_values: deprecated since pulumi-kubernetes 4.30 (PR #4293, issue #2997);
            # "null values in Helm chart values are preserved by default" (helm_release.go Check).
            atomic=True,
            cleanup_on_fail=True,
            timeout=args.timeout_seconds,
            max_history=10,
            opts=pulumi.ResourceOptions(
                parent=self, provider=args.deploy_provider, depends_on=list(args.depends_on)
            ),
        )
        self.register_outputs({"status": self.release.status})
