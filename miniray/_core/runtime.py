"""The node runtime: scheduler, object table, worker pool, actors.

Everything here runs on one asyncio loop (the *runtime loop*): a background
thread's uvloop in sync programs, or the caller's own loop when ``init()``
runs inside one. Other threads never mutate runtime state directly: they
append operations to ``_ops`` and wake the loop at most once per burst
(``_wake``), so a tight ``f.remote()`` loop costs one wake-up, not one per call.

Two things are shared with the driver's threads, under ``_state_lock``:
object entries' ``state``/``data``/``waiters`` (so ``get`` of a ready object
never waits on the loop) and the creation of entries for objects the driver
itself creates.

Invariants:
- An entry's ``refcount`` counts holders: each process holding an ObjectRef
  (counted once per process), each pending task using it as an argument, and
  each stored object containing a ref to it. At zero the entry is deleted and
  its storage freed once no reader pins it.
- A worker's ``assigned`` tasks hold the worker's resource lease; the lease is
  returned when ``assigned`` empties or the worker blocks in ``get``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from ..exceptions import (
    ActorAlreadyExistsError,
    ActorDiedError,
    ActorPlacementGroupRemoved,
    ObjectStoreFullError,
    OutOfDiskError,
    OutOfMemoryError,
    RayTaskError,
    TaskCancelledError,
    TaskPlacementGroupRemoved,
    WorkerCrashedError,
)
from . import hooks as _hooks
from . import protocol as P
from . import shm
from .client import VALUE_ERROR, VALUE_INLINE, VALUE_SHM, VALUE_SPILLED
# The module, not its names: compiled, events cimports Task from this module,
# so whichever of the two loads first sees the other half-initialized.
from . import events as _events
from . import direct as _direct
from .object_store import STORE_FULL_GRACE_S, WARM_KEEP_S, LocalStore, _fmt
from .serialization import deserialize_inline, serialize
from .spilling import SpillFiles

PENDING = -1
# Known-short tasks queue on a busy worker (hiding the node round trip) while the
# estimated work queued there stays under the budget: noop-sized tasks get a
# deep pipeline, millisecond ones a shallow one, so a queue never holds back
# more than a few milliseconds of work another worker could take.
PIPELINE_MAX = 16
PIPELINE_BUDGET_S = 0.004
STARTUP_DEATHS_LIMIT = 3
SHORT_TASK_S = 0.002  # tasks of functions faster than this may be pipelined
SURPLUS_IDLE_S = 2.0  # an extra worker idle this long exits
# The node's address, as Ray names it in the ``node:<ip>`` resource that pins
# work to a node. Drivers and workers reach a node over loopback only.
NODE_IP = "127.0.0.1"
DRIVER = None  # the caller id of the driver process in rpc methods


class ObjectEntry:
    __slots__ = ("state", "data", "refcount", "pins", "contained", "waiters", "size",
                 "free_when_unpinned", "is_actor_handle")

    def __init__(self, refcount: int = 1):
        self.state = PENDING
        self.data = None
        self.refcount = refcount
        self.pins = 0
        self.contained = None
        self.waiters = []
        self.size = 0
        self.free_when_unpinned = False
        self.is_actor_handle = False


class Task:
    __slots__ = ("task_id", "fn_id", "args", "kwargs", "contained", "return_ids", "name",
                 "resources", "retries_left", "retry_exceptions", "deps", "worker",
                 "cancelled", "force_cancelled", "actor", "method", "pinned", "held",
                 "gpu_ids", "finished", "dispatched_at", "has_refs", "cost", "max_calls",
                 "placement", "group", "env", "record_events",
                 # kept for the event bus's task table (events.task_dict)
                 "state", "submitted_at", "started_at", "ended_at", "worker_id", "error",
                 "attempt", "deps_ids")

    def __init__(self):
        self.deps = 0
        self.worker = None
        self.cancelled = False
        self.force_cancelled = False
        self.actor = None
        self.method = None
        self.pinned = ()
        self.gpu_ids = ()
        self.finished = False
        self.has_refs = True
        self.max_calls = 0
        self.placement = None
        self.group = None
        self.env = None
        self.record_events = True  # False: kept out of the event bus (enable_task_events)
        self.started_at = None
        self.ended_at = None
        self.worker_id = None
        self.error = None
        self.attempt = 0


class WorkerHandle:
    is_driver = False
    reserved = 0  # bytes of the store budget taken for objects being written

    def __init__(self, worker_id: int, proc, sock):
        self.worker_id = worker_id
        self.proc = proc
        self.pid = proc.pid
        self.sock = sock
        self.transport = None
        self.ready = False
        self.dead = False
        self.killed = False  # by us (miniray.kill): its death says nothing of start-up
        # max_calls: runs per function so far, and whether the worker exits once
        # its assigned work is done (it takes no more meanwhile).
        self.calls: dict[bytes, int] = {}
        self.retiring = False
        self.last_task_name = None
        self.assigned: dict[bytes, Task] = {}
        # Estimated seconds of short work assigned, and how many assigned tasks
        # are not known to be short (a worker with one takes no pipelined work).
        self.queued_cost = 0.0
        self.long_queued = 0
        self.lease: dict | None = None
        self.blocked = 0
        self.known_functions: set[bytes] = set()
        self.held: collections.Counter = collections.Counter()
        self.pins: collections.Counter = collections.Counter()
        self.actor = None
        self.out: list[bytes] = []
        self.started = time.monotonic()
        self.idle_since = 0.0
        self.logs: list = []


class DriverConn(WorkerHandle):
    """A driver connected to a head node: a worker that never runs tasks.

    It makes the same requests as a worker (submit, get, put, ...), so the
    rpc_* methods serve it unchanged; what it holds is released when it
    disconnects, like a dead worker's.
    """

    is_driver = True

    def __init__(self, conn_id: int, pid: int, transport):
        self.worker_id = conn_id
        self.pid = pid
        self.transport = transport
        self.dead = False
        self.ready = True
        self.out: list[bytes] = []
        self.held: collections.Counter = collections.Counter()
        self.pins: collections.Counter = collections.Counter()
        self.assigned: dict = {}
        self.actor = None
        self.lease = None
        self.blocked = 0
        self.known_functions: set[bytes] = set()
        self.connected_at = time.time()


class ActorState:
    def __init__(self, actor_id, fn_id, args, kwargs, contained, options, class_name):
        self.actor_id = actor_id
        self.fn_id = fn_id
        self.args = args
        self.kwargs = kwargs
        self.contained = contained
        self.options = options
        self.class_name = class_name
        self.worker: WorkerHandle | None = None
        self.state = "PENDING_CREATION"
        max_restarts = options.get("max_restarts", 0)
        self.restarts_left = float("inf") if max_restarts == -1 else max_restarts
        max_task_retries = options.get("max_task_retries", 0)
        self.max_task_retries = float("inf") if max_task_retries == -1 else max_task_retries
        self.queue: collections.deque = collections.deque()
        self.inflight: dict[bytes, Task] = {}
        self.death_cause = ""
        self.death_error: bytes | None = None
        self.num_restarts = 0
        self.name = options.get("name")
        self.namespace = options.get("namespace")
        self.is_async = False
        self.no_restart = False
        self.exit_when_idle = False


class NodeRuntime:
    def __init__(self, num_cpus, num_gpus, resources, object_store_memory, namespace,
                 arena_size=None, spill_dir=None, event_caps=None, spill_parent=None,
                 store_dir=None):
        self.node_pid = os.getpid()
        self.namespace = namespace
        self.total = {"CPU": float(num_cpus), "GPU": float(num_gpus)}
        self.total.update({k: float(v) for k, v in (resources or {}).items()})
        # Ray's per-node resources: resources={"node:<ip>": 0.01} pins work here.
        self.total.setdefault(f"node:{NODE_IP}", 1.0)
        self.total.setdefault("node:__internal_head__", 1.0)
        if "memory" not in self.total:
            # As in Ray: the bytes of heap tasks and actors may reserve with
            # memory=..., a scheduling quantity like CPU (not enforced).
            self.total["memory"] = float(max(shm.physical_memory() - int(object_store_memory),
                                             0))
        self.available = dict(self.total)
        self.free_gpu_ids = list(range(int(num_gpus)))
        self.capacity = int(object_store_memory)
        shm.set_dir(store_dir or os.environ.get(shm.STORE_DIR_ENV) or "/dev/shm")
        self.store_dir = shm.SHM_DIR
        # The driver keeps up to a quarter of the store of freed pages warm for
        # the next put (they count in the budget and are given back first).
        self.store = LocalStore(self.node_pid, self.capacity,
                                arena_size or min(self.capacity, 512 * 1024 * 1024),
                                warm_limit=min(self.capacity // 4, 512 * 1024 * 1024))
        self.spill_dir = spill_dir or tempfile.mkdtemp(prefix=f"miniray_spill_{self.node_pid}_")
        self.spill = SpillFiles(self.node_pid, spill_parent, self.spill_dir)
        self.objects: dict[bytes, ObjectEntry] = {}
        self.functions: dict[bytes, bytes] = {}
        self.tasks: dict[bytes, Task] = {}
        self.ready: collections.deque[Task] = collections.deque()
        self.workers: dict[int, WorkerHandle] = {}
        self.workers_by_pid: dict[int, WorkerHandle] = {}
        self.idle: list[WorkerHandle] = []
        self._blocked_workers = 0  # workers lending their CPU back from a nested get
        self.actors: dict[bytes, ActorState] = {}
        self.named_actors: dict[tuple, bytes] = {}
        self._pinned_garbage: dict[bytes, ObjectEntry] = {}
        self._dead_workers: list[WorkerHandle] = []
        self._used_lock = threading.Lock()
        self._user_loop_thread = None
        self.store_used = 0
        self._state_lock = threading.Lock()
        self._ops: collections.deque = collections.deque()
        self._wake_pending = False
        self._next_worker_id = 0
        self._flush_pending: set = set()
        self._flush_scheduled = False
        self._batching = False  # in _drain_ops or a worker's data_received: they flush at the end
        self._worker_target = int(num_cpus)
        self._closing = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.owns_loop = False
        self.counters = collections.Counter()
        self.fn_cost: dict[bytes, float] = {}
        self._pack = P.new_packer().pack  # runtime thread only: a Packer is not thread-safe  # EWMA seconds from dispatch to done
        self.arena_size = self.store.arena_size
        self.watchdog = None
        self.worker_env = None
        self.events = _events.EventBus(event_caps)
        self.drivers: dict[int, DriverConn] = {}
        self.ended_drivers: collections.deque = collections.deque(maxlen=1000)  # list_jobs
        self._driver_servers: list = []
        self.dashboard = None
        self.dashboard_boot = None  # the task starting it, while it runs
        self.dashboard_token = None
        self.log_dir = os.path.join(self.spill_dir, "logs")
        self.log_to_driver = True
        self.started_at = time.time()
        # init(runtime_env=...): set before start()
        self.runtime_env_vars: dict = {}
        self.setup_hook: bytes | None = None
        self.setup_error: bytes | None = None  # a worker's setup hook failed: no work runs
        self.setup_cause = "its worker's runtime_env setup hook raised"
        # Workers that died before READY since the last one that got there: a
        # worker that cannot start (a broken import, a file shadowing a stdlib
        # module in the working directory) would otherwise be respawned forever
        # while get() waits forever.
        self._startup_deaths: list[str] = []
        # Placement groups (miniray.util.placement_group) and actors waiting for
        # resources, placed as running work releases some.
        self.placement_groups: dict[bytes, PlacementGroupState] = {}
        self._pg_pending: list[PlacementGroupState] = []
        self._waiting_actors: list[ActorState] = []
        self._pgs_removed = 0
        # Tasks and actors asking for more than the node has in all: pending
        # (as in Ray, where more resources may appear), with one warning per shape.
        self.infeasible: list = []
        self._infeasible_warned: set = set()
        # Generator tasks' values as they are yielded: the task's return id ->
        # the ids of the values stored so far (held until the task ends).
        self.streams: dict[bytes, _Stream] = {}
        # -- direct calls (direct.py): leased workers' channels, the driver's caller.
        self.direct_leases: set = set()
        self.direct_caller = None

    # -- lifecycle ---------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop | None) -> None:
        shm.sweep_dead({"/dev/shm", self.store_dir})
        self._start_watchdog()
        env = dict(os.environ)
        env[shm.STORE_DIR_ENV] = self.store_dir
        # Workers import miniray from wherever the driver did.
        pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = pkg_root + os.pathsep + env.get("PYTHONPATH", "")
        env.update(self.runtime_env_vars)
        if self.setup_hook is not None:
            from .runtime_env import HOOK_ENV

            path = os.path.join(self.spill_dir, "setup_hook.bin")
            with open(path, "wb") as f:
                f.write(self.setup_hook)
            env[HOOK_ENV] = path
        # As in Ray: numeric libraries in a worker use as many threads as the work
        # has CPUs (1 for task workers), not every core each, which would
        # oversubscribe the machine. A value the user set is kept.
        self._omp_default = "OMP_NUM_THREADS" not in env
        if self._omp_default:
            env["OMP_NUM_THREADS"] = "1"
        self.worker_env = env
        if loop is None:
            from .loop import new_event_loop

            self.loop = new_event_loop()
            self.owns_loop = True
            started = threading.Event()

            def run():
                asyncio.set_event_loop(self.loop)
                self.loop.call_soon(started.set)
                self.loop.run_forever()

            self.thread = threading.Thread(target=run, name="miniray-node", daemon=True)
            self.thread.start()
            started.wait()
            self.call_threadsafe_wait(self._on_started)
            self.store.reclaim = self._run_queued_ops
        else:
            self.loop = loop
            self._user_loop_thread = threading.get_ident()
            self._on_started()
        self.store.on_full = self._on_store_full

    def _on_started(self) -> None:
        self.loop.call_later(0.05, self._tick)
        from .introspect import MetricsSampler

        self.sampler = MetricsSampler(self)
        self.sampler.start()
        for _ in range(self._worker_target):
            self._spawn_worker()

    def _start_watchdog(self) -> None:
        self.watchdog = subprocess.Popen(
            [sys.executable, "-m", "miniray._core.watchdog", str(self.node_pid), self.spill_dir,
             self.store_dir, self.spill.dir if self.spill.owned else ""],
            stdin=subprocess.PIPE, start_new_session=True,
            env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(
                os.path.abspath(__file__)))) + os.pathsep + os.environ.get("PYTHONPATH", "")},
        )

    def _watchdog_note(self, line: str) -> None:
        try:
            self.watchdog.stdin.write((line + "\n").encode())
            self.watchdog.stdin.flush()
        except (OSError, ValueError):
            pass

    def shutdown(self) -> None:
        if self.owns_loop:
            if self.thread.is_alive():
                try:
                    asyncio.run_coroutine_threadsafe(self._shutdown_async(), self.loop).result(10)
                except Exception:  # pragma: no cover - the loop is wedged: kill below
                    pass
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(5)
            if not self.loop.is_running():
                self.loop.close()
        else:
            self._stop_workers_blocking()
        self._reap_workers()
        self.store.close()
        shm.sweep_node(self.node_pid)
        import shutil

        self.spill.cleanup()
        shutil.rmtree(self.spill_dir, ignore_errors=True)
        if self.watchdog is not None:
            try:
                self.watchdog.stdin.close()
            except OSError:
                pass
            try:
                self.watchdog.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.watchdog.kill()
                self.watchdog.wait()

    def _ask_workers_to_exit(self) -> None:
        self._closing = True
        sampler = getattr(self, "sampler", None)
        if sampler is not None:
            sampler.stop()
        for server in self._driver_servers:
            server.close()
        self._driver_servers = []
        for conn in list(self.drivers.values()):
            conn.transport.abort()
        for worker in list(self.workers.values()):
            if worker.dead:
                continue
            if worker.transport is not None:
                worker.out.append(P.pack([P.EXIT]))
                self._flush_worker(worker)
            else:  # still starting: nothing to lose
                worker.proc.kill()

    async def stop_dashboard(self) -> None:
        boot, self.dashboard_boot = self.dashboard_boot, None
        if boot is not None and not boot.done() and boot is not asyncio.current_task():
            boot.cancel()
            await asyncio.wait([boot])
        dashboard, self.dashboard = self.dashboard, None
        if dashboard is not None:
            try:
                await asyncio.wait_for(dashboard.stop(), 5)
            except Exception as exc:  # pragma: no cover - never block shutdown on it
                print(f"miniray: stopping the dashboard failed: {exc!r}", file=sys.stderr)

    async def _shutdown_async(self) -> None:
        await self.stop_dashboard()
        self._ask_workers_to_exit()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(
                w.proc.poll() is None for w in self.workers.values()):
            await asyncio.sleep(0.005)
        self._close_transports()
        await asyncio.sleep(0)

    def _stop_workers_blocking(self) -> None:
        boot, self.dashboard_boot = self.dashboard_boot, None
        if boot is not None:
            boot.cancel()
        if self.dashboard is not None:  # the caller's loop: it may never run again
            dashboard, self.dashboard = self.dashboard, None
            dashboard.close_now()
        self._ask_workers_to_exit()
        deadline = time.monotonic() + 2.0
        for worker in list(self.workers.values()):
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        self._close_transports()

    def _close_transports(self) -> None:
        for worker in list(self.workers.values()):
            if worker.proc.poll() is None:
                worker.proc.kill()
            if worker.transport is not None:
                worker.transport.abort()
            worker.dead = True
        for worker in list(self.workers.values()) + self._dead_workers:
            for log in worker.logs:
                log.close()

    def _reap_workers(self) -> None:
        for worker in list(self.workers.values()) + self._dead_workers:
            try:
                worker.proc.wait(2.0)
            except subprocess.TimeoutExpired:  # pragma: no cover
                worker.proc.kill()
                worker.proc.wait()
            try:
                worker.sock.close()
            except OSError:
                pass
            worker.direct.close()
        self.workers.clear()
        self._dead_workers.clear()

    # -- cross-thread plumbing -----------------------------------------------------
    def post(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the runtime loop, batching wake-ups."""
        self._ops.append((fn, args))
        if not self._wake_pending:
            self._wake_pending = True
            if self.owns_loop or threading.get_ident() != self._loop_thread_id():
                self.loop.call_soon_threadsafe(self._drain_ops)
            else:
                self.loop.call_soon(self._drain_ops)

    def post_lazy(self, fn, *args) -> None:
        """Like post, but no wake-up: for bookkeeping that may wait for the next tick."""
        self._ops.append((fn, args))

    def _loop_thread_id(self):
        return self.thread.ident if self.thread is not None else self._user_loop_thread

    def call_threadsafe_wait(self, fn, *args, timeout=None):
        import concurrent.futures

        future = concurrent.futures.Future()

        def run():
            if self._ops:  # what was posted before (direct calls' records, lazily) first
                self._drain_ops()
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def _run_queued_ops(self) -> bool:
        """Run the queued operations now, from a thread other than the node's.

        The driver's ``del ref`` reaches the node lazily; a large put right
        after it would otherwise land in never-touched memory beside the slot
        about to be freed. Returns whether anything ran.
        """
        if not self._ops or self._closing or threading.get_ident() == self._loop_thread_id():
            return False
        try:
            self.call_threadsafe_wait(self._drain_ops, timeout=5.0)
        except Exception:  # pragma: no cover - a stuck node: write cold, as before
            return False
        return True

    def _drain_ops(self) -> None:
        self._wake_pending = False
        ops = self._ops
        self._batching = True
        try:
            while ops:
                fn, args = ops.popleft()
                try:
                    fn(*args)
                except Exception:  # pragma: no cover - a runtime bug must not kill the loop
                    import traceback

                    traceback.print_exc()
            self._schedule()
            if self.ready and self.direct_leases:  # direct.py: routed work waits
                _direct.on_backlog(self)
        finally:
            self._batching = False
        if self._flush_pending:  # write now rather than one loop iteration later
            self._flush_all()

    def _tick(self) -> None:
        if self._ops:
            self._drain_ops()
        if not self._closing:
            if self.direct_leases or self.direct_caller is not None:
                _direct.tick(self, self.direct_caller)
            self._reap_surplus_workers()
            if self.store.warm_bytes:  # freed pages not reused soon go back to the OS
                self.store.trim(WARM_KEEP_S)
            self.loop.call_later(0.05, self._tick)

    def _reap_surplus_workers(self) -> None:
        # Workers started while others were blocked in get() are let go once
        # they have been idle a while, so the pool returns to one per CPU.
        surplus = self._task_worker_count() - self._worker_target
        if surplus <= 0 or not self.idle:
            return
        now = time.monotonic()
        for worker in list(self.idle):
            if surplus <= 0:
                break
            if now - worker.idle_since > SURPLUS_IDLE_S:
                self.idle.remove(worker)
                self._send(worker, [P.EXIT])
                self.counters["workers_reaped"] += 1
                surplus -= 1

    # -- workers ---------------------------------------------------------------------
    def _spawn_worker(self, actor: ActorState | None = None) -> WorkerHandle:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # direct.py: the worker's second socket, for the driver's direct calls.
        direct_parent, direct_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._next_worker_id += 1
        worker_id = self._next_worker_id
        env = self.worker_env
        if actor is not None and actor.options.get("_gpu_ids"):
            env = dict(env, CUDA_VISIBLE_DEVICES=",".join(map(str, actor.options["_gpu_ids"])))
        if actor is not None and self._omp_default:
            cpus = int(actor.options.get("resources", {}).get("CPU", 0) or 0)
            if cpus > 1:
                env = dict(env, OMP_NUM_THREADS=str(cpus))
        proc = subprocess.Popen(
            [sys.executable, "-m", "miniray._core.worker_main", str(child.fileno()),
             str(self.node_pid), str(self.capacity), str(self.arena_size), str(worker_id),
             str(direct_child.fileno())],
            pass_fds=[child.fileno(), direct_child.fileno()], start_new_session=True, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        child.close()
        direct_child.close()
        worker = WorkerHandle(worker_id, proc, parent)
        worker.actor = actor
        worker.direct = _direct.Channel(worker, direct_parent)
        self._capture_output(worker)
        self.workers[worker_id] = worker
        self.workers_by_pid[proc.pid] = worker
        self._watchdog_note(f"+{proc.pid}")
        self.counters["workers_started"] += 1
        self.events.worker_state(worker, "STARTING")
        runtime = self

        class Protocol(asyncio.Protocol):
            def __init__(self):
                self.unpacker = P.new_unpacker()

            def connection_made(self, transport):
                worker.transport = transport

            def data_received(self, data):
                self.unpacker.feed(data)
                runtime._batching = True
                try:
                    for message in self.unpacker:
                        try:
                            runtime._on_message(worker, message)
                        except Exception:  # pragma: no cover - a runtime bug; keep serving
                            import traceback

                            traceback.print_exc()
                    runtime._schedule()
                finally:
                    runtime._batching = False
                if runtime._flush_pending:
                    runtime._flush_all()

            def connection_lost(self, exc):
                runtime._on_worker_lost(worker)

        parent.setblocking(False)
        self.loop.create_task(self.loop.create_unix_connection(Protocol, sock=parent))
        return worker

    def _capture_output(self, worker: WorkerHandle) -> None:
        """Worker stdout/stderr go to log files (for the dashboard and
        ``miniray logs``) and, like Ray's log_to_driver, to the driver's
        terminal with a ``(name pid=N)`` prefix."""
        os.makedirs(self.log_dir, exist_ok=True)
        runtime = self
        for stream, suffix in ((worker.proc.stdout, "out"), (worker.proc.stderr, "err")):
            path = os.path.join(self.log_dir, f"worker-{worker.worker_id}-{worker.pid}.{suffix}")
            echo = suffix if self.log_to_driver else None

            class LogProtocol(asyncio.Protocol):
                def __init__(self, path=path, echo=echo):
                    self.file = open(path, "ab", buffering=0)
                    self.echo = echo
                    self.partial = b""
                    self.transport = None
                    worker.logs.append(self)

                def connection_made(self, transport):
                    self.transport = transport

                def data_received(self, data):
                    self.file.write(data)
                    if self.echo is not None:
                        runtime._echo(worker, self, data)

                def connection_lost(self, exc):
                    if self.partial and self.echo is not None:
                        runtime._echo(worker, self, b"\n")
                    self.close()

                def close(self):
                    if self.transport is not None:
                        self.transport.close()
                    self.file.close()

            self.loop.create_task(self.loop.connect_read_pipe(LogProtocol, stream))

    def _echo(self, worker: WorkerHandle, log, data: bytes) -> None:
        data = log.partial + data
        lines = data.split(b"\n")
        log.partial = lines.pop()
        if _hooks.PROGRESS_MAGIC in data:  # progress bars (tqdm_ray): drawn by the driver
            lines = [line for line in lines if not _hooks.progress_line(line)]
        if not lines:
            return
        if worker.actor is not None:
            name = worker.actor.class_name
        elif worker.assigned:
            name = next(iter(worker.assigned.values())).name.rsplit(".", 1)[-1]
        elif worker.last_task_name is not None:
            # The output of a task that has finished: its pipe is read after the
            # socket that said it finished.
            name = worker.last_task_name.rsplit(".", 1)[-1]
        else:
            name = "worker"
        prefix = f"({name} pid={worker.pid}) "
        # Looked up now, not at spawn: the driver may redirect sys.stdout meanwhile.
        stream = sys.stdout if log.echo == "out" else sys.stderr
        try:
            stream.write("".join(prefix + line.decode(errors="replace") + "\n"
                                 for line in lines))
            stream.flush()
        except (OSError, ValueError):  # the driver's stdout is closed: keep the file
            log.echo = None

    def _send(self, worker: WorkerHandle, message) -> None:
        worker.out.append(self._pack(message))
        self._flush_pending.add(worker)
        # Inside a batch the batch's end flushes; scheduling a flush too would
        # cost every sync task one more loop iteration (a poll and two GIL hops).
        if not self._flush_scheduled and not self._batching:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_all)

    def _flush_all(self) -> None:
        self._flush_scheduled = False
        pending = self._flush_pending
        self._flush_pending = set()
        for worker in pending:
            self._flush_worker(worker)

    def _flush_worker(self, worker: WorkerHandle) -> None:
        if worker.out and worker.transport is not None and not worker.dead:
            data = b"".join(worker.out)
            worker.out.clear()
            worker.transport.write(data)

    def _on_message(self, worker: WorkerHandle, message) -> None:
        kind = message[0]
        if kind == P.DONE:
            self._on_task_done(worker, message[1], message[2])
        elif kind == P.NOTIFY:
            getattr(self, "rpc_" + message[1])(worker, *message[2])
        elif kind == P.REQUEST:
            self._on_request(worker, message[1], message[2], message[3])
        elif kind == P.FAILED:
            self._on_task_failed(worker, message[1], message[2], message[3])
        elif kind == P.READY:
            if len(message) > 2 and message[2] is not None:
                self._on_setup_failed(worker, message[2])
                return
            worker.ready = True
            self._startup_deaths.clear()
            self.events.worker_state(worker, "ALIVE")
            if worker.transport is not None and worker.out:
                self._flush_worker(worker)
            if worker.actor is not None:
                self._start_actor_on(worker.actor, worker)
            else:
                self._make_idle(worker)
        elif kind == P.ACTOR_READY:
            self._on_actor_ready(worker, message[1], message[2], message[3])

    def _on_request(self, worker, request_id, method, args) -> None:
        try:
            result = getattr(self, "rpc_" + method)(worker, *args)
        except BaseException as exc:
            self._send(worker, [P.REPLY, request_id, False, serialize(exc).to_inline()])
            return
        if isinstance(result, asyncio.Future):
            def reply(fut):
                if worker.dead:
                    return
                exc = fut.exception()
                if exc is not None:
                    self._send(worker, [P.REPLY, request_id, False, serialize(exc).to_inline()])
                else:
                    self._send(worker, [P.REPLY, request_id, True, fut.result()])
            result.add_done_callback(reply)
        else:
            self._send(worker, [P.REPLY, request_id, True, result])

    def _on_worker_lost(self, worker: WorkerHandle) -> None:
        if worker.dead or self._closing:
            worker.dead = True
            return
        worker.dead = True
        self.workers.pop(worker.worker_id, None)
        self.workers_by_pid.pop(worker.pid, None)
        self._watchdog_note(f"-{worker.pid}")
        if worker in self.idle:
            self.idle.remove(worker)
        code = worker.proc.poll()
        if code is None:
            try:
                code = worker.proc.wait(0.5)
            except subprocess.TimeoutExpired:
                code = None
        reason = _describe_exit(code)
        if worker.retiring and code == 0:
            reason = "it retired after a function's max_calls runs"
        oom = getattr(worker, "oom_killed", None)  # set by memory_monitor
        if oom:
            reason = oom
        self.counters["workers_died"] += 1
        self.events.worker_state(worker, "DEAD", reason)
        self._dead_workers.append(worker)
        if not worker.ready and not worker.killed:
            self._note_startup_death(worker, reason)
        # Its objects survive it: _free_storage unlinks its segments once they empty.
        self._release_pins(worker)
        self._drop_reservation(worker)
        self._release_lease(worker)
        if worker.blocked:
            worker.blocked = 0
            self._blocked_workers -= 1
        tasks = list(worker.assigned.values())
        worker.assigned.clear()
        if worker.actor is not None:
            self._on_actor_worker_lost(worker.actor, worker, reason)
        for task in tasks:
            if task.finished or task.actor is not None:
                continue
            task.worker = None
            if task.force_cancelled or task.cancelled:
                self._fail_task(task, _error_bytes(TaskCancelledError(task.task_id.hex())))
            elif task.retries_left > 0:
                task.retries_left -= 1
                self.counters["tasks_retried"] += 1
                self.events.task_retried(task)
                self.ready.appendleft(task)
            elif oom:
                self._fail_task(task, _error_bytes(OutOfMemoryError(
                    f"Task {task.name} was killed to free memory: {oom}.")))
            else:
                self._fail_task(task, _error_bytes(WorkerCrashedError(
                    f"The worker running {task.name} died ({reason}) and the task has no "
                    "retries left; raise max_retries to retry it.")))
        self._release_held(worker)
        if worker.actor is None and self.setup_error is None:
            if self._task_worker_count() < self._worker_target:
                self._spawn_worker()
        self._schedule()

    # -- drivers connected to a head node ----------------------------------------------
    async def serve_drivers(self, token: str, unix_path: str | None = None,
                            host: str | None = None, port: int | None = None) -> list:
        """Accept drivers (``miniray.init(address=...)``) on a Unix socket and/or
        TCP; each must present ``token`` first. Returns the bound addresses."""
        import hmac

        runtime = self
        expected = token.encode()

        self._unauthenticated = 0  # connections that have not presented the token yet

        class Protocol(asyncio.Protocol):
            def __init__(self):
                self.unpacker = P.new_handshake_unpacker()
                self.conn = None
                self.transport = None
                self.timer = None
                self.counted = False

            def connection_made(self, transport):
                self.transport = transport
                if runtime._unauthenticated >= P.MAX_UNAUTHENTICATED:
                    runtime.counters["drivers_rejected"] += 1
                    transport.abort()
                    return
                runtime._unauthenticated += 1
                self.counted = True
                self.timer = runtime.loop.call_later(P.HANDSHAKE_DEADLINE_S, self._expire)

            def _expire(self):
                self.timer = None
                if self.conn is None:
                    runtime.counters["drivers_timed_out"] += 1
                    self.transport.abort()

            def _settle(self):
                if self.counted:
                    self.counted = False
                    runtime._unauthenticated -= 1
                if self.timer is not None:
                    self.timer.cancel()
                    self.timer = None

            def _refuse(self, why: str):
                runtime.counters["drivers_rejected"] += 1
                self._settle()
                self.transport.write(P.pack(["denied", why]))
                self.transport.close()

            def data_received(self, data):
                if self.conn is None:
                    if self.transport.is_closing():
                        return
                    try:
                        self.unpacker.feed(data)
                        message = next(self.unpacker, None)
                    except Exception:  # BufferFull, malformed msgpack
                        self._refuse("the handshake is malformed or larger than "
                                     f"{P.HANDSHAKE_MAX_BYTES} bytes")
                        return
                    if message is None:
                        return  # not all of the hello yet
                    if not self._handshake(message):
                        return
                    data = self.unpacker.read_bytes(P.HANDSHAKE_MAX_BYTES)
                    self.unpacker = P.new_unpacker()
                    if not data:
                        return
                self.unpacker.feed(data)
                try:
                    for message in self.unpacker:
                        try:
                            runtime._on_message(self.conn, message)
                        except Exception as exc:
                            # A malformed message from a driver: say so, keep serving.
                            print(f"miniray: a driver (pid {self.conn.pid}) sent a message "
                                  f"the node could not handle: {exc!r}", file=sys.stderr)
                except Exception as exc:  # not msgpack: the stream cannot be resynced
                    print(f"miniray: closing the connection of driver pid {self.conn.pid}: "
                          f"its stream is not valid msgpack ({exc!r})", file=sys.stderr)
                    self.transport.close()
                runtime._schedule()

            def _handshake(self, message) -> bool:
                ok = (isinstance(message, list) and len(message) >= 3
                      and message[0] == "hello" and isinstance(message[1], str)
                      and hmac.compare_digest(message[1].encode(), expected))
                if not ok:
                    self._refuse("wrong or missing token")
                    return False
                if type(message[2]) is not int or message[2] <= 0:
                    self._refuse("the hello must carry the driver's pid")
                    return False
                self._settle()
                runtime._next_worker_id += 1
                conn = DriverConn(runtime._next_worker_id, message[2], self.transport)
                self.conn = conn
                runtime.drivers[conn.worker_id] = conn
                runtime.workers_by_pid[conn.pid] = conn
                runtime.counters["drivers_connected"] += 1
                from .introspect import command_line, driver_job_id

                conn.entrypoint = command_line(conn.pid)
                self.transport.write(P.pack(["welcome", {**runtime.node_info(),
                                                         "job_id": driver_job_id(runtime, conn)}]))
                return True

            def connection_lost(self, exc):
                self._settle()
                if self.conn is not None:
                    runtime._on_driver_lost(self.conn)

        addresses = []
        if unix_path is not None:
            server = await self.loop.create_unix_server(Protocol, path=unix_path)
            os.chmod(unix_path, 0o600)
            self._driver_servers.append(server)
            addresses.append(unix_path)
        if port is not None:
            server = await self.loop.create_server(Protocol, host or "127.0.0.1", port)
            self._driver_servers.append(server)
            bound = server.sockets[0].getsockname()
            addresses.append(f"{bound[0]}:{bound[1]}")
        return addresses

    def node_info(self) -> dict:
        return {
            "node_pid": self.node_pid, "capacity": self.capacity,
            "arena_size": self.arena_size, "namespace": self.namespace,
            "store_dir": self.store_dir,
            "total": self.total, "session_dir": self.spill_dir,
            "dashboard_url": getattr(self.dashboard, "url", None),
        }

    def _on_driver_lost(self, conn: DriverConn) -> None:
        if conn.dead:
            return
        conn.dead = True
        conn.ended_at = time.time()
        self.ended_drivers.append(conn)
        self.drivers.pop(conn.worker_id, None)
        if self.workers_by_pid.get(conn.pid) is conn:
            del self.workers_by_pid[conn.pid]
        if self._closing:
            return
        self._release_pins(conn)
        self._drop_reservation(conn)
        # Its refs go, so its non-detached actors and unreachable objects go too.
        self._release_held(conn)
        self._schedule()

    def _release_pins(self, holder) -> None:
        """Drop the pins of a worker or driver that is gone."""
        for object_id, n in holder.pins.items():
            entry = self.objects.get(object_id)
            if entry is not None:
                entry.pins -= n
                self._maybe_free_unpinned(object_id, entry)
        holder.pins.clear()

    def _release_held(self, holder) -> None:
        """Drop the refs a worker or driver that is gone held."""
        for object_id, n in list(holder.held.items()):
            self._decref(object_id, n)
        holder.held.clear()

    def rpc_summary(self, caller):
        from .introspect import summary

        info = summary(self)
        if getattr(caller, "is_driver", False):
            info["drivers"] -= 1  # not the one asking (``miniray status``)
        return info

    # -- scheduling ----------------------------------------------------------------
    def _fits(self, resources: dict):
        available = self.available
        for key, amount in resources.items():
            if amount and available.get(key, 0.0) < amount - 1e-9:
                return False
        return True

    def _acquire(self, resources: dict) -> None:
        for key, amount in resources.items():
            if amount and key[0] != "_":
                self.available[key] = self.available.get(key, 0.0) - amount

    def _release(self, resources: dict) -> None:
        total = self.total
        for key, amount in resources.items():
            # "_gpu_ids" is bookkeeping, not an amount; a removed placement
            # group's resources are gone from the node.
            if amount and key[0] != "_" and key in total:
                self.available[key] = self.available.get(key, 0.0) + amount
        if self._pg_pending or self._waiting_actors:
            self._place_waiting()

    def _place_waiting(self) -> None:
        """Create the placement groups, then start the actors, that fit now (in order)."""
        for pg in list(self._pg_pending):
            if self._fits(pg.base):
                self._pg_pending.remove(pg)
                self._reserve_placement_group(pg)
        for actor in list(self._waiting_actors):  # _actor_dead takes dead ones off
            if self._fits(actor.lease):
                self._waiting_actors.remove(actor)
                self._launch_actor(actor)

    def _in_removed_group(self, resources: dict) -> bool:
        """Whether the request names a placement group that was removed (its
        resources are gone from the node's total)."""
        return bool(self._pgs_removed) and any(
            amount and "_group_" in key and key not in self.total
            for key, amount in resources.items())

    def _feasible(self, resources: dict) -> bool:
        """Whether the node could ever give ``resources`` (its total suffices)."""
        total = self.total
        for key, amount in resources.items():
            if amount and total.get(key, 0.0) < amount - 1e-9:
                return False
        return True

    def _park_infeasible(self, work, resources: dict, what: str) -> None:
        """Keep ``work`` (a Task or an ActorState) pending, off the ready queue,
        and say so once per resource shape, as Ray's infeasible warning."""
        self.infeasible.append(work)
        shape = tuple(sorted((k, v) for k, v in resources.items() if v))
        if shape in self._infeasible_warned:
            return
        self._infeasible_warned.add(shape)
        short = {k: self.total.get(k, 0.0) for k, v in shape if self.total.get(k, 0.0) < v}
        hint = ("lower the request, or start the node with more (miniray.init(num_cpus=..., "
                "num_gpus=..., resources={...}))")
        if any(k.startswith("node:") for k in short):
            hint = f"this node's address resource is 'node:{NODE_IP}'"
        print(f"miniray: warning: the resource request {dict(shape)} of {what} is "
              f"infeasible: this node has {short} in total, so it stays pending. Cancel it "
              f"(miniray.cancel / miniray.kill); {hint}.", file=sys.stderr, flush=True)

    def _recheck_infeasible(self) -> None:
        """The node's total grew (a placement group): what fits now is queued."""
        still = []
        for work in self.infeasible:
            if type(work) is Task:
                if work.finished:
                    continue
                if self._feasible(work.resources):
                    self.ready.append(work)
                    continue
            elif work.state == "DEAD" or self._feasible(work.lease):
                continue  # a waiting actor: _place_waiting starts it
            still.append(work)
        self.infeasible = still

    def _gpus_of(self, resources: dict):
        ngpu = int(resources.get("GPU", 0))
        if not ngpu and self.placement_groups:  # "GPU_group_..." inside a group
            ngpu = _group_gpus(resources)
        return ngpu

    def _release_lease(self, worker: WorkerHandle) -> None:
        if worker.lease is not None and not worker.blocked:
            self._release(worker.lease)
            gpu_ids = worker.lease.get("_gpu_ids")
            if gpu_ids:
                self.free_gpu_ids.extend(gpu_ids)
        worker.lease = None

    def _on_setup_failed(self, worker: WorkerHandle, error: bytes) -> None:
        """A worker's runtime_env setup hook raised: the hook is the same in every
        worker, so no work can run; everything waiting fails with the error."""
        if self.setup_error is None:
            self.setup_error = error
        actor = worker.actor
        if actor is not None and actor.worker is worker:
            self._actor_setup_failed(actor, error)
        self._schedule()

    def _note_startup_death(self, worker: WorkerHandle, reason: str) -> None:
        deaths = self._startup_deaths
        deaths.append(os.path.join(self.log_dir, f"worker-{worker.worker_id}-{worker.pid}.err"))
        if len(deaths) < STARTUP_DEATHS_LIMIT or self.setup_error is not None:
            return
        # The first one's stderr is read: it died long enough ago for its pipe
        # to have been drained into the file; the latest may still be in flight.
        tail = _tail(deaths[0])
        self.setup_cause = f"{len(deaths)} workers in a row exited while starting ({reason})"
        self.setup_error = _error_bytes(WorkerCrashedError(
            f"{len(deaths)} worker processes in a row exited while starting, before they "
            f"could take work (the last: {reason}), so no task or actor can run on this "
            "node and no more workers are started. Fix what stops "
            f"`{sys.executable} -m miniray._core.worker_main` from starting (often an import "
            "error, e.g. a file in the working directory named like a standard module), "
            "then call ray.shutdown() and ray.init() again. "
            + (f"The first one's stderr ({deaths[0]}) ends with:\n{tail}" if tail else
               f"Its stderr is in {deaths[0]}.")))

    def _actor_setup_failed(self, actor: ActorState, error: bytes) -> None:
        actor.death_error = error
        actor.death_cause = self.setup_cause
        actor.no_restart = True
        self._actor_dead(actor)

    def _schedule(self) -> None:
        ready = self.ready
        if not ready:
            return
        if self.setup_error is not None:
            while ready:
                self._fail_task(ready.popleft(), self.setup_error)
            return
        idle = self.idle
        blocked = []
        task: Task
        worker: WorkerHandle
        while ready:
            task = ready[0]
            if task.cancelled:
                ready.popleft()
                self._fail_task(task, _error_bytes(TaskCancelledError(task.task_id.hex())))
                continue
            resources = task.resources
            worker = None
            if idle and self._fits(resources):
                worker = idle.pop()
                lease = dict(resources)
                self._acquire(resources)
                ngpu = self._gpus_of(resources)
                if ngpu:
                    lease["_gpu_ids"] = [self.free_gpu_ids.pop(0) for _ in range(ngpu)]
                    task.gpu_ids = lease["_gpu_ids"]
                worker.lease = lease
            else:
                cost = self._short_cost(task.fn_id)
                if cost >= 0.0:
                    worker = self._pipeline_target(resources, cost)
            if worker is None:
                if self._in_removed_group(resources):
                    ready.popleft()
                    self._fail_task(task, _error_bytes(TaskPlacementGroupRemoved(
                        f"The placement group of {task.name} was removed before it ran.")))
                    continue
                if not self._feasible(resources):
                    ready.popleft()  # out of the queue: it must not hold back the others
                    self._park_infeasible(task, resources, f"task {task.name}")
                    continue
                if idle:
                    # Head of line waits for resources; others of other shapes may fit.
                    blocked.append(ready.popleft())
                    if len(blocked) > 64:
                        break
                    continue
                # Every worker is busy and none can queue the head: the tasks behind it
                # wait their turn (scanning them on every completion cost more than the
                # rare task of another shape it could place).
                break
            ready.popleft()
            task.gpu_ids = worker.lease.get("_gpu_ids", ()) if worker.lease else ()
            self._dispatch(task, worker)
        if blocked:
            ready.extendleft(reversed(blocked))
        if ready and not idle and self._blocked_workers:
            self._maybe_grow_pool()

    def _short_cost(self, fn_id):
        """Seconds a task of ``fn_id`` is expected to take if known to be short
        (recent runs under SHORT_TASK_S); -1.0 if unknown or long."""
        cost = self.fn_cost.get(fn_id) if fn_id is not None else None
        return cost if cost is not None and cost < SHORT_TASK_S else -1.0

    def _pipeline_target(self, resources: dict, cost):
        # Only tasks known to be short are queued behind other short tasks, so a
        # long task never holds back work another worker could start.
        best: WorkerHandle = None
        worker: WorkerHandle
        budget = PIPELINE_BUDGET_S - cost
        for worker in self.workers.values():
            if (worker.long_queued == 0 and worker.queued_cost <= budget
                    and worker.actor is None and worker.lease is not None
                    and not worker.retiring
                    and not worker.blocked and worker.ready
                    and len(worker.assigned) < PIPELINE_MAX
                    and _same_shape(worker.lease, resources)):
                if best is None or worker.queued_cost < best.queued_cost:
                    best = worker
        return best

    def _unassign(self, worker: WorkerHandle, task: Task) -> None:
        """Bookkeeping of a task leaving ``worker.assigned`` (already popped)."""
        if not worker.assigned:
            worker.queued_cost = 0.0
            worker.long_queued = 0
        elif task.cost < 0.0:
            worker.long_queued -= 1
        else:
            worker.queued_cost -= task.cost

    def _maybe_grow_pool(self) -> None:
        # Workers blocked in get() lent their CPU back; start more workers so the
        # tasks they wait for can run.
        task_workers = [w for w in self.workers.values() if w.actor is None]
        blocked = sum(1 for w in task_workers if w.blocked)
        starting = sum(1 for w in task_workers if not w.ready)
        if blocked and starting == 0 and len(task_workers) < self._worker_target + blocked:
            self._spawn_worker()

    def _dispatch(self, task: Task, worker: WorkerHandle) -> None:
        if task.pinned:  # a retry: the earlier attempt's pins go
            for object_id in task.pinned:
                self._unpin(object_id)
            task.pinned = ()
        task.worker = worker
        worker.last_task_name = task.name
        queued = bool(worker.assigned)
        task.dispatched_at = 0.0 if queued else time.perf_counter()
        worker.assigned[task.task_id] = task
        task.cost = cost = self._short_cost(task.fn_id)
        if cost >= 0.0:
            worker.queued_cost += cost
        else:
            worker.long_queued += 1
        self.events.task_dispatched(task, worker.worker_id, queued)
        if task.max_calls:
            self._count_call(worker, task)
        if task.fn_id is not None and task.fn_id not in worker.known_functions:
            worker.known_functions.add(task.fn_id)
            self._send(worker, [P.FUNCTION, task.fn_id, self.functions[task.fn_id]])
        args, kwargs, pinned = self._resolve_args(task)
        task.pinned = pinned
        self.counters["tasks_dispatched"] += 1
        if task.actor is not None:
            self._send(worker, [P.ACTOR_CALL, task.task_id, task.method, args, kwargs,
                                task.return_ids, task.name, task.group])
        else:
            self._send(worker, [P.TASK, task.task_id, task.fn_id, args, kwargs,
                                task.return_ids, task.name, task.gpu_ids or None,
                                task.placement, task.env])

    def _count_call(self, worker: WorkerHandle, task: Task) -> None:
        """max_calls: the worker retires after its max_calls-th run of the function."""
        calls = worker.calls[task.fn_id] = worker.calls.get(task.fn_id, 0) + 1
        if calls >= task.max_calls:
            worker.retiring = True

    def _retire(self, worker: WorkerHandle) -> None:
        """A worker that reached a function's max_calls exits, and a fresh one
        takes its place at once (not when the old one's exit is noticed)."""
        worker.killed = True  # a planned exit: not a crash, not a failed start
        self._send(worker, [P.EXIT])
        self.counters["workers_retired"] += 1
        if self._task_worker_count() < self._worker_target and self.setup_error is None:
            self._spawn_worker()

    def _task_worker_count(self) -> int:
        """Task workers that stay: a retiring one's replacement is already counted."""
        return sum(1 for w in self.workers.values() if w.actor is None and not w.retiring)

    def _resolve_args(self, task: Task):
        """Attach each ref argument's data; shared-memory ones are pinned for the task."""
        if not task.has_refs:
            return task.args, task.kwargs, ()
        pinned = []
        resolve = self._resolve_arg
        args = [resolve(a, pinned) for a in task.args]
        kwargs = ({k: resolve(v, pinned) for k, v in task.kwargs.items()}
                  if task.kwargs else None)
        return args, kwargs, pinned

    def _resolve_arg(self, arg, pinned):
        if arg[0] == P.ARG_VALUE:
            return arg
        object_id = arg[1]
        entry: ObjectEntry = self.objects[object_id]
        if entry.state == VALUE_SPILLED:
            self._restore(object_id, entry)  # else the task reads the spill file
        if entry.state == VALUE_SHM:
            entry.pins += 1
            pinned.append(object_id)
        return [P.ARG_REF, object_id, entry.state, entry.data]

    # -- object table --------------------------------------------------------------
    def _set_value(self, object_id: bytes, state, data, contained=None, size=0) -> None:
        if state == VALUE_SHM:
            self._settle_reservation(data)
        entry: ObjectEntry = self.objects.get(object_id)
        if entry is None:
            # Nobody holds a ref any more: drop the value at once.
            if state == VALUE_SHM:
                self._free_storage(data)
            self._release_contained(contained)
            return
        if entry.state != PENDING:  # a retried task finished twice; keep the first
            if state == VALUE_SHM:
                self._free_storage(data)
            self._release_contained(contained)
            return
        entry.contained = contained
        entry.size = size
        if state == VALUE_SHM:
            self._add_used(size)
            self.events.object_event(object_id, "SEALED", size)
        with self._state_lock:
            entry.data = data  # before state: readers of inline values take no lock
            entry.state = state
            waiters = entry.waiters
            entry.waiters = None
        for waiter in waiters:
            waiter(object_id, entry)
        if state == VALUE_SHM and self._over_budget(0) > 0:
            self._spill_over()

    def _add_used(self, delta) -> None:
        with self._used_lock:  # the driver's put adds from its own thread
            self.store_used += delta

    def _release_contained(self, contained) -> None:
        if contained:
            for object_id in contained:
                self._decref(object_id, 1)

    def _incref(self, object_id: bytes, n = 1) -> None:
        entry: ObjectEntry = self.objects.get(object_id)
        if entry is not None:
            entry.refcount += n

    def _decref(self, object_id: bytes, n = 1) -> None:
        entry: ObjectEntry = self.objects.get(object_id)
        if entry is None:
            return
        entry.refcount -= n
        if entry.refcount <= 0:
            self._delete(object_id, entry)

    def _delete(self, object_id: bytes, entry: ObjectEntry) -> None:
        del self.objects[object_id]
        if self.streams and object_id in self.streams:  # a generator dropped mid-way
            self._stream_ended(object_id, entry)
        if entry.is_actor_handle:
            self._on_actor_handles_gone(object_id)
            return
        self.counters["objects_freed"] += 1
        if entry.state == VALUE_SHM:
            self.events.object_event(object_id, "FREED", entry.size)
            if entry.pins > 0:
                entry.free_when_unpinned = True
                self._pinned_garbage[object_id] = entry
            else:
                self._free_entry_storage(entry)
        if self.spill.files and object_id in self.spill.files:
            self.spill.remove(object_id)
        self._release_contained(entry.contained)
        entry.contained = None

    def _free_entry_storage(self, entry: ObjectEntry) -> None:
        self._add_used(-entry.size)
        self._free_storage(entry.data)

    def _maybe_free_unpinned(self, object_id, entry) -> None:
        if entry.free_when_unpinned and entry.pins <= 0:
            entry.free_when_unpinned = False
            self._pinned_garbage.pop(object_id, None)
            self._free_entry_storage(entry)

    def _free_storage(self, location) -> None:
        name = location[0]
        if self.store.owns(name):
            self.store.free(location)
            return
        parsed = shm.parse_name(name)
        owner = self.workers_by_pid.get(parsed[1]) if parsed else None
        if owner is not None and not owner.dead:
            # Its pages go back now, not when the owner next reads its socket
            # (a worker in a long task would keep them past the budget).
            shm.release_in(name, location[1], location[2])
            self._send(owner, [P.FREE, [location]])
            return
        # Owner is gone: the segment is adopted; unlink it when its last object goes.
        if not shm.is_arena(name):
            shm.unlink(name)
            self.store.forget_segment(name)
            return
        live = sum(1 for e in list(self.objects.values())
                   if e.state == VALUE_SHM and e.data[0] == name)
        live += sum(1 for e in list(self._pinned_garbage.values()) if e.data[0] == name)
        # Its pages go back now: readers elsewhere may keep the arena mapped
        # (warm mappings) after it is unlinked, which would keep them alive.
        shm.release_in(name, location[1], location[2])
        if live == 0:
            shm.unlink(name)
            self.store.forget_segment(name)

    def unpin_threadsafe(self, object_id: bytes) -> None:
        self.post_lazy(self._unpin, object_id)

    def _unpin(self, object_id: bytes, n = 1) -> None:
        entry: ObjectEntry = self.objects.get(object_id) or self._pinned_garbage.get(object_id)
        if entry is None:
            return
        entry.pins -= n
        self._maybe_free_unpinned(object_id, entry)

    # -- spilling and the node-wide budget ---------------------------------------------
    # ``store_used`` counts the bytes of every process's live objects, plus what
    # workers reserved for objects they are writing; the driver's warm freed
    # pages count too. Together they stay within ``capacity``.
    def _spill(self, need: int) -> int:
        freed = 0
        spill = self.spill
        for object_id, entry in list(self.objects.items()):
            if freed >= need:
                break
            if entry.state != VALUE_SHM or entry.pins > 0:
                continue
            path = spill.write(self.store, object_id, entry.data)
            if path is None:
                break  # the disk is full too
            location = entry.data
            with self._state_lock:
                if entry.pins > 0:  # a reader got in first; the file serves next time
                    continue
                entry.state = VALUE_SPILLED
                entry.data = path
            self._free_storage(location)
            self._add_used(-entry.size)
            freed += entry.size
            self.counters["objects_spilled"] += 1
            self.counters["bytes_spilled"] += entry.size
            self.events.object_event(object_id, "SPILLED", entry.size)
        return freed

    def _restore(self, object_id: bytes, entry: ObjectEntry) -> None:
        """Bring a spilled object back into shared memory when the budget
        allows; otherwise it stays spilled and readers read its file."""
        # Restored objects are pinned while tasks run on them; a quarter of
        # the store stays free of them so new objects still fit.
        size = entry.size + self.capacity // 4
        if self._over_budget(size) > 0 and (not self.store.trim()
                                             or self._over_budget(size) > 0):
            # No room without spilling something else: readers map the file
            # (the page cache serves it) rather than the store thrashing.
            self.counters["restores_deferred"] += 1
            return
        try:
            location = self.store.write_from_file(entry.data, entry.size)
        except (ObjectStoreFullError, OSError):
            self.counters["restores_deferred"] += 1
            return
        with self._state_lock:
            entry.state = VALUE_SHM
            entry.data = location
        # The file stays until the object is deleted: a reader may hold its path.
        self._add_used(entry.size)
        self.counters["objects_restored"] += 1
        self.events.object_event(object_id, "RESTORED", entry.size)

    def _spill_over(self) -> None:
        """Back within budget after an object arrived past it (best effort)."""
        if self.store.trim() and self._over_budget(0) <= 0:
            return
        self._spill(self._over_budget(0))
        self.store.trim()

    def _over_budget(self, size: int) -> int:
        return self.store_used + self.store.warm_bytes + size - self.capacity

    def _make_room(self, size: int) -> int:
        """Free budget for ``size`` more bytes (warm pages, then spilling);
        raises ObjectStoreFullError when pinned objects leave no room."""
        over = self._over_budget(size)
        if over <= 0:
            return 0
        freed = self.store.trim()
        if self._over_budget(size) > 0:
            freed += self._spill(self._over_budget(size))
            self.store.trim()  # what spilling freed in our own arenas stays warm
        if self._over_budget(size) > 0:
            self._raise_full(size, freed)
        return freed

    def _raise_full(self, size: int, freed: int) -> None:
        refused = self.spill.disk_full
        if refused is not None:
            raise OutOfDiskError(
                f"The object store is full and spilling to {self.spill.dir} failed: the "
                f"disk is full ({refused.strerror}). Free disk space there, choose another "
                "directory with init(object_spilling_directory=...), drop references to "
                "objects you no longer need, or raise miniray.init(object_store_memory=...).")
        pinned = sum(e.size for e in list(self.objects.values())
                     if e.state == VALUE_SHM and e.pins)
        pinned += sum(e.size for e in list(self._pinned_garbage.values()))
        raise ObjectStoreFullError(
            f"The object store is full: {_fmt(self.store_used)} of {_fmt(self.capacity)} "
            f"in use, {_fmt(pinned)} of it pinned by live views or running tasks, and "
            f"{_fmt(size)} more was asked for (spilling freed {_fmt(freed)}; "
            f"{_fmt(self.spill.bytes)} is spilled to {self.spill.dir}). Drop references "
            "to objects you no longer need, or raise miniray.init(object_store_memory=...).")

    def _on_loop(self, fn, *args):
        if threading.get_ident() == self._loop_thread_id():
            return fn(*args)
        return self.call_threadsafe_wait(fn, *args)

    def make_room_threadsafe(self, size: int) -> None:
        """Called by the driver before writing a large object."""
        if size > self.capacity:
            raise ObjectStoreFullError(
                f"An object of {_fmt(size)} does not fit in the object store of "
                f"{_fmt(self.capacity)}; raise miniray.init(object_store_memory=...).")
        if self._over_budget(size) <= 0:
            return
        if threading.get_ident() == self._loop_thread_id():
            self._make_room(size)  # pins cannot be released while this thread waits
            return
        # Objects pinned by tasks that just ended are unpinned a moment later
        # (workers batch their unpins): as Ray's store does, wait a grace period
        # for room before calling the store full.
        deadline = time.monotonic() + STORE_FULL_GRACE_S
        pause = 0.005
        while True:
            try:
                self._on_loop(self._make_room, size)
                return
            except OutOfDiskError:
                raise
            except ObjectStoreFullError:
                if time.monotonic() >= deadline or not self._anything_pinned():
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _anything_pinned(self) -> bool:
        return bool(self._pinned_garbage) or any(
            e.pins for e in list(self.objects.values()) if e.state == VALUE_SHM)

    def _on_store_full(self, size: int) -> bool:
        """The filesystem under the store refused pages (other processes use it
        too): spill regardless of the budget; True if anything was freed."""
        if self._closing:
            return False
        return self._on_loop(self._spill, size) > 0

    def rpc_reserve(self, caller, size: int, force: bool = False, no_wait: bool = False):
        """A worker is about to write ``size`` bytes: take them from the budget
        (spilling if needed). ``force``: its filesystem is full, spill anyway.
        ``no_wait``: sent without waiting for a reply (an async actor's loop),
        so it cannot fail. A negative size returns an unused reservation."""
        if force:
            return self._spill(size) > 0
        if size > 0:
            try:
                self._make_room(size)
            except ObjectStoreFullError:
                if not no_wait:
                    raise
        caller.reserved += size
        self._add_used(size)
        return True

    def _settle_reservation(self, location) -> None:
        """A worker's object arrived: its reservation becomes the object's bytes."""
        parsed = shm.parse_name(location[0])
        if parsed is None or parsed[1] == self.node_pid:
            return
        owner = self.workers_by_pid.get(parsed[1])
        if owner is None or owner.reserved <= 0:
            return
        size = min(location[2], owner.reserved)
        owner.reserved -= size
        self._add_used(-size)  # added back as the object's own bytes

    def _drop_reservation(self, holder) -> None:
        if holder.reserved:
            self._add_used(-holder.reserved)
            holder.reserved = 0

    # -- rpc methods (driver ops and worker requests/notifications) ----------------
    def rpc_register_function(self, caller, fn_id: bytes, blob: bytes) -> None:
        self.functions[fn_id] = blob

    def rpc_add_ref(self, caller, object_id: bytes) -> None:
        entry: ObjectEntry = self.objects.get(object_id)
        if entry is None:
            return
        entry.refcount += 1
        if caller is not DRIVER:
            caller.held[object_id] += 1

    def rpc_remove_ref(self, caller, object_id: bytes) -> None:
        if caller is not DRIVER:
            if caller.held.get(object_id, 0) <= 0:
                return
            caller.held[object_id] -= 1
            if caller.held[object_id] == 0:
                del caller.held[object_id]
        self._decref(object_id, 1)

    def rpc_pin(self, caller, object_id: bytes) -> None:
        entry = self.objects.get(object_id)
        if entry is not None:
            entry.pins += 1
            caller.pins[object_id] += 1

    def rpc_unpin(self, caller, object_id: bytes) -> None:
        if caller.pins.get(object_id, 0) > 0:
            caller.pins[object_id] -= 1
            if caller.pins[object_id] == 0:
                del caller.pins[object_id]
            self._unpin(object_id)

    def fulfill_value(self, object_id: bytes, state: int, data, contained, size) -> None:
        """Set a future ref's value (DriverClient.fulfill); runs on the loop."""
        if contained:
            for c in contained:
                self._incref(c)
        self._set_value(object_id, state, data, contained, size)

    def rpc_put(self, caller, object_id: bytes, data, contained) -> None:
        if caller is not DRIVER:
            self.objects[object_id] = ObjectEntry(1)
            caller.held[object_id] += 1
        if type(contained) is int:  # P.RESULT_ERROR: a generator's error, kept as a ref
            self._set_value(object_id, VALUE_ERROR, data)
            return
        for c in contained:
            self._incref(c)
        if isinstance(data, list):
            self._set_value(object_id, VALUE_SHM, data, contained or None, data[2])
        else:
            self._set_value(object_id, VALUE_INLINE, data, contained or None)

    def rpc_submit(self, caller, fn_id, args, kwargs, contained, options, return_ids) -> None:
        task: Task = Task()
        task.task_id = return_ids[0] if return_ids else os.urandom(16)
        task.fn_id = fn_id
        task.args = args
        task.kwargs = kwargs
        task.contained = contained
        task.return_ids = return_ids
        task.name = options.get("name", "task")
        task.resources = options["resources"]
        task.retries_left = options.get("max_retries", 3)
        if task.retries_left == -1:
            task.retries_left = float("inf")
        task.retry_exceptions = options.get("retry_exceptions", False)
        task.max_calls = options.get("max_calls", 0)
        task.env = options.get("env")
        if "task_events" in options:
            task.record_events = options["task_events"]
        if "pg" in options:
            task.placement = self._placement_of(options["pg"])
        if caller is not DRIVER:
            for object_id in return_ids:
                self.objects[object_id] = ObjectEntry(1)
                caller.held[object_id] += 1
        self.tasks[task.task_id] = task
        self._hold_args(task)
        self.counters["tasks_submitted"] += 1
        self.events.task_submitted(task)
        if task.deps == 0:
            self.ready.append(task)

    def _hold_args(self, task: Task) -> None:
        """Hold every ref the task uses; count the ones not ready yet."""
        task.has_refs = True
        if not task.contained and not task.kwargs and _values_only(task.args):
            task.has_refs = False  # the common case: plain values only
            task.held = ()
            return
        held = []
        for arg in _iter_args(task):
            if arg[0] == P.ARG_REF:
                held.append(arg[1])
        if task.contained:
            held.extend(task.contained)
        task.held = held
        for object_id in held:
            self._incref(object_id)
        for arg in _iter_args(task):
            if arg[0] != P.ARG_REF:
                continue
            entry = self.objects.get(arg[1])
            if entry is None:
                self._fail_task(task, _error_bytes(_lost(arg[1])), schedule=False)
                return
            if entry.state == PENDING:
                task.deps += 1
                entry.waiters.append(self._dependency_waiter(task))
            elif entry.state == VALUE_ERROR:
                task.deps += 1
                self.loop.call_soon(self._dep_failed, task, entry.data)

    def _dependency_waiter(self, task: Task):
        def on_ready(object_id, entry):
            if task.finished:
                return
            if entry.state == VALUE_ERROR:
                self._dep_failed(task, entry.data)
                return
            task.deps -= 1
            if task.deps == 0:
                self.events.task_state(task, _events.PENDING_NODE_ASSIGNMENT)
                if task.actor is not None:
                    self._actor_pump(task.actor)
                else:
                    self.ready.append(task)
        return on_ready

    def _dep_failed(self, task: Task, error: bytes) -> None:
        if task.finished:
            return
        if task.actor is not None:
            try:
                task.actor.queue.remove(task)
            except ValueError:
                pass
        self._fail_task(task, error)

    def _finish_task(self, task: Task) -> None:
        task.finished = True
        # The event bus may keep the finished task a while: not its arguments.
        task.args = task.kwargs = task.contained = None
        self.tasks.pop(task.task_id, None)
        for object_id in task.pinned:
            self._unpin(object_id)
        task.pinned = ()
        for object_id in task.held:
            self._decref(object_id, 1)
        task.held = ()

    def _fail_task(self, task: Task, error: bytes, schedule = True) -> None:
        if task.finished:
            return
        self._finish_task(task)
        self.counters["tasks_failed"] += 1
        self.events.task_ended(task, error)
        for object_id in task.return_ids:
            self._set_value(object_id, VALUE_ERROR, error)

    def _make_idle(self, worker: WorkerHandle) -> None:
        if worker.retiring:
            self._retire(worker)
            return
        worker.idle_since = time.monotonic()
        self.idle.append(worker)

    def _take_assigned(self, worker: WorkerHandle, task_id: bytes):
        """Remove a task the worker reported on; an emptied task worker goes idle."""
        task: Task = worker.assigned.pop(task_id, None)
        if task is None:
            return None
        self._unassign(worker, task)
        actor = task.actor
        if actor is not None:
            actor.inflight.pop(task_id, None)
            if actor.exit_when_idle and not actor.inflight and not actor.queue:
                self._actor_dead(actor)
                self._send(worker, [P.EXIT])
        elif not worker.assigned:
            self._release_lease(worker)
            if not worker.blocked:
                self._make_idle(worker)
        return task

    def _on_task_done(self, worker: WorkerHandle, task_id: bytes, results) -> None:
        task: Task = self._take_assigned(worker, task_id)
        if task is None:
            return
        self.counters["tasks_finished"] += 1
        events = self.events
        events.task_ended(task, None)
        if worker.assigned:
            events.task_started(next(iter(worker.assigned.values())))
        if task.dispatched_at and task.fn_id is not None:
            took = time.perf_counter() - task.dispatched_at
            previous = self.fn_cost.get(task.fn_id)
            self.fn_cost[task.fn_id] = took if previous is None else 0.8 * previous + 0.2 * took
        self._finish_task(task)
        for object_id, (data, contained) in zip(task.return_ids, results):
            if contained:
                if type(contained) is int:  # P.RESULT_ERROR: a position the generator
                    self._set_value(object_id, VALUE_ERROR, data)  # did not reach
                    continue
                for c in contained:
                    self._incref(c)
            if isinstance(data, list):
                self._set_value(object_id, VALUE_SHM, data, contained, data[2])
            else:
                self._set_value(object_id, VALUE_INLINE, data, contained)

    def _on_task_failed(self, worker, task_id, error: bytes, cancelled: bool) -> None:
        task = self._take_assigned(worker, task_id)
        if task is None:
            return
        if not cancelled and task.retries_left > 0 and self._should_retry(task, error):
            task.retries_left -= 1
            task.worker = None
            self.counters["tasks_retried"] += 1
            self.events.task_retried(task)
            actor = task.actor
            if actor is None:
                self.ready.append(task)
            else:  # as in Ray: again on the same actor (max_task_retries, retry_exceptions)
                actor.queue.appendleft(task)
                self._actor_pump(actor)
            return
        self._fail_task(task, error)

    def _should_retry(self, task: Task, error: bytes) -> bool:
        policy = task.retry_exceptions
        if not policy:
            return False
        if policy is True:
            return True
        try:
            exc = deserialize_inline(error)
            classes = tuple(deserialize_inline(policy))
        except Exception:
            return False
        cause = getattr(exc, "cause", exc)
        return isinstance(cause, classes)

    def rpc_requeue(self, worker: WorkerHandle, task_ids) -> None:
        for task_id in reversed(task_ids):
            task = worker.assigned.pop(task_id, None)
            if task is not None:
                self._unassign(worker, task)
                task.worker = None
                for object_id in task.pinned:
                    self._unpin(object_id)
                task.pinned = ()
                self.ready.appendleft(task)

    def _block(self, worker: WorkerHandle) -> None:
        if worker.actor is not None or worker.is_driver:
            return
        if worker.blocked == 0:
            self._blocked_workers += 1
            if worker.lease is not None:
                self._release(worker.lease)
            if len(worker.assigned) > 1:
                self._send(worker, [P.NOTIFY, "return_queued", []])
        worker.blocked += 1

    def _unblock(self, worker: WorkerHandle) -> None:
        if worker.actor is not None or worker.dead or worker.is_driver:
            return
        worker.blocked -= 1
        if worker.blocked == 0:
            self._blocked_workers -= 1
            if worker.lease is not None:
                self._acquire(worker.lease)  # may oversubscribe briefly, as in Ray
            elif not worker.assigned and worker not in self.idle:
                self._make_idle(worker)

    def rpc_get(self, caller, object_ids, timeout):
        entries = []
        missing = []
        for object_id in object_ids:
            entry = self.objects.get(object_id)
            if entry is None:
                entry = ObjectEntry(0)
                entry.state = VALUE_ERROR
                entry.data = _error_bytes(_lost(object_id))
            entries.append(entry)
            if entry.state == PENDING:
                missing.append(entry)
        if not missing:
            return self._reply_values(caller, object_ids, entries)
        future = self.loop.create_future()
        remaining = [len(missing)]
        if caller is not DRIVER:
            self._block(caller)

        def on_ready(object_id, entry):
            remaining[0] -= 1
            if remaining[0] == 0 and not future.done():
                future.set_result(self._reply_values(caller, object_ids, entries))

        for entry in missing:
            entry.waiters.append(on_ready)
        if timeout is not None:
            self.loop.call_later(timeout, lambda: future.done() or future.set_result(None))
        if caller is not DRIVER:
            future.add_done_callback(lambda f: self._unblock(caller))
        return future

    def _reply_values(self, caller, object_ids, entries):
        out = []
        for object_id, entry in zip(object_ids, entries):
            if entry.state == VALUE_SPILLED:
                self._restore(object_id, entry)  # else the caller reads the file
            if entry.state == VALUE_SHM and caller is not DRIVER:
                # Pinned before the reply leaves: between the reply and the
                # reader's mapping, the object must not be spilled or freed.
                entry.pins += 1
                caller.pins[object_id] += 1
            out.append([entry.state, entry.data])
        return out

    def rpc_wait(self, caller, object_ids, num_returns, timeout):
        def ready_ids():
            return [i for i in object_ids
                    if (e := self.objects.get(i)) is None or e.state != PENDING]

        done = ready_ids()
        if len(done) >= num_returns or timeout == 0:
            return done[:num_returns]
        future = self.loop.create_future()
        if caller is not DRIVER:
            self._block(caller)
            future.add_done_callback(lambda f: self._unblock(caller))

        def check(*_):
            if future.done():
                return
            ready = ready_ids()
            if len(ready) >= num_returns:
                future.set_result(ready[:num_returns])

        for object_id in object_ids:
            entry = self.objects.get(object_id)
            if entry is not None and entry.state == PENDING:
                entry.waiters.append(check)
        if timeout is not None:
            self.loop.call_later(
                timeout, lambda: future.done() or future.set_result(ready_ids()[:num_returns]))
        return future

    def rpc_cancel(self, caller, object_id: bytes, force: bool, recursive: bool) -> None:
        task = self.tasks.get(object_id)
        if task is None or task.finished:
            return
        if force and task.actor is not None:
            raise ValueError("force=True is not supported for actor tasks; "
                             "use miniray.kill(actor) to stop the actor.")
        task.cancelled = True
        if task.worker is None:
            if task.actor is not None:
                try:
                    task.actor.queue.remove(task)
                except ValueError:
                    pass
            try:
                self.ready.remove(task)
            except ValueError:
                pass
            if task in self.infeasible:
                self.infeasible.remove(task)
            self._fail_task(task, _error_bytes(TaskCancelledError(task.task_id.hex())))
            return
        worker = task.worker
        if force:
            task.force_cancelled = True
            try:
                os.kill(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        self._send(worker, [P.CANCEL, task.task_id])
        self._flush_all()
        if worker.actor is None or not worker.actor.is_async:
            try:
                os.kill(worker.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass

    def rpc_resources(self, caller):
        return [self.total, self.available]

    # -- placement groups ------------------------------------------------------------
    def rpc_create_placement_group(self, caller, pg_id: bytes, bundles: list, strategy: str,
                                   name: str) -> None:
        if name and any(pg.name == name and pg.state != "REMOVED"
                        for pg in self.placement_groups.values()):
            raise ValueError(f"A placement group named {name!r} already exists; remove it "
                             "or pick another name.")
        base: dict = {}
        for bundle in bundles:
            for key, amount in bundle.items():
                base[key] = base.get(key, 0.0) + amount
        short = {k: v for k, v in base.items() if self.total.get(k, 0.0) < v - 1e-9}
        if short:
            raise ValueError(
                f"The placement group {bundles} needs {base} in all, more than this node has "
                f"({ {k: self.total.get(k, 0.0) for k in short} }), so it could never be "
                "created. Ask for less, or start the node with more.")
        pg = PlacementGroupState(pg_id, bundles, strategy, name, base)
        hex_id = pg_id.hex()
        from ..util.placement_group import group_resource

        for index, bundle in enumerate(bundles):
            for key, amount in bundle.items():
                for resource in (group_resource(key, hex_id, index),
                                 group_resource(key, hex_id)):
                    pg.keys[resource] = pg.keys.get(resource, 0.0) + amount
        for resource, amount in pg.keys.items():
            self.total[resource] = amount
            self.available[resource] = 0.0  # until the group is reserved
        self.placement_groups[pg_id] = pg
        self._pg_pending.append(pg)
        if self.infeasible:
            self._recheck_infeasible()
        self._place_waiting()

    def _reserve_placement_group(self, pg: PlacementGroupState) -> None:
        self._acquire(pg.base)
        for resource, amount in pg.keys.items():
            self.available[resource] = amount
        pg.state = "CREATED"
        ready, pg.ready_ids = pg.ready_ids, []
        for object_id in ready:
            self._set_value(object_id, VALUE_INLINE, _TRUE)

    def rpc_placement_group_ready(self, caller, pg_id: bytes, object_id: bytes) -> None:
        self.objects[object_id] = ObjectEntry(1)
        if caller is not DRIVER:
            caller.held[object_id] += 1
        pg = self.placement_groups.get(pg_id)
        if pg is None or pg.state == "REMOVED":
            self._set_value(object_id, VALUE_ERROR, _error_bytes(TaskPlacementGroupRemoved(
                f"The placement group {pg_id.hex()} was removed (or never existed).")))
        elif pg.state == "CREATED":
            self._set_value(object_id, VALUE_INLINE, _TRUE)
        else:
            pg.ready_ids.append(object_id)

    def rpc_remove_placement_group(self, caller, pg_id: bytes) -> None:
        pg = self.placement_groups.get(pg_id)
        if pg is None or pg.state == "REMOVED":
            return
        hex_id = pg_id.hex()
        was_created = pg.state == "CREATED"
        pg.state = "REMOVED"
        self._pgs_removed += 1
        if pg in self._pg_pending:
            self._pg_pending.remove(pg)
        for resource in pg.keys:
            self.total.pop(resource, None)
            self.available.pop(resource, None)
        error = _error_bytes(TaskPlacementGroupRemoved(
            f"The placement group {hex_id} was removed before this work could run in it."))
        ready, pg.ready_ids = pg.ready_ids, []
        for object_id in ready:
            self._set_value(object_id, VALUE_ERROR, error)
        # Queued anywhere, not only at the head, where _schedule would find it.
        in_group = [t for t in self.ready if self._in_removed_group(t.resources)]
        for task in in_group:
            self.ready.remove(task)
            self._fail_task(task, error)
        for actor in list(self.actors.values()):
            if actor.state != "DEAD" and self._in_removed_group(actor.lease or {}):
                self._kill_actor(actor, _PG_REMOVED)
        if was_created:
            self._release(pg.base)  # tasks still running in it finish
        self._schedule()

    def rpc_get_placement_group(self, caller, name: str):
        for pg in self.placement_groups.values():
            if pg.name == name and pg.state != "REMOVED":
                return [pg.pg_id, pg.bundles]
        return None

    def rpc_placement_group_table(self, caller) -> dict:
        return {pg.pg_id.hex(): {
            "placement_group_id": pg.pg_id.hex(), "name": pg.name, "strategy": pg.strategy,
            "state": pg.state, "bundles": dict(enumerate(pg.bundles)),
        } for pg in self.placement_groups.values()}

    # -- actors --------------------------------------------------------------------------
    def rpc_create_actor(self, caller, actor_id, fn_id, args, kwargs, contained, options,
                         class_name):
        name = options.get("name")
        namespace = options.get("namespace") or self.namespace
        options["namespace"] = namespace
        if name:
            key = (namespace, name)
            existing = self.named_actors.get(key)
            if existing is not None and self.actors[existing].state != "DEAD":
                if options.get("get_if_exists"):
                    return existing
                raise ActorAlreadyExistsError(
                    f"An actor named {name!r} already exists in namespace {namespace!r}; "
                    "pick another name, or pass get_if_exists=True to reuse it.")
            self.named_actors[key] = actor_id
        actor = ActorState(actor_id, fn_id, args, kwargs, contained, options, class_name)
        self.actors[actor_id] = actor
        self.events.actor_state(actor, "DEPENDENCIES_UNREADY")
        handle_entry = ObjectEntry(0 if caller is DRIVER else 1)
        handle_entry.is_actor_handle = True
        if options.get("lifetime") == "detached" or name:
            handle_entry.refcount += 1  # lives until killed
        if caller is DRIVER:
            handle_entry.refcount += 1
        else:
            caller.held[actor_id] += 1
        self.objects[actor_id] = handle_entry
        task = Task()
        task.args, task.kwargs, task.contained = args, kwargs, contained
        task.held = ()
        held = [a[1] for a in _iter_args(task) if a[0] == P.ARG_REF] + list(contained or ())
        for object_id in held:
            self._incref(object_id)
        actor.held = held
        # What the creation waits for is what the worker receives resolved: the
        # top-level ObjectRef arguments, as for a task. Refs nested in values and
        # actor handles (whose entries never become ready) are only held.
        pending = _unready_arguments(self.objects, task)
        resources = options.get("resources", {})
        if not self._feasible(resources):
            self._park_infeasible(actor, resources, f"actor {class_name}")
        actor.lease = dict(resources)
        if pending:
            remaining = [len(pending)]

            def on_ready(object_id, entry):
                remaining[0] -= 1
                if remaining[0] == 0:
                    self._launch_actor(actor)
            for entry in pending:
                entry.waiters.append(on_ready)
        else:
            self._launch_actor(actor)
        return actor_id

    def _launch_actor(self, actor: ActorState) -> None:
        if self.setup_error is not None:
            self._actor_setup_failed(actor, self.setup_error)
            return
        lease = actor.lease
        if self._in_removed_group(lease):
            self._kill_actor(actor, _PG_REMOVED)
            return
        if not self._fits(lease):
            # As in Ray: the actor waits for its resources (PENDING_CREATION)
            # rather than oversubscribe the node.
            if actor not in self._waiting_actors:
                self._waiting_actors.append(actor)
                actor.state = "PENDING_CREATION"
                self.events.actor_state(actor)
            return
        self._acquire(lease)
        ngpu = self._gpus_of(lease)
        if ngpu:
            actor.options["_gpu_ids"] = [self.free_gpu_ids.pop(0) for _ in range(ngpu)]
        actor.state = "PENDING_CREATION" if actor.num_restarts == 0 else "RESTARTING"
        worker = self._spawn_worker(actor)
        actor.worker = worker
        self.events.actor_state(actor)

    def _start_actor_on(self, actor: ActorState, worker: WorkerHandle) -> None:
        if actor.fn_id not in worker.known_functions:
            worker.known_functions.add(actor.fn_id)
            self._send(worker, [P.FUNCTION, actor.fn_id, self.functions[actor.fn_id]])
        task = Task()
        task.args, task.kwargs = actor.args, actor.kwargs
        args, kwargs, pinned = self._resolve_args(task)
        actor.init_pinned = pinned
        options = {"max_concurrency": actor.options.get("max_concurrency"),
                   "concurrency_groups": actor.options.get("concurrency_groups"),
                   "env": actor.options.get("env"),
                   "placement": self._placement_of(actor.options.get("pg"))}
        self._send(worker, [P.ACTOR_CREATE, actor.actor_id, actor.fn_id, args, kwargs, options])

    def _on_actor_ready(self, worker, actor_id, error, is_async) -> None:
        actor = self.actors.get(actor_id)
        if actor is None:
            return
        for object_id in getattr(actor, "init_pinned", ()):
            self._unpin(object_id)
        actor.init_pinned = ()
        actor.is_async = is_async
        if error is not None:
            actor.death_error = error
            actor.death_cause = "the actor's __init__ raised"
            self._actor_dead(actor)
            os.kill(worker.pid, signal.SIGKILL) if not worker.dead else None
            return
        actor.state = "ALIVE"
        # direct.py: a sync actor's worker reads its direct channel (run_sync).
        actor.direct_ok = not is_async and (actor.options.get("max_concurrency") or 1) <= 1 \
            and not actor.options.get("concurrency_groups")
        self.events.actor_state(actor)
        self._actor_pump(actor)

    def rpc_actor_call(self, caller, actor_id, task_id, method, args, kwargs, contained,
                       return_ids, options) -> None:
        actor = self.actors.get(actor_id)
        task: Task = Task()
        task.task_id = task_id
        task.fn_id = None
        task.args, task.kwargs, task.contained = args, kwargs, contained
        task.return_ids = return_ids
        task.name = options.get("name") or method
        task.method = method
        task.resources = {}
        retries = options.get("max_task_retries")
        task.retries_left = (actor.max_task_retries if actor is not None else 0) \
            if retries is None else (float("inf") if retries == -1 else retries)
        task.retry_exceptions = options.get("retry_exceptions", False)
        task.group = options.get("concurrency_group")
        if "task_events" in options:
            task.record_events = options["task_events"]
        task.actor = actor
        if caller is not DRIVER:
            for object_id in return_ids:
                self.objects[object_id] = ObjectEntry(1)
                caller.held[object_id] += 1
        self.tasks[task_id] = task
        self.counters["actor_calls_submitted"] += 1
        if actor is None:
            self._fail_task(task, _error_bytes(ActorDiedError(
                "No such actor (it was never created on this node or was removed).")))
            return
        if actor.state == "DEAD":
            self._hold_args(task)
            self._fail_task(task, self._actor_death_error(actor))
            return
        self._hold_args(task)
        if task.finished:
            return
        self.events.task_submitted(task)
        actor.queue.append(task)
        self._actor_pump(actor)

    def _actor_pump(self, actor: ActorState) -> None:
        if actor.state != "ALIVE":
            return
        worker: WorkerHandle = actor.worker
        queue = actor.queue
        task: Task
        while queue:
            task = queue[0]
            if task.deps:
                break  # calls run in submission order
            queue.popleft()
            if task.finished:
                continue
            actor.inflight[task.task_id] = task
            self._dispatch(task, worker)

    def _actor_death_error(self, actor: ActorState) -> bytes:
        if actor.death_cause == _PG_REMOVED:
            return _error_bytes(ActorPlacementGroupRemoved(
                f"The actor {actor.class_name} died: {_PG_REMOVED}.", actor.actor_id.hex()))
        if actor.death_error is not None:
            cause = deserialize_inline(actor.death_error)
            err = ActorDiedError(
                f"The actor {actor.class_name} died: {actor.death_cause}.\n{cause}",
                actor.actor_id.hex())
            err.__cause__ = None
            return _error_bytes(err)
        return _error_bytes(ActorDiedError(
            f"The actor {actor.class_name} died: {actor.death_cause}.", actor.actor_id.hex()))

    def _on_actor_worker_lost(self, actor: ActorState, worker, reason: str) -> None:
        if actor.worker is not worker:
            return
        actor.worker = None
        self._release(actor.lease)
        if actor.options.get("_gpu_ids"):
            self.free_gpu_ids.extend(actor.options.pop("_gpu_ids"))
        inflight = list(actor.inflight.values())
        actor.inflight.clear()
        if actor.state == "DEAD":
            for task in inflight:
                self._fail_task(task, self._actor_death_error(actor))
            return
        if not actor.no_restart:
            actor.death_cause = f"its worker process exited ({reason})"
        can_restart = actor.restarts_left > 0 and not actor.no_restart
        retry = []
        for task in inflight:
            if can_restart and task.retries_left > 0:
                task.retries_left -= 1
                task.worker = None
                retry.append(task)
            else:
                for object_id in task.pinned:
                    self._unpin(object_id)
                task.pinned = ()
                self._fail_task(task, _error_bytes(ActorDiedError(
                    f"The actor {actor.class_name} died while running {task.name}: "
                    f"{actor.death_cause}.", actor.actor_id.hex())))
        if can_restart:
            actor.restarts_left -= 1
            actor.num_restarts += 1
            self.counters["actor_restarts"] += 1
            actor.queue.extendleft(reversed(retry))
            self._launch_actor(actor)
        else:
            self._actor_dead(actor)

    def _actor_dead(self, actor: ActorState) -> None:
        actor.state = "DEAD"
        if actor in self._waiting_actors:
            self._waiting_actors.remove(actor)
            if actor in self.infeasible:
                self.infeasible.remove(actor)
        self.events.actor_state(actor)
        queue = list(actor.queue)
        actor.queue.clear()
        error = self._actor_death_error(actor)
        for task in queue:
            self._fail_task(task, error)
        for object_id in getattr(actor, "held", ()):
            self._decref(object_id)
        actor.held = ()
        if actor.name:
            key = (actor.namespace, actor.name)
            if self.named_actors.get(key) == actor.actor_id:
                del self.named_actors[key]

    def rpc_actor_exit(self, caller, actor_id) -> None:
        actor = self.actors.get(actor_id)
        if actor is not None:
            actor.no_restart = True
            actor.death_cause = "it called exit_actor()"

    def rpc_kill_actor(self, caller, actor_id, no_restart) -> None:
        actor = self.actors.get(actor_id)
        if actor is None or actor.state == "DEAD":
            return
        self._kill_actor(actor, "it was killed with miniray.kill()", no_restart)

    def _kill_actor(self, actor: ActorState, cause: str, no_restart: bool = True) -> None:
        if no_restart:
            actor.no_restart = True
            actor.death_cause = cause
            if actor.worker is None:
                self._actor_dead(actor)
        worker = actor.worker
        if no_restart:
            actor.state = "DEAD" if worker is not None else actor.state
            if worker is not None:
                self._actor_dead(actor)
        if worker is not None and not worker.dead:
            worker.killed = True
            try:
                os.kill(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _on_actor_handles_gone(self, actor_id: bytes) -> None:
        actor = self.actors.get(actor_id)
        if actor is None or actor.state == "DEAD":
            return
        # Like Ray: an actor nobody can call any more exits once its queue drains.
        actor.death_cause = "all references to it were dropped"
        actor.no_restart = True
        if actor.worker is not None and not actor.worker.dead:
            if not actor.queue and not actor.inflight:
                self._actor_dead(actor)
                self._send(actor.worker, [P.EXIT])
            else:
                actor.exit_when_idle = True
        else:
            self._actor_dead(actor)

    def rpc_get_actor(self, caller, name, namespace):
        namespace = namespace or self.namespace
        actor_id = self.named_actors.get((namespace, name))
        if actor_id is None:
            raise ValueError(
                f"Failed to look up actor with name {name!r} in namespace {namespace!r}: "
                "no such named actor. Create it with .options(name=...) first, or check "
                "the namespace.")
        actor = self.actors[actor_id]
        return [actor_id, actor.options.get("_handle_meta")]

    def rpc_actor_state(self, caller, actor_id):
        actor = self.actors.get(actor_id)
        if actor is None:
            return None
        return {"state": actor.state, "restarts": actor.num_restarts,
                "pid": actor.worker.pid if actor.worker else None,
                "death_cause": actor.death_cause}

    def rpc_list_named_actors(self, caller, all_namespaces):
        return [{"name": n, "namespace": ns} if all_namespaces else n
                for (ns, n) in self.named_actors
                if all_namespaces or ns == self.namespace]

    # -- introspection -------------------------------------------------------------------
    # -- generator tasks: values handed out as they are yielded -----------------------
    def rpc_direct_done(self, caller, return_ids, results) -> None:
        """A direct call's result other than one inline value (direct.py)."""
        _direct.node_direct_done(self, caller, return_ids, results)

    def rpc_stream_item(self, caller, source_id: bytes, index: int, item_id: bytes) -> None:
        entry = self.objects.get(source_id)
        if entry is None or entry.state != PENDING:
            return  # nobody waits for it, or the task already ended
        stream = self._stream_of(source_id, entry)
        if index != len(stream.items):
            return  # a retried attempt yielding what the first one did
        self._incref(item_id)
        stream.items.append(item_id)
        waiting, stream.waiters = stream.waiters, []
        for wanted, future in waiting:
            if future.done():
                continue
            if wanted < len(stream.items):
                future.set_result(stream.items[wanted])
            else:
                stream.waiters.append((wanted, future))

    def rpc_stream_next(self, caller, source_id: bytes, index: int):
        """The id of value ``index`` of a generator task, once yielded; None once
        the task has ended (the caller then reads its return value)."""
        stream = self.streams.get(source_id)
        if stream is not None and index < len(stream.items):
            return stream.items[index]
        entry = self.objects.get(source_id)
        if entry is None or entry.state != PENDING:
            return None
        stream = self._stream_of(source_id, entry)
        future = self.loop.create_future()
        stream.waiters.append((index, future))
        if caller is not DRIVER:  # a task waiting for the next value lends its CPU, as in get
            self._block(caller)
            future.add_done_callback(lambda f: self._unblock(caller))
        return future

    def _stream_of(self, source_id: bytes, entry: ObjectEntry) -> _Stream:
        """The stream of a generator task still running (created on first use)."""
        stream = self.streams.get(source_id)
        if stream is None:
            stream = self.streams[source_id] = _Stream()
            entry.waiters.append(self._stream_ended)
        return stream

    def _stream_ended(self, source_id: bytes, entry) -> None:
        stream = self.streams.pop(source_id, None)
        if stream is None:
            return
        for _, future in stream.waiters:
            if not future.done():
                future.set_result(None)
        # The return value holds every value now; the stream's holds go.
        for item_id in stream.items:
            self._decref(item_id)

    def _placement_of(self, placement):
        """``[pg_id, bundles, capture]`` for the worker's runtime context, from a
        submission's ``[pg_id, capture]`` (None outside a group or once removed)."""
        if placement is None:
            return None
        pg = self.placement_groups.get(placement[0])
        return None if pg is None else [pg.pg_id, pg.bundles, bool(placement[1])]

    def rpc_worker_context(self, caller):
        """What a worker's runtime context asks the node: the resources its
        current work holds, and whether its actor is a restart."""
        actor = getattr(caller, "actor", None)
        lease = (actor.lease if actor is not None else getattr(caller, "lease", None)) or {}
        held: dict = {}
        for key, amount in lease.items():
            if amount and not key.startswith("_"):
                key = key.split("_group_", 1)[0]  # a placement group's CPU is a CPU
                held[key] = held.get(key, 0.0) + amount
        return {
            "resources": held,
            "restarted": actor is not None and actor.num_restarts > 0,
        }

    def rpc_state(self, caller, kind: str, limit: int):
        """Records for ``miniray.util.state`` and ``timeline`` (newest first)."""
        from . import introspect

        if kind == "tasks":
            return introspect.mark_infeasible(self, self.events.list_tasks(None, None, 0,
                                                                             limit)[1])
        if kind == "actors":
            return introspect.list_actors(self)[:limit]
        if kind == "objects":
            return introspect.list_objects(self, 0, limit)[1]
        if kind == "workers":
            return introspect.list_workers(self)[:limit]
        if kind == "nodes":
            return introspect.list_nodes(self)
        if kind == "jobs":
            return introspect.list_jobs(self)[:limit]
        if kind == "logs":  # the files live on this machine: callers read them directly
            return [{**log, "path": os.path.join(self.log_dir, log["name"])}
                    for log in introspect.list_logs(self)[:limit]]
        raise ValueError(f"unknown state kind {kind!r}")

    def rpc_metrics_record(self, caller, batch) -> None:
        """Application metrics (``miniray.util.metrics``) from one process, batched:
        counter increments, gauge values and histogram counts since its last batch."""
        store = getattr(self, "user_metrics", None)
        if store is None:
            from .metrics import UserMetrics

            store = self.user_metrics = UserMetrics()
        store.record(batch)

    def rpc_stats(self, caller):
        return {
            "objects": len(self.objects),
            "store_used": self.store_used,
            "capacity": self.capacity,
            "spilled_bytes": self.spill.bytes,
            "spilled_objects": len(self.spill.files),
            "tasks_pending": len(self.tasks),
            "workers": len(self.workers),
            "actors": sum(1 for a in self.actors.values() if a.state != "DEAD"),
            "counters": dict(self.counters),
            "driver_store": self.store.allocator_stats(),
        }


# Out of the cpdef methods (runtime.pxd) that use them: Cython compiles no
# generator expressions or closures inside a cpdef method.
def _values_only(args) -> bool:
    for arg in args:
        if arg[0] != P.ARG_VALUE:
            return False
    return True


def _iter_args(task: Task):
    yield from task.args
    if task.kwargs:
        yield from task.kwargs.values()


def _unready_arguments(objects: dict, task: Task) -> list:
    """The entries of the task's top-level ref arguments that are not ready yet."""
    pending = []
    for arg in _iter_args(task):
        if arg[0] != P.ARG_REF:
            continue
        entry = objects.get(arg[1])
        if entry is not None and entry.state == PENDING and not entry.is_actor_handle:
            pending.append(entry)
    return pending


def _group_gpus(resources: dict) -> int:  # out of _gpus_of (cpdef): see _values_only
    return int(sum(v for k, v in resources.items() if k.startswith("GPU_group_")))


def _same_shape(lease: dict, resources: dict) -> bool:
    for key in set(lease) | set(resources):
        if key == "_gpu_ids":
            continue
        if lease.get(key, 0) != resources.get(key, 0):
            return False
    return True


def _lost(object_id: bytes):
    from ..exceptions import ObjectLostError

    return ObjectLostError(object_id.hex(), "no reference to it was held, so it was freed")


_PG_REMOVED = "its placement group was removed"


def _error_bytes(exc: BaseException) -> bytes:
    return serialize(exc).to_inline()


class _Stream:
    __slots__ = ("items", "waiters")

    def __init__(self):
        self.items: list = []
        self.waiters: list = []  # (index, future)


class PlacementGroupState:
    """A placement group on the node: its bundles, and the node resources named
    after it (``CPU_group_<id>``, ``CPU_group_<i>_<id>``) that work in it uses."""

    def __init__(self, pg_id: bytes, bundles: list, strategy: str, name: str, base: dict):
        self.pg_id = pg_id
        self.bundles = bundles
        self.strategy = strategy
        self.name = name
        self.base = base  # what it takes from the node once created
        self.keys: dict = {}
        self.state = "PENDING"
        self.ready_ids: list = []


_TRUE = serialize(True).to_inline()


def _tail(path: str, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def _describe_exit(code) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit code {code}"


__all__ = ["NodeRuntime", "RayTaskError"]
