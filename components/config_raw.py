"""The raw layer of the stack config: wire strings to typed values, strictly (pydantic v2).

The engine hands the program every config value as a string (objects and lists as JSON).
Here each declared key becomes its Python type with no coercion at all: a boolean is exactly
``true``/``false`` (never ``off``, ``yes`` or ``1``), an integer is ASCII digits only (never
``٣``, `` 5``, ``+5`` or ``5_000``), a string is a string (never a null, a number, an object
or text with control characters such as a trailing newline) of bounded length, a list holds
strings, and objects are JSON objects.  Then a strict schema (``extra_behavior="forbid"``)
checks types and bounds, with pydantic-core, the validation engine of pydantic v2.  Errors name the key and never echo the value.

Patterns on domain values live in components/config_types.py; they use full matches with
ASCII classes.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Mapping

from pydantic_core import SchemaValidator, ValidationError, core_schema as cs

MAX_STR = 1024  # any plain string value (a hostname is 253, a host key ~100)
MAX_SECRET_STR = 16384  # an SSH private key
MAX_ITEMS = 64
MAX_DEPTH = 32  # as the stack-file reader (tools/stackyaml.py)
MAX_OBJECT_JSON = 256 * 1024  # an object or list value, as JSON
_INT = re.compile(r"-?[0-9]{1,9}", re.ASCII)
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"  # pydantic-core's (Rust) regex: $ is the very end, no final-newline slack

# pydantic v2's validation engine, used directly: importing pydantic's model layer costs ~120 ms
# on the 2-core machine, pydantic-core ~20 ms, and config reading must add at most 50 ms.
PLAIN_STR = cs.str_schema(strict=True, max_length=MAX_STR, pattern=_NO_CONTROL)
SECRET_STR = cs.str_schema(strict=True, max_length=MAX_SECRET_STR)
_TYPES = {
    "bool": cs.bool_schema(strict=True),
    "int": cs.int_schema(strict=True),
    "list": cs.list_schema(PLAIN_STR, max_length=MAX_ITEMS, strict=True),
    "object": cs.dict_schema(cs.str_schema(strict=True), cs.any_schema(), strict=True),
}


class RawError(Exception):
    """A raw value of the wrong type or size: ``key`` (dotted path) and a value-free problem."""

    def __init__(self, key: str, problem: str, fix: str):
        super().__init__(problem)
        self.key, self.problem, self.fix = key, problem, fix


_KIND_FIX = {
    "str": ("is not a plain string", "set a single-line string"),
    "bool": ("is not a boolean", "use true or false"),
    "int": ("is not an integer", "use a whole number written in ASCII digits"),
    "list": ("is not a list of strings", "set it as a YAML list of strings in the stack file"),
    "object": ("is not a mapping", "set it as a YAML mapping in the stack file"),
}


def from_wire(key: str, kind: str, raw: Any) -> Any:
    """The engine's wire value (a string) as the key's Python type, without coercion."""
    problem, fix = _KIND_FIX[kind]
    if raw is None:
        raise RawError(key, "is null", fix)
    if kind == "str":
        return raw  # the model checks that it is a string
    if kind == "bool":
        if raw in ("true", "false", True, False):
            return raw in ("true", True)
        raise RawError(key, problem, fix)
    if kind == "int":
        if isinstance(raw, bool):
            raise RawError(key, problem, fix)
        if isinstance(raw, int) or (isinstance(raw, str) and _INT.fullmatch(raw)):
            return int(raw)
        raise RawError(key, problem, fix)
    value = raw
    if isinstance(raw, str):
        if len(raw) > MAX_OBJECT_JSON:
            raise RawError(key, f"is too large (at most {MAX_OBJECT_JSON // 1024} KiB as JSON)", fix)
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            raise RawError(key, problem, fix) from None
    if _depth(value) > MAX_DEPTH:
        raise RawError(key, f"is nested deeper than {MAX_DEPTH} levels", fix)
    return value


def _depth(node: Any, level: int = 0) -> int:
    """How deep ``node`` nests (stops counting past MAX_DEPTH, so it never recurses far)."""
    if level > MAX_DEPTH or not isinstance(node, (dict, list)):
        return level
    children = node.values() if isinstance(node, dict) else node
    return max((_depth(child, level + 1) for child in children), default=level + 1)


@lru_cache(maxsize=None)
def model(keys: tuple[tuple[str, str, bool], ...]) -> SchemaValidator:
    """A strict validator of (name, kind, secret) keys, all optional here (required-ness is
    checked by the loader, which knows where each key is set); unknown keys are refused."""
    fields = {
        name: cs.typed_dict_field(cs.nullable_schema((SECRET_STR if secret else PLAIN_STR) if kind == "str" else _TYPES[kind]),
                                  required=False)
        for name, kind, secret in keys
    }
    return SchemaValidator(cs.typed_dict_schema(fields, extra_behavior="forbid", strict=True))


def validate(keys: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (already from_wire) checked against the strict schema of ``keys`` (KEYS)."""
    spec = tuple((name, k.kind, k.secret) for name, k in keys.items())
    try:
        return dict(model(spec).validate_python(dict(values)))
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        loc = [str(p) for p in first["loc"]]
        name = loc[0]
        kind = keys[name].kind if name in keys else "str"
        problem, fix = _KIND_FIX[kind]
        if first["type"] == "string_too_long":
            problem = f"is too long (at most {MAX_SECRET_STR if keys[name].secret else MAX_STR} characters)"
        elif first["type"] == "too_long":
            problem = f"has too many items (at most {MAX_ITEMS})"
        elif first["type"] == "string_pattern_mismatch":
            problem = "contains a control character (a newline, a tab, ...)"
        raise RawError(name, problem, fix) from None


_LEGACY_FIELDS = {"host": True, "hostKey": True, "dbHost": True, "dbName": True, "dbUser": True,
                  "dbPort": False, "logsDir": False, "hieraFile": False, "pgService": False}
_LEGACY = SchemaValidator(cs.typed_dict_schema(
    {name: cs.typed_dict_field(_TYPES["int"] if name == "dbPort" else PLAIN_STR, required=required)
     for name, required in _LEGACY_FIELDS.items()},
    extra_behavior="forbid", strict=True,
))


class LegacyRaw(dict):
    """The ``legacy`` object, checked: every field a plain string but the port."""

    def __getattr__(self, name: str) -> Any:
        return self.get(name)


def legacy(raw: Mapping[str, Any], hints: Mapping[str, str]) -> LegacyRaw:
    try:
        return LegacyRaw(_LEGACY.validate_python(dict(raw)))
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        # an unknown key first: it is usually the misspelling behind a "missing" one
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        field = str(first["loc"][0])
        if first["type"] == "extra_forbidden":
            raise RawError(f"legacy.{field}", "unknown key", f"use only {', '.join(hints)}") from None
        if first["type"] == "missing":
            raise RawError(f"legacy.{field}", f"missing ({hints[field]})", "add it to the legacy object in the stack file") from None
        kind = "int" if field == "dbPort" else "str"
        problem, fix = _KIND_FIX[kind]
        if first["type"] == "string_pattern_mismatch":
            problem = "contains a control character (a newline, a tab, ...)"
        raise RawError(f"legacy.{field}", problem, fix) from None
