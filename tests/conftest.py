"""Shared helpers: run the real program for a stack under Pulumi's mock runtime.

Speed (the unit suite runs in two pytest-xdist workers, each its own process with its own
mock runtime and caches):
* ``stack_config`` reads and decrypts each stack file once per process (keyed by the files'
  bytes, so an edited file is read again), and PBKDF2 keys are kept for the whole process;
* every render of the real program (``run_stack``, and ``mockrun.run_program`` called by a
  test or by a tool a test runs in-process) goes through tools/render_cache.py: a render
  is kept by everything that decides it (config, environment, stack files, the mocks' state)
  and a later identical render replays the kept one's mock calls instead of running the
  program (tests/test_render_cache.py proves a replay equals a render).  A test that patched
  attributes with ``monkeypatch`` (it may patch the program or its mocks) always renders
  afresh, as does ``run_stack(..., fresh=True)``; environment changes are part of the key;
* the two xdist workers share their kept renders through the run's temporary directory
  (``RenderCache.shared_dir``): a render one worker kept, the other replays (a render whose
  error cannot be pickled stays in its worker);
* ``./dev test --unit`` runs only the in-process tests (tests/unit_tier.py: a test that starts
  a process is marked ``processes`` and left to the whole suite; unmarked, it fails there);
* the examples-passphrase keys of the committed stacks are known (tests/example_keys.json);
* ``run_command`` runs a command's ``__main__`` in this process (each command keeps one test
  that starts it as a real process); ``copy_tree`` gives a test that writes stack files a
  repository of its own, so one parallel pass runs every test;
* ``SHARED_RENDERS``: modules whose tests share kept work run on one worker (xdist groups,
  which this conftest makes work with pytest 9.2: ``_mark_group_in_node_id``).
"""

from __future__ import annotations

import base64
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pytest

from tools import mockrun, render_cache, stackconfig
from tools import passphrase as _passphrase

pytest_plugins = ["tests.unit_tier", "pytester"]  # ./dev test --unit: the in-process tier, checked (tests/unit_tier.py)

EXAMPLE_PASSPHRASE = "examples-only-not-a-secret"
STACKS = ("test-k8s", "search")
KUBERNETES_VERSION = "1.31.0"  # dse-k8s; validate core objects against this schema


# PBKDF2 (1,000,000 iterations, ~0.2 s) is a pure function of (passphrase, salt): keep every
# key for the process instead of tools/passphrase.py's 8 (13 stacks and more in the tree).
# The keys of the committed stacks under the examples' passphrase are known beforehand
# (tests/example_keys.json, salt -> key: as public as the passphrase): each xdist worker would
# otherwise derive all 13 again.  Each is checked where it is used: a stack file's
# encryptionsalt carries an AES-GCM check value that only the right key opens (a wrong entry is
# "incorrect passphrase" at once).  A stack not listed (a new one) is derived as usual.
_KNOWN_KEYS = {(EXAMPLE_PASSPHRASE, base64.b64decode(salt)): bytes.fromhex(key) for salt, key in
               json.loads((Path(__file__).parent / "example_keys.json").read_text()).items()}
if hasattr(_passphrase._derive, "__wrapped__"):
    REAL_DERIVE = _passphrase._derive.__wrapped__

    @functools.lru_cache(maxsize=None)
    def _derive(passphrase: str, salt: bytes) -> bytes:
        known = _KNOWN_KEYS.get((passphrase, salt))
        return known if known is not None else REAL_DERIVE(passphrase, salt)

    _passphrase._derive = _derive

_LOADED: dict[tuple[str, bytes, bytes], stackconfig.StackConfig] = {}


def _file_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def load_example_stack(stack: str) -> stackconfig.StackConfig:
    """stackconfig.load(stack, EXAMPLE_PASSPHRASE), once per content of its files."""
    root = stackconfig.ROOT
    key = (stack, _file_bytes(root / "Pulumi.yaml"), _file_bytes(root / f"Pulumi.{stack}.yaml"))
    if key not in _LOADED:
        _LOADED[key] = stackconfig.load(stack, EXAMPLE_PASSPHRASE)
    return _LOADED[key]


def stack_config(stack: str, overrides: dict[str, Any] | None = None, drop: tuple[str, ...] = (),
                 secret_overrides: dict[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    sc = load_example_stack(stack)
    config = dict(sc.config)
    secret_keys = list(sc.secret_keys)
    for key in drop:
        config.pop(f"airflow:{key}", None)
    for key, value in (overrides or {}).items():
        config[f"airflow:{key}"] = stackconfig._to_wire(value)
    for key, value in (secret_overrides or {}).items():
        config[f"airflow:{key}"] = value
        secret_keys.append(f"airflow:{key}")
    return config, secret_keys


_current_test: dict[str, Any] = {"fixtures": (), "monkeypatch": None}


def _may_use_kept_renders() -> bool:
    """Not for a test that patched an attribute (of the program, its mocks, a tool) or a mapping
    other than the environment, which is part of the render's key."""
    mp = _current_test["monkeypatch"]
    if mp is None:
        return True
    setattrs, setitems = getattr(mp, "_setattr", None), getattr(mp, "_setitem", None)
    if setattrs is None or setitems is None:  # another pytest: be safe
        return False
    return not setattrs and all(target is os.environ for target, _, _ in setitems)


mockrun.RENDER_CACHE = render_cache.RenderCache(allowed=_may_use_kept_renders)


_KEPT_RENDERS_KEY = "kept_renders_key"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist's controller, per worker: the key that seals the run's shared kept renders
    (``RenderCache.shared_key``), sent over xdist's channel: in no file, argv or environment."""
    config = node.config
    if not hasattr(config, "_kept_renders_key"):
        config._kept_renders_key = os.urandom(32).hex()
    node.workerinput[_KEPT_RENDERS_KEY] = config._kept_renders_key


@pytest.fixture(scope="session", autouse=True)
def _kept_renders_shared_by_the_workers(request, tmp_path_factory):
    """The xdist workers of one run share their kept renders (``RenderCache.shared_dir``): a
    render one worker ran, the other replays.  The store lives in the run's own temporary
    directory (pytest's, mode 0700), the parent of each worker's ``popen-gwN``; each file is
    sealed with the run's key, since a render holds the stack's decrypted secrets."""
    workerinput = getattr(request.config, "workerinput", None)
    if not workerinput or _KEPT_RENDERS_KEY not in workerinput or mockrun.RENDER_CACHE is None:
        yield
        return
    shared = tmp_path_factory.getbasetemp().parent / "kept-renders"
    shared.mkdir(exist_ok=True)
    cache = mockrun.RENDER_CACHE
    cache.shared_dir, cache.shared_key = shared, bytes.fromhex(workerinput[_KEPT_RENDERS_KEY])
    yield
    cache.shared_dir, cache.shared_key = None, None


def run_stack(stack: str, overrides: dict[str, Any] | None = None, drop: tuple[str, ...] = (),
              secret_overrides: dict[str, str] | None = None, fresh: bool = False) -> mockrun.Run:
    config, secret_keys = stack_config(stack, overrides, drop, secret_overrides)
    if not fresh:
        return mockrun.run_program("airflow", stack, config, secret_keys)
    cache, mockrun.RENDER_CACHE = mockrun.RENDER_CACHE, None
    try:
        return mockrun.run_program("airflow", stack, config, secret_keys)
    finally:
        mockrun.RENDER_CACHE = cache


def stack_cfg(stack: str, overrides: dict[str, Any] | None = None):
    """The validated config model of a stack (secrets as placeholders)."""
    from components import config as c

    config, secret_keys = stack_config(stack, overrides)
    cfg, _ = c.load(config, is_secret=lambda k: k in secret_keys, read_secret=lambda k: "x")
    return cfg


def rendered(stack: str) -> mockrun.RecordingMonitor:
    """The program's registrations for an unmodified example stack (kept by run_stack)."""
    run = run_stack(stack)
    if run.error is not None:
        raise run.error
    return run.monitor


@pytest.fixture(params=STACKS)
def stack(request) -> str:
    return request.param


# The program requires the RGW checksum settings in the environment the CLI gives the
# provider plugins (components/buckets.py); a prepared deployment-server shell has them.
os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")


@pytest.fixture(autouse=True)
def _which_test(request):
    """Kept renders are not served to a test that patched what the program sees."""
    _current_test["fixtures"] = tuple(request.fixturenames)
    _current_test["monkeypatch"] = request.getfixturevalue("monkeypatch") if "monkeypatch" in request.fixturenames else None
    yield
    _current_test["fixtures"] = ()
    _current_test["monkeypatch"] = None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """tests/integration start real services (free ports, private directories, but timing
    matters): with ``--dist loadgroup`` (./dev test) they run on one xdist worker, in order.

    No test writes into the repository (a test that needs a stack file of its own writes it
    into ``copy_tree``'s copy), so every other test runs in the same parallel pass."""
    for item in items:
        group = None
        if item.path.is_relative_to(config.rootpath / "tests" / "integration"):
            group = "integration"
        elif item.path.name in SHARED_RENDERS:
            by = SHARED_RENDERS[item.path.name]
            callspec = getattr(item, "callspec", None)
            if by == "module":
                group = item.path.name
            elif callspec is not None and by in callspec.params:
                group = f"{item.path.name}:{callspec.params[by]}"
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
            _mark_group_in_node_id(config, item, group)


def _mark_group_in_node_id(config, item, group: str) -> None:
    """pytest-xdist 3.8 tells its --dist loadgroup scheduler an item's group by appending
    ``@<group>`` to ``item._nodeid``, which pytest 9.2 no longer reads (a node's id is the
    structured ``item._id``): without this, no group held together (the integration tests were
    spread over both workers).  Done here on ``_id``, the way xdist means it, on a worker only."""
    if not config.getoption("loadgroup", None) or "@" in item.nodeid or not hasattr(item, "_id"):
        return
    from _pytest.nodeid import NodeId

    item._id = NodeId.parse(f"{item.nodeid}@{group}")


# Modules whose tests share costly work kept per worker process: their tests run on one xdist
# worker, as a whole or per stack, so that the work is done once rather than once on each worker:
# the same renders (render_cache.RenderCache: the hand-over of each stack, run by two tests;
# test_change_safety's 42 edits, run by one test per key and again by the Fernet test) or a
# module-scoped fixture (the leak scan's two previews; the new instance's repository copy).
SHARED_RENDERS = {"test_takeover_platform.py": "stack", "test_change_safety.py": "module",
                  "test_secret_leaks.py": "module", "test_new_instance.py": "module"}


@pytest.fixture(autouse=True)
def _secrets_masked_per_test():
    """The command guard masks every decrypted secret a process has seen (tools/cli.py): right
    for one command per process, but tests run many in one process, so each starts afresh."""
    from tools import cli

    cli._secrets.clear()
    yield
    cli._secrets.clear()


# --- commands in this process ---------------------------------------------------------------------
@dataclass
class Ran:
    """What a command run by ``run_command`` did (the fields of subprocess.CompletedProcess)."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run_command(module: str, *args: str, env: Mapping[str, str] | None = None, stdin: str | bytes = b"",
                cwd: Path | None = None) -> Ran:
    """``python -m module args`` in this process: the module run as ``__main__`` (runpy, its
    ``sys.exit(cli.run_module(...))`` guard included) with its own stdin, stdout and stderr,
    ``os.environ`` replaced by ``env`` and the working directory by ``cwd`` while it runs.

    A subprocess costs an interpreter start and the imports (~1 s); the commands' behaviour is
    the same here, and each command keeps at least one test that runs it as a real process."""
    import io
    import runpy
    import sys
    import warnings

    def stream(data: bytes = b"") -> io.TextIOWrapper:
        return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape", write_through=True)

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_io, saved_argv = (sys.stdin, sys.stdout, sys.stderr), sys.argv
    sys.stdin = stream(stdin.encode() if isinstance(stdin, str) else stdin)
    sys.stdout, sys.stderr = stream(), stream()
    out, err = sys.stdout, sys.stderr
    sys.argv = [module, *args]
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    try:
        with warnings.catch_warnings():  # runpy: "found in sys.modules ... prior to execution": imported, as intended
            warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")
            runpy.run_module(module, run_name="__main__", alter_sys=False)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved_io
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
    return Ran([module, *args], code, out.buffer.getvalue().decode("utf-8", "surrogateescape"),
               err.buffer.getvalue().decode("utf-8", "surrogateescape"))


def copy_tree(dest: Path) -> Path:
    """The program's files of the working tree at ``dest`` (no tests, no .git; the virtualenv
    linked): a repository of its own for a test that writes stack files, which no other test,
    in this process, in the other xdist worker or in a concurrent run, then sees."""
    import shutil

    shutil.copytree(stackconfig.ROOT, dest, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".pytest_cache", "tests", "bench", "out", "render", ".*.tmp"))
    (dest / ".venv").symlink_to(stackconfig.ROOT / ".venv")
    return dest


def pytest_collection_finish(session):
    """What is loaded by now (the program, the SDKs, the test modules) lives as long as the
    process: out of the cyclic garbage collector's way (its full passes would walk it again and
    again; a render allocates many short-lived asyncio objects)."""
    import gc

    gc.collect()
    gc.freeze()
