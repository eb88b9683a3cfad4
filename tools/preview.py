"""Offline preview: render a stack without the Pulumi CLI or a cluster.

    python -m tools.preview -s search                 # resource tree with options and inputs
    python -m tools.preview -s search --out render/   # + one file per Helm release, object, script

It runs the real ``__main__.py`` under Pulumi's mock runtime (tools/mockrun.py) with the
stack's config read like the CLI reads it (tools/stackconfig.py).  Secrets are always
masked.  A passphrase (PULUMI_CONFIG_PASSPHRASE[_FILE]) is needed only to check the secret
values themselves; without one they are placeholders.  Bad config, an unknown stack or a
wrong passphrase print one line and exit 2.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import pulumi
import yaml

from components.buckets import CHECKSUM_ENV
from components.config import ConfigError
from components.manual_steps import render_text
from tools import mockrun, platform_model, stackconfig
from tools import passphrase as pp

RELEASE_TYPE = "kubernetes:helm.sh/v3:Release"
COMMAND_TYPES = ("command:remote:Command", "command:local:Command")
PROVIDER_PREFIX = "pulumi:providers:"


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, data: str):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


def to_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=120)


def render(stack: str, passphrase: str | None, overrides: dict[str, str] | None = None,
           placeholder_secrets: tuple[str, ...] = ()) -> mockrun.Run:
    """Run the program for ``stack``; raises StackError / ConfigError for user mistakes.

    ``overrides`` (key -> value) and ``placeholder_secrets`` (keys set to a secret
    placeholder) preview a config change, such as the next migration phase, before it is
    made with `pulumi config set`.
    """
    # The program insists on the RGW checksum settings in the environment the provider
    # plugins inherit from the CLI (components/buckets.py); the preview starts no plugin,
    # so it renders as a correctly prepared deployment-server shell would.
    for var, value in CHECKSUM_ENV.items():
        os.environ.setdefault(var, value)
    sc = stackconfig.load(stack, passphrase)
    config, secret_keys = dict(sc.config), list(sc.secret_keys)
    for key, value in (overrides or {}).items():
        full = key if ":" in key else f"{sc.project}:{key}"
        if full in secret_keys:
            raise stackconfig.StackError(f"--set {key}: it is a secret; use --set-secret {key} (placeholder) to preview")
        config[full] = stackconfig._to_wire(value)
    for key in placeholder_secrets:
        full = key if ":" in key else f"{sc.project}:{key}"
        config[full] = mockrun.SECRET
        secret_keys.append(full)
    run = mockrun.run_program(sc.project, stack, config, secret_keys)
    if run.error is not None:
        raise run.error
    run.extra["stackconfig"] = sc
    return run


def _short(urn: str) -> str:
    return urn.rsplit("::", 1)[-1] if urn else ""


def _options(reg: mockrun.Registration, names: dict[str, str]) -> str:
    opts = []
    if reg.provider:
        # "<provider urn>::<id>": name the provider by its resource name
        opts.append(f"provider={_short(reg.provider.rsplit('::', 1)[0])}")
    for flag, label in (
        (reg.protect, "protect"),
        (reg.retain_on_delete, "retainOnDelete"),
        (reg.delete_before_replace, "deleteBeforeReplace"),
    ):
        if flag:
            opts.append(label)
    if reg.ignore_changes:
        opts.append("ignoreChanges=" + ",".join(reg.ignore_changes))
    if reg.additional_secret_outputs:
        opts.append("secretOutputs=" + ",".join(reg.additional_secret_outputs))
    if reg.explicit_depends_on:
        opts.append("dependsOn=" + ",".join(sorted(names.get(u, _short(u)) for u in reg.explicit_depends_on)))
    if reg.custom_timeouts:
        opts.append("timeouts=" + ",".join(f"{k}:{v}" for k, v in reg.custom_timeouts.items()))
    return f"  [{'; '.join(opts)}]" if opts else ""


def print_tree(run: mockrun.Run, out: TextIO, show_inputs: bool = True) -> None:
    mon = run.monitor
    sc = run.extra["stackconfig"]
    names = {r.urn: r.name for r in mon.registered()}
    children: dict[str, list[mockrun.Registration]] = {}
    for reg in mon.registered():
        children.setdefault(reg.parent or mon.stack_urn, []).append(reg)
    for siblings in children.values():
        # stable order for diffs: providers, then components and resources by name
        siblings.sort(key=lambda r: (not r.type.startswith(PROVIDER_PREFIX), r.name, r.type))

    out.write(f"* pulumi:pulumi:Stack {sc.project}-{sc.stack}\n")

    def walk(parent: str, depth: int) -> None:
        for reg in children.get(parent, []):
            # as `pulumi preview` marks steps: + create, > read (an existing object, not managed)
            mark = ">" if reg.read else "+" if reg.custom else "*"
            out.write(f"{'  ' * depth}{mark} {reg.type} {reg.name}{_options(reg, names)}\n")
            if show_inputs and reg.read:
                out.write(f"{'  ' * (depth + 1)}{json.dumps({'id': reg.read_id})}\n")
            elif show_inputs and reg.custom and reg.type != RELEASE_TYPE:
                shown = {k: v for k, v in reg.inputs.items() if k not in ("create", "update", "delete")}
                text = json.dumps(mockrun.masked(shown), sort_keys=True)
                out.write(f"{'  ' * (depth + 1)}{text}\n")
            elif show_inputs and reg.type == RELEASE_TYPE:
                summary = {k: reg.inputs.get(k) for k in ("name", "chart", "version", "namespace", "atomic", "timeout")}
                summary["repositoryOpts"] = reg.inputs.get("repositoryOpts")
                summary["secretValues"] = sorted(mockrun.secret_paths(reg.inputs.get("values", {})))
                out.write(f"{'  ' * (depth + 1)}{json.dumps(mockrun.masked(summary), sort_keys=True)}\n")
            walk(reg.urn, depth + 1)

    walk(mon.stack_urn, 1)
    outputs = mockrun.masked(mon.stack_outputs)
    steps = outputs.pop("manualSteps", None)
    out.write("Outputs:\n")
    for key in sorted(outputs):
        value = outputs[key]
        if isinstance(value, str) and "\n" in value:
            out.write(f"  {key}: |\n")
            for line in value.splitlines():
                out.write(f"    {line}\n")
        else:
            out.write(f"  {key}: {json.dumps(value, sort_keys=True)}\n")
    if steps:
        out.write("Manual steps (systems this program cannot reach):\n")
        out.write(render_text(steps))
    custom = [r for r in mon.registered() if r.custom and not r.read and not r.type.startswith(PROVIDER_PREFIX)]
    out.write(f"Resources: {len(mon.registered())} ({len(custom)} managed, "
              f"{sum(1 for r in mon.registered() if r.read)} read, "
              f"{sum(1 for r in mon.registered() if r.type.startswith(PROVIDER_PREFIX))} providers, "
              f"{sum(1 for r in mon.registered() if not r.custom)} components)\n")


def _safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def write_out(run: mockrun.Run, out_dir: Path) -> list[Path]:
    """One YAML per Helm release (values as passed), per other Kubernetes object, and one
    script per Command.  Secrets are the fixed placeholder."""
    written: list[Path] = []
    for reg in run.monitor.registered():
        if not reg.custom or reg.read or reg.type.startswith(PROVIDER_PREFIX):
            continue
        if reg.type == RELEASE_TYPE:
            path = out_dir / "helm" / f"{_safe_filename(reg.name)}.values.yaml"
            body = to_yaml(mockrun.masked(reg.inputs.get("values", {})))
        elif reg.type.startswith("kubernetes:"):
            obj = mockrun.masked(reg.inputs)
            kind = obj.get("kind", reg.type.rsplit(":", 1)[-1])
            path = out_dir / "manifests" / f"{_safe_filename(kind)}-{_safe_filename(reg.name)}.yaml"
            body = to_yaml(obj)
        elif reg.type in COMMAND_TYPES:
            for step in ("create", "update", "delete"):
                script = reg.inputs.get(step)
                if script is None:
                    continue
                path = out_dir / "commands" / f"{_safe_filename(reg.name)}.{step}.sh"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(mockrun.masked(script) if isinstance(script, str) else mockrun.SECRET, encoding="utf-8")
                written.append(path)
            continue
        else:
            path = out_dir / "resources" / f"{_safe_filename(reg.name)}.yaml"
            body = to_yaml({"type": reg.type, "inputs": mockrun.masked(reg.inputs)})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
        written.append(path)
    tree = io.StringIO()
    print_tree(run, tree, show_inputs=True)
    path = out_dir / "tree.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    # without the timing line, so renders of the same config are byte-identical
    path.write_text(tree.getvalue(), encoding="utf-8")
    written.append(path)
    outputs = run.monitor.stack_outputs
    if outputs:
        path = out_dir / "outputs.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_yaml(mockrun.masked(outputs)), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.preview", description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("-s", "--stack", help="stack name (Pulumi.<stack>.yaml)")
    target.add_argument("--all", action="store_true", help="every stack, in one process (--out gets one directory per stack)")
    parser.add_argument("--out", type=Path, help="write rendered values, manifests and scripts here")
    parser.add_argument("--no-inputs", action="store_true", help="print the tree without inputs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="preview with this config value instead (YAML value), e.g. phase=scheduler")
    parser.add_argument("--set-secret", action="append", default=[], metavar="KEY",
                        help="preview as if this secret were set (placeholder value)")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            stderr.write(f"error: --set {item!r}: use KEY=VALUE\n")
            return 2
        overrides[key] = yaml.safe_load(value) if value else ""

    started = time.perf_counter()
    stacks = stackconfig.stacks() if args.all else [args.stack]
    failed = 0
    for stack in stacks:
        t0 = time.perf_counter()
        try:
            run = render(stack, pp.passphrase_from_env(), overrides, tuple(args.set_secret))
        except (pulumi.RunError, stackconfig.StackError) as exc:  # ConfigError and the program's preconditions
            stderr.write(f"error: {stack + ': ' if args.all else ''}{exc}\n")
            failed += 1
            continue
        except platform_model.ProviderError as exc:  # what the platform would refuse at `up`
            stderr.write(f"error: {stack + ': ' if args.all else ''}{exc.resource}: {exc}\n")
            failed += 1
            continue
        except OSError as exc:
            stderr.write(f"error: {exc.strerror}: {exc.filename}\n")
            failed += 1
            continue
        print_tree(run, stdout, show_inputs=not args.no_inputs)
        if args.out:
            out_dir = args.out / stack if args.all else args.out
            files = write_out(run, out_dir)
            stdout.write(f"Wrote {len(files)} files under {out_dir}\n")
        sc = run.extra["stackconfig"]
        stdout.write(f"Secrets: {'checked with the passphrase' if sc.decrypted else 'not decrypted (no passphrase): placeholders'}\n")
        stdout.write(f"Rendered {stack} in {time.perf_counter() - t0:.2f}s\n")
    if args.all:
        stdout.write(f"Rendered {len(stacks) - failed}/{len(stacks)} stacks in {time.perf_counter() - started:.2f}s\n")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
