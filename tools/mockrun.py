"""Run the real Pulumi program under Pulumi's own mock runtime and record what it registers.

This is how the tests and the offline preview see the program without the CLI or a
cluster: ``pulumi.runtime.set_mocks`` with a ``MockMonitor`` subclass that keeps the raw
``RegisterResourceRequest`` of every resource (so resource options such as protect,
parent, dependsOn and additionalSecretOutputs are visible), and the program run through
``run_in_stack`` exactly like the language host's exec script does.

Not an engine: there is no state, no diff and no provider; it renders the desired state.

Speed (a render is ~1,000 asyncio callbacks and ~40 monitor calls; the unit suite makes
hundreds): the mock monitor runs inline on the event loop instead of on the SDK's executor
threads (``_InlineExecutor``), and the SDK's per-registration Python stack-trace capture
(``pulumi.runtime.resource._get_stack_trace``, the engine's source positions, which the mock
monitor drops) is skipped while a render runs.  Both are mock-runtime only: ``pulumi up``
never imports this module.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import runpy
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pm
from pulumi.runtime import resource as _sdk_resource
from pulumi.runtime import rpc
from pulumi.runtime import settings
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.proto import source_pb2
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parent.parent

SECRET = "[secret]"
COMPUTED = "(computed)"
_SECRET_SIG = rpc._special_sig_key
_SECRET_VALUE = rpc._special_secret_sig
_RESOURCE_VALUE = rpc._special_resource_sig
_UNKNOWN = rpc.UNKNOWN


class SecretLeaf:
    """A secret value found in a resource's inputs; ``value`` is kept for leak tests only."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        return SECRET


def _from_struct_value(node: Any) -> Any:
    if isinstance(node, dict):
        sig = node.get(_SECRET_SIG)
        if sig == _SECRET_VALUE:
            return SecretLeaf(_from_struct_value(node.get("value")))
        if sig == _RESOURCE_VALUE:
            return f"<resource {node.get('urn')}>"
        return {k: _from_struct_value(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_from_struct_value(v) for v in node]
    if node == _UNKNOWN:
        return COMPUTED
    if isinstance(node, float) and node.is_integer():
        return int(node)
    return node


def masked(node: Any, placeholder: str = SECRET) -> Any:
    """The structure with every secret leaf replaced by ``placeholder``."""
    if isinstance(node, SecretLeaf):
        return placeholder
    if isinstance(node, dict):
        return {k: masked(v, placeholder) for k, v in node.items()}
    if isinstance(node, list):
        return [masked(v, placeholder) for v in node]
    return node


def unmasked(node: Any) -> Any:
    """The structure with secret leaves replaced by their values (for schema checks in tests)."""
    if isinstance(node, SecretLeaf):
        return unmasked(node.value)
    if isinstance(node, dict):
        return {k: unmasked(v) for k, v in node.items()}
    if isinstance(node, list):
        return [unmasked(v) for v in node]
    return node


def secret_paths(node: Any, path: str = "") -> list[str]:
    """Dotted paths of the secret leaves in ``node``."""
    if isinstance(node, SecretLeaf):
        return [path]
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            out += secret_paths(v, f"{path}.{k}" if path else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += secret_paths(v, f"{path}[{i}]")
    return out


@dataclass
class Registration:
    """One registered resource, with the options the engine would see."""

    urn: str
    type: str
    name: str
    custom: bool
    parent: str
    provider: str
    inputs: dict[str, Any]
    protect: bool
    retain_on_delete: bool
    delete_before_replace: bool
    ignore_changes: list[str]
    replace_on_changes: list[str]
    additional_secret_outputs: list[str]
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    custom_timeouts: dict[str, str]
    remote: bool
    read_id: str = ""  # set for a read of an existing object (``Resource.get``): not managed

    @property
    def read(self) -> bool:
        return bool(self.read_id)

    @property
    def explicit_depends_on(self) -> list[str]:
        implicit = {u for urns in self.property_dependencies.values() for u in urns}
        return [u for u in self.dependencies if u not in implicit]


def _mock_bytes(name: str, length: int) -> bytes:
    # deterministic per resource name, so renders are stable and diffable
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(f"{name}:{counter}".encode()).digest()
        counter += 1
    return out[:length]


class Mocks(pm.Mocks):
    """Echo inputs back as outputs, plus what providers would compute: random values
    (deterministic per name), a Release status, a Command's stdout placeholder."""

    def new_resource(self, args: pm.MockResourceArgs):
        outputs = dict(args.inputs)
        if args.typ == "kubernetes:helm.sh/v3:Release":
            outputs["status"] = {"status": "deployed", "name": args.inputs.get("name")}
        elif args.typ == "random:index/randomPassword:RandomPassword":
            length = int(args.inputs.get("length", 16))
            alphabet = string.ascii_uppercase + string.digits if args.inputs.get("lower") is False else string.ascii_letters + string.digits
            outputs["result"] = "".join(alphabet[b % len(alphabet)] for b in _mock_bytes(args.name, length))
        elif args.typ == "random:index/randomBytes:RandomBytes":
            raw = _mock_bytes(args.name, int(args.inputs.get("length", 32)))
            outputs["base64"] = base64.b64encode(raw).decode()
            outputs["hex"] = raw.hex()
        elif args.typ.startswith("command:"):
            outputs["stdout"] = f"(stdout of {args.name})"
            outputs["stderr"] = ""
        return f"{args.name}-id", outputs

    def call(self, args: pm.MockCallArgs):
        return {}


class RecordingMonitor(pm.MockMonitor):
    def __init__(self, mocks: pm.Mocks):
        super().__init__(mocks)
        self.registrations: dict[str, Registration] = {}
        self.order: list[str] = []
        self.outputs: dict[str, Any] = {}
        self.stack_urn = ""

    @classmethod
    def restored(cls, registrations: dict[str, Registration], order: list[str], outputs: dict[str, Any],
                 stack_urn: str) -> "RecordingMonitor":
        """A finished render's record, read back (RenderCache's shared store); no program runs on it."""
        monitor = cls(Mocks())
        monitor.registrations, monitor.order, monitor.outputs, monitor.stack_urn = registrations, order, outputs, stack_urn
        return monitor

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        # Engine-faithful URNs: children of the Stack carry no Stack prefix and the full
        # parent type chain is kept (the stock mock keeps only the last segment).
        if parent and parent.split("::")[2] != "pulumi:pulumi:Stack":
            type_ = parent.split("::")[2] + "$" + type_
        return "urn:pulumi:" + "::".join([settings.get_stack(), settings.get_project(), type_, name])

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            self.stack_urn = response.urn
            return response
        inputs = _from_struct_value(json_format.MessageToDict(request.object))
        timeouts = request.customTimeouts
        self.registrations[response.urn] = Registration(
            urn=response.urn,
            type=request.type,
            name=request.name,
            custom=bool(request.custom),
            parent=request.parent,
            provider=request.provider,
            inputs=inputs,
            protect=bool(request.protect),
            retain_on_delete=bool(request.retainOnDelete),
            delete_before_replace=bool(request.deleteBeforeReplace),
            ignore_changes=list(request.ignoreChanges),
            replace_on_changes=list(request.replaceOnChanges),
            additional_secret_outputs=list(request.additionalSecretOutputs),
            dependencies=list(request.dependencies),
            property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
            custom_timeouts={k: getattr(timeouts, k) for k in ("create", "update", "delete") if getattr(timeouts, k)},
            remote=bool(request.remote),
        )
        self.order.append(response.urn)
        return response

    def ReadResource(self, request):
        response = super().ReadResource(request)
        self.registrations[response.urn] = Registration(
            urn=response.urn,
            type=request.type,
            name=request.name,
            custom=True,
            parent=request.parent,
            provider=request.provider,
            inputs=_from_struct_value(json_format.MessageToDict(request.properties)),
            protect=False,
            retain_on_delete=False,
            delete_before_replace=False,
            ignore_changes=[],
            replace_on_changes=[],
            additional_secret_outputs=list(request.additionalSecretOutputs),
            dependencies=list(request.dependencies),
            property_dependencies={},
            custom_timeouts={},
            remote=False,
            read_id=request.id,
        )
        self.order.append(response.urn)
        return response

    def RegisterResourceOutputs(self, request):
        self.outputs[request.urn] = _from_struct_value(json_format.MessageToDict(request.outputs))
        return super().RegisterResourceOutputs(request)

    # --- queries for tests and the preview ---
    def by_type(self, type_: str) -> list[Registration]:
        return [self.registrations[u] for u in self.order if self.registrations[u].type == type_]

    def one(self, type_: str) -> Registration:
        found = self.by_type(type_)
        assert len(found) == 1, f"expected one {type_}, found {[r.name for r in found]}"
        return found[0]

    def named(self, name: str) -> Registration:
        for urn in self.order:
            if self.registrations[urn].name == name:
                return self.registrations[urn]
        raise KeyError(name)

    @property
    def stack_outputs(self) -> dict[str, Any]:
        return self.outputs.get(self.stack_urn, {})

    def registered(self) -> list[Registration]:
        return [self.registrations[u] for u in self.order]


class _InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """The SDK sends every monitor call through ``loop.run_in_executor`` (a thread hop per
    call, for a real gRPC monitor); the mock monitor is plain Python, so it runs inline, in
    the order the program's tasks send the calls: a render is deterministic.

    As on an executor thread, the call sees its own event loop (the mock monitor serializes
    its answer with ``_sync_await``): on the program's loop that would run other tasks, and so
    other monitor calls, inside this one."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self._own_loop = asyncio.new_event_loop()

    def submit(self, fn, /, *args, **kwargs):
        future: concurrent.futures.Future = concurrent.futures.Future()
        program_loop = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(None)
        asyncio.set_event_loop(self._own_loop)
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task, as the pool would
            future.set_exception(exc)
        finally:
            asyncio.set_event_loop(program_loop)
            asyncio.events._set_running_loop(program_loop)
        return future


_INLINE = _InlineExecutor()


_EMPTY_TRACE = source_pb2.StackTrace()
_SDK_STACK_TRACE = getattr(_sdk_resource, "_get_stack_trace", None)


@dataclass
class Run:
    monitor: RecordingMonitor
    error: BaseException | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def run_program(
    project: str,
    stack: str,
    config: dict[str, str],
    secret_keys: list[str] | tuple[str, ...] = (),
    program: Callable[[], Any] | None = None,
    mocks: pm.Mocks | None = None,
) -> Run:
    """Run ``program`` (default: ``__main__.py``) under mocks; exceptions are returned, not raised.

    The default mocks are the live-platform model of a brand-new instance after its admin_ng
    step (tools/platform_model.py): what a first ``pulumi up`` meets.  With ``RENDER_CACHE``
    set (the tests), a render of the default program is kept and replayed (tools/render_cache.py)."""
    if mocks is None:
        from tools import platform_model  # imports this module

        mocks = platform_model.new_instance_after_admin_ng()
    cache = RENDER_CACHE if program is None else None
    key = cache.key(project, stack, config, secret_keys, mocks) if cache is not None else None
    if key is not None:
        hit = cache.replay(key, project, stack, config, secret_keys, mocks)
        if hit is not None:
            return hit
    recorder = mocks
    if key is not None:  # a render to keep: its mock calls are recorded
        from tools.render_cache import Recorder  # imports this module

        recorder = Recorder(mocks)
    monitor = RecordingMonitor(recorder)
    _prepare(project, stack, config, secret_keys, recorder, monitor)

    def default_program() -> None:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")

    loop = asyncio.get_event_loop()
    default_executor = loop._default_executor  # type: ignore[attr-defined]
    loop.set_default_executor(_INLINE)
    if _SDK_STACK_TRACE is not None:
        _sdk_resource._get_stack_trace = lambda: _EMPTY_TRACE
    error: BaseException | None = None
    try:
        _sync_await(run_in_stack(program or default_program))
    except BaseException as exc:  # noqa: BLE001 - reported to the caller, never swallowed silently
        error = exc
    finally:
        _forget_leftovers()
        if _SDK_STACK_TRACE is not None:
            _sdk_resource._get_stack_trace = _SDK_STACK_TRACE
        loop._default_executor = default_executor  # type: ignore[attr-defined]
    if key is not None:
        cache.keep(key, recorder, monitor, error)
    return Run(monitor, error, {"mocks": mocks, "config": dict(config)})


def _prepare(project: str, stack: str, config: dict[str, str], secret_keys, mocks: pm.Mocks,
             monitor: pm.MockMonitor) -> None:
    # organization: what the self-managed backend always reports (pulumi/pulumi pkg/backend/diy/state.go),
    # part of the stack name the phase guard reads its own outputs under (components/phase_guard.py)
    pm.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor, organization="organization")
    # Let run_in_stack create and finish the Stack, as the language host does; it must
    # reuse the loop set_mocks queued its RPCs on (a new loop hangs forever).
    settings.set_root_resource(None)
    pulumi.runtime.set_all_config(dict(config), list(secret_keys))


# --- keeping renders: the tests render the same stack with the same config many times ----------
if TYPE_CHECKING:
    from tools.render_cache import RenderCache

RENDER_CACHE: "RenderCache | None" = None  # tests/conftest.py sets one (tools/render_cache.py); the preview renders each stack once


def _forget_leftovers() -> None:
    """After a failed run, tasks of its Outputs may still wait (on a read that failed, say).

    The SDK keeps them in a process-wide list and the next ``run_in_stack`` on the same loop
    awaits "all outstanding tasks" (pulumi/runtime/stack.py ``wait_for_rpcs``), so one run's
    failure would surface in the next.  The language host runs one program per process; here
    several runs share one, so each ends by cancelling and forgetting what it left."""
    loop = asyncio.get_event_loop()
    with settings.SETTINGS.lock:
        leftover = [t for t in settings.SETTINGS.outputs if not t.done()]
        settings.SETTINGS.outputs.clear()
    leftover += [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in leftover:
        task.cancel()
    if leftover:
        loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
