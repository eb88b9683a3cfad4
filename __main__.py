"""Pulumi program: one stack = one Airflow instance.  Only wiring lives here."""

import pulumi

from components import buckets, config, phase_guard, requirements_check, upgrades
from components.instance import AirflowInstance

requirements_check.require_pinned_environment()
# All raise a one-line ConfigError (a pulumi.RunError: no traceback) before any resource exists.
cfg, secrets = config.load()
upgrades.check_stack_name(cfg, pulumi.get_stack())
upgrades.check_canary_rule(cfg, pulumi.get_stack())
# one migration phase at a time, forward only: reads this stack's previous `phase` output
phase_guard.require_one_phase_step(cfg, pulumi.get_stack())
buckets.require_checksum_env()

instance = AirflowInstance(cfg.instance, cfg, secrets)

pulumi.export("namespace", instance.namespace)
pulumi.export("chartVersion", cfg.airflow_chart_version)
pulumi.export("imageVersion", cfg.image_version)
pulumi.export("manualSteps", instance.manual_steps)
pulumi.export("phase", cfg.phase)
if instance.pg_bucket_credentials is not None:
    pulumi.export("pgBucketCredentials", instance.pg_bucket_credentials)
