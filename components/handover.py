"""Taking a running instance over from helmfile: the ordered hand-over steps (issue 12, part 2).

Every running instance was deployed by helmfile: release ``production`` of chart ``airflow`` and
release ``postgresql-airflow-<x>`` of chart ``cloudnative-pg-cluster`` (the Cluster, Pooler,
ScheduledBackup, ImageCatalog, Secrets, network policies).  The airflow release stays a Helm
release (Pulumi's ``helm.v3.Release`` *is* one: ``pulumi import`` adopts its release records).
The database objects become Pulumi's own, so Helm must forget them first **without deleting
them**: were its release ever uninstalled (or its helmfile removed and applied), Helm would
delete the Cluster, and CloudNativePG's PVCs carry the Cluster as owner (CNPG build.go
``SetInheritedDataAndOwnership``): the volumes would follow.  ``protect`` only stops deletes that
Pulumi itself makes.

Helm keeps a release only in its storage records: Secrets labelled ``owner=helm,name=<release>``
in the release's namespace (Helm 3's default storage driver).  Deleting those records makes Helm
forget the release and leaves every object in place; nothing Helm does later can touch them.
"""

from __future__ import annotations

import shlex

from components.config import InstanceConfig


def s3_import_profiles(instance: str) -> dict[str, tuple[str, str]]:
    """The aws provider of each RGW user's bucket (components/instance.py: RgwBucket ``<instance>-logs``
    and ``<instance>-postgresql-backups``, each with provider ``<bucket>-rgw``) and the config keys
    of that user's key pair, which ``pulumi import`` reads the bucket with."""
    return {
        f"{instance}-logs-rgw": ("airflowS3AccessKey", "airflowS3SecretKey"),
        f"{instance}-postgresql-backups-rgw": ("postgresqlS3AccessKey", "postgresqlS3SecretKey"),
    }


# when each step is due (components/manual_steps.py DUE_ORDER): 1-4 end with the first up, 5-6 follow it
BEFORE_FIRST_UP, AFTER_UP = "before-first-up", "after-up"


def steps(cfg: InstanceConfig, kubeconfig: str | None = None) -> list[dict[str, str]]:
    """The hand-over, in the order it is done; each step a ready command, quoted."""
    ns = shlex.quote(cfg.namespace)
    release = shlex.quote(cfg.pg_service_name)
    stack = shlex.quote(cfg.instance)
    kube = f"KUBECONFIG={shlex.quote(kubeconfig or cfg.deploy_kubeconfig)} "
    helmfile_dirs = f"helmfile.d/dse-k8s-services/{cfg.namespace} and helmfile.d/dse-k8s-services/{cfg.pg_service_name}"
    return [
        {
            "due": BEFORE_FIRST_UP,
            "step": "Take-over 1/6: stop helmfile deploys of this instance",
            "where": "operations/deployment-charts",
            "key": helmfile_dirs,
            "snippet": (f"announce that nobody runs `helmfile -e {cfg.environment} apply` in {helmfile_dirs} from now on; "
                        "prepare (do not merge yet) the patch that removes both directories"),
        },
        {
            "due": BEFORE_FIRST_UP,
            "step": "Take-over 2/6: make Helm forget the database release, keeping every object",
            "where": f"the deployment server, namespace {cfg.namespace}",
            "key": f"Helm release {cfg.pg_service_name}",
            "snippet": (
                f"{kube}kubectl -n {ns} get secret -l owner=helm,name={release} -o name   # Helm's records of the release\n"
                f"{kube}kubectl -n {ns} delete secret -l owner=helm,name={release}\n"
                f"{kube}helm -n {ns} status {release}   # must now say: release: not found\n"
                f"{kube}kubectl -n {ns} get cluster,pooler,scheduledbackup,pvc   # all still there"
            ),
        },
        {
            "due": BEFORE_FIRST_UP,
            "step": "Take-over 3/6: import what runs into the stack",
            "where": "the deployment server, this repository",
            "key": f"stack {cfg.instance}",
            "snippet": (
                f"pulumi config set -s {stack} takeover true\n"
                "# the running instance's credentials, each from a prompt (never on the command line): the program\n"
                "# refuses to generate any while taking over; fernetKey/webserverSecretKey from the helmfile-era\n"
                "# private values, the key pairs from `radosgw-admin user info --uid=<user>` on the RGW admin host\n"
                + "".join(f"pulumi config set --secret -s {stack} {key}\n" for key in (
                    "fernetKey", "webserverSecretKey", "airflowS3AccessKey", "airflowS3SecretKey",
                    "postgresqlS3AccessKey", "postgresqlS3SecretKey"))
                +
                f"./dev import-plan -s {stack} --out import-{cfg.instance}.json   # review it\n"
                f"./dev import-plan -s {stack} --out import-{cfg.instance}.json --import   "
                "# runs `pulumi import --file` with the key pairs in a private temporary credentials file; imported resources are protected"
            ),
        },
        {
            "due": BEFORE_FIRST_UP,
            "step": "Take-over 4/6: see what the first update changes, then apply it",
            "where": "the deployment server, this repository",
            "key": f"stack {cfg.instance}",
            "snippet": (
                f"helm -n {ns} get values production -o yaml > live-values.yaml\n"
                f"./dev takeover-diff -s {stack} --live-values live-values.yaml   # every change line says `# intended:`\n"
                f"pulumi preview --diff -s {stack}   # no delete, no replace of the Cluster, buckets, users or Release\n"
                f"pulumi up -s {stack}   # takeover: forces server-side-apply ownership of the fields Helm's manager held"
            ),
        },
        {
            "due": AFTER_UP,
            "step": "Take-over 5/6: end the take-over",
            "where": "the deployment server, this repository",
            "key": f"stack {cfg.instance}",
            "snippet": (
                f"pulumi config set -s {stack} takeover false\n"
                # the first up left pulumi.com/patchForce on each database object (it was in their
                # inputs): this up only removes it (tests/test_takeover_platform.py)
                f"pulumi up -s {stack}   # only removes the pulumi.com/patchForce annotation of the database objects\n"
                f"pulumi preview --diff -s {stack}   # must show no change"
            ),
        },
        {
            "due": AFTER_UP,
            "step": "Take-over 6/6: retire both helmfile directories",
            "where": "operations/deployment-charts",
            "key": helmfile_dirs,
            "snippet": "merge the patch of step 1: two tools must never manage one release",
        },
    ]
