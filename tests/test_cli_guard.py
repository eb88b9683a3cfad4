"""The one top-level guard of every command (tools/cli.py): an input problem is exit 2 and one
line, anything else is exit 1 and one line calling it a bug, the traceback only with --debug."""

from __future__ import annotations

import argparse
import importlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pulumi
import pytest
import yaml

from components.config import ConfigError
from tests.conftest import Ran, run_command
from tools import cli, passphrase, platform_model, stackconfig

ROOT = Path(__file__).resolve().parent.parent
BUG_LINE = ("error: internal error (a bug, please report it): ZeroDivisionError: division by zero; "
            "rerun with --debug for the traceback\n")


def guarded(main, argv=()):
    err = io.StringIO()
    code = cli.run(main, list(argv), stderr=err)
    return code, err.getvalue()


def raising(exc):
    def main(argv):
        raise exc
    return main


def yaml_error(text: str) -> yaml.YAMLError:
    try:
        yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return exc
    raise AssertionError("parsed")


def os_error() -> OSError:
    try:
        open("/nonexistent-dir-of-the-guard-test/file")
    except OSError as exc:
        return exc
    raise AssertionError("opened")


# --- the guard itself -------------------------------------------------------------------

@pytest.mark.parametrize("exc, expected", [
    (ConfigError("phase", "'x' is not a phase", "use one of ..."), "error: airflow:phase: 'x' is not a phase; use one of ...\n"),
    (pulumi.RunError("the namespace airflow-x does not exist"), "error: the namespace airflow-x does not exist\n"),
    (stackconfig.StackError("unknown stack 'nope'"), "error: unknown stack 'nope'\n"),
    (passphrase.PassphraseError("incorrect passphrase"), "error: incorrect passphrase\n"),
    (platform_model.ProviderError("already exists", "kubernetes:core/v1:Secret x"), "error: kubernetes:core/v1:Secret x: already exists\n"),
    (cli.UsageError("--out x: exists"), "error: --out x: exists\n"),
    (os_error(), "error: No such file or directory: /nonexistent-dir-of-the-guard-test/file\n"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "error: a file is not UTF-8 text: invalid start byte at byte 0\n"),
], ids=["ConfigError", "RunError", "StackError", "PassphraseError", "ProviderError", "UsageError", "OSError", "UnicodeDecodeError"])
def test_an_input_problem_is_exit_2_and_one_line(exc, expected):
    assert guarded(raising(exc)) == (2, expected)


def test_a_yaml_error_is_one_line_without_the_snippet_of_the_file():
    # PyYAML quotes the offending line: it may be a secret value
    code, err = guarded(raising(yaml_error("key: value-hunter2\n\tbad: [")))
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: <unicode string>, line 2, column 1: not valid YAML: ")
    assert "hunter2" not in err


def test_writing_yaml_wrongly_is_a_bug_not_an_input_problem():
    code, err = guarded(raising(yaml.representer.RepresenterError("cannot represent an object", object())))
    assert code == 1 and err.startswith("error: internal error (a bug, please report it): RepresenterError")


def test_a_bug_is_exit_1_one_line_and_no_traceback():
    code, err = guarded(lambda argv: 1 / 0)
    assert (code, err) == (1, BUG_LINE)


def test_debug_prints_the_traceback_too_and_is_not_passed_on():
    seen = []

    def main(argv):
        seen.append(list(argv))
        return 1 / 0

    code, err = guarded(main, ["-s", "x", "--debug"])
    assert code == 1 and seen == [["-s", "x"]]
    assert err.startswith("Traceback (most recent call last):")
    assert "1 / 0" in err and "ZeroDivisionError: division by zero\n" in err
    assert err.endswith("error: internal error (a bug, please report it): ZeroDivisionError: division by zero\n")


def test_debug_after_a_double_dash_is_an_argument():
    seen = []
    guarded(lambda argv: seen.append(argv), ["--", "--debug"])
    assert seen == [["--", "--debug"]]


def test_a_multi_line_message_is_collapsed_to_one_line_and_control_characters_escaped():
    code, err = guarded(raising(stackconfig.StackError("first\n  second\r\nthird\x1b[31m")))
    assert (code, err) == (2, "error: first second third\\x1b[31m\n")
    code, err = guarded(raising(RuntimeError("line one\nline two")))
    assert code == 1 and err.count("\n") == 1 and "RuntimeError: line one;" in err and "line two" not in err


def test_argparse_usage_errors_are_one_line_and_help_still_works(capsys):
    def main(argv):
        parser = argparse.ArgumentParser(prog="python -m tools.x")
        parser.add_argument("--base", required=True)
        cli.add_debug_flag(parser)
        parser.parse_args(argv)
        return 0

    code, err = guarded(main, [])
    assert (code, err) == (2, "error: python -m tools.x: the following arguments are required: --base "
                              "(see python -m tools.x --help)\n")
    assert capsys.readouterr().err == ""  # no usage block
    assert guarded(main, ["--help"]) == (0, "")
    assert "--debug" in capsys.readouterr().out
    # restored afterwards: argparse outside the guard behaves as usual
    assert argparse.ArgumentParser.error is not cli._usage_error


def test_exit_codes_pass_through():
    assert guarded(lambda argv: 0) == (0, "")
    assert guarded(lambda argv: None) == (0, "")
    assert guarded(lambda argv: 3) == (3, "")
    assert guarded(lambda argv: sys.exit(4)) == (4, "")


def test_an_interrupt_is_one_line():
    assert guarded(raising(KeyboardInterrupt())) == (130, "error: interrupted\n")


def test_registered_secrets_never_appear_in_a_message_or_a_traceback():
    cli.register_secrets(["hunter2-guard-sentinel", "x"])
    try:
        code, err = guarded(raising(ValueError("bad value 'hunter2-guard-sentinel' in x")))
        assert code == 1 and "hunter2-guard-sentinel" not in err and "bad value '[secret]' in x" in err
        code, err = guarded(raising(ValueError("hunter2-guard-sentinel")), ["--debug"])
        assert "Traceback" in err and "hunter2-guard-sentinel" not in err
    finally:
        cli._secrets.discard("hunter2-guard-sentinel")


# --- every command's __main__ goes through it ---------------------------------------------

def run_module(module: str, *args: str, patch: tuple[str, str] | None = None) -> Ran:
    """``python -m module args`` (its ``__main__``, in this process: tests/conftest.py
    ``run_command``) with a bug planted first: ``patch`` = (module, attribute) made to divide by
    zero while the command runs.  Each command's real process is test_a_bad_command_line_..."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    if patch is None:
        return run_command(module, *args, env=env, cwd=ROOT)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(importlib.import_module(patch[0]), patch[1], lambda *a, **k: 1 / 0)
        return run_command(module, *args, env=env, cwd=ROOT)


BUG_IN_STACKCONFIG_LOAD = ("tools.stackconfig", "load")
BUG_IN_STACKCONFIG_STACKS = ("tools.stackconfig", "stacks")
BUG_IN_SUBPROCESS = ("subprocess", "run")

COMMANDS = {
    # module: (arguments, the planted bug, arguments that are an input problem, its line)
    "tools.preview": (["-s", "search"], BUG_IN_STACKCONFIG_LOAD, ["-s", "search", "--out"],
                      "error: python -m tools.preview: argument --out: expected one argument (see python -m tools.preview --help)\n"),
    "tools.rollout": (["--preview"], BUG_IN_STACKCONFIG_STACKS, ["--stacks"],
                      "error: python -m tools.rollout: argument --stacks: expected at least one argument (see python -m tools.rollout --help)\n"),
    "tools.preview_diff": (["--base", "HEAD"], BUG_IN_SUBPROCESS, ["--base"],
                           "error: python -m tools.preview_diff: argument --base: expected one argument (see python -m tools.preview_diff --help)\n"),
    "tools.touched_stacks": (["--base", "HEAD"], BUG_IN_STACKCONFIG_STACKS, [],
                             "error: python -m tools.touched_stacks: the following arguments are required: --base (see python -m tools.touched_stacks --help)\n"),
}


@pytest.mark.processes
@pytest.mark.parametrize("module", COMMANDS)
def test_a_bug_in_a_command_is_exit_1_one_line_no_traceback(module):
    args, bug, _, _ = COMMANDS[module]
    proc = run_module(module, *args, patch=bug)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == BUG_LINE


@pytest.mark.processes
@pytest.mark.parametrize("module", COMMANDS)
def test_a_bug_in_a_command_with_debug_shows_the_traceback(module):
    args, bug, _, _ = COMMANDS[module]
    proc = run_module(module, *args, "--debug", patch=bug)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Traceback (most recent call last):") and "ZeroDivisionError" in proc.stderr
    assert proc.stderr.endswith("error: internal error (a bug, please report it): ZeroDivisionError: division by zero\n")


@pytest.mark.processes
@pytest.mark.parametrize("module", COMMANDS)
def test_a_bad_command_line_is_exit_2_and_one_line(module):
    """The real process: `python -m <module>` reaches the guard through its ``__main__``."""
    _, _, bad, line = COMMANDS[module]
    proc = subprocess.run([sys.executable, "-m", module, *bad], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr, proc.stdout) == (2, line, "")
