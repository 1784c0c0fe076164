"""The node runtime: ``NodeRuntime``, the one object a node runs.

It owns the loop and the node's lifecycle (``start``, ``shutdown``), routes
messages and RPCs (``_on_message``, ``_on_request``: ``rpc_<name>`` methods on
any component) and answers the introspection RPCs (state, stats, metrics).
Everything else lives in its components, one module each, stacked as a chain
of classes on one object (each component's module says what it owns):

    core -> objects -> worker_pool -> scheduler -> tasks -> placement_groups
         -> actors -> streams -> drivers -> runtime

Everything runs on one asyncio loop (the *runtime loop*): a background
thread's uvloop in sync programs, or the caller's own loop when ``init()``
runs inside one. Other threads never mutate runtime state directly: they
append operations to ``_ops`` and wake the loop at most once per burst
(``_wake``, see core.py), so a tight ``f.remote()`` loop costs one wake-up,
not one per call.

Two things are shared with the driver's threads, under ``_state_lock``:
object entries' ``state``/``data``/``waiters`` (so ``get`` of a ready object
never waits on the loop) and the creation of entries for objects the driver
itself creates.

All the node's state is created in ``NodeRuntime.__init__`` (each component's
docstring names the attributes it owns) and, where the hot paths read it,
declared for the compiled build on the base class in core.pxd.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time

from . import direct as _direct
from .. import protocol as P
from ..store import shm
from . import events as _events
from ..store.object_store import WARM_KEEP_S, LocalStore
from ..store.serialization import serialize
from ..store.spilling import SpillFiles
from .state import (
    ActorState,
    DriverConn,
    NODE_IP,
    ObjectEntry,
    PlacementGroupState,
    Task,
    WorkerHandle,
    _PACKAGE_ROOT,
    _Stream,
)
from ...exceptions import RayTaskError
from .drivers import DriverServer


class NodeRuntime(DriverServer):
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
        self.fn_cost: dict[bytes, float] = {}  # EWMA of the workers' run times
        # Set when a task is queued behind another: a later idle worker looks
        # for work to steal back only while it is (cleared by a scan finding none).
        self._steal_hint = False
        self._steal_timer = None
        self._steal_watch = None  # [(worker, its current task)] the timer checks
        self._pack = P.new_packer().pack  # runtime thread only: a Packer is not thread-safe
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
        pkg_root = _PACKAGE_ROOT
        env["PYTHONPATH"] = pkg_root + os.pathsep + env.get("PYTHONPATH", "")
        env.update(self.runtime_env_vars)
        if self.setup_hook is not None:
            from ..runtime_env import HOOK_ENV

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
            from ..loop import new_event_loop

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

    def _on_message(self, worker: WorkerHandle, message) -> None:
        kind = message[0]
        if kind == P.DONE:
            self._on_task_done(worker, message[1], message[2],
                               message[3] if len(message) > 3 else -1.0)
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

    def rpc_summary(self, caller):
        from .introspect import summary

        info = summary(self)
        if getattr(caller, "is_driver", False):
            info["drivers"] -= 1  # not the one asking (``miniray status``)
        return info

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


__all__ = ["NodeRuntime", "RayTaskError"]
