"""The one error type of the stack config: one line naming the key and the fix."""

from __future__ import annotations

import pulumi

PROJECT = "airflow"


class ConfigError(pulumi.RunError):
    """A user mistake in stack config: one line naming the key and the fix.

    A ``pulumi.RunError``: the Pulumi language host prints its message without a traceback,
    and the offline preview does the same."""

    def __init__(self, key: str, problem: str, fix: str, prefix: str = f"{PROJECT}:"):
        self.key, self.problem, self.fix = key, problem, fix
        super().__init__(f"{prefix}{key}: {problem}; {fix}")
