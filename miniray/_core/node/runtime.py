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

Each component declares the state it owns in its own .pxd and creates it in
its ``_init_<component>`` method; ``NodeRuntime.__init__`` calls them in
chain order. The runtime's own: the loop (``loop``, ``thread``,
``owns_loop``, ``_user_loop_thread``), what ``init()`` sets before ``start``
(``runtime_env_vars``, ``setup_hook``, ``log_to_driver`` on the pool), the
workers' environment (``worker_env``), the sampler, user metrics, memory
monitor and dashboard. No component assigns another's state
(tests/test_architecture.py checks it); the node has no instance
``__dict__``, so an undeclared attribute cannot be set.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

from . import direct as _direct
from .. import protocol as P
from ..store import shm
from ..store.object_store import WARM_KEEP_S
from ..store.serialization import serialize
from .state import WorkerHandle, _PACKAGE_ROOT
from ...exceptions import RayTaskError
from .drivers import DriverServer


class NodeRuntime(DriverServer):
    def __init__(self, num_cpus, num_gpus, resources, object_store_memory, namespace,
                 arena_size=None, spill_dir=None, event_caps=None, spill_parent=None,
                 store_dir=None):
        # Each component creates the state it owns (declared in its .pxd), in
        # chain order: a component's state may be built from the ones below it.
        self._init_core(event_caps)
        self._init_objects(object_store_memory, arena_size, spill_dir, spill_parent, store_dir)
        self._init_worker_pool(num_cpus)
        self._init_scheduler(num_cpus, num_gpus, resources, object_store_memory)
        self._init_tasks()
        self._init_placement_groups()
        self._init_actors(namespace)
        self._init_streams()
        self._init_drivers()
        self._init_runtime()

    def _init_runtime(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.owns_loop = False
        self._user_loop_thread = None
        self.started_at = time.time()
        self.worker_env = None
        # init(runtime_env=...): set before start()
        self.runtime_env_vars: dict = {}
        self.setup_hook: bytes | None = None
        self.sampler = None  # the MetricsSampler, from start()
        self.user_metrics = None  # miniray.util.metrics, from the first record
        self.memory_monitor = None  # set by init() / the head when it runs one
        self.dashboard = None
        self.dashboard_boot = None  # the task starting it, while it runs
        self.dashboard_token = None
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

    def _close_dashboard_now(self) -> None:
        """Close the dashboard without the loop (the caller's: it may never run again)."""
        boot, self.dashboard_boot = self.dashboard_boot, None
        if boot is not None:
            boot.cancel()
        if self.dashboard is not None:
            dashboard, self.dashboard = self.dashboard, None
            dashboard.close_now()

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
