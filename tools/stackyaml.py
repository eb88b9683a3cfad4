"""YAML of stack files, read as strictly as the Pulumi CLI's parser (go-yaml v3) reads it.

Events from libyaml (PyYAML's C parser when present) are built into plain JSON values
(dict, list, str, int, float, bool, None) by a small composer that refuses, in one line
naming the file, the key path and the line, and never a value:

* duplicate mapping keys (go-yaml v3: "mapping key already defined"), keys that are not
  strings, more than one document;
* aliases that expand beyond ``MAX_ALIAS_WEIGHT`` nodes and characters (go-yaml v3:
  "excessive aliasing"), aliases with no anchor before them, nesting deeper than ``MAX_DEPTH``;
* values that are not JSON: dates and timestamps, ``!!binary``, ``!!set`` and other tags,
  ``.inf``/``.nan``, integers beyond 64 bits;
* unquoted scalars that YAML 1.1 readers (PyYAML, go-yaml v2) and YAML 1.2 readers (go-yaml v3)
  read differently: ``yes``/``no``/``on``/``off``/``y``/``n``, ``0755``, ``1_000``, ``1:30``,
  ``0b101``; quoting them says what is meant;
* tabs, invalid YAML, characters YAML forbids and bytes that are not UTF-8.

Plain scalars resolve with YAML 1.2's core schema, as go-yaml v3 resolves them; merge keys
(``<<``) merge as in go-yaml, explicit keys winning.  With ``raw_config`` the scalars
directly under the top-level ``config:`` keep their text as written, as the CLI hands them
to the program (pulumi/pulumi sdk/go/common/resource/config/value.go decodes into a string first).
"""

from __future__ import annotations

import codecs
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MAX_DEPTH = 32  # nesting levels, counting the document itself
MAX_ALIAS_WEIGHT = 100_000  # nodes + characters that aliases may add
MAX_FILE_BYTES = 1 << 20


class YamlError(Exception):
    """A file that is not the strict YAML expected: one line naming the file, no value."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


_Loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)  # events only: no resolver, no constructor
_TAG = "tag:yaml.org,2002:"
_JSON_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}
_COLLECTION_TAGS = {None, "!", _TAG + "map", _TAG + "seq"}

_NULL = {"", "~", "null", "Null", "NULL"}
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
# booleans of YAML 1.1 (PyYAML, and go-yaml v2 under Helm and sigs.k8s.io/yaml) that YAML 1.2
# (go-yaml v3, so Pulumi) reads as strings
_BOOL_11 = {"y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF"}
_INT = re.compile(r"[-+]?[0-9]+")
_HEX = re.compile(r"[-+]?0x[0-9a-fA-F]+")
_OCT = re.compile(r"0o[0-7]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_SPECIAL_FLOAT = re.compile(r"[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")
# numbers only in YAML 1.1 or go-yaml's extensions: 0b101, 0755, 1_000, 1:30 (sexagesimal)
_NUMBER_11 = re.compile(r"[-+]?(0b[01_]+|0[0-7_]+|[1-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?|[0-9][0-9_]*_[0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?|\.[0-9_]*_[0-9_]*)")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ]|[ \t]+)?([0-9]{1,2}:[0-9]{2}:[0-9]{2}(\.[0-9]*)?)?"
                        r"([ \t]*(Z|[-+][0-9]{1,2}(:[0-9]{2})?))?")
_MERGE = object()  # the merge key `<<`
_NO_KEY = object()


class _Refused(Exception):
    """A refusal inside a document: ``where`` is the key path, ``line`` 1-based."""

    def __init__(self, reason: str, line: int, where: str = ""):
        super().__init__(reason)
        self.reason, self.line, self.where = reason, line, where


def show(key: Any) -> str:
    """A key for an error line: itself when short and printable, else its repr, shortened."""
    text = key if isinstance(key, str) else str(key)
    if not text.isprintable() or len(text) > 80 or text != text.strip():
        text = repr(text[:80])
    return text or "''"


def distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _tag_name(tag: str) -> str:
    return "a !!" + show(tag[len(_TAG):]) if tag.startswith(_TAG) else "a custom-tagged"


def _resolve_plain(text: str) -> Any:
    """An unquoted, untagged scalar, as YAML 1.2's core schema (go-yaml v3) reads it; refuses
    what YAML 1.1 would read otherwise and what JSON cannot hold."""
    if text in _NULL:
        return None
    if text in _BOOL:
        return _BOOL[text]
    first = text[0]
    if first in _BOOL_11_FIRST and text in _BOOL_11:
        raise _Refused(f"an unquoted {text} is a boolean to YAML 1.1 readers but a string to Pulumi; "
                       "write true or false, or quote it", 0)
    if not (first.isdigit() or first in "-+."):
        return text
    if _INT.fullmatch(text):
        digits = text.lstrip("-+")
        if len(digits) > 1 and digits[0] == "0":
            raise _Refused("an unquoted number with a leading zero is octal to some YAML readers and decimal to others; "
                           "quote it, or write it without the leading zero", 0)
        if len(digits) > 19 or not -(2 ** 63) <= int(text) < 2 ** 63:
            raise _Refused("an unquoted integer beyond 64 bits; quote it", 0)
        return int(text)
    if _HEX.fullmatch(text):
        return int(text, 16)
    if _OCT.fullmatch(text):
        return int(text[2:], 8)
    if _FLOAT.fullmatch(text):
        value = float(text)
        if not math.isfinite(value):
            raise _Refused("an unquoted number too large for JSON; quote it", 0)
        return value
    if _SPECIAL_FLOAT.fullmatch(text):
        raise _Refused("an unquoted .inf or .nan is not a JSON number; quote it", 0)
    if _TIMESTAMP.fullmatch(text):
        raise _Refused("an unquoted date or timestamp is a YAML timestamp, not a JSON value; quote it", 0)
    if _NUMBER_11.fullmatch(text):
        raise _Refused("an unquoted number that YAML readers disagree on (0b, 0755, 1_000 or 1:30 forms); quote it", 0)
    return text


_BOOL_11_FIRST = {w[0] for w in _BOOL_11}


def _scalar(event: Any) -> tuple[Any, Any]:
    """(value, text as written) of a scalar event."""
    text, tag = event.value, event.tag
    plain = event.style in (None, "")
    if tag is None:
        if not plain:
            return text, text
        value = _resolve_plain(text)
        return value, (None if value is None else text)
    if tag == "!" or tag == _TAG + "str":
        return text, text
    if tag not in _JSON_TAGS:
        if tag == _TAG + "timestamp":
            raise _Refused("a !!timestamp value is not a JSON value; quote it", 0)
        raise _Refused(f"{_tag_name(tag)} value is not a JSON value; quote it to make it a string", 0)
    value = _resolve_plain(text)
    kind = tag[len(_TAG):]
    wanted = {"int": int, "float": (int, float), "bool": bool, "null": type(None)}[kind]
    if not isinstance(value, wanted) or (kind == "int" and isinstance(value, bool)):
        raise _Refused(f"a value tagged !!{kind} does not hold a {kind}", 0)
    return (float(value) if kind == "float" else value), (None if value is None else text)


@dataclass
class _Frame:
    value: Any  # dict or list
    line: int
    anchor: str | None
    path: tuple
    raw: bool = False  # scalars of this mapping keep the text as written (config: entries)
    key: Any = _NO_KEY
    key_line: int = 0
    weight: int = 1
    height: int = 1
    lines: dict = field(default_factory=dict)
    merges: list = field(default_factory=list)


def _where(path: tuple) -> str:
    if path[:1] == ("config",) and len(path) > 1:
        path = path[1:]
    out = ""
    for i, part in enumerate(path):
        if i == 6:
            out += "..."
            break
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + show(part))
    return out


def kind_of(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


@dataclass
class Document:
    value: Any
    lines: dict  # key path tuple -> 1-based line, for keys of the first two levels


def _compose(text: str, raw_config: bool) -> Document:
    """Build plain Python values (dict, list, str, int, float, bool, None) from YAML text,
    strictly; raises _Refused."""
    stack: list[_Frame] = []
    anchors: dict[str, tuple[Any, Any, int, int]] = {}
    lines: dict[tuple, int] = {}
    result: list[Any] = []
    alias_weight = 0
    documents = 0

    def add(value: Any, raw: Any, weight: int, height: int, anchor: str | None, line: int) -> None:
        if anchor is not None:
            anchors[anchor] = (value, raw, weight, height)
        if not stack:
            result.append(value)
            return
        top = stack[-1]
        top.weight += weight
        top.height = max(top.height, height + 1)
        if isinstance(top.value, list):
            top.value.append(value)
            return
        if top.key is _NO_KEY:
            if value is _MERGE:
                key = "<<"
            elif not isinstance(value, str):
                shown = f" {show(raw)}" if raw is not None and not isinstance(value, (dict, list)) else ""
                raise _Refused(f"the key{shown} is {kind_of(value)}, not a string; quote it", line, _where(top.path))
            else:
                key = value
            if key in top.lines:
                raise _Refused(f"duplicate key {show(key)} (first at line {top.lines[key]})", line, _where(top.path))
            top.lines[key] = line
            if len(top.path) < 2:
                lines[top.path + (key,)] = line
            top.key, top.key_line = (_MERGE if value is _MERGE else key), line
            return
        key, top.key = top.key, _NO_KEY
        if key is _MERGE:
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(item, dict) for item in items):
                raise _Refused("a merge key << takes a mapping or a list of mappings", top.key_line, _where(top.path))
            top.merges.append(items)
            return
        top.value[key] = raw if top.raw and not isinstance(value, (dict, list)) else value

    def refuse_at(exc: _Refused, line: int) -> _Refused:
        if not exc.line:
            exc.line = line
        if not exc.where and stack:
            top = stack[-1]
            path = top.path + ((len(top.value),) if isinstance(top.value, list) else
                               (() if top.key in (_NO_KEY, _MERGE) else (top.key,)))
            exc.where = _where(path)
        return exc

    for event in yaml.parse(text, Loader=_Loader):
        etype = type(event)
        line = event.start_mark.line + 1
        if etype is yaml.ScalarEvent:
            try:
                merge_key = (event.value == "<<" and event.tag is None and event.style in (None, "") and event.anchor is None
                             and bool(stack) and isinstance(stack[-1].value, dict) and stack[-1].key is _NO_KEY)
                if merge_key:
                    value, raw = _MERGE, "<<"
                else:
                    value, raw = _scalar(event)
            except _Refused as exc:
                raise refuse_at(exc, line) from None
            add(value, raw, 1 + len(event.value), 0, event.anchor, line)
        elif etype is yaml.MappingStartEvent or etype is yaml.SequenceStartEvent:
            if event.tag not in _COLLECTION_TAGS:
                raise refuse_at(_Refused(f"{_tag_name(event.tag)} value is not a JSON value", line), line)
            if len(stack) >= MAX_DEPTH:
                raise refuse_at(_Refused(f"nested deeper than {MAX_DEPTH} levels", line), line)
            if stack:
                top = stack[-1]
                if isinstance(top.value, dict) and top.key is _NO_KEY:
                    raise _Refused("a mapping key is a mapping or a list, not a string", line, _where(top.path))
                path = top.path + ((len(top.value),) if isinstance(top.value, list) else
                                   (() if top.key is _MERGE else (top.key,)))
            else:
                path = ()
            raw = (raw_config and etype is yaml.MappingStartEvent and path == ("config",))
            stack.append(_Frame({} if etype is yaml.MappingStartEvent else [], line, event.anchor, path, raw))
        elif etype is yaml.MappingEndEvent or etype is yaml.SequenceEndEvent:
            frame = stack.pop()
            value = frame.value
            if frame.merges:
                merged: dict[str, Any] = {}
                for items in reversed(frame.merges):
                    for item in reversed(items):
                        merged.update(item)
                merged.update(value)
                value = merged
            add(value, None, frame.weight, frame.height, frame.anchor, frame.line)
        elif etype is yaml.AliasEvent:
            if event.anchor not in anchors:
                raise refuse_at(_Refused(f"the alias *{show(event.anchor)} has no anchor before it "
                                         "(or is inside its own anchor)", line), line)
            value, raw, weight, height = anchors[event.anchor]
            alias_weight += weight
            if alias_weight > MAX_ALIAS_WEIGHT:
                raise refuse_at(_Refused(f"aliases expand to more than {MAX_ALIAS_WEIGHT} nodes and characters "
                                         "(excessive aliasing)", line), line)
            if len(stack) + height > MAX_DEPTH:
                raise refuse_at(_Refused(f"nested deeper than {MAX_DEPTH} levels (through an alias)", line), line)
            add(value, raw, weight, height, None, line)
        elif etype is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise _Refused("more than one YAML document (a second ---)", line)
    return Document(result[0] if result else None, lines)


def read_text(path: Path) -> str:
    name = path.name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise YamlError(f"{name}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    if len(data) > MAX_FILE_BYTES:
        raise YamlError(f"{name}: larger than {MAX_FILE_BYTES >> 20} MiB; a stack file holds settings, not data")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise YamlError(f"{name}: not UTF-8 text (line {line})") from None


def parse(text: str, name: str, raw_config: bool = False) -> Document:
    """Strictly parsed ``text`` of file ``name``; every problem is a one-line YamlError."""
    try:
        return _compose(text, raw_config)
    except _Refused as exc:
        where = f"{exc.where}: " if exc.where else ""
        raise YamlError(f"{name}: {where}{exc.reason} (line {exc.line or 1})") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or exc.context or "not valid YAML"
        lines = text.split("\n")
        if mark is not None and mark.line < len(lines) and lines[mark.line][mark.column:mark.column + 1] == "\t":
            reason = "a tab character where YAML allows only spaces"
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise YamlError(f"{name}: not valid YAML: {reason}{line}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        # libyaml counts bytes of the UTF-8 text, the pure-Python reader characters
        before = text.encode("utf-8")[:exc.position] if _Loader is not yaml.BaseLoader else text[:exc.position]
        line = before.count(b"\n" if isinstance(before, bytes) else "\n") + 1
        raise YamlError(f"{name}: not valid YAML: the character U+{code:04X} is not allowed in YAML text "
                         f"(line {line})") from None
    except yaml.YAMLError as exc:
        raise YamlError(f"{name}: not valid YAML ({type(exc).__name__})") from None
