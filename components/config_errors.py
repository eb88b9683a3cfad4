"""The one error type of the stack config, and the one spelling of the commands that fix it."""

from __future__ import annotations

import shlex

import pulumi

PROJECT = "airflow"
OFFLINE = "./dev config"  # tools/stackconfig.py: the offline twin of `pulumi config`
CLI = "pulumi config"
VERBS = ("set", "rm", "get")


class ConfigError(pulumi.RunError):
    """A user mistake in stack config: one line naming the key and the fix.

    A ``pulumi.RunError``: the Pulumi language host prints its message without a traceback,
    and the offline preview does the same."""

    def __init__(self, key: str, problem: str, fix: str, prefix: str = f"{PROJECT}:"):
        self.key, self.problem, self.fix = key, problem, fix
        super().__init__(f"{prefix}{key}: {problem}; {fix}")


def current_stack() -> str:
    """The stack the program runs for (``<stack>`` outside a Pulumi run)."""
    try:
        stack = pulumi.get_stack()
    except Exception:  # noqa: BLE001 - no runtime settings at all: a placeholder is the honest answer
        stack = None
    return stack or "<stack>"


def config_command(verb: str, stack: str, key: str, *, value: str | None = None, secret: bool = False,
                   stdin: str | None = None, path: bool = False) -> str:
    """The command that fixes ``key`` of ``stack``, in both spellings, each in backquotes:

        `./dev config set --secret -s search oidcClientSecret` (CLI: `pulumi config set --secret -s search oidcClientSecret`)

    A secret never has a value on the command line: ``--secret`` and the value from stdin or
    the prompt (``stdin`` names a redirection, e.g. ``< keyfile``)."""
    if verb not in VERBS:
        raise ValueError(f"not a config verb: {verb}")
    if secret and value is not None:
        raise ValueError("a secret's value never goes on the command line")
    words = [verb]
    if secret and verb == "set":
        words.append("--secret")
    if path:  # KEY is a path into a list or object, e.g. imageHistory[2] (quoted: [] are shell globs)
        if secret or verb != "set":
            raise ValueError("--path is for setting one element of a plain list or object")
        words.append("--path")
        key = shlex.quote(key)
    words += ["-s", stack, key]
    if value is not None:
        words.append(value)
    if stdin:
        words.append(stdin)
    tail = " ".join(words)
    return f"`{OFFLINE} {tail}` (CLI: `{CLI} {tail}`)"


def set_fix(stack: str, key: str, *, secret: bool = False, stdin: str | None = None, how: str = "set it with") -> str:
    """``set it with <both spellings>``; a plain key's value is shown as ``<value>``."""
    value = None if secret else "<value>"
    return f"{how} {config_command('set', stack, key, value=value, secret=secret, stdin=stdin)}"


def rm_fix(stack: str, key: str, how: str = "remove it with") -> str:
    return f"{how} {config_command('rm', stack, key)}"
