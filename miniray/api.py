"""miniray's public core API, with Ray's names and semantics."""

from __future__ import annotations

import atexit
import inspect
import os
import sys
import threading
import time

from ._core import caller as _caller
from ._core.caller import ASYNC_CODE as _ASYNC_CODE
from ._core.caller import NOT_A_DEF as _NOT_A_DEF
from ._core import hooks as _hooks
from ._core import refs as _refs
from ._core.actor import ActorClass, ActorHandle, exit_actor, method
from ._core.client import describe_timeout
from ._core.loop import running_loop
from ._core.generators import ObjectRefGenerator as _ObjectRefGenerator
from ._core.refs import ObjectRef
from ._core.remote_function import RemoteFunction

_getframe = sys._getframe
_lock = threading.RLock()
_runtime = None
_namespace = "default"
_init_info: dict = {}

__all__ = [
    "init", "shutdown", "is_initialized", "remote", "put", "get", "wait", "cancel", "kill",
    "get_actor", "method", "available_resources", "cluster_resources", "nodes",
    "get_runtime_context", "ObjectRef", "exit_actor",
]


def _detect_gpus() -> int:
    from ._core.node.state import detect_gpus

    return detect_gpus()


class RayContext(dict):
    """What ``init()`` returns: a dict with the node's address info.

    The dashboard's token is a secret: it is not one of the dict's items, so
    printing or logging the context never shows it. Ask for it by name,
    ``ctx.dashboard_token``, to open a dashboard bound to a non-loopback address.
    """

    @property
    def dashboard_token(self):
        """The token the dashboard asks of non-loopback clients (``None``: no node here)."""
        return getattr(_runtime, "dashboard_token", None)

    @property
    def address_info(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutdown()


def init(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    resources: dict | None = None,
    object_store_memory: int | None = None,
    namespace: str | None = None,
    ignore_reinit_error: bool = False,
    include_dashboard: bool | None = None,
    log_to_driver: bool = True,
    logging_level=None,
    configure_logging: bool = True,
    runtime_env: dict | None = None,
    logging_config=None,
    backend: str | None = None,
    clusters=None,
    object_spilling_directory: str | None = None,
    _arena_size: int | None = None,
    **kwargs,
) -> RayContext:
    """Start the embedded node (or return the running one with ``ignore_reinit_error``).

    Workers (one per CPU by default) start in the background, so ``init()``
    returns in milliseconds; tasks submitted meanwhile wait for the first
    worker. Called from an ``async def`` (an async service's startup), the
    node runs on that function's event loop; otherwise (scripts, notebook
    cells, loop callbacks, IPython and Jupyter, the implicit init of the first
    ``.remote()``) on a background thread.

    Args:
        address: ``None``/``"local"`` for the embedded node (the default, or
            ``$MINIRAY_ADDRESS`` when set); ``"auto"`` or ``"host:port"`` to join a
            head started with ``miniray start --head``; ``"ray://host:port"`` to run
            on a Ray cluster through :mod:`miniray.cluster`.
        num_cpus: CPUs to schedule on (default: ``os.cpu_count()``); also the
            number of task workers.
        num_gpus: GPUs (default: detected from ``CUDA_VISIBLE_DEVICES`` or
            ``/dev/nvidia*``).
        resources: custom resources, e.g. ``{"accelerator": 2}``.
        object_store_memory: bytes of shared memory the node's processes may
            hold together before objects spill to disk (default 30% of RAM, at
            most 80% of what /dev/shm can hold; when /dev/shm holds under
            1 GiB, as in containers, the store is backed by files in the temp
            dir instead, with a warning).
        object_spilling_directory: where spilled objects go (default: the
            session's temp dir). Also accepted as
            ``_system_config={"object_spilling_directory": ...}`` or Ray's
            ``_system_config={"object_spilling_config": json.dumps({"type":
            "filesystem", "params": {"directory_path": ...}})}``.
        namespace: default namespace for named actors.
        ignore_reinit_error: return quietly if already initialized.
        include_dashboard: serve the dashboard (``None``: when aiohttp is
            installed); the URL is printed and returned as ``dashboard_url``.
            ``dashboard_host``/``dashboard_port`` keyword arguments choose where
            (127.0.0.1:8265, or the next free port, by default).
        log_to_driver: echo workers' stdout/stderr here with a
            ``(name pid=N)`` prefix (they always go to log files too).
        runtime_env: of Ray's runtime environments, what needs no other Python
            environment: ``{"env_vars": {...}}`` set in every worker, and
            ``"worker_process_setup_hook"`` (a callable or ``"module.function"``)
            run in every worker before it takes work, e.g. to import heavy
            modules once per process. If the hook raises, work fails with
            ``RuntimeEnvSetupError``. Other keys raise ``ValueError``.
        logging_config: a :class:`miniray.LoggingConfig` (Ray's): the root logger
            of this driver and of every worker the node starts writes records
            with the job, worker, node and task context, as TEXT or JSON.
        backend: ``"ray"`` to run on Ray through :mod:`miniray.cluster`.
        clusters: a YAML/TOML file or a list of ``ClusterConfig`` for
            :mod:`miniray.cluster` to dispatch across several Ray clusters.
    """
    global _runtime, _namespace
    unknown = set(kwargs) - {"_system_config", "local_mode", "dashboard_host",
                             "dashboard_port", "job_config", "_temp_dir", "_node_ip_address",
                             "log_to_driver", "_plasma_directory", "_token", "_memory"}
    if unknown:
        raise TypeError(f"init() got unexpected keyword arguments {sorted(unknown)}")
    if _in_ray_worker():
        # Inside a task or actor Ray runs, the API already goes to that Ray
        # cluster: a node here would run work outside Ray's scheduler.
        return RayContext({"backend": "ray", "in_ray_worker": True})
    with _lock:
        if _runtime is not None:
            if ignore_reinit_error:
                return RayContext(_init_info)
            raise RuntimeError(
                "Maybe you called miniray.init twice by accident? This error can be "
                "suppressed by passing in 'ignore_reinit_error=True' or by calling "
                "'miniray.shutdown()' prior to 'miniray.init()'.")
        to_ray = (backend == "ray" or clusters is not None
                  or (isinstance(address, str) and address.startswith("ray://")))
        if backend not in (None, "local", "ray"):
            raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
        if to_ray:
            ray_address, address = address, None
        elif address is None and os.environ.get("MINIRAY_ADDRESS"):
            address = os.environ["MINIRAY_ADDRESS"]
        from ._core import runtime_env as _renv

        env_vars, setup_hook = _renv.parse(runtime_env)
        if address not in (None, "local") and not to_ray:
            if runtime_env:
                raise ValueError(
                    "runtime_env applies to a node init() starts; a driver joining a head "
                    "uses the head's workers. Start the head with the environment variables "
                    "set instead.")
            context = _connect_head(address, kwargs.get("_token"), namespace,
                                    num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                                    object_store_memory=object_store_memory)
            if logging_config is not None:  # this driver only: the workers are the head's
                from . import _logging_config

                client = _refs.get_client()
                _logging_config.setup(logging_config, client.node_pid,
                                      (getattr(client, "info", None) or {}).get("job_id"))
            return context
        num_cpus = (os.cpu_count() or 1) if num_cpus is None else num_cpus
        if not isinstance(num_cpus, (int, float)) or num_cpus < 0:
            raise ValueError(f"num_cpus must be a non-negative number, got {num_cpus!r}")
        num_gpus = _detect_gpus() if num_gpus is None else num_gpus
        if object_store_memory is not None and object_store_memory < (1 << 20):
            raise ValueError(f"object_store_memory must be at least 1 MiB, "
                             f"got {object_store_memory}")
        from ._core.store import spilling, store_config
        from ._core.driver.driver import DriverClient
        from ._core.node.runtime import NodeRuntime

        system_config = kwargs.get("_system_config") or {}
        if not isinstance(system_config, dict):
            raise TypeError(f"_system_config must be a dict, got {type(system_config).__name__}")
        spill_parent = spilling.spill_directory_from(system_config, object_spilling_directory)
        object_store_memory, store_dir = store_config.choose(
            object_store_memory, kwargs.get("_plasma_directory"))

        _namespace = namespace or "default"
        started = time.perf_counter()
        if kwargs.get("_memory") is not None:
            resources = {**(resources or {}), "memory": kwargs["_memory"]}
        from ._core.node import memory_monitor as _memory_monitor

        monitor_settings = _memory_monitor.settings(system_config)  # bad values: before start
        runtime = NodeRuntime(num_cpus, num_gpus, resources, object_store_memory, _namespace,
                              arena_size=_arena_size,
                              event_caps=system_config.get("event_caps"),
                              spill_parent=spill_parent, store_dir=store_dir)
        runtime.log_to_driver = bool(log_to_driver)
        if logging_config is not None:
            from . import _logging_config

            env_vars = {**env_vars, **_logging_config.setup(logging_config, runtime.node_pid)}
        runtime.runtime_env_vars = env_vars
        runtime.setup_hook = setup_hook
        runtime.start(_service_loop(_getframe(1)))
        runtime.memory_monitor = _memory_monitor.MemoryMonitor(runtime, *monitor_settings)
        runtime.memory_monitor.start()
        client = DriverClient(runtime)
        _refs.set_client(client)
        _runtime = runtime
        dashboard_url = _maybe_start_dashboard(runtime, include_dashboard,
                                               kwargs.get("dashboard_host"),
                                               kwargs.get("dashboard_port"))
        _init_info.clear()
        _init_info.update({
            "node_id": f"node-{runtime.node_pid}",
            "node_ip_address": "127.0.0.1",
            "session_dir": runtime.spill_dir,
            "object_store_memory": object_store_memory,
            "init_seconds": time.perf_counter() - started,
            "dashboard_url": dashboard_url,
        })
        if to_ray:
            try:
                from .cluster import _init_hook

                _init_info.update(_init_hook(address=ray_address, backend=backend,
                                             clusters=clusters) or {})
            except BaseException:
                shutdown()
                raise
        return RayContext(_init_info)


def _maybe_start_dashboard(runtime, include_dashboard, host, port):
    import secrets

    runtime.dashboard_token = secrets.token_urlsafe(24)
    if include_dashboard is False:
        return None
    import importlib.util

    if importlib.util.find_spec("aiohttp") is None:
        if include_dashboard:
            raise ImportError("include_dashboard=True needs aiohttp: "
                              "pip install 'miniray[dashboard]'")
        return None
    from .dashboard.boot import launch

    try:
        return launch(runtime, host, port, runtime.dashboard_token).url
    except ImportError:
        if include_dashboard:
            raise
        return None
    except OSError as exc:
        if include_dashboard or port is not None:
            shutdown()
            raise
        import sys

        print(f"miniray: no dashboard ({exc})", file=sys.stderr)
        return None


def _connect_head(address, token, namespace, **node_options) -> RayContext:
    global _runtime, _namespace
    given = sorted(k for k, v in node_options.items() if v is not None)
    if given:
        raise ValueError(
            f"init(address={address!r}) connects to a running head, so {given} cannot be "
            "set here: they belong to the head (`miniray start --head --num-cpus ...`). "
            "Drop them, or leave out address= for an embedded node.")
    from ._core.driver import session
    from ._core.driver.remote_driver import RemoteDriverClient, RemoteNode

    started = time.perf_counter()
    sock, info = session.connect(address, token)
    client = RemoteDriverClient(sock, info, address)
    client.start()
    _refs.set_client(client)
    _runtime = RemoteNode(client)
    _namespace = namespace or info.get("namespace") or "default"
    _init_info.clear()
    _init_info.update({
        "node_id": f"node-{info['node_pid']}",
        "node_ip_address": "127.0.0.1",
        "address": address,
        "session_dir": info.get("session_dir"),
        "object_store_memory": info["capacity"],
        "dashboard_url": info.get("dashboard_url"),
        "init_seconds": time.perf_counter() - started,
    })
    return RayContext(_init_info)


def _auto_init() -> None:
    if _in_ray_worker():
        raise RuntimeError("miniray would start a node inside a Ray worker: this call is "
                           "not supported in a task that runs on a Ray cluster")
    with _lock:
        if _runtime is None:
            init()


def shutdown() -> None:
    """Stop the node: workers exit, shared memory is unlinked. Safe to call twice."""
    global _runtime
    with _lock:
        runtime = _runtime
        if runtime is None:
            return
        from ._core import hooks

        while hooks.shutdown_callbacks:
            callback = hooks.shutdown_callbacks.pop()
            try:
                callback()
            except Exception as exc:  # a sub-library's cleanup must not stop ours
                import warnings

                warnings.warn(f"miniray shutdown: {callback!r} failed: {exc!r}")
        _runtime = None
        client = _refs.get_client()
        _refs.set_client(None)
        if client is not None:
            client._ref_counts.clear()
        runtime.shutdown()


atexit.register(shutdown)


def is_initialized() -> bool:
    """True if ``init()`` has run (in a worker, a Ray worker included: always)."""
    return _runtime is not None or _refs.get_client() is not None \
        or _hooks.ray_worker is not None


def _client():
    client = _refs.get_client()
    if client is None:
        _auto_init()
        client = _refs.get_client()
    return client


def remote(*args, **options):
    """Turn a function into a remote function, or a class into an actor class.

    Use bare (``@remote``) or with options (``@remote(num_cpus=2, max_retries=1)``).
    Task options: num_cpus, num_gpus, resources, num_returns, max_retries,
    retry_exceptions, max_calls, name, memory. Actor options: num_cpus, num_gpus,
    resources, name, namespace, lifetime, max_restarts, max_task_retries,
    max_concurrency, get_if_exists.
    """
    def make(target):
        if inspect.isclass(target):
            return ActorClass(target, options)
        if callable(target):
            return RemoteFunction(target, options)
        raise TypeError("@remote must decorate a function or a class, "
                        f"not {type(target).__name__}")

    if len(args) == 1 and not options and callable(args[0]):
        return make(args[0])
    if args:
        raise TypeError("remote() takes a function or class, or only keyword options: "
                        "use @remote or @remote(num_cpus=1, ...)")
    return make


def put(value, *, _owner=None) -> ObjectRef:
    """Store ``value`` in the object store; returns an ObjectRef to it.

    Large numpy arrays and bytes are stored once in shared memory and read
    back zero-copy (read-only) by ``get`` in any process.
    """
    if _hooks.ray_worker is not None:
        return _hooks.ray_worker.put(value)
    return _client().put(value)


def _check_refs(object_refs, what):
    if isinstance(object_refs, ObjectRef):
        return [object_refs], True
    if isinstance(object_refs, (list, tuple)):
        for i, r in enumerate(object_refs):
            if not isinstance(r, ObjectRef):
                raise TypeError(
                    f"{what} expects an ObjectRef or a list of ObjectRefs, but item {i} is a "
                    f"{type(r).__name__}. Pass the refs returned by .remote() or put().")
        return list(object_refs), False
    raise TypeError(
        f"{what} expects an ObjectRef or a list of ObjectRefs, got "
        f"{type(object_refs).__name__}. Pass the refs returned by .remote() or put().")


def get(object_refs, *, timeout: float | None = None):
    """Return the value(s) of ObjectRef(s), waiting until they are ready.

    Synchronous code gets the value, as in Ray, also where an event loop is
    running in the thread (a Jupyter cell, a loop callback). Async code (an
    ``async def``) gets an awaitable: ``value = await miniray.get(ref)``; in a
    notebook cell or top-level ``await`` code, the call that is awaited
    (``await miniray.get(ref)``) does. Synchronous code on the loop that runs
    the node (``init()`` called inside an ``async def``) cannot block it:
    there ``get`` raises at once and says to await it. Raises the task's
    exception (a ``RayTaskError`` that is also an instance of the original
    type), or ``GetTimeoutError``.
    """
    if _hooks.ray_worker is not None:
        return _hooks.ray_worker.get(object_refs, timeout=timeout)
    refs, single = _check_refs(object_refs, "get()")
    describe_timeout(timeout)
    client = _client()
    loop = running_loop()
    if loop is not None:
        frame = _getframe(1)
        code = frame.f_code
        # An async def asks for an awaitable: checked inline, the hot path of
        # ``await miniray.get(...)`` in async services.
        if (code.co_flags & _ASYNC_CODE and code.co_name not in _NOT_A_DEF) \
                or _caller.wants_awaitable(frame):
            return client.get_async(refs, timeout, single)
        if timeout != 0:
            _check_can_block(loop, "get")
    values = client.get(refs, timeout)
    return values[0] if single else values


def wait(object_refs, *, num_returns: int = 1, timeout: float | None = None,
         fetch_local: bool = True):
    """Wait until ``num_returns`` of the refs are ready, or ``timeout`` seconds.

    Returns ``(ready, not_ready)``, both in the order of ``object_refs``.
    Like :func:`get`: an awaitable in async code
    (``ready, not_ready = await miniray.wait(refs)``), the result elsewhere.
    """
    if _hooks.ray_worker is not None:
        return _hooks.ray_worker.wait(object_refs, num_returns, timeout, fetch_local)
    if isinstance(object_refs, (list, tuple)) and any(
            type(r) is _ObjectRefGenerator for r in object_refs):
        return _wait_generators(list(object_refs), num_returns, timeout, _getframe(1))
    if fetch_local is not True and fetch_local is not False:
        raise TypeError(f"wait(): fetch_local must be True or False, got {fetch_local!r}")
    args = _check_wait(object_refs, num_returns, timeout)
    loop = running_loop()
    if loop is not None:
        if _caller.wants_awaitable(_getframe(1)):
            return _wait_async(*args, fetch_local)
        if timeout != 0:
            _check_can_block(loop, "wait")
    return _wait_now(*args, fetch_local)


def _check_wait(object_refs, num_returns, timeout):
    if isinstance(object_refs, ObjectRef):
        raise TypeError("wait() expects a list of ObjectRefs, got a single ObjectRef; "
                        "wrap it in a list.")
    refs, _ = _check_refs(object_refs, "wait()")
    if len(set(refs)) != len(refs):
        raise ValueError("wait() got duplicate ObjectRefs")
    if refs and (not isinstance(num_returns, int) or num_returns < 1):
        raise ValueError(f"num_returns must be a positive int, got {num_returns!r}")
    if num_returns > len(refs) and refs:
        raise ValueError(f"num_returns ({num_returns}) cannot exceed the number of refs "
                         f"({len(refs)})")
    describe_timeout(timeout)
    return refs, num_returns, timeout


def _wait_now(refs, num_returns, timeout, fetch_local):
    if not refs:
        return [], []
    return _client().wait(refs, num_returns, timeout, fetch_local)


async def _wait_async(refs, num_returns, timeout, fetch_local):
    if not refs:
        return [], []
    return await _client().wait_async(refs, num_returns, timeout, fetch_local)


def _check_can_block(loop, what: str) -> None:
    """Raise if blocking in this thread would stop the loop the node runs on."""
    runtime = _runtime
    if runtime is not None and getattr(runtime, "loop", None) is loop:
        raise RuntimeError(
            f"miniray.{what}() was called from synchronous code running on the event loop "
            "that the miniray node runs on (init() was called inside this loop's async "
            "code), so it cannot block: the node could not make progress. In an async "
            f"function, await it: `await miniray.{what}(...)`; run blocking code in a "
            "thread (`await loop.run_in_executor(None, fn)`); or call miniray.init() "
            "from synchronous code, outside the loop, to run the node on its own thread.")


# -- explicit forms for miniray's own libraries ---------------------------------------
# Tune, Train and util are synchronous APIs by design: they block whatever the
# caller's loop state, so they call these instead of get/wait (their async
# variants, like Queue.get_async, await refs directly).

def _get_blocking(object_refs, timeout: float | None = None):
    """``get`` that blocks and returns the value(s), wherever it is called from."""
    refs, single = _check_refs(object_refs, "get()")
    describe_timeout(timeout)
    client = _client()
    loop = running_loop()
    if loop is not None and timeout != 0:
        _check_can_block(loop, "get")
    values = client.get(refs, timeout)
    return values[0] if single else values


def _wait_blocking(object_refs, *, num_returns: int = 1, timeout: float | None = None,
                   fetch_local: bool = True):
    """``wait`` that blocks and returns ``(ready, not_ready)``."""
    if fetch_local is not True and fetch_local is not False:
        raise TypeError(f"wait(): fetch_local must be True or False, got {fetch_local!r}")
    args = _check_wait(object_refs, num_returns, timeout)
    loop = running_loop()
    if loop is not None and timeout != 0:
        _check_can_block(loop, "wait")
    return _wait_now(*args, fetch_local)


def _service_loop(frame):
    """The loop ``init()`` runs the node on: the caller's, when an ``async def``
    calls it (an async service's startup), else ``None`` (the node's own thread).

    A synchronous caller with a loop running in its thread is a notebook cell, a
    loop callback or a library: that loop may block on ``get`` at any time, and
    in IPython it is the session's, which runs only while a cell does.
    """
    loop = running_loop()
    if loop is None or not _caller.is_async_def(frame.f_code) or _caller.in_ipython_session():
        return None
    return loop


def _wait_generators(items, num_returns, timeout, caller_frame):
    """``wait`` over a list holding ObjectRefGenerators (Ray's semantics: one is
    ready when its next value is available or it has ended); the caller gets an
    awaitable or the result by the same rule as every ``wait``."""
    from ._core.generators import wait_mixed

    if not all(isinstance(r, (ObjectRef, _ObjectRefGenerator)) for r in items):
        raise TypeError("wait() expects a list of ObjectRefs and ObjectRefGenerators")
    if len(set(map(id, items))) != len(items):
        raise ValueError("wait() got the same ObjectRef or generator twice")
    if not isinstance(num_returns, int) or not 1 <= num_returns <= len(items):
        raise ValueError(f"num_returns must be an int from 1 to {len(items)} (the number "
                         f"of items), got {num_returns!r}")
    describe_timeout(timeout)
    loop = running_loop()
    awaitable = loop is not None and _caller.wants_awaitable(caller_frame)
    if loop is not None and not awaitable and timeout != 0:
        _check_can_block(loop, "wait")
    return wait_mixed(_client(), items, num_returns, timeout, in_loop=awaitable)


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that will produce ``object_ref``.

    A queued task never runs; a running one gets ``TaskCancelledError`` raised
    inside it (``force=True`` kills its worker instead). ``get`` on the ref
    then raises ``TaskCancelledError``.
    """
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() expects an ObjectRef, got {type(object_ref).__name__}")
    _client().generic("cancel", object_ref._id, force, recursive)


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill an actor's process at once. With ``no_restart=False`` it may restart."""
    if _hooks.ray_worker is not None:
        return _hooks.ray_worker.kill(actor, no_restart)
    if not isinstance(actor, ActorHandle):
        kill_routed = getattr(actor, "_kill", None)
        if kill_routed is not None and type(actor).__name__ == "RoutedActorHandle":
            return kill_routed(no_restart)  # an actor miniray.cluster placed on Ray
        raise TypeError(f"kill() expects an actor handle, got {type(actor).__name__}")
    _client().generic("kill_actor", actor._id, no_restart)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """Return a handle to the named actor; ``ValueError`` if there is none."""
    if not isinstance(name, str) or not name:
        raise ValueError("get_actor() needs the actor's name as a non-empty string")
    if _hooks.ray_worker is not None:
        return _hooks.ray_worker.get_actor(name, namespace)
    try:
        actor_id, meta = _client().generic("get_actor", name, namespace)
    except ValueError:
        find = getattr(_hooks.router, "get_actor", None)
        routed = find(name, namespace) if find is not None else None
        if routed is None:  # not on a Ray cluster miniray.cluster reaches either
            raise
        return routed
    return ActorHandle(actor_id, meta[0], meta[1])


def _resources(which: int) -> dict:
    total, available = _client().generic("resources")
    out = total if which == 0 else available
    return {k: v for k, v in out.items() if v or k == "CPU"}


def available_resources() -> dict:
    """Resources not in use right now, e.g. ``{"CPU": 1.0, ...}``."""
    return _resources(1)


def cluster_resources() -> dict:
    """All resources of the node."""
    return _resources(0)


def nodes() -> list:
    """A one-element list describing the local node, in Ray's format."""
    client = _client()
    total, _ = client.generic("resources")
    return [{
        "NodeID": f"node-{getattr(client, 'node_pid', os.getpid())}",
        "Alive": True,
        "NodeManagerAddress": "127.0.0.1",
        "NodeManagerHostname": os.uname().nodename,
        "Resources": {k: v for k, v in total.items() if v},
    }]


def get_runtime_context():
    """Ids of the current job, node, worker, task and actor."""
    from ._core.context import RuntimeContext

    client = _client()
    node_pid = getattr(client, "node_pid", None) or os.getpid()
    # A driver connected to a head has its own job id; the head told it.
    job_id = (getattr(client, "info", None) or {}).get("job_id")
    return RuntimeContext(_namespace, node_pid, job_id)


def get_gpu_ids() -> list:
    """GPU ids given to the current task or actor (``CUDA_VISIBLE_DEVICES``);
    ``[]`` in the driver and in work that asked for no GPU."""
    from ._core import context

    if context._worker_client is None:
        return []
    ids = get_runtime_context().get_accelerator_ids()["GPU"]
    return [int(v) if v.isdigit() else v for v in ids]


def timeline(filename: str | None = None) -> list | None:
    """Ray's ``ray.timeline()``: the task table as Chrome trace events.

    One complete event (``"ph": "X"``) per task that started, on a row per
    worker, times in microseconds. With ``filename`` the events are written
    there as JSON (open it in ``chrome://tracing`` or Perfetto) and ``None`` is
    returned; without, the list is returned.
    """
    import json

    events = []
    for task in reversed(_client().generic("state", "tasks", 1 << 30)):
        start = task["started_at"]
        if start is None:
            continue
        end = task["ended_at"] or time.time()
        events.append({
            "cat": "actor_task" if task["actor_id"] else "task",
            "name": task["name"], "ph": "X",
            "pid": "node 127.0.0.1", "tid": f"worker {task['worker_id']}",
            "ts": start * 1e6, "dur": max(end - start, 0.0) * 1e6,
            "args": {"task_id": task["task_id"], "state": task["state"],
                     "attempt": task["attempt"], "error": task["error"]},
        })
    if filename is None:
        return events
    with open(filename, "w") as f:
        json.dump(events, f)
    return None


def _node_stats() -> dict:
    """Internal counters of the node (for tests and the dashboard)."""
    return _client().generic("stats")


def _in_ray_worker() -> bool:
    """True (after routing miniray's API to Ray) in a process Ray started to
    run a task or actor: miniray must not start a node of its own there."""
    import sys

    if "ray" not in sys.modules:
        return False
    from .cluster import _in_ray

    return _in_ray.maybe_install()


_in_ray_worker()  # imported inside a Ray worker: route to that cluster from the start
