"""Read a stack's configuration the way the Pulumi CLI hands it to the program.

Pulumi.yaml's ``config:`` gives project defaults (keys of the project's own namespace are
written without the prefix, as ``{type, default}``, ``{value}`` or a bare value); foreign
keys must use ``value:``.  Pulumi.<stack>.yaml overrides them.  ``{secure: v1:...}`` values
are decrypted with the passphrase (also inside objects, which makes the whole key secret).
Like the CLI, every value reaching the program is a string: a scalar directly under
``config:`` as it is written (pulumi/pulumi sdk/go/common/resource/config/value.go decodes it
into a string first), objects and lists as JSON.

Stack files are read as strictly as the CLI's YAML parser (go-yaml v3) reads them, and a
little more strictly where YAML readers disagree, so that a file means one thing only
(tools/stackyaml.py: duplicate keys, excessive aliasing, deep nesting, non-string keys,
non-JSON values, scalars YAML 1.1 and 1.2 read differently, invalid YAML or UTF-8); then:

* top-level keys other than ``encryptionsalt`` and ``config``, a ``config:`` that is not a
  mapping, a key without a value;
* keys outside the project namespace (``phase:``, ``airflw:phase``, ``kubernetes:context``):
  the program documents no provider configuration, so every key is ``<project>:<key>``;
* a malformed ``encryptionsalt`` or ``secure:`` value.

Every refusal is one line naming the file, the key and the line, and never a value.

Without a passphrase, secure values become ``SECRET_PLACEHOLDER``: enough to render a
preview, never enough to read a secret.

Also a small CLI for machines without the pulumi CLI:
    python -m tools.stackconfig set-secret -s STACK KEY   # value read from stdin, never argv
It edits the file as `pulumi config set --secret` does (a YAML round trip that keeps
comments and key order) and replaces it atomically.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import difflib
import io
import json
import os
import re
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.config import SECRET_PLACEHOLDER
from tools import cli
from tools import passphrase as pp
from tools import stackyaml

ROOT = Path(__file__).resolve().parent.parent

MAX_DEPTH = stackyaml.MAX_DEPTH
_STACK_KEYS = ("encryptionsalt", "config")


class StackError(Exception):
    """Unknown stack, unreadable or malformed file, wrong passphrase: one line, no secret."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    config: dict[str, str]
    secret_keys: tuple[str, ...]
    decrypted: bool


def _read_text(path: Path) -> str:
    try:
        return stackyaml.read_text(path)
    except stackyaml.YamlError as exc:
        raise StackError(str(exc)) from None


def _parse(text: str, name: str, raw_config: bool = False) -> stackyaml.Document:
    try:
        return stackyaml.parse(text, name, raw_config)
    except stackyaml.YamlError as exc:
        raise StackError(str(exc)) from None


# --- secure values -------------------------------------------------------------------------

_B64 = r"[A-Za-z0-9+/]+={0,2}"
_SECURE = re.compile(rf"v1:({_B64}):({_B64})")
_SALT = re.compile(rf"v1:({_B64}):v1:({_B64}):({_B64})")
_SET_AGAIN = "set it again with `python -m tools.stackconfig set-secret` or `pulumi config set --secret`"


def _b64_len(text: str) -> int:
    try:
        return len(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        return -1


def _bad_ciphertext(value: Any) -> str | None:
    """Why ``value`` is not a ``secure:`` value of the passphrase provider (None if it is)."""
    if value is None:
        return "its secure: value is empty"
    if not isinstance(value, str):
        return f"its secure: value is {stackyaml.kind_of(value)}, not a v1:<nonce>:<ciphertext> string"
    match = _SECURE.fullmatch(value)
    if match is None or _b64_len(match[1]) != 12 or _b64_len(match[2]) < 16:
        return "its secure: value is not a v1:<nonce>:<ciphertext> string of the passphrase provider"
    return None


def _bad_salt(value: Any) -> str | None:
    if value is None:
        return "encryptionsalt is empty"
    if not isinstance(value, str):
        return f"encryptionsalt is {stackyaml.kind_of(value)}, not a v1:<salt>:<check> string"
    match = _SALT.fullmatch(value)
    if match is None or _b64_len(match[1]) < 1 or _b64_len(match[2]) != 12 or _b64_len(match[3]) < 16:
        return "encryptionsalt is not a v1:<salt>:<check> string of the passphrase provider"
    return None


def _is_secure(node: Any) -> bool:
    return isinstance(node, dict) and len(node) == 1 and "secure" in node


def _decrypt_tree(node: Any, crypter: pp.Crypter | None) -> tuple[Any, bool]:
    """Return (plain value, contains_secret).  Raises pp.PassphraseError (no value in it)."""
    if isinstance(node, dict):
        if _is_secure(node):
            problem = _bad_ciphertext(node["secure"])
            if problem:
                raise pp.PassphraseError(f"{problem}; {_SET_AGAIN}")
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


# --- files ---------------------------------------------------------------------------------

def project_file(root: Path = ROOT) -> dict[str, Any]:
    path = root / "Pulumi.yaml"
    doc = _parse(_read_text(path), path.name).value
    if not isinstance(doc, dict):
        raise StackError(f"Pulumi.yaml: the file is {stackyaml.kind_of(doc)}, not a mapping with name: and config: (line 1)")
    if not isinstance(doc.get("name"), str) or not doc["name"]:
        raise StackError("Pulumi.yaml: name: must be the project's name")
    if not isinstance(doc.get("config"), (dict, type(None))):
        raise StackError(f"Pulumi.yaml: config: is {stackyaml.kind_of(doc['config'])}, not a mapping")
    return doc


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


def _stack_path(stack: str, root: Path) -> Path:
    path = root / f"Pulumi.{stack}.yaml"
    if not isinstance(stack, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", stack) or not path.is_file():
        known = ", ".join(stacks(root)) or "none"
        raise StackError(f"unknown stack {stack!r}: no Pulumi.{stack}.yaml (known stacks: {known})")
    return path


def _key_problem(key: str, project: str) -> str | None:
    """Why ``key`` of a stack file's config: is not ``<project>:<name>`` (None if it is)."""
    parts = key.split(":")
    shown = stackyaml.show(key)
    if len(parts) == 1:
        return f"config key {shown} has no namespace; did you mean {project}:{stackyaml.show(key)}?"
    namespace, name = parts[0], parts[-1]
    if len(parts) == 3 and namespace == project and parts[1] == "config":
        return f"config key {shown} is the old <namespace>:config:<name> form; write {project}:{stackyaml.show(name)}"
    if len(parts) > 2:
        return f"config key {shown} has more than one ':'; write {project}:<key>"
    if namespace != project:
        if stackyaml.distance(namespace.lower(), project) <= 2:
            return f"config key {shown} is not in the project namespace; did you mean {project}:{stackyaml.show(name)}?"
        return (f"config key {shown} is outside the project namespace: the program reads only {project}:<key> "
                "settings (it documents no provider configuration)")
    if not name:
        return f"config key {shown} has no name after {project}:"
    return None


@dataclass
class _StackDoc:
    salt: str | None
    config: dict[str, Any]  # key -> value as written (top-level scalars as text)
    lines: dict


def _read_stack(text: str, name: str, project: str) -> _StackDoc:
    """A stack file's text, checked: its keys, its encryptionsalt, the form of its secure values."""
    parsed = _parse(text, name, raw_config=True)
    doc, lines = parsed.value, parsed.lines
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise StackError(f"{name}: the file is {stackyaml.kind_of(doc)}, not a mapping with config: (line 1)")
    for key in doc:
        if key in _STACK_KEYS:
            continue
        line = lines.get((key,), 1)
        if key in ("secretsprovider", "encryptedkey"):
            raise StackError(f"{name}: {key}: this program reads only stacks of the passphrase secrets provider "
                             f"(encryptionsalt:) (line {line})")
        near = [k for k in _STACK_KEYS if stackyaml.distance(key.lower(), k) <= 2]
        hint = f"; did you mean {near[0]}?" if near else ""
        raise StackError(f"{name}: top-level key {stackyaml.show(key)} is not a stack-file setting "
                         f"(only encryptionsalt and config){hint} (line {line})")
    if "encryptionsalt" in doc:
        problem = _bad_salt(doc["encryptionsalt"])
        if problem:
            raise StackError(f"{name}: {problem}; it is written by `pulumi stack init` (line {lines[('encryptionsalt',)]})")
    config = doc.get("config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise StackError(f"{name}: config: is {stackyaml.kind_of(config)}, not a mapping of {project}:<key> settings "
                         f"(line {lines[('config',)]})")
    for key, value in config.items():
        line = lines.get(("config", key), lines.get(("config",), 1))
        problem = _key_problem(key, project)
        if problem:
            raise StackError(f"{name}: {problem} (line {line})")
        if value is None:
            raise StackError(f"{name}: {stackyaml.show(key)} has no value; give one or delete the line (line {line})")
    return _StackDoc(doc.get("encryptionsalt"), config, lines)


def _wire_config(sd: _StackDoc, name: str, crypter: pp.Crypter | None,
                 defaults: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    merged = dict(defaults)
    merged.update(sd.config)
    config: dict[str, str] = {}
    secret_keys = []
    for key, value in merged.items():
        try:
            plain, secret = _decrypt_tree(value, crypter)
        except pp.PassphraseError as exc:
            line = sd.lines.get(("config", key))
            raise StackError(f"{name}: {stackyaml.show(key)}: {exc}" + (f" (line {line})" if line else "")) from None
        config[key] = _to_wire(plain)
        if secret:
            secret_keys.append(key)
    return config, secret_keys


def load(stack: str, passphrase: str | None, root: Path = ROOT) -> StackConfig:
    """Config for ``stack``; ``passphrase`` None means secrets stay placeholders."""
    path = _stack_path(stack, root)
    project = project_file(root)
    sd = _read_stack(_read_text(path), path.name, project["name"])
    crypter = None
    if passphrase is not None:
        if not sd.salt:
            raise StackError(f"{path.name} has no encryptionsalt; it was not made by the passphrase provider")
        try:
            crypter = pp.crypter_from_salt(passphrase, sd.salt)
        except pp.PassphraseError as exc:
            raise StackError(f"{path.name}: {exc} (PULUMI_CONFIG_PASSPHRASE)") from None
    config, secret_keys = _wire_config(sd, path.name, crypter, _project_defaults(project))
    return StackConfig(project["name"], stack, config, tuple(sorted(secret_keys)), crypter is not None)


# --- the writer ----------------------------------------------------------------------------

def _round_trip_yaml(text: str):
    """A ruamel.yaml round-trip (de)serialiser set up to reproduce ``text`` as closely as it
    can: of the usual indentations, the one whose plain re-dump differs least from it."""
    from ruamel.yaml import YAML

    def make(mapping: int, offset: int) -> Any:
        y = YAML(typ="rt")
        y.preserve_quotes = True
        y.width = 1 << 30  # never fold a long line (ciphertexts are long)
        y.indent(mapping=mapping, sequence=mapping + offset, offset=offset)
        y.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
        first = next((ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
        y.explicit_start = first.startswith("---")
        return y

    best = None
    for mapping, offset in ((2, 2), (2, 0), (4, 2), (4, 0)):
        y = make(mapping, offset)
        out = io.StringIO()
        y.dump(y.load(text), out)
        changed = sum(1 for ln in difflib.ndiff(text.splitlines(), out.getvalue().splitlines()) if ln[:1] in "+-")
        if best is None or changed < best[0]:
            best = (changed, y)
        if changed == 0:
            break
    return best[1]


def _secret_key(key: str, project: str) -> str:
    full = key if ":" in key else f"{project}:{key}"
    problem = _key_problem(full, project)
    if problem:
        raise StackError(problem)
    return full


def _atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (temp file + rename), keeping its permission bits."""
    target = path.resolve()
    mode = stat.S_IMODE(target.stat().st_mode)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def set_secret(stack: str, key: str, value: str, passphrase: str, root: Path = ROOT) -> None:
    """Write ``key: {secure: ...}`` into Pulumi.<stack>.yaml like `pulumi config set --secret`.

    A YAML round trip (ruamel.yaml) keeps comments, key order and the file's style; the
    file is checked before and after, and replaced atomically."""
    from ruamel.yaml.comments import CommentedMap

    path = _stack_path(stack, root)
    name = path.name
    project = project_file(root)["name"]
    full = _secret_key(key, project)
    if not isinstance(value, str) or not value.strip():
        raise StackError(f"{full}: the secret is empty; give its value on standard input (the file is unchanged)")
    text = _read_text(path)
    before = _read_stack(text, name, project)
    _wire_config(before, name, None, {})  # the form of every secure value
    current = before.config.get(full)
    if current is not None and not _is_secure(current):
        raise StackError(f"{full} is set in plain text in {name}; delete that entry first")
    if before.salt:
        try:
            crypter = pp.crypter_from_salt(passphrase, before.salt)
        except pp.PassphraseError as exc:
            raise StackError(f"{name}: {exc} (PULUMI_CONFIG_PASSPHRASE)") from None
        salt = None
    else:
        salt, crypter = pp.new_salt(passphrase)
    ciphertext = crypter.encrypt(value)

    y = _round_trip_yaml(text)
    doc = y.load(text)
    if doc is None:
        doc = CommentedMap()
    if salt is not None:
        doc.insert(0, "encryptionsalt", salt)
    if doc.get("config") is None:
        fresh = CommentedMap()
        fresh.fa.set_block_style()
        if "config" in doc:
            doc["config"] = fresh
        else:
            doc.insert(len(doc), "config", fresh)
    config = doc["config"]
    if not config:
        config.fa.set_block_style()
    if full in config:
        config[full]["secure"] = ciphertext  # keeps a flow-style {secure: ...} in its style
    else:
        entry = CommentedMap(secure=ciphertext)
        entry.fa.set_block_style()
        config[full] = entry
    out = io.StringIO()
    y.dump(doc, out)
    new_text = out.getvalue()

    # the new file must read back, with this secret and nothing else changed
    after = _read_stack(new_text, name, project)
    if crypter.decrypt(after.config[full]["secure"]) != value or \
            {k: v for k, v in after.config.items() if k != full} != {k: v for k, v in before.config.items() if k != full}:
        raise RuntimeError(f"the edited {name} does not read back as written; the file is unchanged")
    _atomic_write(path, new_text)


# --- the command ---------------------------------------------------------------------------

def _read_secret(stdin: Any) -> str:
    data = stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read()
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise StackError("the secret on standard input is not UTF-8 text (the file is unchanged)") from None
    return data.rstrip("\r\n")


def _command(argv: list[str], stdin: Any) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.stackconfig")
    cli.add_debug_flag(parser)
    sub = parser.add_subparsers(dest="cmd", required=True)
    ss = sub.add_parser("set-secret", help="encrypt stdin into KEY of a stack file")
    ss.add_argument("-s", "--stack", required=True)
    ss.add_argument("key")
    args = parser.parse_args(argv)
    _stack_path(args.stack, ROOT)  # an unknown stack before anything is read
    secret = pp.passphrase_from_env()
    if secret is None:
        raise StackError("set PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE")
    value = _read_secret(sys.stdin if stdin is None else stdin)
    cli.register_secrets([value, secret])  # no message of this process may show them
    set_secret(args.stack, args.key, value, secret, root=ROOT)
    return 0


def main(argv: list[str] | None = None, stdin: Any = None, stderr: Any = None) -> int:
    """The command under the one guard of every command (tools/cli.py): an input problem is
    exit 2 and one line ``error: ...``; anything else a bug, exit 1 and one line (the
    traceback only with --debug)."""
    return cli.run(lambda args: _command(args, stdin), argv, stderr=stderr)


if __name__ == "__main__":
    sys.exit(cli.run_module("tools.stackconfig"))
