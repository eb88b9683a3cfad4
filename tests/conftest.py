"""Shared helpers: run the real program for a stack under Pulumi's mock runtime."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tools import mockrun, stackconfig

EXAMPLE_PASSPHRASE = "examples-only-not-a-secret"
STACKS = ("test-k8s", "search")
KUBERNETES_VERSION = "1.31.0"  # dse-k8s; validate core objects against this schema


def stack_config(stack: str, overrides: dict[str, Any] | None = None, drop: tuple[str, ...] = (),
                 secret_overrides: dict[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    sc = stackconfig.load(stack, EXAMPLE_PASSPHRASE)
    config = dict(sc.config)
    secret_keys = list(sc.secret_keys)
    for key in drop:
        config.pop(f"airflow:{key}", None)
    for key, value in (overrides or {}).items():
        config[f"airflow:{key}"] = stackconfig._to_wire(value)
    for key, value in (secret_overrides or {}).items():
        config[f"airflow:{key}"] = value
        secret_keys.append(f"airflow:{key}")
    return config, secret_keys


def run_stack(stack: str, overrides: dict[str, Any] | None = None, drop: tuple[str, ...] = (),
              secret_overrides: dict[str, str] | None = None) -> mockrun.Run:
    config, secret_keys = stack_config(stack, overrides, drop, secret_overrides)
    return mockrun.run_program("airflow", stack, config, secret_keys)


def stack_cfg(stack: str, overrides: dict[str, Any] | None = None):
    """The validated config model of a stack (secrets as placeholders)."""
    from components import config as c

    config, secret_keys = stack_config(stack, overrides)
    cfg, _ = c.load(config, is_secret=lambda k: k in secret_keys, read_secret=lambda k: "x")
    return cfg


_CACHE: dict[str, mockrun.Run] = {}


def rendered(stack: str) -> mockrun.RecordingMonitor:
    """The program's registrations for an unmodified example stack (cached per session)."""
    if stack not in _CACHE:
        run = run_stack(stack)
        if run.error is not None:
            raise run.error
        _CACHE[stack] = run
    return _CACHE[stack].monitor


@pytest.fixture(params=STACKS)
def stack(request) -> str:
    return request.param


# The program requires the RGW checksum settings in the environment the CLI gives the
# provider plugins (components/buckets.py); a prepared deployment-server shell has them.
os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")


@pytest.fixture(autouse=True)
def _secrets_masked_per_test():
    """The command guard masks every decrypted secret a process has seen (tools/cli.py): right
    for one command per process, but tests run many in one process, so each starts afresh."""
    from tools import cli

    cli._secrets.clear()
    yield
    cli._secrets.clear()
