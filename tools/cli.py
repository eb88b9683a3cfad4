"""The one top-level guard of every command: no traceback ever reaches a user.

    import sys
    from tools import cli
    if __name__ == "__main__":           # first thing: the guard covers the imports below
        sys.exit(cli.run_module("tools.preview"))   # imports it, runs its main(argv) -> exit code

(``cli.run(main)`` guards a function whose module is already imported.)

- An input problem (bad config, an unknown stack, a wrong passphrase, a bad command line, a
  user-given path that cannot be read or written, a user file that is not YAML or not UTF-8,
  what the platform would refuse) exits 2 with exactly one line ``error: ...`` on stderr.
- Anything else is a bug: exit 1 and one line ``error: internal error (a bug, please
  report it): <Type>: <first line>; rerun with --debug for the traceback``.
- ``--debug`` anywhere on the command line (before a ``--``) prints the traceback as well;
  the guard removes it from argv, so a command needs no option for it
  (``add_debug_flag(parser)`` only lists it in ``--help``).

Every message is one line (newlines collapsed, control characters escaped) and never holds
a value registered with ``register_secrets``.  argparse usage errors are turned into the
same one line (the guard makes ``ArgumentParser.error`` raise while the command runs).
"""

from __future__ import annotations

import argparse
import contextvars
import importlib
import os
import sys
import traceback
from typing import Any, Callable, Iterable, NoReturn, TextIO

INPUT_EXIT = 2
BUG_EXIT = 1
INTERRUPTED_EXIT = 130
BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE, what a shell reports for `... | head`
DEBUG_FLAG = "--debug"
SECRET_MASK = "[secret]"

_debug: contextvars.ContextVar[bool] = contextvars.ContextVar("cli_debug", default=False)
_secrets: set[str] = set()


class UsageError(Exception):
    """A mistake in the command line or in a user-given path: exit 2, one line."""


# --- messages ---------------------------------------------------------------------------

def one_line(text: object) -> str:
    """``text`` on one line: line breaks collapsed, other control characters escaped, and
    registered secret values masked."""
    lines = [part.strip() for part in str(text).splitlines()]
    flat = " ".join(part for part in lines if part)
    flat = "".join(c if c.isprintable() else " " if c == "\t" else f"\\x{ord(c):02x}" for c in flat)
    return mask_secrets(flat)


def register_secrets(values: Iterable[str]) -> None:
    """Values no message of this process may show (decrypted secrets); short ones are ignored
    (masking every "x" would garble messages without protecting anything)."""
    for value in values:
        if isinstance(value, str) and len(value) >= 4 and value != SECRET_MASK:
            _secrets.add(value)


def mask_secrets(text: str) -> str:
    for value in sorted(_secrets, key=len, reverse=True):
        if value in text:
            text = text.replace(value, SECRET_MASK)
    return text


def _yaml_message(exc: Any) -> str | None:
    """A reading error of YAML text, without the snippet of the offending line PyYAML adds
    (it may be a secret); None for errors of writing YAML (those are bugs)."""
    import yaml

    if isinstance(exc, yaml.reader.ReaderError):  # says which byte, never a value
        return f"{exc.name}: not YAML text: {exc.reason} at position {exc.position}"
    if not isinstance(exc, yaml.MarkedYAMLError):
        return None
    mark = exc.problem_mark or exc.context_mark
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "YAML"
    problem = exc.problem or "malformed"
    return f"{where}: not valid YAML: {exc.context + ': ' if exc.context else ''}{problem}"


def _module_class(module: str, name: str) -> type | None:
    # An exception of a class implies its module is loaded: look there, never import (the
    # guard must work whatever failed to import).
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return cls if isinstance(cls, type) else None


def input_message(exc: BaseException) -> str | None:
    """The one-line message when ``exc`` is a user's input problem; None when it is a bug."""
    if isinstance(exc, UsageError):
        return str(exc)
    provider_error = _module_class("tools.platform_model", "ProviderError")
    if provider_error is not None and isinstance(exc, provider_error):
        resource = getattr(exc, "resource", "")
        return f"{resource}: {exc}" if resource else str(exc)
    for module, name in (
        ("pulumi.errors", "RunError"),  # components.config.ConfigError and the program's preconditions
        ("tools.stackconfig", "StackError"),
        ("tools.passphrase", "PassphraseError"),
        ("tools.rollout", "RolloutError"),
    ):
        cls = _module_class(module, name)
        if cls is not None and isinstance(exc, cls):
            return str(exc) or type(exc).__name__
    yaml_error = _module_class("yaml", "YAMLError")
    if yaml_error is not None and isinstance(exc, yaml_error):
        return _yaml_message(exc)  # None (a bug) for an error of writing YAML
    if isinstance(exc, UnicodeDecodeError):  # a user file (stack file, passphrase file) that is not UTF-8
        return f"a file is not UTF-8 text: {exc.reason} at byte {exc.start}"
    if isinstance(exc, OSError) and exc.filename is not None:  # a path the user gave
        target = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
        return f"{exc.strerror or type(exc).__name__}: {target}"
    return None


def bug_message(exc: BaseException, debug: bool = False) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    line = f"internal error (a bug, please report it): {type(exc).__name__}" + (f": {first}" if first else "")
    return line if debug else f"{line}; rerun with {DEBUG_FLAG} for the traceback"


def report(exc: BaseException, stderr: TextIO | None = None, prefix: str = "") -> int:
    """Write the one line for ``exc`` (the traceback first with --debug); its exit code."""
    stderr = sys.stderr if stderr is None else stderr
    debug = _debug.get()
    if debug:
        stderr.write(mask_secrets("".join(traceback.format_exception(exc))))
    message = input_message(exc)
    code = INPUT_EXIT
    if message is None:
        message, code = bug_message(exc, debug), BUG_EXIT
    stderr.write(f"error: {one_line(f'{prefix}: {message}' if prefix else message)}\n")
    return code


def debug_enabled() -> bool:
    return _debug.get()


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """List --debug in the command's help (the guard has removed it before parsing)."""
    parser.add_argument(DEBUG_FLAG, action="store_true", help="print the traceback of an error")


# --- the guard --------------------------------------------------------------------------

def _usage_error(self: argparse.ArgumentParser, message: str) -> NoReturn:
    raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _pop_debug(argv: list[str]) -> bool:
    end = argv.index("--") if "--" in argv else len(argv)
    found = DEBUG_FLAG in argv[:end]
    argv[:end] = [a for a in argv[:end] if a != DEBUG_FLAG]
    return found


def run(main: Callable[[list[str]], int | None], argv: list[str] | None = None, *,
        stderr: TextIO | None = None) -> int:
    """Run ``main(argv)`` under the guard; the process exit code."""
    stderr = sys.stderr if stderr is None else stderr
    args = list(sys.argv[1:] if argv is None else argv)
    token = _debug.set(_pop_debug(args))
    original_error = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = _usage_error  # type: ignore[method-assign]
    try:
        code = main(args)
        return 0 if code is None else int(code)
    except SystemExit as exc:  # --help, or a sys.exit() somewhere below
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        stderr.write(f"error: {one_line(exc.code)}\n")
        return BUG_EXIT
    except KeyboardInterrupt:
        stderr.write("error: interrupted\n")
        return INTERRUPTED_EXIT
    except BrokenPipeError:
        # the reader of stdout went away (`| head`): nothing to say to it; keep the
        # interpreter's final flush from raising again
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return BROKEN_PIPE_EXIT
    except Exception as exc:  # noqa: BLE001 - the one place every error ends
        return report(exc, stderr)
    finally:
        argparse.ArgumentParser.error = original_error  # type: ignore[method-assign]
        _debug.reset(token)


def run_module(name: str, argv: list[str] | None = None, *, stderr: TextIO | None = None) -> int:
    """Import the command module ``name`` and run its ``main(argv)``, both under the guard:
    a module that fails to import (a bug) is one line too, not a traceback."""
    return run(lambda args: importlib.import_module(name).main(args), argv, stderr=stderr)
