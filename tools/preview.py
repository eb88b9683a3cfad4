"""Offline preview: render a stack without the Pulumi CLI or a cluster.

    python -m tools.preview -s search                 # resource tree with options and inputs
    python -m tools.preview -s search --out render/   # + one file per Helm release, object, script

It runs the real ``__main__.py`` under Pulumi's mock runtime (tools/mockrun.py) with the
stack's config read like the CLI reads it (tools/stackconfig.py).  Secrets are always
masked.  A passphrase (PULUMI_CONFIG_PASSPHRASE[_FILE]) is needed only to check the secret
values themselves; without one they are placeholders.  Bad config, an unknown stack, a wrong
passphrase, a bad --set or --out print one line and exit 2; a bug prints one line and exits 1
(the traceback only with --debug: tools/cli.py).

``--out DIR`` is checked before anything is rendered: it must be new, empty, or a directory
this command wrote (``.preview-manifest`` lists its files), whose previous files are removed
before the new ones are written, so no file of an earlier render stays beside them.
"""

from __future__ import annotations

import sys

from tools import cli

if __name__ == "__main__":  # first thing: the guard (tools/cli.py) covers the imports below too
    sys.exit(cli.run_module("tools.preview"))

import argparse
import io
import json
import os
import re
import time
from pathlib import Path
from typing import Any, TextIO

import yaml

from components.buckets import CHECKSUM_ENV
from components.manual_steps import render_text
from tools import mockrun, stackconfig
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
    if sc.decrypted:  # no message of this process may show them (tools/cli.py)
        cli.register_secrets(_secret_strings(sc.config[k] for k in sc.secret_keys if k in sc.config))
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


def _secret_strings(wire_values: Any) -> list[str]:
    """Each secret's wire text and, for an object or list, its string leaves."""
    out: list[str] = []

    def leaves(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                leaves(value)
        elif isinstance(node, list):
            for value in node:
                leaves(value)
        elif isinstance(node, str):
            out.append(node)

    for text in wire_values:
        out.append(text)
        try:
            leaves(json.loads(text))
        except (ValueError, RecursionError):
            pass
    return out


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
    reads = getattr(run.extra.get("mocks"), "stack_reads", [])
    if reads:
        # the phase guard's read of this stack's previous outputs (components/phase_guard.py); offline
        # there is no state: the model answers the runbook's previous phase (tools/platform_model.py)
        recorded = reads[-1].rsplit("phase=", 1)[-1]
        out.write(f"Phase guard: recorded phase {recorded} (offline model: the runbook's previous phase; "
                  f"`pulumi preview` reads the stack's own outputs)\n")
    if steps:
        out.write("Manual steps (systems this program cannot reach), grouped by when they are due:\n")
        out.write(render_text(steps))
    custom = [r for r in mon.registered() if r.custom and not r.read and not r.type.startswith(PROVIDER_PREFIX)]
    out.write(f"Resources: {len(mon.registered())} ({len(custom)} managed, "
              f"{sum(1 for r in mon.registered() if r.read)} read, "
              f"{sum(1 for r in mon.registered() if r.type.startswith(PROVIDER_PREFIX))} providers, "
              f"{sum(1 for r in mon.registered() if not r.custom)} components)\n")


def _safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def rendered_files(run: mockrun.Run) -> dict[str, str]:
    """The files of ``--out``, by relative path: one YAML per Helm release (values as passed),
    per other Kubernetes object, one script per Command, the tree and the outputs.  Secrets
    are the fixed placeholder."""
    files: dict[str, str] = {}
    for reg in run.monitor.registered():
        if not reg.custom or reg.read or reg.type.startswith(PROVIDER_PREFIX):
            continue
        if reg.type == RELEASE_TYPE:
            files[f"helm/{_safe_filename(reg.name)}.values.yaml"] = to_yaml(mockrun.masked(reg.inputs.get("values", {})))
        elif reg.type.startswith("kubernetes:"):
            obj = mockrun.masked(reg.inputs)
            kind = obj.get("kind", reg.type.rsplit(":", 1)[-1])
            files[f"manifests/{_safe_filename(kind)}-{_safe_filename(reg.name)}.yaml"] = to_yaml(obj)
        elif reg.type in COMMAND_TYPES:
            for step in ("create", "update", "delete"):
                script = reg.inputs.get(step)
                if script is not None:
                    files[f"commands/{_safe_filename(reg.name)}.{step}.sh"] = \
                        mockrun.masked(script) if isinstance(script, str) else mockrun.SECRET
        else:
            files[f"resources/{_safe_filename(reg.name)}.yaml"] = to_yaml({"type": reg.type, "inputs": mockrun.masked(reg.inputs)})
    tree = io.StringIO()
    print_tree(run, tree, show_inputs=True)
    # without the timing line, so renders of the same config are byte-identical
    files["tree.txt"] = tree.getvalue()
    outputs = run.monitor.stack_outputs
    if outputs:
        files["outputs.yaml"] = to_yaml(mockrun.masked(outputs))
    return files


def _write_files(out_dir: Path, files: dict[str, str]) -> list[Path]:
    written = []
    for rel, text in files.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def write_out(run: mockrun.Run, out_dir: Path) -> list[Path]:
    """Write the files of one render under ``out_dir`` (no manifest, no checks: the library
    call; the command goes through OutDir)."""
    return _write_files(out_dir, rendered_files(run))


MANIFEST = ".preview-manifest"
MANIFEST_HEADER = "# python -m tools.preview --out: the files of its last render here, removed before the next one"


class OutDir:
    """The ``--out`` directory: checked before anything is rendered, then written render by
    render.  It must be new, empty, or hold only what an earlier ``--out`` wrote (listed in
    MANIFEST); those files are removed before the first new one is written."""

    def __init__(self, path: Path):
        self.path = path
        self.previous = self._check()
        self.current: list[str] = []
        self._cleared = False

    def _refuse(self, problem: str) -> cli.UsageError:
        return cli.UsageError(f"--out {self.path}: {problem}")

    def _check(self) -> list[str]:
        path = self.path
        if path.is_symlink() and not path.exists():
            raise self._refuse("is a dangling symbolic link")
        if path.exists() and not path.is_dir():
            raise self._refuse("exists and is not a directory; give a new or empty directory")
        if not path.exists():
            for ancestor in path.absolute().parents:
                if ancestor.exists():
                    if not ancestor.is_dir():
                        raise self._refuse(f"cannot be created: {ancestor} is not a directory")
                    if not os.access(ancestor, os.W_OK | os.X_OK):
                        raise self._refuse(f"cannot be created: {ancestor} is not writable")
                    return []
            raise self._refuse("cannot be created")
        if not os.access(path, os.W_OK | os.X_OK):
            raise self._refuse("the directory is not writable")
        present: list[str] = []

        def fail(exc: OSError) -> None:
            raise exc

        for top, dirs, names in os.walk(path, onerror=fail):
            for name in [*dirs, *names]:
                full = Path(top) / name
                rel = full.relative_to(path).as_posix()
                if full.is_symlink() or not (full.is_dir() or full.is_file()):
                    raise self._refuse(f"holds {rel}, which the preview did not write; give a new or empty directory")
                if full.is_file():
                    present.append(rel)
        if not present:
            return []
        listed = self._read_manifest()
        if listed is None:
            raise self._refuse(f"the directory is not empty and the preview did not write it (no valid {MANIFEST}); "
                               "give a new or empty directory")
        foreign = sorted(set(present) - set(listed) - {MANIFEST})
        if foreign:
            raise self._refuse(f"holds {foreign[0]}, which the preview did not write; give a new or empty directory")
        return listed

    def _read_manifest(self) -> list[str] | None:
        manifest = self.path / MANIFEST
        if manifest.is_symlink() or not manifest.is_file():
            return None
        try:
            lines = manifest.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        if not lines or lines[0] != MANIFEST_HEADER:
            return None
        listed = lines[1:]
        for rel in listed:
            parts = rel.split("/")
            if not rel or rel.startswith("/") or rel == MANIFEST or any(p in ("", ".", "..") for p in parts):
                return None  # not a list this command wrote: never delete by it
        return listed

    def _clear_previous(self) -> None:
        for rel in self.previous:
            path = self.path / rel
            path.unlink(missing_ok=True)
            parent = path.parent
            while parent != self.path and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        self.previous = []

    def write(self, files: dict[str, str], under: str = "") -> list[Path]:
        """Write one render's ``files`` (under the sub-directory ``under``, for --all)."""
        if not self._cleared:
            self.path.mkdir(parents=True, exist_ok=True)
            self._clear_previous()
            self._cleared = True
        files = {f"{under}/{rel}" if under else rel: text for rel, text in files.items()}
        self.current += [rel for rel in files if rel not in self.current]
        # the list first: a render cut short leaves files this command can still remove
        (self.path / MANIFEST).write_text("\n".join([MANIFEST_HEADER, *sorted(self.current)]) + "\n", encoding="utf-8")
        return _write_files(self.path, files)


_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*(:[A-Za-z][A-Za-z0-9_.-]*)?", re.ASCII)
_MAX_SET_DEPTH = 32


def _check_key(option: str, key: str) -> str:
    if not _KEY.fullmatch(key):
        raise cli.UsageError(f"{option} {key!r}: not a config key (KEY or namespace:KEY, letters, digits, '_', '.', '-')")
    return key


def parse_set(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of --set, the value read as YAML; one-line UsageError otherwise."""
    key, sep, value = item.partition("=")
    if not sep:
        raise cli.UsageError(f"--set {item!r}: use KEY=VALUE")
    if not key:
        raise cli.UsageError("--set: the key before '=' is empty; use KEY=VALUE")
    _check_key("--set", key)
    if value == "":
        return key, ""
    fix = f"quote it to pass text, e.g. --set '{key}=\"...\"'"
    try:
        # events first: they need no recursion, and show aliases before anything expands them
        depth = 0
        for event in yaml.parse(value, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise cli.UsageError(f"--set {key}: YAML anchors and aliases are not accepted; write the value out")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > _MAX_SET_DEPTH:
                    raise cli.UsageError(f"--set {key}: the value nests deeper than {_MAX_SET_DEPTH} levels")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "malformed"
        raise cli.UsageError(f"--set {key}: the value is not valid YAML ({problem}); {fix}") from None

    def check(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(k, str):
                    raise cli.UsageError(f"--set {key}: an object key is not text ({type(k).__name__}); {fix}")
                check(v)
        elif isinstance(node, list):
            for v in node:
                check(v)
        elif node is not None and not isinstance(node, (str, bool, int, float)):
            raise cli.UsageError(f"--set {key}: the value holds a YAML {type(node).__name__}, not text, a number, "
                                 f"a boolean, a list or an object; {fix}")

    check(parsed)
    return key, parsed


def main(argv: list[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    # the streams of the moment (a default bound at import would miss a later redirection)
    stdout, stderr = (sys.stdout if stdout is None else stdout), (sys.stderr if stderr is None else stderr)
    parser = argparse.ArgumentParser(prog="python -m tools.preview", description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("-s", "--stack", help="stack name (Pulumi.<stack>.yaml)")
    target.add_argument("--all", action="store_true", help="every stack, in one process (--out gets one directory per stack)")
    target.add_argument("--stacks", nargs="+", metavar="STACK", help="these stacks, in one process (as --all)")
    parser.add_argument("--out", type=Path, help="write rendered values, manifests and scripts here "
                        "(a new or empty directory, or one an earlier --out wrote: its files are replaced)")
    parser.add_argument("--no-inputs", action="store_true", help="print the tree without inputs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="preview with this config value instead (YAML value), e.g. phase=scheduler")
    parser.add_argument("--set-secret", action="append", default=[], metavar="KEY",
                        help="preview as if this secret were set (placeholder value)")
    cli.add_debug_flag(parser)
    args = parser.parse_args(argv)
    # every check of the command line before anything is rendered or printed
    overrides = dict(parse_set(item) for item in args.set)
    placeholders = tuple(_check_key("--set-secret", key) for key in args.set_secret)
    out = OutDir(args.out) if args.out else None

    started = time.perf_counter()
    many = args.all or args.stacks is not None  # one directory of --out per stack, a summary line
    stacks = stackconfig.stacks() if args.all else list(dict.fromkeys(args.stacks)) if args.stacks else [args.stack]
    worst, failed = 0, 0
    for stack in stacks:
        t0 = time.perf_counter()
        try:
            run = render(stack, pp.passphrase_from_env(), overrides, placeholders)
        except Exception as exc:  # noqa: BLE001 - one line per stack; --all goes on with the others
            code = cli.report(exc, stderr, prefix=stack if many else "")
            worst = cli.BUG_EXIT if cli.BUG_EXIT in (code, worst) else code  # a bug outranks input errors
            failed += 1
            continue
        print_tree(run, stdout, show_inputs=not args.no_inputs)
        if out is not None:
            files = out.write(rendered_files(run), under=stack if many else "")
            stdout.write(f"Wrote {len(files)} files under {out.path / stack if many else out.path}\n")
        sc = run.extra["stackconfig"]
        stdout.write(f"Secrets: {'checked with the passphrase' if sc.decrypted else 'not decrypted (no passphrase): placeholders'}\n")
        stdout.write(f"Rendered {stack} in {time.perf_counter() - t0:.2f}s\n")
    if many:
        stdout.write(f"Rendered {len(stacks) - failed}/{len(stacks)} stacks in {time.perf_counter() - started:.2f}s\n")
    return worst

