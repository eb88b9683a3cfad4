"""Upgrades are version bumps in config, and the canary takes them first.

The runbook: deploy a new image to airflow-test-k8s, check it, then bump the common version
and redeploy every instance one after the other.  Here the image version (and the airflow
chart version) are project defaults in Pulumi.yaml that a stack may override, and the rule is
checked before any resource is registered:

    a stack other than the canary may only run a version the canary runs now, or ran before
    (the canary stack's ``imageHistory`` / ``chartHistory``).

The canary's effective versions are read from the stack files themselves (plain, non-secret
keys), so `pulumi up -s search`, the offline preview and the tests all apply the same rule.
The rollout order itself is tools/rollout.py.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

from components.config import PROJECT, ConfigError, InstanceConfig
from components.config_errors import config_command

ROOT = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=32)
def _parsed(text: str) -> Any:
    # the same file text parses to the same document: `./dev preview --all` and the tests render
    # many stacks against one canary file (the document is only read, never changed)
    return yaml.safe_load(text)


def _load(path: Path) -> Any:
    return _parsed(path.read_text(encoding="utf-8"))


def _stack_value(project: dict[str, Any], stack_doc: dict[str, Any], key: str) -> Any:
    full = f"{PROJECT}:{key}"
    stack_cfg = stack_doc.get("config") or {}
    if full in stack_cfg:
        return stack_cfg[full]
    spec = (project.get("config") or {}).get(key)
    if isinstance(spec, dict):
        return spec.get("value", spec.get("default"))
    return spec


def canary_versions(canary: str, root: Path = ROOT) -> dict[str, set[str]]:
    """{"image": {...}, "chart": {...}}: the versions the canary runs now or ran before."""
    path = root / f"Pulumi.{canary}.yaml"
    if not path.is_file():
        raise ConfigError("canaryStack", f"no stack file Pulumi.{canary}.yaml", "name an existing stack as the canary")
    try:
        project = _load(root / "Pulumi.yaml")
        doc = _load(path) or {}
        return {
            "image": {str(_stack_value(project, doc, "imageVersion")), *map(str, _stack_value(project, doc, "imageHistory") or [])},
            "chart": {str(_stack_value(project, doc, "airflowChartVersion")), *map(str, _stack_value(project, doc, "chartHistory") or [])},
        }
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError, KeyError, TypeError) as exc:
        # another stack's broken file: one line naming it, never a traceback (nor its content)
        raise ConfigError("canaryStack", f"the canary's stack file {path.name} cannot be read ({type(exc).__name__})",
                          f"fix {path.name} (preview it: ./dev preview -s {canary})") from None


def canary_moved_from(canary: str, key: str, root: Path = ROOT) -> tuple[str, str, int] | None:
    """(project default, the canary's override, length of its history) when the canary overrides
    ``key`` with another version than the project default, i.e. it moved away from the default
    (the runbook's first upgrade step: `pulumi config set -s <canary> imageVersion <new>`)."""
    history = {"imageVersion": "imageHistory", "airflowChartVersion": "chartHistory"}[key]
    project = _load(root / "Pulumi.yaml")
    doc = _load(root / f"Pulumi.{canary}.yaml") or {}
    override = (doc.get("config") or {}).get(f"{PROJECT}:{key}")
    default = _stack_value(project, {}, key)
    if override is None or str(override) == str(default):
        return None
    return str(default), str(override), len(_stack_value(project, doc, history) or [])


def _refuse(cfg: InstanceConfig, key: str, version: str, root: Path) -> ConfigError:
    """The refusal of ``version`` (not the canary's now, nor in its history).

    When the canary has just moved away from the project default and this stack still runs that
    default, the version most likely *did* run on the canary (it was its version until the
    override): saying "has not run" would be untrue.  The program cannot tell from the files
    whether the canary ran it, so it says what it knows and names the exact line that records it
    (README "Upgrading": the history lists the versions the canary ran before)."""
    canary = cfg.canary_stack
    history = {"imageVersion": "imageHistory", "airflowChartVersion": "chartHistory"}[key]
    moved = canary_moved_from(canary, key, root)
    if moved is not None and moved[0] == version:
        default, now, index = moved
        return ConfigError(
            key,
            f"{version} is the project default, which the canary stack {canary} no longer runs (it overrides "
            f"{key} with {now}) and its {history} does not list",
            f"if {canary} ran it before, record it: add the line `    - {version}` under `{PROJECT}:{history}:` in "
            f"Pulumi.{canary}.yaml ({config_command('set', canary, f'{history}[{index}]', value=version, path=True)}); "
            f"if not, deploy it to {canary} first",
        )
    fix = ("deploy it to {c} first (override {k} there), then to the other stacks" if key == "imageVersion"
           else "deploy it to {c} first (or list it in its {h}), then to the other stacks")
    return ConfigError(key, f"{version} has not run on the canary stack {canary}", fix.format(c=canary, k=key, h=history))


def check_canary_rule(cfg: InstanceConfig, stack: str, root: Path = ROOT) -> None:
    """Raise a one-line ConfigError when ``stack`` would run a version the canary has not."""
    if stack == cfg.canary_stack:
        return
    allowed = canary_versions(cfg.canary_stack, root)  # a broken canary file fails there, in one line
    if cfg.image_version not in allowed["image"]:
        raise _refuse(cfg, "imageVersion", cfg.image_version, root)
    if cfg.airflow_chart_version not in allowed["chart"]:
        raise _refuse(cfg, "airflowChartVersion", cfg.airflow_chart_version, root)
    if cfg.image_history or cfg.chart_history:
        raise ConfigError("imageHistory", f"is only meaningful on the canary stack {cfg.canary_stack}", "remove it from this stack")


def check_stack_name(cfg: InstanceConfig, stack: str) -> None:
    """One stack per instance, named after it: editing ``instance`` in a stack file would
    otherwise move every resource (and be refused by protect only at the engine)."""
    if cfg.instance != stack:
        raise ConfigError("instance", f"{cfg.instance!r} differs from the stack name {stack!r}", f"a stack manages one instance: use Pulumi.{cfg.instance}.yaml for {cfg.instance!r}")
