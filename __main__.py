"""Pulumi program: one stack = one Airflow instance.  Only wiring lives here."""

import pulumi

from components import config
from components.instance import AirflowInstance

cfg, secrets = config.load()  # raises a one-line ConfigError before any resource exists
instance = AirflowInstance(cfg.instance, cfg, secrets)

pulumi.export("namespace", instance.namespace)
pulumi.export("chartVersion", cfg.airflow_chart_version)
pulumi.export("imageVersion", cfg.image_version)
