"""The worker pool: spawning worker processes, their output, their death.

Owns ``workers``, ``workers_by_pid``, ``idle``, ``_dead_workers``, the ids
(``_next_worker_id``, shared with connected drivers: ``_take_worker_id``),
``_worker_target``, ``_startup_deaths`` and the setup failure
(``setup_error``, ``setup_cause``), the watchdog (``watchdog``), the workers'
logs (``log_dir``, ``log_to_driver``) and ``_closing``. The environment
workers start with is the runtime's (``worker_env``, built in ``start``).

Invariants:
- A worker is in ``idle`` only when ready, alive, not an actor's and with
  nothing assigned.
- A worker that dies hands its assigned work back (retried or failed) and its
  holds (refs, pins, reservations) are released; an actor's worker dying goes
  to the actor manager.
- Workers that keep dying before READY stop the pool (STARTUP_DEATHS_LIMIT)
  with an error naming the cause, instead of respawning forever.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

from ...exceptions import OutOfMemoryError, TaskCancelledError, WorkerCrashedError
from . import direct as _direct
from .. import hooks as _hooks
from .. import protocol as P
from .state import (
    ActorState,
    STARTUP_DEATHS_LIMIT,
    SURPLUS_IDLE_S,
    Task,
    WorkerHandle,
    _PACKAGE_ROOT,
    _describe_exit,
    _error_bytes,
    _tail,
)
from .objects import ObjectDirectory


class WorkerPool(ObjectDirectory):
    def _init_worker_pool(self, num_cpus) -> None:
        self.workers: dict[int, WorkerHandle] = {}
        self.workers_by_pid: dict[int, WorkerHandle] = {}
        self.idle: list[WorkerHandle] = []
        self._dead_workers: list[WorkerHandle] = []
        self._next_worker_id = 0
        self._worker_target = int(num_cpus)
        self._closing = False
        self.watchdog = None
        self.log_dir = os.path.join(self.spill_dir, "logs")
        self.log_to_driver = True
        self.setup_error: bytes | None = None  # a worker's setup hook failed: no work runs
        self.setup_cause = "its worker's runtime_env setup hook raised"
        # Workers that died before READY since the last one that got there: a
        # worker that cannot start (a broken import, a file shadowing a stdlib
        # module in the working directory) would otherwise be respawned forever
        # while get() waits forever.
        self._startup_deaths: list[str] = []

    def _start_watchdog(self) -> None:
        self.watchdog = subprocess.Popen(
            [sys.executable, "-m", "miniray._core.node.watchdog", str(self.node_pid), self.spill_dir,
             self.store_dir, self.spill.dir if self.spill.owned else ""],
            stdin=subprocess.PIPE, start_new_session=True,
            env={**os.environ, "PYTHONPATH": _PACKAGE_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")},
        )

    def _watchdog_note(self, line: str) -> None:
        try:
            self.watchdog.stdin.write((line + "\n").encode())
            self.watchdog.stdin.flush()
        except (OSError, ValueError):
            pass

    def _ask_workers_to_exit(self) -> None:
        self._closing = True
        sampler = getattr(self, "sampler", None)
        if sampler is not None:
            sampler.stop()
        self._disconnect_drivers()
        for worker in list(self.workers.values()):
            if worker.dead:
                continue
            if worker.transport is not None:
                worker.out.append(P.pack([P.EXIT]))
                self._flush_worker(worker)
            else:  # still starting: nothing to lose
                worker.proc.kill()

    def _stop_workers_blocking(self) -> None:
        self._close_dashboard_now()
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
    def _take_worker_id(self) -> int:
        """A new id for a worker or a connected driver (they share the numbering)."""
        self._next_worker_id += 1
        return self._next_worker_id

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
            [sys.executable, "-m", "miniray._core.worker.worker_main", str(child.fileno()),
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
                runtime._set_batching(True)
                try:
                    for message in self.unpacker:
                        try:
                            runtime._on_message(worker, message)
                        except Exception:  # pragma: no cover - a runtime bug; keep serving
                            import traceback

                            traceback.print_exc()
                    runtime._schedule()
                finally:
                    runtime._set_batching(False)
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
        self._forget_blocked(worker)
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
            f"`{sys.executable} -m miniray._core.worker.worker_main` from starting (often an import "
            "error, e.g. a file in the working directory named like a standard module), "
            "then call ray.shutdown() and ray.init() again. "
            + (f"The first one's stderr ({deaths[0]}) ends with:\n{tail}" if tail else
               f"Its stderr is in {deaths[0]}.")))

    def _maybe_grow_pool(self) -> None:
        # Workers blocked in get() lent their CPU back; start more workers so the
        # tasks they wait for can run.
        task_workers = [w for w in self.workers.values() if w.actor is None]
        blocked = sum(1 for w in task_workers if w.blocked)
        starting = sum(1 for w in task_workers if not w.ready)
        if blocked and starting == 0 and len(task_workers) < self._worker_target + blocked:
            self._spawn_worker()

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

    def _make_idle(self, worker: WorkerHandle) -> None:
        if worker.retiring:
            self._retire(worker)
            return
        worker.idle_since = time.monotonic()
        self.idle.append(worker)
