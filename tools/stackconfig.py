"""Read a stack's configuration the way the Pulumi CLI hands it to the program.

Pulumi.yaml's ``config:`` gives project defaults (keys of the project's own namespace are
written without the prefix, as ``{type, default}``, ``{value}`` or a bare value); foreign
keys must use ``value:``.  Pulumi.<stack>.yaml overrides them.  ``{secure: v1:...}`` values
are decrypted with the passphrase (also inside objects, which makes the whole key secret).
Like the CLI, every value reaching the program is a string: objects and lists as JSON.

Without a passphrase, secure values become ``SECRET_PLACEHOLDER``: enough to render a
preview, never enough to read a secret.

Also a small CLI for machines without the pulumi CLI:
    python -m tools.stackconfig set-secret -s STACK KEY   # value read from stdin, never argv
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.config import SECRET_PLACEHOLDER
from tools import passphrase as pp

ROOT = Path(__file__).resolve().parent.parent


class StackError(Exception):
    """Unknown stack, unreadable file or wrong passphrase: one line, no secret."""


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    config: dict[str, str]
    secret_keys: tuple[str, ...]
    decrypted: bool


def project_file(root: Path = ROOT) -> dict[str, Any]:
    with open(root / "Pulumi.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def stacks(root: Path = ROOT) -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in root.glob("Pulumi.*.yaml"))


def _to_wire(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _project_defaults(project: dict[str, Any]) -> dict[str, Any]:
    name = project["name"]
    out: dict[str, Any] = {}
    for key, spec in (project.get("config") or {}).items():
        full = key if ":" in key else f"{name}:{key}"
        if isinstance(spec, dict) and ("default" in spec or "value" in spec or "type" in spec):
            if ":" in key and "value" not in spec:
                raise StackError(f"Pulumi.yaml: config key {key} is not in the project namespace; give it as value:, not default:")
            if "value" in spec:
                out[full] = spec["value"]
            elif "default" in spec:
                out[full] = spec["default"]
        else:
            out[full] = spec
    return out


def _decrypt_tree(node: Any, crypter: pp.Crypter | None) -> tuple[Any, bool]:
    """Return (plain value, contains_secret)."""
    if isinstance(node, dict):
        if set(node) == {"secure"}:
            if crypter is None:
                return SECRET_PLACEHOLDER, True
            return crypter.decrypt(node["secure"]), True
        found = False
        out = {}
        for k, v in node.items():
            out[k], secret = _decrypt_tree(v, crypter)
            found = found or secret
        return out, found
    if isinstance(node, list):
        items = [_decrypt_tree(v, crypter) for v in node]
        return [v for v, _ in items], any(s for _, s in items)
    return node, False


def load(stack: str, passphrase: str | None, root: Path = ROOT) -> StackConfig:
    """Config for ``stack``; ``passphrase`` None means secrets stay placeholders."""
    path = root / f"Pulumi.{stack}.yaml"
    if not re.match(r"^[A-Za-z0-9_.-]+$", stack) or not path.is_file():
        known = ", ".join(stacks(root)) or "none"
        raise StackError(f"unknown stack {stack!r}: no Pulumi.{stack}.yaml (known stacks: {known})")
    project = project_file(root)
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh) or {}
    crypter = None
    salt = doc.get("encryptionsalt")
    if passphrase is not None:
        if not salt:
            raise StackError(f"Pulumi.{stack}.yaml has no encryptionsalt; it was not made by the passphrase provider")
        try:
            crypter = pp.crypter_from_salt(passphrase, salt)
        except pp.PassphraseError as exc:
            raise StackError(f"Pulumi.{stack}.yaml: {exc} (PULUMI_CONFIG_PASSPHRASE)") from None

    merged = _project_defaults(project)
    merged.update(doc.get("config") or {})
    config: dict[str, str] = {}
    secret_keys = []
    for key, value in merged.items():
        try:
            plain, secret = _decrypt_tree(value, crypter)
        except pp.PassphraseError as exc:
            raise StackError(f"Pulumi.{stack}.yaml: {key}: {exc}") from None
        config[key] = _to_wire(plain)
        if secret:
            secret_keys.append(key)
    return StackConfig(project["name"], stack, config, tuple(sorted(secret_keys)), crypter is not None)


def set_secret(stack: str, key: str, value: str, passphrase: str, root: Path = ROOT) -> None:
    """Write ``key: {secure: ...}`` into Pulumi.<stack>.yaml like `pulumi config set --secret`.

    Edits the file as text so comments and ordering survive.
    """
    path = root / f"Pulumi.{stack}.yaml"
    text = path.read_text(encoding="utf-8")
    doc = yaml.safe_load(text) or {}
    if doc.get("encryptionsalt"):
        crypter = pp.crypter_from_salt(passphrase, doc["encryptionsalt"])
    else:
        salt, crypter = pp.new_salt(passphrase)
        text = f"encryptionsalt: {salt}\n" + text
    project = project_file(root)["name"]
    full = key if ":" in key else f"{project}:{key}"
    line = f"  {full}:\n    secure: {crypter.encrypt(value)}\n"
    pattern = re.compile(rf"^  {re.escape(full)}:\n    secure: \S+\n", re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: line, text)
    elif re.search(rf"^  {re.escape(full)}:", text, re.M):
        raise StackError(f"{full} is set in plain text in Pulumi.{stack}.yaml; delete that entry first")
    else:
        if not re.search(r"^config:\s*$", text, re.M):
            text += "config:\n"
        text = text.rstrip("\n") + "\n" + line
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.stackconfig")
    sub = parser.add_subparsers(dest="cmd", required=True)
    ss = sub.add_parser("set-secret", help="encrypt stdin into KEY of a stack file")
    ss.add_argument("-s", "--stack", required=True)
    ss.add_argument("key")
    args = parser.parse_args(argv)
    secret = pp.passphrase_from_env()
    if secret is None:
        print("error: set PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE", file=sys.stderr)
        return 2
    value = sys.stdin.read().rstrip("\n")
    try:
        set_secret(args.stack, args.key, value, secret)
    except (StackError, pp.PassphraseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
