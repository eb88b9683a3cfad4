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


# --- one entry at a time, as `pulumi config` writes it ------------------------------------

_GO_STR_SAFE = re.compile(r"[^\x00-\x1f\x7f]*")


def _go_str(value: str) -> Any:
    """``value`` as go-yaml v3 (the CLI's encoder) styles a string: multi-line as a literal
    block, double-quoted when a plain scalar would read as something else (true, 5, null, a
    YAML 1.1 boolean such as yes, a date), else plain (the emitter quotes it if it must)."""
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString

    if "\n" in value and _GO_STR_SAFE.fullmatch(value.replace("\n", "")) and not value.startswith(" "):
        return LiteralScalarString(value)
    try:
        plain_ok = value != "" and stackyaml._resolve_plain(value) == value
    except stackyaml._Refused:
        plain_ok = False
    return value if plain_ok else DoubleQuotedScalarString(value)


def _node(value: Any) -> Any:
    """A JSON-like value as ruamel round-trip nodes, block style, strings styled as go-yaml."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, dict):
        out = CommentedMap()
        for k, v in value.items():
            out[_go_str(k)] = _node(v)
        if out:
            out.fa.set_block_style()
        else:
            out.fa.set_flow_style()
        return out
    if isinstance(value, list):
        seq = CommentedSeq(_node(v) for v in value)
        if seq:
            seq.fa.set_block_style()
        else:
            seq.fa.set_flow_style()
        return seq
    if isinstance(value, str):
        return _go_str(value)
    return value


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _entry_lines(lines: list[str], key_index: int) -> tuple[int, int]:
    """[start, end) of the entry whose key is on ``lines[key_index]``: its head comment (the
    comment lines right above it, at its indentation), the key and its value's lines.  The
    comments after the value, at the key's indentation or less, belong to what follows."""
    indent = _indent_of(lines[key_index])
    start = key_index
    while start > 0 and lines[start - 1].strip().startswith("#") and _indent_of(lines[start - 1]) == indent:
        start -= 1
    end = key_index + 1
    for j in range(key_index + 1, len(lines)):
        stripped = lines[j].strip()
        if not stripped:
            continue
        if _indent_of(lines[j]) > indent:
            end = j + 1
        elif not stripped.startswith("#"):
            break
    return start, end


def _splice(text: str, doc: _StackDoc, full: str, entry: list[str] | None, keep_head: bool) -> str | None:
    """``text`` with the block-style entry of ``full`` replaced by ``entry`` (lines at the
    key's indentation; None removes it, with its head comment unless ``keep_head``); None
    when the entry is not a block-style line of its own (a flow-style config:)."""
    line = doc.lines.get(("config", full))
    if line is None or line == doc.lines.get(("config",)):
        return None
    lines = text.split("\n")
    key_index = line - 1
    head = lines[key_index].lstrip(" ")
    if not (head.startswith(full) or head[1:].startswith(full)):
        return None
    start, end = _entry_lines(lines, key_index)
    if keep_head:
        start = key_index
    indent = " " * _indent_of(lines[key_index])
    if entry is not None:
        entry = _like_dashes(entry, [ln[len(indent):] for ln in lines[key_index:end]])
    new = [indent + ln for ln in entry] if entry is not None else []
    return "\n".join(lines[:start] + new + lines[end:])


def _like_dashes(entry: list[str], old: list[str]) -> list[str]:
    """``entry`` with its top-level list items at the indentation ``old`` gave them (a file may
    mix `- x` under its key and `  - x`; the CLI keeps what is there, and so does this)."""
    def first_dash(block: list[str]) -> int | None:
        return next((_indent_of(ln) for ln in block[1:] if ln.lstrip(" ").startswith("- ")), None)

    was, now = first_dash(old), first_dash(entry)
    if was is None or now is None or was == now or not all(
            _indent_of(ln) >= now for ln in entry[1:] if ln.strip()):
        return entry
    shift = was - now
    return [entry[0]] + [(" " * (_indent_of(ln) + shift) + ln.lstrip(" ")) if ln.strip() else ln for ln in entry[1:]]


def _render_entry(y: Any, full: str, node: Any) -> list[str]:
    from ruamel.yaml.comments import CommentedMap

    doc = CommentedMap()
    doc[full] = node
    doc.fa.set_block_style()
    out = io.StringIO()
    explicit, y.explicit_start = y.explicit_start, False
    try:
        y.dump(doc, out)
    finally:
        y.explicit_start = explicit
    return out.getvalue().rstrip("\n").split("\n")


def _wire_of(raw: Any) -> str:
    """A stack file's raw value (top-level scalars as text) as the program receives it."""
    return raw if isinstance(raw, str) else _to_wire(raw)


def _edit(path: Path, project: str, full: str, node: Any, salt: str | None = None) -> str:
    """The text of ``path`` with config key ``full`` set to ``node`` (None: removed), its
    comments, key order and style kept; checked to read back with only that key changed."""
    from ruamel.yaml.comments import CommentedMap

    name = path.name
    text = _read_text(path)
    before = _read_stack(text, name, project)
    _wire_config(before, name, None, {})  # the form of every secure value
    current = before.config.get(full)
    y = _round_trip_yaml(text)

    new_text = None
    if node is not None and full in before.config and (isinstance(current, (dict, list)) or isinstance(node, (dict, list))) \
            and not (_is_secure(current) and isinstance(node, dict) and set(node) == {"secure"}):
        new_text = _splice(text, before, full, _render_entry(y, full, node), keep_head=True)
    elif node is None and full in before.config:
        new_text = _splice(text, before, full, None, keep_head=False)
    if new_text is None:  # a scalar replaced in place, a new key appended, or a flow-style config
        doc = y.load(text)
        if doc is None:
            doc = CommentedMap()
        if salt is not None:
            doc.insert(0, "encryptionsalt", salt)
        if doc.get("config") is None and node is not None:
            fresh = CommentedMap()
            fresh.fa.set_block_style()
            if "config" in doc:
                doc["config"] = fresh
            else:
                doc.insert(len(doc), "config", fresh)
        config = doc.get("config")
        if config is not None and not config:
            config.fa.set_block_style()
        if node is None:
            if config is not None and full in config:
                del config[full]
        elif full in config and _is_secure(current) and isinstance(node, dict) and set(node) == {"secure"}:
            config[full]["secure"] = node["secure"]  # keeps a flow-style {secure: ...} in its style
        else:
            config[full] = node
        out = io.StringIO()
        y.dump(doc, out)
        new_text = out.getvalue()
    elif salt is not None:
        new_text = f"encryptionsalt: {salt}\n" + new_text

    # the new file must read back with this key changed and nothing else
    after = _read_stack(new_text, name, project)
    others = lambda d: [(k, v) for k, v in d.config.items() if k != full]  # noqa: E731
    same = others(after) == others(before) and after.salt == (salt or before.salt)
    if node is None:
        same = same and full not in after.config
    elif _is_secure(node):
        same = same and after.config.get(full) == {"secure": node["secure"]}
    else:
        same = same and full in after.config and _wire_of(after.config[full]) == _wire_of(_plain(node))
    if not same:
        raise RuntimeError(f"the edited {name} does not read back as written; the file is unchanged")
    return new_text


def _plain(node: Any) -> Any:
    """A ruamel node as plain Python values."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


def set_secret(stack: str, key: str, value: str, passphrase: str, root: Path = ROOT) -> None:
    """Write ``key: {secure: ...}`` into Pulumi.<stack>.yaml like `pulumi config set --secret`.

    The file keeps its comments, key order and style; it is checked before and after, and
    replaced atomically.  (No check of the key or the value against the program: that is
    ``config_set``'s.)"""
    path = _stack_path(stack, root)
    project = project_file(root)["name"]
    full = _secret_key(key, project)
    if not isinstance(value, str) or not value.strip():
        raise StackError(f"{full}: the secret is empty; give its value on standard input (the file is unchanged)")
    text = _read_text(path)
    before = _read_stack(text, path.name, project)
    current = before.config.get(full)
    if current is not None and not _is_secure(current):
        raise StackError(f"{full} is set in plain text in {path.name}; delete that entry first")
    crypter, salt = _crypter_for(before, path.name, passphrase)
    ciphertext = crypter.encrypt(value)
    new_text = _edit(path, project, full, {"secure": ciphertext}, salt)
    _atomic_write(path, new_text)


def _crypter_for(doc: _StackDoc, name: str, passphrase: str) -> tuple[pp.Crypter, str | None]:
    """The stack's crypter, and a new encryptionsalt if the file has none yet."""
    if doc.salt:
        try:
            return pp.crypter_from_salt(passphrase, doc.salt), None
        except pp.PassphraseError as exc:
            raise StackError(f"{name}: {exc} (PULUMI_CONFIG_PASSPHRASE)") from None
    salt, crypter = pp.new_salt(passphrase)
    return crypter, salt


# --- `./dev config`: init, set, set --secret, get, rm ---------------------------------------

def _known_key(key: str, project: str, stack: str, verb: str) -> tuple[str, str]:
    """(full key, short key) of a key the program declares; else a one-line StackError."""
    from components.config_keys import KEYS

    full = _secret_key(key, project)
    short = full.split(":", 1)[1]
    if short not in KEYS:
        close = [k for k in KEYS if k.lower() == short.lower() or stackyaml.distance(k.lower(), short.lower()) <= 2]
        hint = f"; did you mean {project}:{close[0]}?" if close else "; see README's key table"
        raise StackError(f"{full}: unknown config key{hint} (nothing written)" if verb != "get" else f"{full}: unknown config key{hint}")
    return full, short


def _typed(short: str, value: str) -> Any:
    """A command-line value as the key's type says: true/false for a bool, an integer for an
    int, JSON for an object or list; anything else stays the string (the program's check then
    says what is wrong with it, in its own words)."""
    from components.config_keys import KEYS

    kind = KEYS[short].kind
    if kind == "bool" and value in ("true", "false"):
        return value == "true"
    if kind == "int" and re.fullmatch(r"-?[0-9]{1,18}", value):
        return int(value)
    if kind in ("object", "list"):
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            return value
        if isinstance(parsed, (dict, list)):
            return parsed
    return value


def _check_with_program(stack: str, root: Path, text: str, name: str, project: dict[str, Any],
                        crypter: pp.Crypter | None, short: str) -> str | None:
    """Run the program's config validation (components/config.load, then the stack-name and
    canary rules of __main__.py) on ``text`` as the stack's file, with the config the preview
    hands the program.  A refusal of ``short`` (or of a field of it) is raised, the program's
    ConfigError; a refusal of another key (a stack still being written: secrets not set yet,
    a phase waiting for its password) is returned as a note, the change being accepted.
    Secrets not set yet are placeholders, so the rest is still checked."""
    from components import config as program
    from components import upgrades

    sd = _read_stack(text, name, project["name"])
    try:
        bag, secret_keys = _wire_config(sd, name, crypter, _project_defaults(project))
    except StackError:
        raise
    secrets = set(secret_keys)
    prefix = f"{project['name']}:"
    note = None
    for _ in range(len(program.KEYS) + 1):
        try:
            cfg, _ = program.load(bag, is_secret=secrets.__contains__, read_secret=lambda k: SECRET_PLACEHOLDER, stack=stack)
            upgrades.check_stack_name(cfg, stack)
            upgrades.check_canary_rule(cfg, stack, root)
            return note
        except program.ConfigError as exc:
            first = exc.key.split(".", 1)[0]
            if first == short:
                raise
            note = note or str(exc)
            spec = program.KEYS.get(first)
            if spec is not None and spec.secret and exc.problem.startswith("missing") and prefix + first not in bag:
                bag[prefix + first] = SECRET_PLACEHOLDER  # check the rest as if it were set
                secrets.add(prefix + first)
                continue
            return note
    return note


def _passphrase() -> str:
    secret = pp.passphrase_from_env()
    if secret is None:
        raise StackError("set PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE")
    cli.register_secrets([secret])
    return secret


def _read_value(stdin: Any, secret: bool) -> str:
    """The value from a no-echo prompt (a secret) or a prompt, on a terminal; else all of
    standard input without its final newline, as the CLI reads a piped value."""
    if hasattr(stdin, "isatty") and stdin.isatty():
        import getpass

        if secret:
            return getpass.getpass("value: ")
        sys.stderr.write("value: ")
        sys.stderr.flush()
        return stdin.readline().rstrip("\r\n")
    return _read_secret(stdin)


def config_init(stack: str, passphrase: str, root: Path = ROOT) -> Path:
    """Pulumi.<stack>.yaml as `pulumi stack init --secrets-provider passphrase` and
    `pulumi config set instance <stack>` leave it."""
    from components.config_types import MAX_INSTANCE_LEN, dns_label

    path = root / f"Pulumi.{stack}.yaml"
    dns_label("instance", stack, MAX_INSTANCE_LEN)  # the program's rule: the stack is named after its instance
    if path.exists():
        raise StackError(f"stack {stack!r} already exists: {path.name} (nothing written)")
    project = project_file(root)["name"]
    salt, _ = pp.new_salt(passphrase)
    text = f"encryptionsalt: {salt}\nconfig:\n  {project}:instance: {stack}\n"
    _read_stack(text, path.name, project)  # reads back as written
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.link(tmp, path)  # never replaces a file made meanwhile
    finally:
        os.unlink(tmp)
    return path


_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[([0-9]{1,6})\]")


def parse_path(path: str) -> tuple[str, list[str | int]]:
    """``imageHistory[2]`` or ``legacy.host``: the top key, then field names and list indexes
    (the subset of `pulumi config set --path` syntax the stack files need)."""
    top = re.match(r"[A-Za-z_][A-Za-z0-9_:-]*", path)
    if not top:
        raise StackError(f"{path!r}: not a config path (KEY, KEY.field or KEY[index]) (nothing written)")
    parts: list[str | int] = []
    pos = top.end()
    while pos < len(path):
        m = _PATH_PART.match(path, pos)
        if not m:
            raise StackError(f"{path!r}: cannot read the path at {path[pos:]!r} (use KEY.field or KEY[index]) (nothing written)")
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    return top.group(0), parts


def _set_in(node: Any, parts: list[str | int], value: Any, path: str) -> Any:
    """``node`` with ``value`` at ``parts``; an index one past the end appends, as the CLI does."""
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    if isinstance(head, int):
        items = list(node) if isinstance(node, list) else [] if node is None else None
        if items is None:
            raise StackError(f"{path}: [{head}] indexes a value that is not a list (nothing written)")
        if head > len(items):
            raise StackError(f"{path}: index {head} is past the end of a list of {len(items)} (use [{len(items)}] to "
                             "append) (nothing written)")
        if head == len(items):
            items.append(_set_in(None, rest, value, path))
        else:
            items[head] = _set_in(items[head], rest, value, path)
        return items
    fields = dict(node) if isinstance(node, dict) else {} if node is None else None
    if fields is None:
        raise StackError(f"{path}: .{head} names a field of a value that is not an object (nothing written)")
    fields[head] = _set_in(fields.get(head), rest, value, path)
    return fields


def config_set_path(stack: str, path_text: str, value: str, *, passphrase: str | None, root: Path = ROOT) -> str | None:
    """`pulumi config set --path`: one element of a plain list or object key, the rest kept.
    Like the CLI, it starts from the stack file's value (not Pulumi.yaml's default)."""
    from components.config_keys import KEYS

    key, parts = parse_path(path_text)
    path = _stack_path(stack, root)
    project = project_file(root)["name"]
    full, short = _known_key(key, project, stack, "set")
    if not parts:
        return config_set(stack, key, value, secret=False, passphrase=passphrase, root=root)
    if KEYS[short].secret:
        raise StackError(f"{full} is a secret: set it whole with --secret (nothing written)")
    if KEYS[short].kind not in ("list", "object"):
        raise StackError(f"{full} is a single value, not a list or object: set it without --path (nothing written)")
    current = _read_stack(_read_text(path), path.name, project).config.get(full)
    if _contains_secure(current):
        raise StackError(f"{full} holds a secret: set it whole (nothing written)")
    new = _set_in(_plain(current) if current is not None else None, parts, value, path_text)
    return config_set(stack, key, json.dumps(new), secret=False, passphrase=passphrase, root=root)


def config_set(stack: str, key: str, value: str, *, secret: bool, passphrase: str | None,
               root: Path = ROOT) -> str | None:
    """Set ``key`` (plain, or encrypted with ``secret``) as `pulumi config set` does, after the
    program's validation accepts it; the note the program has about the rest of the stack."""
    from components.config_errors import set_fix
    from components.config_keys import KEYS

    path = _stack_path(stack, root)
    project_doc = project_file(root)
    project = project_doc["name"]
    full, short = _known_key(key, project, stack, "set")
    if KEYS[short].secret and not secret:
        raise StackError(f"{full} is a secret: {set_fix(stack, short, secret=True, how='set it with')}, "
                         "the value on standard input or at the prompt (nothing written)")
    if secret and not KEYS[short].secret:
        raise StackError(f"{full} is not a secret: the program uses it in plain text; "
                         f"{set_fix(stack, short, how='set it with')} (nothing written)")
    if not isinstance(value, str) or not value.strip():
        if secret:
            raise StackError(f"{full}: the secret is empty; give its value on standard input or at the prompt (the file is unchanged)")
        raise StackError(f"{full}: the value is empty; {set_fix(stack, short)} (the file is unchanged)")
    text = _read_text(path)
    before = _read_stack(text, path.name, project)
    crypter, salt = None, None
    if secret:
        crypter, salt = _crypter_for(before, path.name, passphrase)
        node: Any = {"secure": crypter.encrypt(value)}
    else:
        if passphrase is not None and before.salt:
            crypter, _ = _crypter_for(before, path.name, passphrase)  # check the secrets too
        node = _node(_typed(short, value))
    new_text = _edit(path, project, full, node, salt)
    note = _check_with_program(stack, root, new_text, path.name, project_doc, crypter, short)
    _atomic_write(path, new_text)
    return note


def config_rm(stack: str, key: str, passphrase: str | None = None, root: Path = ROOT) -> str | None:
    """Remove ``key`` from the stack file as `pulumi config rm` does (a key that is not set:
    nothing to do), after the program's validation accepts the result."""
    path = _stack_path(stack, root)
    project_doc = project_file(root)
    project = project_doc["name"]
    full = _secret_key(key, project)
    text = _read_text(path)
    before = _read_stack(text, path.name, project)
    if full not in before.config:
        _known_key(key, project, stack, "rm")  # a misspelling is an error; a known key not set: nothing to do
        return None
    crypter = None
    if passphrase is not None and before.salt:
        crypter, _ = _crypter_for(before, path.name, passphrase)
    new_text = _edit(path, project, full, None)
    note = _check_with_program(stack, root, new_text, path.name, project_doc, crypter, full.split(":", 1)[1])
    _atomic_write(path, new_text)
    return note


def config_get(stack: str, key: str, passphrase: str | None, root: Path = ROOT) -> str:
    """The value the program receives for ``key`` (the stack's, else Pulumi.yaml's default),
    a secret decrypted with the passphrase; objects and lists as JSON."""
    path = _stack_path(stack, root)
    project_doc = project_file(root)
    project = project_doc["name"]
    full = _secret_key(key, project)
    sd = _read_stack(_read_text(path), path.name, project)
    defaults = _project_defaults(project_doc)
    if full not in sd.config and full not in defaults:
        if full.split(":", 1)[1] not in __import__("components.config_keys", fromlist=["KEYS"]).KEYS:
            _known_key(key, project, stack, "get")
        raise StackError(f"configuration key {full!r} not found for stack {stack!r}")
    raw = sd.config.get(full, defaults.get(full))
    crypter = None
    if _contains_secure(raw):
        if passphrase is None:
            raise StackError(f"{full} is a secret: set PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE to read it")
        if not sd.salt:
            raise StackError(f"{path.name} has no encryptionsalt; it was not made by the passphrase provider")
        crypter, _ = _crypter_for(sd, path.name, passphrase)
    single = _StackDoc(sd.salt, {full: raw}, sd.lines)
    wire, _ = _wire_config(single, path.name, crypter, {})
    value = wire[full]
    if isinstance(raw, (dict, list)) and not _is_secure(raw):
        value = json.dumps(json.loads(value), sort_keys=True, separators=(",", ":"))
    return value


def _contains_secure(node: Any) -> bool:
    if _is_secure(node):
        return True
    if isinstance(node, dict):
        return any(_contains_secure(v) for v in node.values())
    if isinstance(node, list):
        return any(_contains_secure(v) for v in node)
    return False


# --- the command ---------------------------------------------------------------------------

def _read_secret(stdin: Any) -> str:
    data = stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read()
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise StackError("the secret on standard input is not UTF-8 text (the file is unchanged)") from None
    return data.rstrip("\r\n")


CONFIG_VERBS = ("init", "set", "get", "rm")


def _config_command(argv: list[str], stdin: Any, stdout: Any, stderr: Any) -> int:
    parser = argparse.ArgumentParser(prog="./dev config", description="the offline twin of `pulumi config`")
    cli.add_debug_flag(parser)
    sub = parser.add_subparsers(dest="verb", required=True)
    init = sub.add_parser("init", help="a new stack: Pulumi.<stack>.yaml with its encryptionsalt and airflow:instance")
    init.add_argument("-s", "--stack", required=True)
    st = sub.add_parser("set", help="set KEY to VALUE; --secret: the value from standard input or a no-echo prompt")
    st.add_argument("-s", "--stack", required=True)
    st.add_argument("--secret", action="store_true", help="encrypt it (the value never on the command line)")
    st.add_argument("--plaintext", action="store_true", help="store it in plain text (the default)")
    st.add_argument("--path", action="store_true", help="KEY is a path into a list or object: imageHistory[2], legacy.host")
    st.add_argument("key")
    st.add_argument("value", nargs="?")
    gt = sub.add_parser("get", help="print KEY's value (a secret decrypted with the passphrase)")
    gt.add_argument("-s", "--stack", required=True)
    gt.add_argument("key")
    rm = sub.add_parser("rm", help="remove KEY")
    rm.add_argument("-s", "--stack", required=True)
    rm.add_argument("key")
    args = parser.parse_args(argv)
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr

    if args.verb == "init":
        path = config_init(args.stack, _passphrase(), root=ROOT)
        stderr.write(f"created {path.name}; next: the required secrets, e.g. "
                     f"./dev config set --secret -s {args.stack} oidcClientSecret < file\n")
        return 0
    if args.verb == "get":
        _stack_path(args.stack, ROOT)
        secret = pp.passphrase_from_env()
        if secret is not None:
            cli.register_secrets([secret])
        stdout.write(config_get(args.stack, args.key, secret, root=ROOT) + "\n")
        return 0
    _stack_path(args.stack, ROOT)  # an unknown stack before anything is read
    passphrase = pp.passphrase_from_env()
    if passphrase is not None:
        cli.register_secrets([passphrase])
    if args.verb == "rm":
        note = config_rm(args.stack, args.key, passphrase, root=ROOT)
    else:
        if args.secret and args.plaintext:
            raise cli.UsageError("./dev config set: --secret and --plaintext exclude each other")
        if args.secret and args.path:
            raise cli.UsageError("./dev config set: --path edits plain lists and objects; set a secret whole with --secret")
        if args.secret:
            if args.value is not None:
                # the value is already in this shell's history and the process list: refuse it all the same
                raise StackError("a secret's value never goes on the command line: run "
                                 f"./dev config set --secret -s {args.stack} {args.key} and give it on standard "
                                 "input or at the prompt (nothing written)")
            _known_key(args.key, project_file(ROOT)["name"], args.stack, "set")
            passphrase = _passphrase()
            value = _read_value(stdin, secret=True)
            cli.register_secrets([value])  # no message of this process may show it
        elif args.path:
            value = args.value if args.value is not None else _read_value(stdin, secret=False)
            note = config_set_path(args.stack, args.key, value, passphrase=passphrase, root=ROOT)
        else:
            value = args.value if args.value is not None else _read_value(stdin, secret=False)
        if not args.path or args.secret:
            note = config_set(args.stack, args.key, value, secret=args.secret, passphrase=passphrase, root=ROOT)
    if note:
        stderr.write(f"note: {cli.one_line(note)}\n")
    return 0


def _command(argv: list[str], stdin: Any, stdout: Any = None, stderr: Any = None) -> int:
    if not argv or argv[0] in CONFIG_VERBS or (argv[0].startswith("-") and "set-secret" not in argv):
        return _config_command(argv, stdin, stdout, stderr)
    parser = argparse.ArgumentParser(prog="python -m tools.stackconfig")
    cli.add_debug_flag(parser)
    sub = parser.add_subparsers(dest="cmd", required=True)
    ss = sub.add_parser("set-secret", help="encrypt stdin into KEY of a stack file")
    ss.add_argument("-s", "--stack", required=True)
    ss.add_argument("key")
    for verb in CONFIG_VERBS:
        sub.add_parser(verb, help=f"./dev config {verb} (see ./dev config --help)")
    args = parser.parse_args(argv)
    _stack_path(args.stack, ROOT)  # an unknown stack before anything is read
    secret = pp.passphrase_from_env()
    if secret is None:
        raise StackError("set PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE")
    value = _read_secret(sys.stdin if stdin is None else stdin)
    cli.register_secrets([value, secret])  # no message of this process may show them
    set_secret(args.stack, args.key, value, secret, root=ROOT)
    return 0


def main(argv: list[str] | None = None, stdin: Any = None, stderr: Any = None, stdout: Any = None) -> int:
    """The command under the one guard of every command (tools/cli.py): an input problem is
    exit 2 and one line ``error: ...``; anything else a bug, exit 1 and one line (the
    traceback only with --debug)."""
    return cli.run(lambda args: _command(args, stdin, stdout, stderr), argv, stderr=stderr)


if __name__ == "__main__":
    sys.exit(cli.run_module("tools.stackconfig"))
