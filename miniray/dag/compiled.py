"""Compiled DAGs: a fixed graph of actor methods run over shared-memory channels.

``dag.experimental_compile()`` turns a graph of actor method calls (bound on
live actor handles) into:

- one :mod:`channel <miniray.dag.channel>` per edge that crosses processes:
  driver -> each actor that reads the input, producer -> each other actor
  that reads its result, output node -> driver. Calls on the same actor hand
  values over in memory;
- one loop per participating actor, a daemon thread started inside it with
  ``__ray_call__`` (Ray runs its loop on a background thread too: other calls
  to the actor still run, and sharing state with the loop is the user's to
  synchronize). Each execution, the loop runs the actor's compiled methods in
  the graph's order, reading each input channel once, and writes each result
  to the channels that need it. An async method runs on the actor's event loop.

``execute()`` writes the input to the input channels and returns at once; a
``CompiledDAGRef``'s ``get`` reads the output channels in execution order
(results of earlier executions are kept for their own refs). Nothing goes
through the node: no scheduler, no object table, no task events.

Errors: a method's exception travels down the graph as an error record (later
methods of that execution are skipped) and is raised by ``get`` as the usual
``RayTaskError`` subclass; the next execution runs normally. A participating
actor that dies is noticed by any wait of the driver within ``WAIT_SLICE_S``:
the DAG is then broken, its channels closed (so every other loop exits) and
every ``get`` raises ``ActorDiedError``. ``teardown()`` (also on ``with`` exit,
at ``shutdown()`` and when the DAG is garbage collected) closes the channels,
waits for the loops to stop and unlinks every segment of the DAG.

Invariants: one compiled DAG per actor at a time (checked in the actor); the
driver is the only process that writes the input channels or reads the
output channels, and only from one thread at a time (as in Ray, ``execute``
is not thread-safe); each channel carries exactly one record per execution.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import os
import pickle as _pickle
import secrets
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Generic, TypeVar

from .._core.store import shm
from .._core.store.serialization import PLAIN_TYPES, deserialize_inline, serialize
from .._core.worker.worker import _trim_traceback as _trim_core_frames
from ..exceptions import (
    ActorDiedError,
    RayCgraphCapacityExceeded,
    RayChannelError,
    RayChannelTimeoutError,
    RayTaskError,
)
from . import channel as _ch
from .nodes import (
    ClassMethodNode,
    ClassNode,
    DAGInputData,
    DAGNode,
    FunctionNode,
    InputAttributeNode,
    InputNode,
    MultiOutputNode,
    _collect_nodes,
)

T = TypeVar("T")


def _env_number(name: str, default, kind=int):
    value = os.environ.get(name)
    return kind(float(value)) if value not in (None, "") else default


@dataclass
class DAGContext:
    """Settings of compiled DAGs in this process (Ray's ``ray.dag.DAGContext``).

    Defaults come from ``RAY_CGRAPH_<field>`` environment variables where set
    (``RAY_CGRAPH_get_timeout=30``), as in Ray; change them in code with
    ``DAGContext.get_current().get_timeout = 30``. ``experimental_compile``'s
    keyword arguments override them for one DAG.

    - ``submit_timeout``: seconds ``execute`` may wait for room in an input channel.
    - ``get_timeout``: seconds ``get`` waits for a result by default
      (``RayChannelTimeoutError`` after that).
    - ``teardown_timeout``: seconds ``teardown`` waits for the actors' loops to stop.
    - ``read_iteration_timeout``: kept for Ray compatibility; miniray's waits
      check peers every ``channel.WAIT_SLICE_S`` instead.
    - ``buffer_size_bytes``: bytes of one channel slot; larger values travel
      in a segment of their own.
    - ``max_inflight_executions``: executions submitted and not yet read
      (``RayCgraphCapacityExceeded`` beyond); also the slots of each channel.
    - ``max_buffered_results``: results read for refs not yet asked for.
    - ``overlap_gpu_communication``: accepted, unused (no GPU channels).
    """

    submit_timeout: float = _env_number("RAY_CGRAPH_submit_timeout", 10, float)
    get_timeout: float = _env_number("RAY_CGRAPH_get_timeout", 10, float)
    teardown_timeout: float = _env_number("RAY_CGRAPH_teardown_timeout", 30, float)
    read_iteration_timeout: float = _env_number("RAY_CGRAPH_read_iteration_timeout_s",
                                                0.1, float)
    buffer_size_bytes: int = _env_number("RAY_CGRAPH_buffer_size_bytes", 1_000_000)
    max_inflight_executions: int = _env_number("RAY_CGRAPH_max_inflight_executions", 10)
    max_buffered_results: int = _env_number("RAY_CGRAPH_max_buffered_results", 1000)
    overlap_gpu_communication: bool = False

    def __post_init__(self):
        if self.read_iteration_timeout > self.get_timeout:
            raise ValueError(
                f"read_iteration_timeout ({self.read_iteration_timeout}) must be at most "
                f"get_timeout ({self.get_timeout})")

    @staticmethod
    def get_current() -> "DAGContext":
        """This process's context (created with the defaults on first use)."""
        global _default_context
        with _context_lock:
            if _default_context is None:
                _default_context = DAGContext()
            return _default_context


_default_context: DAGContext | None = None
_context_lock = threading.Lock()


class DAGOperationFuture(abc.ABC, Generic[T]):
    """The result of one operation of a compiled DAG inside an actor (Ray's
    abstraction for values that may still be in flight, e.g. on a GPU stream).
    miniray's channels deliver values complete, so its futures are resolved."""

    @abc.abstractmethod
    def wait(self) -> T:
        """The operation's result."""


class ResolvedFuture(DAGOperationFuture):
    """A future whose value is already there."""

    def __init__(self, result):
        self._result = result

    def wait(self):
        return self._result


# -- the graph, as the actors run it ----------------------------------------------------
_INPUT = -1  # producer key of the DAG's input; methods are 0, 1, ...


def _input_path(node) -> list:
    """``inp[0]["x"]`` as [(0, "__getitem__"), ("x", "__getitem__")]."""
    path = []
    while isinstance(node, InputAttributeNode):
        path.append((node._key, node._accessor))
        node = node._bound_other_args_to_resolve["input"]
    path.reverse()
    return path


def _select(value, path):
    for i, (key, accessor) in enumerate(path):
        if i == 0 and isinstance(value, DAGInputData):
            try:
                value = value[key]
            except (IndexError, KeyError):
                raise ValueError(
                    f"the DAG reads input {key!r}, but execute() was called with "
                    f"{len(value._args)} positional and keyword arguments "
                    f"{sorted(value._kwargs)}") from None
        elif accessor == "__getattr__":
            value = getattr(value, key)
        else:
            value = value[key]
    return value


class _Failure:
    """An error record travelling down an execution (the error's pickled bytes)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data


def _error_bytes(name: str, exc: BaseException) -> bytes:
    error = RayTaskError.from_exception(name, exc, pid=os.getpid())
    error.traceback_str = _trim_traceback(error.traceback_str)
    try:
        data = serialize(error).to_inline()
        deserialize_inline(data)  # its class must rebuild in the caller too
        return data
    except Exception:
        error.cause = None
        return serialize(error).to_inline()


def _trim_traceback(text: str) -> str:
    """Drop the loop's own frames from a method's traceback."""
    return _trim_core_frames(text, own=f"{os.sep}miniray{os.sep}dag{os.sep}")


# -- inside each actor ------------------------------------------------------------------
_active = None  # the _ActorLoop of this process, if any
_active_lock = threading.Lock()

_CONTROL_RUNNING, _CONTROL_EXITED = 1, 2


class _ActorLoop:
    """The compiled part of one actor: its methods, run once per execution."""

    def __init__(self, actor, spec: dict):
        self.token = spec["token"]
        nslots, slot_size = spec["nslots"], spec["slot_size"]
        self.node_pid = spec["node_pid"]
        self.channels: list = []
        self.ending = False  # run() is past its last execution (its channels may be gone)
        try:
            self.inputs = {}
            for key, name in spec["inputs"]:
                self.inputs[key] = self._open(name, nslots, slot_size, None)
            outputs = {}
            for name, notify in spec["outputs"]:
                outputs[name] = self._open(name, nslots, slot_size, notify)
            self.control = _ch.Channel(spec["control"], 1, _ch.HEADER, doorbell=False)
            self.channels.append(self.control)
            self.loop = getattr(_client(), "loop", None)
            self.records = None  # per execution: producer key -> value (or _Failure)
            self.tasks = []
            for key, method_name, args, kwargs, outs in spec["tasks"]:
                method = getattr(actor, method_name)
                is_coroutine = inspect.iscoroutinefunction(method)
                if is_coroutine and self.loop is None:  # pragma: no cover - async actors
                    raise RuntimeError("an async method needs the actor's event loop")
                name = f"{type(actor).__name__}.{method_name}"
                self.tasks.append((key, method, is_coroutine, args, kwargs,
                                   [outputs[n] for n in outs], name))
            self.control_word = _control_word(self.control, spec["index"])
        except BaseException:
            self.close()
            raise
        self.thread = threading.Thread(target=self.run, name=f"miniray-cdag-{self.token}",
                                       daemon=True)

    def _open(self, name, nslots, slot_size, notify):
        channel = _ch.Channel(name, nslots, slot_size, notify)
        self.channels.append(channel)
        return channel

    def stopping(self) -> bool:
        # ``ending`` too: once the loop has released its channels there are none
        # left to ask, but its thread may still be alive for a moment.
        return self.ending or any(channel.closed for channel in self.channels)

    def run(self) -> None:
        try:
            _set_control(self.control_word, self.control, _CONTROL_RUNNING)
            while True:
                self.run_once()
        except _ch.ChannelClosed:
            pass
        except BaseException:  # exit_actor() in a method, or a bug here: say so
            import traceback

            traceback.print_exc()
        finally:
            self.ending = True
            # Closing passes the stop down the graph: the next loop, then the
            # driver, stop waiting on us (after a teardown they are closed already).
            for channel in self.channels:
                channel.close()
            _set_control(self.control_word, self.control, _CONTROL_EXITED)
            self.control_word = None  # its buffer export would keep the mapping open
            self.close()

    def close(self) -> None:
        for channel in self.channels:
            channel.release()
        self.channels = []

    def run_once(self) -> None:
        self.records = records = {}
        value_of = self.value_of
        for key, method, is_coroutine, arg_specs, kwarg_specs, outs, name in self.tasks:
            failure = args = kwargs = None
            try:
                if len(arg_specs) == 1 and not kwarg_specs:  # the common chain link
                    args = [value_of(arg_specs[0])]
                    if type(args[0]) is _Failure:
                        failure = args[0]
                    kwargs = {}
                else:
                    args = [value_of(spec) for spec in arg_specs]
                    kwargs = {k: value_of(spec) for k, spec in kwarg_specs.items()}
                    for value in (*args, *kwargs.values()):
                        if type(value) is _Failure:
                            failure = value
                            break
            except _ch.ChannelClosed:
                raise
            except Exception as exc:  # an input part that is not there
                failure = _Failure(_error_bytes(name, exc))
            if failure is None:
                try:
                    if is_coroutine:
                        result = asyncio.run_coroutine_threadsafe(
                            method(*args, **kwargs), self.loop).result()
                    else:
                        result = method(*args, **kwargs)
                except Exception as exc:
                    failure = _Failure(_error_bytes(name, exc))
            del args, kwargs
            if failure is not None:
                records[key] = failure
                for channel in outs:
                    channel.write_error(failure.data)
                continue
            records[key] = result
            if outs:
                _write_all(outs, result, name, None, None, self.node_pid, self.token)
        self.records = None

    def value_of(self, spec):
        """An argument's value in this execution: a constant, the input (or a
        part of it), or a method's result (read from its channel once)."""
        kind = spec[0]
        if kind == "c":
            return spec[1]
        key = _INPUT if kind == "i" or kind == "a" else spec[1]
        records = self.records
        if key in records:
            value = records[key]
        else:
            record_kind, value = self.inputs[key].read()
            if record_kind == _ch.ERROR:
                value = _Failure(value)
            records[key] = value
        if key == _INPUT and type(value) is not _Failure:
            args, kwargs = value
            if kind == "i":  # the InputNode itself: execute() took one argument
                return args[0]
            # inp[0], inp.key: the first key picks an argument of execute(), as in Ray.
            return _select(DAGInputData(*args, **kwargs), spec[1])
        return value


def _write_all(channels, value, name, timeout, check, node_pid, token,
               plain: bool = False) -> None:
    """Write ``value`` to each channel, serialized once; a value that cannot be
    serialized goes as its error. ``plain``: the caller checked :func:`is_plain`."""
    if plain or _ch.is_plain(value):
        data = _pickle.dumps(value, 5)
        if len(data) + _ch.SLOT_HEADER <= channels[0].slot_size:
            for channel in channels:
                channel.write_pickle(data, timeout, check)
            return
    try:
        serialized = serialize(value, f"the result of {name}")
    except Exception as exc:
        if name == _INPUT_NAME:
            raise
        data = _error_bytes(name, exc)
        for channel in channels:
            channel.write_error(data, timeout, check)
        return
    for channel in channels:
        channel.write_serialized(serialized, timeout, check, node_pid, token)


_INPUT_NAME = "the input of a compiled DAG"


def _control_word(control, index: int):
    import ctypes

    return ctypes.c_uint32.from_buffer(control.mm, _ch.HEADER + 64 * index)


def _set_control(word, control, state: int) -> None:
    import ctypes

    word.value = state
    _ch.futex_wake(ctypes.addressof(word))


def _client():
    from .._core.refs import get_client

    return get_client()


def _start_actor_loop(actor, spec: dict):
    """Run in the actor by ``__ray_call__``: start its compiled loop; returns
    the actor's pid (the driver watches it)."""
    global _active
    with _active_lock:
        current = _active
        if current is not None and current.thread.is_alive():
            if not current.stopping():
                raise ValueError(
                    f"This actor ({type(actor).__name__}) is already part of a compiled "
                    f"DAG; an actor runs one compiled DAG at a time. Call teardown() on "
                    f"that DAG before compiling another one with this actor.")
            current.thread.join(5)  # a DAG dropped without waiting: its loop is ending
        loop = _ActorLoop(actor, spec)
        loop.thread.start()
        _active = loop
    return os.getpid()


# -- in the driver ----------------------------------------------------------------------
_live: "weakref.WeakSet[CompiledDAG]" = weakref.WeakSet()


def _teardown_all() -> None:
    for dag in list(_live):
        dag.teardown()


def _check_not_on_node_loop() -> None:
    """Compiling waits for the actors to start their loops, through the node: it
    cannot block the event loop the node itself runs on."""
    from .._core.loop import running_loop

    loop = running_loop()
    if loop is None:
        return
    from .. import api

    if getattr(api._runtime, "loop", None) is loop:
        raise RuntimeError(
            "dag.experimental_compile() was called on the event loop that the miniray node "
            "runs on (init() was called inside this loop's async code); it waits for the "
            "actors to start their compiled loops, which needs that loop. Compile in a "
            "thread (`await loop.run_in_executor(None, dag.experimental_compile)`) or call "
            "miniray.init() from synchronous code.")


def _in_loop_thread(loop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _record_value(record):
    kind, value = record
    if kind == _ch.ERROR:
        from .._core.client import rebuild_error

        raise rebuild_error(value)
    return value


class CompiledDAGRef:
    """The result of one ``CompiledDAG.execute``: ``ray.get(ref)`` or
    ``ref.get(timeout)`` returns it (once, as in Ray). Cannot be copied,
    pickled or passed to tasks; ``ray.wait`` does not take it."""

    __slots__ = ("_dag", "_execution_index", "_channel_index", "_ray_get_called")
    _compiled_dag_result = True  # miniray.get() hands it to get()

    def __init__(self, dag: "CompiledDAG", execution_index: int,
                 channel_index: int | None = None):
        self._dag = dag
        self._execution_index = execution_index
        self._channel_index = channel_index
        self._ray_get_called = False

    def __str__(self):
        return (f"CompiledDAGRef({self._dag.get_id()}, execution_index="
                f"{self._execution_index}, channel_index={self._channel_index})")

    __repr__ = __str__

    def __copy__(self):
        raise ValueError("CompiledDAGRef cannot be copied.")

    def __deepcopy__(self, memo):
        raise ValueError("CompiledDAGRef cannot be deep copied.")

    def __reduce__(self):
        raise ValueError("CompiledDAGRef cannot be pickled: get its value with "
                         "ray.get(ref) and pass the value instead.")

    def __del__(self):
        if not self._ray_get_called:
            try:
                self._dag._drop(self._execution_index, self._channel_index)
            except Exception:  # pragma: no cover - interpreter shutdown
                pass

    def get(self, timeout: float | None = None):
        """The value (or the method's error, raised). ``timeout`` None waits
        ``DAGContext.get_timeout`` seconds, -1 for ever; ``RayChannelTimeoutError``
        after that (the ref can then be asked again)."""
        if self._ray_get_called:
            raise ValueError("ray.get() can only be called once on a CompiledDAGRef, "
                             "and it was already called.")
        record = self._dag._result(self._execution_index, self._channel_index, timeout)
        self._ray_get_called = True
        return _record_value(record)


class CompiledDAGFuture:
    """The result of one ``await CompiledDAG.execute_async(...)``: ``await`` it
    (once) for the value."""

    __slots__ = ("_dag", "_execution_index", "_fut", "_channel_index")

    def __init__(self, dag, execution_index: int, fut, channel_index: int | None = None):
        self._dag = dag
        self._execution_index = execution_index
        self._fut = fut
        self._channel_index = channel_index

    def __str__(self):
        return (f"CompiledDAGFuture({self._dag.get_id()}, execution_index="
                f"{self._execution_index}, channel_index={self._channel_index})")

    __repr__ = __str__

    def __copy__(self):
        raise ValueError("CompiledDAGFuture cannot be copied.")

    def __deepcopy__(self, memo):
        raise ValueError("CompiledDAGFuture cannot be deep copied.")

    def __reduce__(self):
        raise ValueError("CompiledDAGFuture cannot be pickled.")

    def __await__(self):
        if self._fut is None:
            raise ValueError("CompiledDAGFuture can only be awaited upon once, and it "
                             "has already been awaited upon.")
        fut, self._fut = self._fut, None
        records = yield from fut.__await__()
        return _record_value(records[self._channel_index or 0])


class CompiledDAG:
    """A DAG compiled by :meth:`DAGNode.experimental_compile`: see the module doc."""

    def __init__(self, root: DAGNode, submit_timeout=None, buffer_size_bytes=None,
                 enable_asyncio: bool = False, max_inflight_executions=None,
                 max_buffered_results=None):
        _ch.check_platform()
        ctx = DAGContext.get_current()
        self._submit_timeout = ctx.submit_timeout if submit_timeout is None \
            else submit_timeout
        self._get_timeout = ctx.get_timeout
        self._teardown_timeout = ctx.teardown_timeout
        self._slot_size = int(buffer_size_bytes or ctx.buffer_size_bytes)
        self._max_inflight = int(ctx.max_inflight_executions
                                 if max_inflight_executions is None
                                 else max_inflight_executions)
        self._max_buffered = int(max_buffered_results or ctx.max_buffered_results)
        if self._slot_size < 256:
            raise ValueError(f"_buffer_size_bytes must be at least 256, got {self._slot_size}")
        if self._max_inflight < 1:
            raise ValueError("_max_inflight_executions must be at least 1, got "
                             f"{self._max_inflight}")
        self._enable_asyncio = bool(enable_asyncio)
        self._token = secrets.token_hex(4)
        self._torn_down = False
        # Why the DAG cannot run any more (an actor died): a new error is raised
        # each time, so no traceback (and the channel views its frames hold) piles up.
        self._broken: tuple | None = None
        self._execution_index = -1   # the last execution submitted
        self._finished_index = -1    # the last execution whose outputs were read
        self._partial: list = []     # output records of the next execution read so far
        self._results: dict = {}     # execution -> [record or None per output]
        self._dropped: dict = {}     # execution -> output positions nobody will ask for
        self._futures: dict = {}     # execution -> asyncio future (enable_asyncio)
        self._loop = None
        self._fifo_fd = -1
        self._fifo_path = None
        self._liveness_timer = None
        self._channels: list = []
        self._segments: list = []
        self._analyze(root)
        try:
            self._setup()
        except BaseException:
            self.teardown()
            raise
        _live.add(self)
        from .._core import hooks

        if _teardown_all not in hooks.shutdown_callbacks:
            hooks.shutdown_callbacks.append(_teardown_all)

    # -- compiling ----------------------------------------------------------------------
    def _analyze(self, root: DAGNode) -> None:
        order = root.topological_order()
        if isinstance(root, MultiOutputNode):
            outputs = list(root._bound_args[0])
            self._returns_list = True
        else:
            outputs = [root]
            self._returns_list = False
        methods = []
        inputs = []
        for node in order:
            if isinstance(node, FunctionNode):
                raise NotImplementedError(
                    f"Compiled DAGs run actor methods only, and this DAG calls the task "
                    f"{node._describe()!r}. Make it a method of an actor (created with "
                    ".remote() before compiling) and bind that, or run the DAG "
                    "uncompiled with dag.execute(...).")
            if isinstance(node, ClassNode):
                raise ValueError(
                    "Compiled DAGs can only bind methods of an actor that is already "
                    f"created with Actor.remote(); this DAG creates {node._describe()} "
                    "inside it. Create the actor first and bind handle.method.bind(...).")
            if isinstance(node, MultiOutputNode) and node is not root:
                raise ValueError("A MultiOutputNode can only be the DAG's output (its root).")
            if isinstance(node, InputNode):
                inputs.append(node)
            elif isinstance(node, ClassMethodNode):
                parent = node._bound_other_args_to_resolve["parent"]
                if isinstance(parent, DAGNode):
                    raise ValueError(
                        "Compiled DAGs can only bind methods of an actor that is already "
                        "created with Actor.remote(); create the actor first and bind "
                        "handle.method.bind(...).")
                if node._bound_options:
                    raise ValueError(
                        f"Compiled DAGs do not take per-call options; {node._describe()} "
                        f"has {sorted(node._bound_options)}.")
                methods.append(node)
            elif not isinstance(node, (InputAttributeNode, MultiOutputNode)):
                raise ValueError(f"Compiled DAGs cannot run a {type(node).__name__}.")
        if len(inputs) != 1:
            raise NotImplementedError(
                f"Compiled DAGs need exactly one InputNode, this DAG has {len(inputs)}: "
                "build it inside `with InputNode() as inp:` and bind inp (or its parts).")
        for node in outputs:
            if not isinstance(node, ClassMethodNode):
                raise ValueError(
                    f"The outputs of a compiled DAG must be actor method calls; got a "
                    f"{type(node).__name__}.")
        key_of = {id(node): i for i, node in enumerate(methods)}
        self._method_nodes = methods
        self._outputs = [key_of[id(node)] for node in outputs]

        def arg_spec(value, where):
            if isinstance(value, ClassMethodNode):
                return ("n", key_of[id(value)])
            if isinstance(value, InputNode):
                return ("i",)
            if isinstance(value, InputAttributeNode):
                return ("a", _input_path(value))
            if isinstance(value, DAGNode):  # pragma: no cover - rejected above
                raise ValueError(f"Compiled DAGs cannot pass a {type(value).__name__}")
            nested: list = []
            _collect_nodes(value, nested)
            if nested:
                raise ValueError(
                    f"{where} passes a DAG node inside a {type(value).__name__}; compiled "
                    "DAGs take DAG nodes only as direct arguments. Bind each one as an "
                    "argument of its own.")
            return ("c", value)

        used_by: dict = {}     # producer key -> set of consumer actor ids (or "driver")
        actor_of: dict = {}
        self._handles: dict = {}
        self._direct_input = False
        self._input_positions: set = set()
        self._input_keys: set = set()
        tasks = []
        for key, node in enumerate(methods):
            handle = node._bound_other_args_to_resolve["parent"]
            actor = handle._id
            self._handles.setdefault(actor, handle)
            actor_of[key] = actor
            where = f"{node._describe()}.bind()"
            args = [arg_spec(a, where) for a in node._bound_args]
            kwargs = {k: arg_spec(v, where) for k, v in node._bound_kwargs.items()}
            for spec in (*args, *kwargs.values()):
                if spec[0] == "n":
                    used_by.setdefault(spec[1], set()).add(actor)
                elif spec[0] in ("i", "a"):
                    used_by.setdefault(_INPUT, set()).add(actor)
                    if spec[0] == "i":
                        self._direct_input = True
                    else:
                        first = spec[1][0][0]
                        if isinstance(first, int):
                            self._input_positions.add(first)
                        else:
                            self._input_keys.add(first)
            tasks.append((key, node._method_name, args, kwargs))
        for key in self._outputs:
            used_by.setdefault(key, set()).add("driver")
        self._tasks = tasks
        self._actor_of = actor_of
        self._used_by = used_by

    def _setup(self) -> None:
        from .._core.refs import get_client

        client = get_client()
        if client is None:
            raise RuntimeError("miniray is not initialized: call miniray.init() first")
        _check_not_on_node_loop()
        self._node_pid = getattr(client, "node_pid", None) or client.runtime.node_pid
        nslots, slot_size = self._max_inflight, self._slot_size
        token = self._token

        def new_channel():
            name = _ch.create(self._node_pid, token, len(self._segments), nslots, slot_size)
            self._segments.append(name)
            return name

        def open_channel(name, doorbell=True):
            # Kept at once: a failure later in setup still releases it (teardown).
            channel = _ch.Channel(name, nslots, slot_size, doorbell=doorbell)
            self._channels.append(channel)
            return channel

        control = _ch.segment_name(self._node_pid, token, "k")
        fd = shm.create(control, _ch.HEADER + _ch.HEADER)
        try:
            shm.reserve(fd, 0, 2 * _ch.HEADER)
        finally:
            os.close(fd)
        self._segments.append(control)
        self._control = _ch.Channel(control, 1, _ch.HEADER, doorbell=False)
        self._channels.append(self._control)
        if self._enable_asyncio:
            self._fifo_path = os.path.join(shm.SHM_DIR,
                                           _ch.segment_name(self._node_pid, token, "f"))
            os.mkfifo(self._fifo_path, 0o600)
            self._fifo_fd = os.open(self._fifo_path, os.O_RDONLY | os.O_NONBLOCK
                                    | os.O_NOFOLLOW | os.O_CLOEXEC)
        actors = list(self._handles)
        if len(actors) > (_ch.HEADER // 64):
            raise ValueError(f"A compiled DAG can span at most {_ch.HEADER // 64} actors")
        specs = {actor: {"token": token, "nslots": nslots, "slot_size": slot_size,
                         "node_pid": self._node_pid, "inputs": [], "outputs": [],
                         "control": control, "index": i, "tasks": []}
                 for i, actor in enumerate(actors)}
        # Channels: the input to each actor reading it; each result to each other
        # actor reading it, and to the driver for the outputs.
        out_names: dict = {}   # producer key -> [channel names]
        self._input_channels = []
        self._output_channels = {}
        for producer, consumers in self._used_by.items():
            for consumer in sorted(consumers, key=str):
                if producer != _INPUT and consumer == self._actor_of[producer]:
                    continue  # same actor: handed over in memory
                name = new_channel()
                if consumer == "driver":
                    self._output_channels[producer] = name
                else:
                    specs[consumer]["inputs"].append((producer, name))
                if producer == _INPUT:
                    self._input_channels.append(name)
                else:
                    out_names.setdefault(producer, []).append(name)
        for key, method_name, args, kwargs in self._tasks:
            actor = self._actor_of[key]
            outs = out_names.get(key, [])
            for name in outs:
                notify = self._fifo_path if name == self._output_channels.get(key) else None
                specs[actor]["outputs"].append((name, notify))
            specs[actor]["tasks"].append((key, method_name, args, kwargs, outs))
        self._input_channels = [open_channel(n) for n in self._input_channels]
        self._out_channel_by_key = {k: open_channel(n)
                                    for k, n in self._output_channels.items()}
        # Read order: each distinct output node once per execution.
        self._read_keys = list(dict.fromkeys(self._outputs))
        self._read_channels = [self._out_channel_by_key[k] for k in self._read_keys]
        self._single_read = len(self._read_channels) == 1
        # The driver holds every channel (also actor-to-actor ones), so that teardown
        # and a dead actor close them all and every loop wakes up.
        opened = {ch.name for ch in self._channels}
        for name in self._segments:
            if name not in opened:
                open_channel(name)
        refs = [self._handles[actor].__ray_call__.remote(_start_actor_loop, specs[actor])
                for actor in actors]
        self._actor_pids = {}
        pids = client.get(refs, self._teardown_timeout)
        for actor, pid in zip(actors, pids):
            self._actor_pids[actor] = pid
        self._started = True

    # -- state --------------------------------------------------------------------------
    def get_id(self) -> str:
        return self._token

    @property
    def is_teardown(self) -> bool:
        return self._torn_down

    def _check_usable(self) -> None:
        if self._torn_down:
            raise RayChannelError(
                "This compiled DAG was torn down; compile the DAG again to run it.")
        if self._broken is not None:
            raise self._broken_error()

    def _broken_error(self) -> BaseException:
        cls, args, kwargs = self._broken
        return cls(*args, **kwargs)

    def _check_alive(self) -> None:
        """Between waits: a dead actor breaks the DAG (nothing would wake us)."""
        for actor, pid in self._actor_pids.items():
            if not _ch.pid_alive(pid):
                self._break(ActorDiedError, (
                    f"The actor {self._handles[actor]._class_name} (pid {pid}) of this "
                    "compiled DAG died; the DAG cannot run any more. Tear it down and "
                    "compile it again with live actors.",), {"actor_id": actor})

    def _break(self, cls, args, kwargs):
        if self._broken is None:
            self._broken = (cls, args, kwargs)
            for channel in self._channels:
                channel.close()
            for fut in self._futures.values():
                if not fut.done():
                    fut.set_exception(self._broken_error())
            self._futures.clear()
        raise self._broken_error()

    def _loop_stopped(self):
        """A channel was closed under us, and not by teardown: an actor's loop ended
        (``exit_actor()`` in a method, or an error in the loop itself)."""
        self._check_usable()
        self._break(RayChannelError, (
            "An actor's loop of this compiled DAG stopped (exit_actor() in a method, or "
            "an error in the loop: see the actor's output); the DAG cannot run any more. "
            "Tear it down and compile it again.",), {})

    def _check_inputs(self, args: tuple, kwargs: dict) -> None:
        if self._direct_input:
            if len(args) != 1 or kwargs:
                raise ValueError(
                    "This compiled DAG binds its InputNode directly, so execute() takes "
                    f"one positional argument; got {len(args)} positional and "
                    f"{len(kwargs)} keyword arguments.")
            return
        needed = max(self._input_positions) + 1 if self._input_positions else 0
        if len(args) != needed:
            raise ValueError(f"dag.execute() or dag.execute_async() must be called with "
                             f"{needed} positional args, got {len(args)}")
        for key in self._input_keys:
            if key not in kwargs:
                raise ValueError(f"dag.execute() or dag.execute_async() must be called "
                                 f"with kwarg `{key}`")

    # -- executing ----------------------------------------------------------------------
    def _submit(self, args, kwargs) -> int:
        self._check_usable()
        self._check_inputs(args, kwargs)
        if self._dropped:
            self._release_dropped()
        inflight = self._execution_index - self._finished_index
        if inflight >= self._max_inflight:
            raise RayCgraphCapacityExceeded(
                f"The compiled graph can't have more than {self._max_inflight} in-flight "
                f"executions, and you currently have {inflight} in-flight executions. "
                "Retrieve an output using ray.get before submitting more requests or "
                "increase `_max_inflight_executions` "
                "(`dag.experimental_compile(_max_inflight_executions=...)`).")
        try:
            _write_all(self._input_channels, (args, kwargs), _INPUT_NAME,
                       self._submit_timeout, self._check_alive, self._node_pid, self._token,
                       len(args) == 1 and not kwargs and type(args[0]) in PLAIN_TYPES)
        except RayChannelTimeoutError as exc:
            raise RayChannelTimeoutError(
                "execute() waited longer than the submit timeout "
                f"({self._submit_timeout} s) for room in the DAG's input channel. If an "
                "execution is expected to take that long, raise "
                "experimental_compile(_submit_timeout=...) or RAY_CGRAPH_submit_timeout.") \
                from exc
        except _ch.ChannelClosed:
            self._loop_stopped()
        self._execution_index += 1
        return self._execution_index

    def execute(self, *args, **kwargs):
        """Run the DAG once on ``args``/``kwargs`` (what its InputNode stands
        for). Returns a :class:`CompiledDAGRef` at once (a list of them for a
        MultiOutputNode). Raises ``RayCgraphCapacityExceeded`` when
        ``_max_inflight_executions`` results are waiting to be read."""
        if self._enable_asyncio:
            raise ValueError("Use execute_async if enable_asyncio=True")
        index = self._submit(args, kwargs)
        if self._returns_list:
            return [CompiledDAGRef(self, index, i) for i in range(len(self._outputs))]
        return CompiledDAGRef(self, index)

    async def execute_async(self, *args, **kwargs):
        """``execute`` for async code (compile with ``enable_asyncio=True``):
        ``fut = await dag.execute_async(x)``, then ``await fut`` for the value."""
        if not self._enable_asyncio:
            raise ValueError("Use execute if enable_asyncio=False")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            loop.add_reader(self._fifo_fd, self._on_output_ready)
        elif self._loop is not loop:
            raise RuntimeError("A compiled DAG with enable_asyncio runs on the event loop "
                               "of its first execute_async; this is another loop.")
        # No lock (Ray takes one): _submit never awaits, so submissions from several
        # tasks of this loop cannot interleave.
        index = self._submit(args, kwargs)
        fut = loop.create_future()
        self._futures[index] = fut
        if self._liveness_timer is None:
            self._liveness_timer = loop.call_later(_ch.WAIT_SLICE_S * 2, self._watch_async)
        if self._returns_list:
            return [CompiledDAGFuture(self, index, fut, i) for i in range(len(self._outputs))]
        return CompiledDAGFuture(self, index, fut)

    def _on_output_ready(self) -> None:
        """The event loop's reader of the output FIFO: resolve finished executions."""
        if self._fifo_fd < 0:
            return
        try:
            os.read(self._fifo_fd, 4096)  # more left: the loop calls again (level-triggered)
        except BlockingIOError:
            pass
        while self._futures and not self._torn_down and self._broken is None:
            try:
                records = self._read_next(0)
            except RayChannelTimeoutError:
                return
            except BaseException as exc:  # the DAG broke: _break failed the futures
                if self._broken is None:
                    raise
                del exc
                return
            fut = self._futures.pop(self._finished_index, None)
            if fut is not None and not fut.done():
                fut.set_result(records)

    def _watch_async(self) -> None:
        self._liveness_timer = None
        if not self._futures or self._torn_down:
            return
        try:
            self._check_alive()
        except BaseException:
            return
        self._on_output_ready()
        if self._futures:
            self._liveness_timer = self._loop.call_later(_ch.WAIT_SLICE_S * 2,
                                                         self._watch_async)

    def _read_next(self, timeout) -> list:
        """The output records of execution ``_finished_index + 1``."""
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        channels = self._read_channels
        partial = self._partial
        try:
            while len(partial) < len(channels):
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                channel = channels[len(partial)]
                if left == 0 and not channel.ready():
                    raise RayChannelTimeoutError("no result yet")
                partial.append(channel.read(left, self._check_alive))
        except _ch.ChannelClosed:
            self._loop_stopped()
        self._partial = []
        self._finished_index += 1
        by_key = dict(zip(self._read_keys, partial))
        return [by_key[k] for k in self._outputs]

    def _result(self, index: int, position: int | None, timeout):
        """The record of output ``position`` of execution ``index``, reading the
        outputs of every execution up to it."""
        if self._torn_down:
            raise RayChannelError(
                "This compiled DAG was torn down; its results are gone.")
        if timeout is None:
            timeout = self._get_timeout
        if index == self._finished_index + 1 and self._single_read and not self._partial \
                and self._broken is None and not self._dropped:
            # The common case (one output, read in order): no bookkeeping.
            try:
                record = self._read_channels[0].read(timeout, self._check_alive)
            except RayChannelTimeoutError as exc:
                raise RayChannelTimeoutError(self._get_timeout_message(timeout)) from exc
            except _ch.ChannelClosed:
                self._loop_stopped()
            self._finished_index = index
            if len(self._outputs) == 1:
                return record
            self._store(index, [record] * len(self._outputs))
            return self._take(index, position)
        deadline = None if timeout < 0 else time.monotonic() + timeout
        while self._finished_index < index:
            if self._broken is not None:
                raise self._broken_error()
            if len(self._results) >= self._max_buffered:
                raise RayCgraphCapacityExceeded(
                    f"The compiled graph can't have more than {self._max_buffered} "
                    "buffered results; get the results of earlier executions first, or "
                    "raise `_max_buffered_results`.")
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                records = self._read_next(left)
            except RayChannelTimeoutError as exc:
                raise RayChannelTimeoutError(self._get_timeout_message(timeout)) from exc
            self._store(self._finished_index, records)
        if self._broken is not None and index not in self._results:
            raise self._broken_error()
        return self._take(index, position)

    @staticmethod
    def _get_timeout_message(timeout) -> str:
        return (f"The compiled DAG's result was not ready after {timeout} s. If the "
                "execution is expected to take that long, pass a larger timeout to "
                "get() or raise RAY_CGRAPH_get_timeout; otherwise the execution may "
                "be hanging.")

    def _store(self, index: int, records: list) -> None:
        dropped = self._dropped.pop(index, None)
        if dropped is not None:
            if None in dropped or len(dropped) >= len(records):
                return
            records = [None if i in dropped else r for i, r in enumerate(records)]
        self._results[index] = records

    def _take(self, index: int, position: int | None):
        records = self._results[index]
        i = position or 0
        record = records[i]
        records[i] = None
        if all(r is None for r in records):
            del self._results[index]
        return record

    def _drop(self, index: int, position: int | None) -> None:
        """A ref was dropped without ``get``: its result is discarded when read."""
        if self._torn_down:
            return
        if index in self._results:
            records = self._results[index]
            records[position or 0] = None
            if all(r is None for r in records):
                del self._results[index]
        elif index > self._finished_index:
            self._dropped.setdefault(index, set()).add(position)

    def _release_dropped(self) -> None:
        """Read (and discard) executions nobody will ask for, so they stop counting
        as in flight: those finished already, and, when the DAG is at its in-flight
        limit, the oldest ones also by waiting for them (they hold the slots; only
        results someone still holds a ref to make ``RayCgraphCapacityExceeded``)."""
        while not self._enable_asyncio:
            index = self._finished_index + 1
            dropped = self._dropped.get(index)
            if dropped is None or not (None in dropped or len(dropped) >= len(self._outputs)):
                return
            full = self._execution_index - self._finished_index >= self._max_inflight
            try:
                records = self._read_next(self._get_timeout if full else 0)
            except RayChannelTimeoutError:
                if full:
                    raise RayChannelTimeoutError(self._get_timeout_message(
                        self._get_timeout)) from None
                return
            self._store(self._finished_index, records)

    # -- teardown -----------------------------------------------------------------------
    def teardown(self, kill_actors: bool = False, _wait: bool = True) -> None:
        """Stop the actors' loops and free every channel. Safe to call twice.
        ``kill_actors=True`` also kills the participating actors."""
        if self._torn_down:
            return
        self._torn_down = True
        _live.discard(self)
        for channel in self._channels:
            channel.close()
        loop = self._loop
        if loop is not None and loop.is_running() and not _in_loop_thread(loop):
            loop.call_soon_threadsafe(self._detach_loop)  # its futures and reader
        elif loop is not None and not loop.is_closed():
            self._detach_loop()
        else:
            self._close_fifo()
        if _wait and getattr(self, "_started", False):
            self._wait_loops()
        if kill_actors:
            import miniray

            for handle in self._handles.values():
                try:
                    miniray.kill(handle)
                except Exception:
                    pass
        for channel in self._channels:
            channel.release()
        self._channels = []
        for name in self._segments:
            shm.unlink(name)
        for name in _ch.dag_segments(self._token):
            shm.unlink(name)

    def _wait_loops(self) -> None:
        import ctypes

        # A broken DAG's surviving loops may be inside a long method call: they
        # stop at their next channel operation; teardown does not wait for that.
        wait_s = self._teardown_timeout if self._broken is None else \
            min(1.0, self._teardown_timeout)
        deadline = time.monotonic() + wait_s
        control = self._control
        for index, (actor, pid) in enumerate(self._actor_pids.items()):
            word = _control_word(control, index)
            address = ctypes.addressof(word)
            while word.value != _CONTROL_EXITED and _ch.pid_alive(pid):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                _ch.futex_wait(address, word.value, min(left, _ch.WAIT_SLICE_S))
            del word

    def _detach_loop(self) -> None:
        error = RayChannelError("The compiled DAG was torn down before this result came.")
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(error)
        self._futures.clear()
        if self._liveness_timer is not None:
            self._liveness_timer.cancel()
            self._liveness_timer = None
        if self._fifo_fd >= 0:
            self._loop.remove_reader(self._fifo_fd)
        self._close_fifo()

    def _close_fifo(self) -> None:
        if self._fifo_fd >= 0:
            os.close(self._fifo_fd)
            self._fifo_fd = -1
        if self._fifo_path is not None:
            try:
                os.unlink(self._fifo_path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "CompiledDAG":
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()

    def __del__(self):
        if not getattr(self, "_torn_down", True):
            try:
                self.teardown(_wait=False)
            except Exception:  # pragma: no cover - interpreter shutdown
                pass

    def __reduce__(self):
        raise TypeError("A CompiledDAG lives in the driver that compiled it; it cannot "
                        "be pickled or passed to tasks.")

    def __repr__(self) -> str:
        return (f"CompiledDAG(id={self._token}, actors={len(self._handles)}, "
                f"torn_down={self._torn_down})")
