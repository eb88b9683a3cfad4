"""The unit tier (``./dev test --unit``): the tests that run in the pytest process alone.

``./dev test`` runs every test.  ``--unit`` runs the fast, in-process part of it: the pure
functions (shell text, values, rules, config model) and the real program rendered under
Pulumi's mock runtime.  It leaves out

* ``tests/integration`` (real services: KDC, PostgreSQL, RGW, sshd), and
* every test marked ``processes``: the generated scripts run with real bash against stand-in
  tools, and the commands started as real processes.  Their cost is processes and clocks, not
  the program (each script case starts dozens of processes; some wait on a retry back-off or a
  step timeout), so they belong with the whole suite, which CI runs.

The split is checked, not trusted: under ``--unit`` a test that starts a process (through
``subprocess``, ``os.system``, ``os.posix_spawn`` or ``os.fork``) fails, naming the program it
started and the marker to add.  So the unit tier cannot silently grow a process-bound test, and
a test marked ``processes`` that is cheap shows up in the durations of the whole suite.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

MARKER = "processes"
_state: dict[str, Any] = {"guard": False, "started": []}


def _refuse(what: str) -> None:
    """Record the start; the test fails at its teardown (_no_process_in_the_unit_tier).  Not
    raised here: code under test may catch errors (a command's one-line error guard), and the
    test's outcome would then depend on how it did."""
    if _state["guard"]:
        _state["started"].append(what)


def _guarded(name: str, real):
    def call(*args, **kwargs):
        first = args[0] if args else kwargs.get("path", kwargs.get("command", ""))
        _refuse(f"{name} {str(first)[:60]!r}")
        return real(*args, **kwargs)

    call.__wrapped__ = real
    return call


def _guard_popen():
    real = subprocess.Popen._execute_child

    def _execute_child(self, args, *rest, **kwargs):
        argv0 = args if isinstance(args, (str, bytes)) else (list(args)[:1] or [""])[0]
        _refuse(f"subprocess {str(argv0)[:60]!r}")
        return real(self, args, *rest, **kwargs)

    _execute_child.__wrapped__ = real
    subprocess.Popen._execute_child = _execute_child
    for name in ("system", "posix_spawn", "posix_spawnp", "fork"):
        if hasattr(os, name):
            setattr(os, name, _guarded(f"os.{name}", getattr(os, name)))


def pytest_addoption(parser):
    parser.addoption("--unit", action="store_true",
                     help="the unit tier only: no tests/integration, no test marked 'processes'; "
                          "a test that starts a process fails (tests/unit_tier.py)")


def pytest_configure(config):
    config.addinivalue_line("markers", f"{MARKER}: the test starts processes (scripts against stand-ins, "
                                       "commands as real processes): not in --unit (tests/unit_tier.py)")
    if config.getoption("unit"):
        _guard_popen()  # switched on only while a test runs (below): xdist's controller starts its workers


def pytest_collection_modifyitems(config, items):
    if not config.getoption("unit"):
        return
    integration = config.rootpath / "tests" / "integration"
    kept, left = [], []
    for item in items:
        out = item.path.is_relative_to(integration) or item.get_closest_marker(MARKER) is not None
        (left if out else kept).append(item)
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = kept


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Setup, call and teardown of a unit test run with the guard on; a process started (even
    one the code under test caught and hid) fails the test."""
    if not item.config.getoption("unit"):
        return (yield)
    _state["guard"], _state["started"] = True, []
    try:
        return (yield)
    finally:
        _state["guard"] = False


@pytest.fixture(autouse=True)
def _no_process_in_the_unit_tier(request):
    yield
    if request.config.getoption("unit") and _state["started"]:
        started = "; ".join(_state["started"])
        _state["started"] = []
        pytest.fail(f"{request.node.nodeid} starts processes ({started}): mark it @pytest.mark.{MARKER} "
                    "or keep it in this process (tests/unit_tier.py)", pytrace=False)
