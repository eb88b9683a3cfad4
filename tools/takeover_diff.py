"""Takeover diff: what the first `pulumi up` changes in a running instance (issue 12, part 4).

    python -m tools.takeover_diff -s search --live-values values.yaml [--live-objects objects.yaml]

``--live-values``: what ``helm get values production -n airflow-<x> -o yaml`` prints (without
``-o yaml`` Helm starts with a ``USER-SUPPLIED VALUES:`` line; both are accepted).  The stack is
rendered offline as tools/preview.py does, and the Release's values are compared with the live
ones path by path (dotted paths; a list is compared as one value):

    + path: value           the first update adds it
    - path: value           the first update removes it
    ~ path: old -> new      the first update changes it
    ? path: (secret) not compared   a secret whose value only the deployment knows

A secret path (a secret leaf of the program's values, or a path above or below one) never shows
a value, neither the program's nor the live one: ``~ path: (secret) differs``; a secret the
program only knows when deployed (no passphrase, a script's output) is ``? path: (secret) not
compared``.  Every value of a secret the render holds is masked in every line as well.

``--live-objects``: what ``kubectl get cluster,pooler,scheduledbackup,imagecatalog -n
airflow-<x> -o yaml`` prints (a ``kind: List``).  For every Kubernetes object the program
manages (not its reads) with the same kind and name, the paths the program sets under ``spec``,
``metadata.labels`` and ``metadata.annotations`` are compared the same way; what the live object
has there and the program does not set is listed as kept by the server (server-side apply
leaves fields it does not manage); what the API server adds elsewhere (status, managedFields,
uid, ...) is ignored.

Exit 0 with a summary line; an unreadable file is one line and exit 2 (tools/cli.py).
"""

from __future__ import annotations

import sys

from tools import cli

if __name__ == "__main__":  # first thing: the guard (tools/cli.py) covers the imports below too
    sys.exit(cli.run_module("tools.takeover_diff"))

import argparse
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tools import mockrun, stackyaml
from tools import passphrase as pp
from tools.preview import RELEASE_TYPE, render

HELM_HEADER = "USER-SUPPLIED VALUES:"
OBJECT_SECTIONS = (("spec",), ("metadata", "labels"), ("metadata", "annotations"))
LISTED_KINDS = ("Cluster", "Pooler", "ScheduledBackup", "ImageCatalog")  # what the kubectl command lists
_MISSING = object()
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class Diff:
    lines: list[str] = field(default_factory=list)
    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0
    kept: int = 0
    uncompared: int = 0
    paths: list[tuple | None] = field(default_factory=list)  # the values path of each line

    def add(self, path: tuple | None, line: str) -> None:
        self.lines.append(line)
        self.paths.append(path)

    def summary(self, what: str) -> str:
        text = (f"{what}: {self.added} to add, {self.removed} to remove, {self.changed} to change, "
                f"{self.unchanged} unchanged")
        text += f", {self.kept} kept by the server" if self.kept else ""
        return text + (f", {self.uncompared} secret not compared" if self.uncompared else "")


# --- paths ------------------------------------------------------------------------------

def show_path(path: tuple) -> str:
    out = ""
    for key in path:
        key = str(key)
        if _PLAIN_KEY.fullmatch(key):
            out += f".{key}" if out else key
        else:
            out += f"[{json.dumps(key)}]"
    return out


def flatten(node: Any, path: tuple = ()) -> dict[tuple, Any]:
    """Leaves by key path: mappings are walked, anything else (lists too) is one value; an empty
    mapping is a value of its own (so that it shows when only one side has it)."""
    if isinstance(node, dict) and (node or not path):
        out: dict[tuple, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, path + (str(key),)))
        return out
    return {path: node}


def _has_secret(value: Any) -> bool:
    return bool(mockrun.secret_paths(value)) if not isinstance(value, mockrun.SecretLeaf) else True


def _related(a: tuple, b: tuple) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _comparable(value: Any) -> bool:
    """A secret whose real value the offline render knows (decrypted config)."""
    if isinstance(value, mockrun.SecretLeaf):
        return _comparable(value.value)
    if isinstance(value, dict):
        return all(_comparable(v) for v in value.values())
    if isinstance(value, list):
        return all(_comparable(v) for v in value)
    if isinstance(value, str):
        return value not in (mockrun.SECRET, mockrun.COMPUTED) and not value.startswith("(stdout of ")
    return True


def diff_tree(program: Any, live: Any, prefix: tuple = (), *, secrets_known: bool = True,
              kept_only: bool = False, out: Diff | None = None) -> Diff:
    """The lines of what applying ``program`` over ``live`` changes, under ``prefix``.

    ``kept_only``: paths only live has are not removed (server-side apply of a Kubernetes
    object) but listed as kept by the server."""
    out = out or Diff()
    want = flatten(program, prefix)
    have = flatten(live, prefix) if live is not _MISSING else {}
    secret = [p for p, v in want.items() if _has_secret(v)]

    def is_secret(path: tuple) -> bool:
        return any(_related(path, s) for s in secret)

    for path in sorted(set(want) | set(have), key=lambda p: tuple(map(str, p))):
        shown = show_path(path)
        if path in want and path in have:
            new, old = want[path], have[path]
            if is_secret(path):
                if not secrets_known or not _comparable(new):
                    out.add(path, f"? {shown}: (secret) not compared, its value is known only when deployed")
                    out.uncompared += 1
                elif mockrun.unmasked(new) == old:
                    out.unchanged += 1
                else:
                    out.add(path, f"~ {shown}: (secret) differs")
                    out.changed += 1
            elif new == old:
                out.unchanged += 1
            elif new == mockrun.COMPUTED:
                out.add(path, f"~ {shown}: (known only when deployed)")
                out.changed += 1
            else:
                out.add(path, f"~ {shown}: {_show(old)} -> {_show(new)}")
                out.changed += 1
        elif path in want:
            # a live value above this path (a scalar where the program has a mapping) is replaced
            value = "(secret)" if is_secret(path) else _show(want[path])
            out.add(path, f"+ {shown}: {value}")
            out.added += 1
        else:
            value = "(secret)" if is_secret(path) else _show(have[path])
            if kept_only:
                if any(_related(path, w) for w in want):
                    # the program sets a mapping or scalar here that this one lies above or below
                    out.add(path, f"- {shown}: {value}")
                    out.removed += 1
                else:
                    out.add(path, f"  {shown}: {value} (kept by the server, not managed)")
                    out.kept += 1
            else:
                out.add(path, f"- {shown}: {value}")
                out.removed += 1
    return out


def annotate(diff: Diff, listed: tuple[tuple[str, str], ...]) -> tuple[list[str], list[str]]:
    """Each change line with its reason from ``airflow:takeoverChanges`` (a listed path covers
    everything below it), or marked as not listed; then the listed paths no change matched."""
    reasons = dict(listed)
    used: set[str] = set()
    lines = []
    for line, path in zip(diff.lines, diff.paths):
        if path is None or line.startswith("?"):
            lines.append(line)
            continue
        match = next((show_path(path[:n]) for n in range(len(path), 0, -1) if show_path(path[:n]) in reasons), None)
        if match is None:
            lines.append(f"{line}    # NOT LISTED in airflow:takeoverChanges")
        else:
            used.add(match)
            lines.append(f"{line}    # intended: {reasons[match]}")
    stale = [p for p, _ in listed if p not in used]
    return lines, stale


# --- input files ------------------------------------------------------------------------

def read_yaml(path: Path, option: str) -> Any:
    """The YAML document of a user file, strictly (duplicate keys refused); one-line errors."""
    try:
        text = stackyaml.read_text(path)
        if option == "--live-values":
            lines = text.split("\n")
            first = next((i for i, line in enumerate(lines) if line.strip()), None)
            if first is not None and lines[first].strip() == HELM_HEADER:
                text = "\n".join(lines[first + 1:])
        if not text.strip():
            raise stackyaml.YamlError(f"{path.name}: empty")
        value = stackyaml.parse(text, path.name).value
    except stackyaml.YamlError as exc:
        raise cli.UsageError(f"{option} {path}: {exc}") from None
    if option == "--live-values" and value is None:
        return {}  # `helm get values` of a release installed without values prints `null`
    if not isinstance(value, dict):
        raise cli.UsageError(f"{option} {path}: not a YAML mapping (it is {stackyaml.kind_of(value)})")
    return value


def live_items(doc: dict, path: Path) -> list[dict]:
    if doc.get("kind") == "List" or "items" in doc:
        items = doc.get("items")
        if items is None:
            items = []
        if not isinstance(items, list):
            raise cli.UsageError(f"--live-objects {path}: items is not a list")
    else:
        items = [doc]  # a single object, as `kubectl get cluster X -o yaml` prints it
    for i, item in enumerate(items):
        if not (isinstance(item, dict) and isinstance(item.get("kind"), str)
                and isinstance(item.get("metadata"), dict) and isinstance(item["metadata"].get("name"), str)):
            raise cli.UsageError(f"--live-objects {path}: item {i} is not a Kubernetes object (kind, metadata.name)")
    return items


# --- the two diffs ----------------------------------------------------------------------

def _secrets_known(run: mockrun.Run) -> bool:
    sc = run.extra.get("stackconfig")
    return bool(getattr(sc, "decrypted", False))


def values_diff(run: mockrun.Run, live: dict) -> Diff:
    values = run.monitor.one(RELEASE_TYPE).inputs.get("values") or {}
    return diff_tree(values, live, secrets_known=_secrets_known(run))


def managed_objects(run: mockrun.Run) -> list[mockrun.Registration]:
    return [r for r in run.monitor.registered()
            if r.custom and not r.read and r.type.startswith("kubernetes:") and r.type != RELEASE_TYPE
            and not r.type.startswith("pulumi:providers:")]


def _dig(node: Any, keys: tuple) -> Any:
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def objects_diff(run: mockrun.Run, items: list[dict]) -> Diff:
    out = Diff()
    live = {(i["kind"], i["metadata"]["name"]): i for i in items}
    known = _secrets_known(run)
    for reg in sorted(managed_objects(run), key=lambda r: (str(r.inputs.get("kind")), str(_dig(r.inputs, ("metadata", "name"))))):
        key = (reg.inputs.get("kind"), _dig(reg.inputs, ("metadata", "name")))
        if key not in live:
            if key[0] in LISTED_KINDS:
                out.add(None, f"{key[0]}/{key[1]}: not running (`pulumi import` of it would fail)")
                out.added += 1
            continue  # another kind: not in what kubectl was asked for
        obj = live.pop(key)
        header = f"{key[0]}/{key[1]}"
        diff = Diff()
        for section in OBJECT_SECTIONS:
            want, have = _dig(reg.inputs, section), _dig(obj, section)
            if want is _MISSING and have is _MISSING:
                continue
            if want is _MISSING:
                want = {}
            if have is _MISSING or have is None:
                have = {}
            if want == {} and have == {}:
                continue
            diff_tree(want, have, section, secrets_known=known, kept_only=True, out=diff)
        for attr in ("added", "removed", "changed", "unchanged", "kept", "uncompared"):
            setattr(out, attr, getattr(out, attr) + getattr(diff, attr))
        if diff.lines:
            out.add(None, f"{header}:")
            for line in diff.lines:
                out.add(None, f"    {line}")
    for kind, name in sorted(live):
        out.add(None, f"{kind}/{name}: running, not managed by the program (left alone)")
    return out


def main(argv: list[str] | None = None, stdout: TextIO | None = None) -> int:
    stdout = sys.stdout if stdout is None else stdout
    parser = argparse.ArgumentParser(prog="python -m tools.takeover_diff", description=__doc__.split("\n\n")[0])
    parser.add_argument("-s", "--stack", required=True, help="stack name (Pulumi.<stack>.yaml)")
    parser.add_argument("--live-values", type=Path, required=True, metavar="FILE",
                        help="`helm get values production -n airflow-<x> -o yaml` of the running release")
    parser.add_argument("--live-objects", type=Path, metavar="FILE",
                        help="`kubectl get cluster,pooler,scheduledbackup,imagecatalog -n airflow-<x> -o yaml`")
    cli.add_debug_flag(parser)
    args = parser.parse_args(argv)
    live_values = read_yaml(args.live_values, "--live-values")
    items = live_items(read_yaml(args.live_objects, "--live-objects"), args.live_objects) if args.live_objects else None
    run = render(args.stack, pp.passphrase_from_env())
    secrets = [str(mockrun.unmasked(v)) for r in run.monitor.registered()
               for v in _secret_leaves(r.inputs)]
    cli.register_secrets(secrets)  # no line may show one, whatever the path (tools/cli.py masks messages)

    def emit(line: str) -> None:
        stdout.write(cli.mask_secrets(line) + "\n")

    values = values_diff(run, live_values)
    listed = _listed_changes(run)
    lines, stale = annotate(values, listed)
    emit(f"Release production values ({args.stack}):")
    for line in lines:
        emit(f"    {line}")
    for path in stale:
        emit(f"    ! {path}: listed in airflow:takeoverChanges, but the first up does not change it (remove the entry)")
    unlisted = sum(1 for line in lines if line.endswith("# NOT LISTED in airflow:takeoverChanges"))
    emit(values.summary("Values") + f"; {unlisted} not listed as intended, {len(stale)} listed but unchanged")
    if items is not None:
        objects = objects_diff(run, items)
        emit(f"Database objects ({args.stack}):")
        for line in objects.lines:
            emit(f"    {line}")
        emit(objects.summary("Objects"))
    return 0


def _listed_changes(run: mockrun.Run) -> tuple[tuple[str, str], ...]:
    """airflow:takeoverChanges of the rendered stack, as the program validated it."""
    from components import config

    raw = run.extra["config"].get(f"{run.extra['stackconfig'].project}:takeoverChanges")
    if raw is None:
        return ()
    return config._takeover_changes("takeoverChanges", json.loads(raw) if isinstance(raw, str) else raw)


def _secret_leaves(node: Any) -> list[Any]:
    if isinstance(node, mockrun.SecretLeaf):
        return [node.value]
    if isinstance(node, dict):
        return [x for v in node.values() for x in _secret_leaves(v)]
    if isinstance(node, list):
        return [x for v in node for x in _secret_leaves(v)]
    return []
