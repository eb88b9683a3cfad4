"""Import plan: the `pulumi import --file` file that takes a running instance over.

    python -m tools.import_plan -s search                  # one line per entry of the plan
    python -m tools.import_plan -s search --out plan.json  # + the file, for `pulumi import --file plan.json -s search`

It renders the stack offline exactly as tools/preview.py does (the real ``__main__.py`` under
Pulumi's mock runtime) and lists, for every object the program *manages* that already runs:

- each Kubernetes object (not the reads: the Namespace and the pooler Service are admin_ng's and
  the operator's), id ``<namespace>/<metadata.name>``; the Helm Release, id
  ``<namespace>/<release name>`` (``airflow-<instance>/production``);
- each ``aws:s3/bucket:Bucket``, id its bucket name.

Left out, with the reason: remote Commands (scripts, no live object to read) and
pulumi-random resources (no live object: their value exists only in the state).

The file format is the engine's own (pulumi/pulumi ``pkg/cmd/pulumi/operations/import.go``,
``importFile``/``importSpec`` and ``parseImportFile``; documented at
https://www.pulumi.com/docs/iac/cli/commands/pulumi_import/):
``{"nameTable": {name: URN}, "resources": [{"type", "name", "id", "parent", "provider",
"version", "component", "inputs", ...}]}``.  A ``parent`` or ``provider`` is a *name*, resolved
first in ``nameTable`` (URNs of resources already in the stack's state) and then among the
file's own ``resources`` (``urnMapping`` in ``parseImportFile``).  The URN of each entry is
built from its parent's type chain and its name, so it is the program's URN:

- the components the program registers (``dpe:airflow:*``) are entries with
  ``"component": true`` and no id (pulumi 3.94, pulumi/pulumi#14467, #14524): a parent given
  only as a URN in ``nameTable`` must already be in the state, or the imported resource would
  name a parent the state does not hold;
- the explicit providers (one kubeconfig provider, one aws provider per RGW user) are entries
  of type ``pulumi:providers:<pkg>`` with no id and their ``inputs`` (pulumi 3.254,
  pulumi/pulumi#23972, #24135; the older ``providerInputs`` map is deprecated).  A provider
  referenced only through ``nameTable`` and absent from the state is created by the import with
  no configuration (``registerProviders`` in ``pkg/resource/deploy/import.go``): the kubernetes
  provider would read through the ambient kubeconfig, not the deploy one.
- ``nameTable`` lists what the stack's state already holds; for a first import it is empty,
  and this command writes it empty.

The file holds no secret: secret provider inputs (the aws providers' key pairs) are left out
and named in ``comment``, so the import reads the buckets with the ambient AWS credentials (the
pairs are generated, or the stack's encrypted config; the file is not the place for either).
Unknown top-level fields (``comment``) are ignored by the CLI's JSON decoder (``readImportFile``).
"""

from __future__ import annotations

import sys

from tools import cli

if __name__ == "__main__":  # first thing: the guard (tools/cli.py) covers the imports below too
    sys.exit(cli.run_module("tools.import_plan"))

import argparse
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from components import handover
from components.config_errors import set_fix
from tools import mockrun
from tools import passphrase as pp
from tools.preview import COMMAND_TYPES, PROVIDER_PREFIX, RELEASE_TYPE, render

BUCKET_TYPE = "aws:s3/bucket:Bucket"
AWS_PROVIDER = "pulumi:providers:aws"
RANDOM_PREFIX = "random:"
MIN_PULUMI_CLI = "3.254.0"  # explicit providers declared in `resources` (pulumi/pulumi#23972)


@dataclass
class Plan:
    stack: str
    entries: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[tuple[str, str, str]] = field(default_factory=list)  # (type, name, reason)
    omitted_inputs: dict[str, list[str]] = field(default_factory=dict)  # provider name -> input keys left out
    profiles: dict[str, tuple[str, str]] = field(default_factory=dict)  # aws provider -> its key pair's config keys

    def document(self) -> dict[str, Any]:
        comment = [
            f"pulumi import --file <this file> -s {self.stack} (pulumi CLI >= {MIN_PULUMI_CLI}); "
            "written by ./dev import-plan, see README 'Taking over a running instance'.",
            "Not imported: remote Commands (scripts, no live object) and pulumi-random resources "
            "(no live object; their values exist only in the state).",
        ]
        for name, keys in sorted(self.omitted_inputs.items()):
            if name in self.profiles:
                comment.append(f"Provider {name}: {', '.join(keys)} are not in this file (it holds no secret); it reads "
                               f"with profile {name} of AWS_SHARED_CREDENTIALS_FILE, the pair of airflow:{self.profiles[name][0]} "
                               "and airflow:" + self.profiles[name][1] + " (./dev import-plan --import writes that file).")
            else:
                comment.append(f"Provider {name}: secret inputs {', '.join(keys)} are not in this file (it holds "
                               "no secret); the import reads its resources with the ambient credentials.")
        return {"comment": comment, "nameTable": {}, "resources": self.entries}


def _import_id(reg: mockrun.Registration, provider_namespace: dict[str, str]) -> str:
    """The id `pulumi import` reads the live object by."""
    inputs = reg.inputs
    if reg.type == BUCKET_TYPE:
        return _text(inputs.get("bucket"), reg, "bucket")
    if reg.type == RELEASE_TYPE:
        # pulumi-kubernetes Release: "<namespace>/<release name>"
        return f"{_text(inputs.get('namespace'), reg, 'namespace')}/{_text(inputs.get('name'), reg, 'name')}"
    meta = inputs.get("metadata") or {}
    name = _text(meta.get("name"), reg, "metadata.name")
    namespace = meta.get("namespace") or provider_namespace.get(reg.provider.rsplit("::", 1)[0])
    # a namespaced object is "<namespace>/<name>" (the provider's default namespace when unset)
    return f"{_text(namespace, reg, 'metadata.namespace')}/{name}"


def _text(value: Any, reg: mockrun.Registration, what: str) -> str:
    if not isinstance(value, str) or not value or value == mockrun.COMPUTED:
        raise RuntimeError(f"{reg.name} ({reg.type}): {what} is not known offline")
    return value


def _plugin_version(provider_type: str) -> str | None:
    package = provider_type[len(PROVIDER_PREFIX):]
    try:
        return metadata.version(f"pulumi-{package}")  # the plugin version the SDK package asks for
    except metadata.PackageNotFoundError:
        return None


def build(run: mockrun.Run, stack: str) -> Plan:
    mon = run.monitor
    regs = {r.urn: r for r in mon.registered()}
    plan = Plan(stack)
    imported: list[mockrun.Registration] = []
    for reg in mon.registered():
        if reg.read or not reg.custom or reg.type.startswith(PROVIDER_PREFIX):
            continue
        if reg.type.startswith("kubernetes:") or reg.type == BUCKET_TYPE:
            imported.append(reg)
        elif reg.type in COMMAND_TYPES:
            plan.excluded.append((reg.type, reg.name, "remote Command: a script, no live object to import"))
        elif reg.type.startswith(RANDOM_PREFIX):
            plan.excluded.append((reg.type, reg.name, "pulumi-random: no live object, the value lives in the state"))
        else:
            plan.excluded.append((reg.type, reg.name, "not a Kubernetes object or bucket"))

    # the components and providers the imported resources hang from, ancestors first
    needed: list[str] = []

    def need(urn: str) -> None:
        if not urn or urn == mon.stack_urn or urn in needed:
            return
        reg = regs[urn]
        need(reg.parent)
        if reg.provider:
            need(reg.provider.rsplit("::", 1)[0])
        needed.append(urn)

    imported.sort(key=lambda r: (r.name, r.type))  # registration order varies from run to run
    plan.excluded.sort()
    for reg in imported:
        need(reg.parent)
        need(reg.provider.rsplit("::", 1)[0] if reg.provider else "")
    # ancestors first (a parent's type chain is shorter), then components before providers, by name
    needed.sort(key=lambda u: (u.split("::")[2].count("$"), regs[u].type.startswith(PROVIDER_PREFIX), regs[u].name))

    names = {urn: regs[urn].name for urn in [*needed, *(r.urn for r in imported)]}
    if len(set(names.values())) != len(names):
        raise RuntimeError("two resources of the plan share a name; the import file refers to entries by name")

    def placement(reg: mockrun.Registration, entry: dict[str, Any]) -> dict[str, Any]:
        if reg.parent and reg.parent != mon.stack_urn:
            entry["parent"] = names[reg.parent]
        return entry

    provider_namespace: dict[str, str] = {}
    for urn in needed:
        reg = regs[urn]
        entry: dict[str, Any] = {"type": reg.type, "name": reg.name}
        if reg.type.startswith(PROVIDER_PREFIX):
            inputs, omitted = {}, []
            for key, value in sorted(reg.inputs.items()):
                if mockrun.secret_paths(value) or value == mockrun.COMPUTED:
                    omitted.append(key)
                else:
                    inputs[key] = value
            if omitted:
                plan.omitted_inputs[reg.name] = omitted
            pair = handover.s3_import_profiles(stack).get(reg.name)
            if reg.type == AWS_PROVIDER and pair and {"accessKey", "secretKey"} <= set(omitted):
                # each RGW user reads only its own bucket, so each provider gets its user's pair, by
                # name, from a shared credentials file (profile + AWS_SHARED_CREDENTIALS_FILE, the
                # provider's documented credential sources:
                # https://www.pulumi.com/registry/packages/aws/installation-configuration/).  The
                # first `up` then replaces profile with the pair: a provider update, not a replace
                # of its buckets (pulumi-terraform-bridge configDiffer.forcesProviderReplace: only
                # config marked ForcesProviderReplace cascades; pulumi-aws marks none of these).
                inputs["profile"] = reg.name
                plan.profiles[reg.name] = pair
            entry["inputs"] = inputs
            version = _plugin_version(reg.type)
            if version:
                entry["version"] = version
            if isinstance(inputs.get("namespace"), str):
                provider_namespace[urn] = inputs["namespace"]
        else:
            entry["component"] = True
        plan.entries.append(placement(reg, entry))

    for reg in imported:
        entry = {"type": reg.type, "name": reg.name, "id": _import_id(reg, provider_namespace)}
        placement(reg, entry)
        if reg.provider:
            entry["provider"] = names[reg.provider.rsplit("::", 1)[0]]
        plan.entries.append(entry)
    return plan


def summary_lines(plan: Plan) -> list[str]:
    lines = []
    for entry in plan.entries:
        if entry.get("component"):
            what = "component"
        elif "id" in entry:
            what = f"import id={entry['id']}"
        else:
            what = "provider (created with the program's inputs" + (
                f"; without {', '.join(plan.omitted_inputs[entry['name']])})" if entry["name"] in plan.omitted_inputs else ")")
        where = "".join(f" {k}={entry[k]}" for k in ("parent", "provider") if k in entry)
        lines.append(f"{entry['type']} {entry['name']}: {what}{where}")
    for type_, name, reason in plan.excluded:
        lines.append(f"{type_} {name}: not imported ({reason})")
    return lines


def _check_out(path: Path) -> None:
    if path.is_dir():
        raise cli.UsageError(f"--out {path}: is a directory; give a file path")
    if path.is_symlink() and not path.exists():
        raise cli.UsageError(f"--out {path}: is a dangling symbolic link")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise cli.UsageError(f"--out {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise cli.UsageError(f"--out {path}: {parent} is not writable")


def write(plan: Plan, path: Path) -> None:
    text = json.dumps(plan.document(), indent=4, sort_keys=False) + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# credentials an ambient shell may carry that the AWS SDK would prefer to a provider's profile
AMBIENT_AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE")


def _config_get(pulumi: str, stack: str, key: str) -> str:
    """A secret of the stack, through the CLI (any secrets provider); never in an argv or a message."""
    proc = subprocess.run([pulumi, "config", "get", "-s", stack, f"airflow:{key}"], capture_output=True, text=True)
    value = proc.stdout.rstrip("\n")
    if proc.returncode != 0 or not value:
        reason = (proc.stderr.strip().splitlines() or ["empty"])[-1] if proc.returncode else "empty"
        raise cli.UsageError(f"airflow:{key}: `pulumi config get -s {stack}` failed ({reason}); "
                             + set_fix(stack, key, secret=True))
    return value


def run_import(plan: Plan, plan_file: Path, pulumi: str = "pulumi") -> int:
    """``pulumi import --file`` with each aws provider's profile in a private credentials file.

    The file (mode 0600, in a fresh 0700 directory) holds one profile per RGW user's provider
    and is removed when the import ends, whatever its outcome; the import gets only its path."""
    pairs = {name: (_config_get(pulumi, plan.stack, a), _config_get(pulumi, plan.stack, s))
             for name, (a, s) in sorted(plan.profiles.items())}
    with tempfile.TemporaryDirectory(prefix="airflow-import-") as private:
        creds = Path(private) / "credentials"
        fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for name, (access, secret) in pairs.items():
                fh.write(f"[{name}]\naws_access_key_id = {access}\naws_secret_access_key = {secret}\n")
        env = {k: v for k, v in os.environ.items() if k not in AMBIENT_AWS}
        env["AWS_SHARED_CREDENTIALS_FILE"] = str(creds)
        try:
            return subprocess.run([pulumi, "import", "-s", plan.stack, "--file", str(plan_file), "--yes",
                                   "--generate-code=false"], env=env).returncode
        except FileNotFoundError:
            raise cli.UsageError(f"--import: `{pulumi}` not found; it needs the pulumi CLI >= {MIN_PULUMI_CLI}") from None


def main(argv: list[str] | None = None, stdout: TextIO | None = None) -> int:
    stdout = sys.stdout if stdout is None else stdout  # the stream of the moment, not of the import
    parser = argparse.ArgumentParser(prog="python -m tools.import_plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("-s", "--stack", required=True, help="stack name (Pulumi.<stack>.yaml)")
    parser.add_argument("--out", type=Path, help="write the `pulumi import --file` JSON here (a file; replaced if it exists)")
    parser.add_argument("--import", dest="run_import", action="store_true",
                        help="then run `pulumi import --file OUT`, the buckets read with their users' key pairs from stack config")
    cli.add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.run_import and args.out is None:
        raise cli.UsageError("--import: give --out FILE, the plan `pulumi import --file` reads")
    if args.out is not None:
        _check_out(args.out)
    run = render(args.stack, pp.passphrase_from_env())
    plan = build(run, args.stack)
    for line in summary_lines(plan):
        stdout.write(line + "\n")
    imported = sum(1 for e in plan.entries if "id" in e)
    stdout.write(f"Plan: {imported} to import, {len(plan.entries) - imported} components and providers, "
                 f"{len(plan.excluded)} not imported\n")
    if args.out is not None:
        write(plan, args.out)
        stdout.write(f"Wrote {args.out}\n")
    if args.run_import:
        stdout.flush()
        code = run_import(plan, args.out)
        stdout.write(f"pulumi import exited {code}\n")
        return 0 if code == 0 else 1
    return 0
