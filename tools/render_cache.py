"""Renders of the real program kept by everything that decides them, and replayed (the tests'
speed: tests/conftest.py sets ``mockrun.RENDER_CACHE``; the preview and the tools never do).

``RenderCache`` keeps each render of ``mockrun.run_program``'s default program, keyed by its
config, environment, stack files and the mocks' state, and serves an equal request by replaying
the kept render's mock calls on the new mocks (checking every answer) instead of running the
program.  ``RenderCache.shared_dir`` shares kept renders between the processes of one test run,
sealed.  tests/test_render_cache.py proves a replay is the render.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pulumi.runtime import mocks as pm

from tools.mockrun import ROOT, RecordingMonitor, Run, _forget_leftovers, _prepare


class RenderCacheError(AssertionError):
    """A kept render cannot be trusted (a test changed it in place, or the mocks are not a
    function of their state): a bug in the test or the mocks, never hidden."""


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class _StatePickler(pickle.Pickler):
    """Pickles a mocks object's whole state, functions and closures included (a lazy seed, the
    operator effects the platform model has pending): equal bytes, equal state."""

    def reducer_override(self, obj):
        if isinstance(obj, types.FunctionType):
            cells = tuple(c.cell_contents for c in obj.__closure__ or ())
            return tuple, (("function", obj.__module__, obj.__qualname__, cells, obj.__defaults__, obj.__kwdefaults__),)
        if isinstance(obj, _LOCK_TYPES):
            return tuple, (("lock",),)
        return NotImplemented


def _state_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    _StatePickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def _same_error(a: BaseException, b: BaseException) -> bool:
    return type(a) is type(b) and a.args == b.args and vars(a) == vars(b)


class Recorder(pm.Mocks):
    """The mocks, with every call and its answer kept (pickled: later changes to the platform's
    objects do not reach the record)."""

    def __init__(self, inner: pm.Mocks):
        self.inner = inner
        self.calls: list[tuple[str, bytes, bytes | None, BaseException | None]] = []
        self.replayable = True

    def _keep(self, kind: str, frozen: bytes, answer: Any, error: BaseException | None) -> None:
        try:
            self.calls.append((kind, frozen, None if error is not None else pickle.dumps(answer, pickle.HIGHEST_PROTOCOL), error))
        except Exception:  # noqa: BLE001 - something the record cannot hold: this render is not kept
            self.replayable = False

    def _record(self, kind: str, frozen_args: tuple, answer_of: Callable[[], Any]) -> Any:
        """Ask the inner mocks (``answer_of``) and keep the call, its answer or its error."""
        try:
            frozen = pickle.dumps(frozen_args, pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001
            frozen, self.replayable = b"", False
        try:
            answer = answer_of()
        except BaseException as exc:
            self._keep(kind, frozen, None, exc)
            raise
        self._keep(kind, frozen, answer, None)
        return answer

    def new_resource(self, args: pm.MockResourceArgs):
        if args.transforms:
            self.replayable = False
        return self._record("new_resource", (args.typ, args.name, args.inputs, args.provider, args.resource_id, args.custom),
                            lambda: self.inner.new_resource(args))

    def call(self, args: pm.MockCallArgs):
        return self._record("call", (args.token, args.args, args.provider), lambda: self.inner.call(args))

    def register_transform(self, transform) -> None:
        self.replayable = False  # a stack transform runs in the program: not replayed
        self.inner.register_transform(transform)

    def register_invoke_transform(self, transform) -> None:
        self.replayable = False
        self.inner.register_invoke_transform(transform)


@dataclass
class _Kept:
    monitor: RecordingMonitor
    error: BaseException | None
    calls: list[tuple[str, bytes, bytes | None, BaseException | None]]
    fingerprint: bytes


class RenderCache:
    """Renders of the real program kept by everything that decides them, and replayed.

    The program is deterministic (one thread, ``_InlineExecutor``; tests/test_render_cache.py
    renders twice and compares): what it registers depends only on its config, the environment,
    the stack files it reads and the mocks' answers.  The key holds the first three and the
    mocks' state (``_StatePickler``: the whole object, or what its ``render_state()`` says the
    answers depend on, e.g. a platform without its event log); the mocks' answers are a
    function of that state and of the calls, which the program makes in the same order each time.  So a render with an
    equal key would register the same resources: instead of running it, the kept render's mock
    calls are replayed on the new mocks (their side effects, a platform's new objects and
    events, happen as in a render) and each answer is checked against the kept one.

    ``allowed()`` (set by tests/conftest.py) says whether the current caller may be served a
    kept render: not a test that patched the program or its mocks.  The kept ``Run.monitor`` is
    shared by every caller: it must not be changed in place (checked on each hit)."""

    def __init__(self, allowed: Callable[[], bool] = lambda: True, shared_dir: Path | None = None,
                 shared_key: bytes | None = None):
        self.allowed = allowed
        self.shared_dir = shared_dir
        self.shared_key = shared_key
        self._kept: dict[bytes, _Kept] = {}
        self.hits = 0
        self.misses = 0
        self.shared_hits = 0

    def key(self, project: str, stack: str, config: dict[str, str], secret_keys, mocks: pm.Mocks) -> bytes | None:
        if not self.allowed():
            return None
        try:
            state = _state_bytes(mocks.render_state() if hasattr(mocks, "render_state") else mocks)
        except Exception:  # noqa: BLE001 - mocks whose state cannot be pickled: always render
            return None
        env = sorted((k, v) for k, v in os.environ.items() if not k.startswith("PYTEST_"))
        files = sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in os.scandir(ROOT)
                       if e.name.startswith("Pulumi.") or e.name == "requirements.txt")
        head = json.dumps([project, stack, sorted(config.items()), sorted(secret_keys), env, files,
                           type(mocks).__module__, type(mocks).__qualname__]).encode()
        return hashlib.blake2b(head + b"\0" + state, digest_size=32).digest()

    @staticmethod
    def _fingerprint(monitor: RecordingMonitor) -> bytes:
        return hashlib.blake2b(pickle.dumps((monitor.registrations, monitor.order, monitor.outputs, monitor.stack_urn),
                                            pickle.HIGHEST_PROTOCOL)).digest()

    def keep(self, key: bytes, recorder: Recorder, monitor: RecordingMonitor, error: BaseException | None) -> None:
        self.misses += 1
        if not recorder.replayable:
            return
        try:
            fingerprint = self._fingerprint(monitor)
        except Exception:  # noqa: BLE001
            return
        self._kept[key] = _Kept(monitor, error, recorder.calls, fingerprint)
        self._share(key, self._kept[key])

    # --- the store shared by the processes of one test run (the pytest-xdist workers) ---------
    # Each worker keeps its renders in memory; without a shared store the same render (a stack's
    # plain render, asked for by tests on both workers) runs once per worker.  A kept render is
    # written once, whole, by an atomic rename; a reader checks it against its fingerprint and
    # replays its mock calls on its own mocks, as for a render it kept itself.
    # A render holds the stack's decrypted secrets: the file is AES-GCM sealed with
    # ``shared_key``, which only the run's processes hold in memory (never a file, argv or the
    # environment); tests/test_secret_leaks.py scans every file a run writes.
    def _shared_path(self, key: bytes) -> Path | None:
        if self.shared_dir is None or self.shared_key is None:
            return None
        return self.shared_dir / f"{key.hex()}.render"

    def _share(self, key: bytes, kept: _Kept) -> None:
        path = self._shared_path(key)
        if path is None or path.exists():
            return
        m = kept.monitor
        try:
            # an error whose class cannot be rebuilt from its args (ConfigError) fails here
            errors = [e for e in [kept.error, *(call[3] for call in kept.calls)] if e is not None]
            if errors:
                pickle.loads(pickle.dumps(errors, pickle.HIGHEST_PROTOCOL))
            data = pickle.dumps((m.registrations, m.order, m.outputs, m.stack_urn, kept.error, kept.calls, kept.fingerprint),
                                pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - such a render is kept in this process only
            return
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(nonce + AESGCM(self.shared_key).encrypt(nonce, data, key))
        os.replace(tmp, path)

    def _from_shared(self, key: bytes) -> _Kept | None:
        path = self._shared_path(key)
        if path is None or not path.exists():
            return None
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        sealed = path.read_bytes()
        try:
            data = AESGCM(self.shared_key).decrypt(sealed[:12], sealed[12:], key)
        except InvalidTag:
            raise RenderCacheError(f"the shared kept render {path} was not written by this run (it does not open)") from None
        registrations, order, outputs, stack_urn, error, calls, fingerprint = pickle.loads(data)
        kept = _Kept(RecordingMonitor.restored(registrations, order, outputs, stack_urn), error, calls, fingerprint)
        if self._fingerprint(kept.monitor) != fingerprint:
            raise RenderCacheError(f"the shared kept render {path} does not match its fingerprint")
        self._kept[key] = kept
        self.shared_hits += 1
        return kept

    def replay(self, key: bytes, project: str, stack: str, config: dict[str, str], secret_keys, mocks: pm.Mocks) -> Run | None:
        kept = self._kept.get(key) or self._from_shared(key)
        if kept is None:
            return None
        if self._fingerprint(kept.monitor) != kept.fingerprint:
            raise RenderCacheError(f"a kept render of {stack} was changed in place by its user (copy it before changing it)")
        _prepare(project, stack, config, secret_keys, mocks, RecordingMonitor(mocks))
        try:
            for i, (kind, frozen, answer, error) in enumerate(kept.calls):
                if kind == "new_resource":
                    typ, name, inputs, provider, resource_id, custom = pickle.loads(frozen)
                    call = lambda: mocks.new_resource(pm.MockResourceArgs(  # noqa: E731
                        typ=typ, name=name, inputs=inputs, provider=provider, resource_id=resource_id, custom=custom))
                else:
                    token, args, provider = pickle.loads(frozen)
                    call = lambda: mocks.call(pm.MockCallArgs(token=token, args=args, provider=provider))  # noqa: E731
                try:
                    got = call()
                except BaseException as exc:  # noqa: BLE001
                    if error is None or not _same_error(exc, error):
                        raise RenderCacheError(f"replaying a kept render of {stack}: call {i} ({kind}) now fails with "
                                               f"{exc!r}, was {error!r}: the mocks are not a function of their state") from exc
                    continue
                if error is not None or got != pickle.loads(answer):
                    raise RenderCacheError(f"replaying a kept render of {stack}: call {i} ({kind}) answers differently: "
                                           "the mocks are not a function of their state")
        finally:
            _forget_leftovers()
        self.hits += 1
        return Run(kept.monitor, kept.error, {"mocks": mocks, "config": dict(config)})
