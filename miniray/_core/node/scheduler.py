"""The scheduler: ready queue, resource leases, pipelining, placement of work.

Owns ``ready``, ``available``/``total``, ``free_gpu_ids``, the lease of each
worker (``WorkerHandle.lease``), ``_blocked_workers``, ``fn_cost`` (the
pipelining estimates), ``infeasible`` (and ``_infeasible_warned``) and the
work waiting for resources (``_pg_pending``, ``_waiting_actors``).

Invariants:
- A worker's ``assigned`` tasks hold the worker's resource lease; the lease is
  returned when ``assigned`` empties or the worker blocks in ``get``
  (``_block``), and taken back when it unblocks.
- While every worker is busy, a task may queue on a busy worker with a lease of
  the same shape: as the one next task of a worker running one, or, known to be
  short, in a deeper pipeline while the estimated queued work stays under
  ``PIPELINE_BUDGET_S``. An idle worker with nothing ready steals back what waits
  behind a task not known to be short, or behind one that overran
  (``_steal_for_idle``); costs are the workers' measured run times.
- Work asking for more than the node has in all is parked (``infeasible``),
  not failed, and rechecked when resources change.
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import time

from ...exceptions import TaskCancelledError, TaskPlacementGroupRemoved
from .. import protocol as P
from ..client import VALUE_SHM, VALUE_SPILLED
from ..store import shm
from .state import (
    ActorState,
    NODE_IP,
    ObjectEntry,
    PIPELINE_BUDGET_S,
    PIPELINE_MAX,
    PlacementGroupState,
    SHORT_TASK_S,
    Task,
    WorkerHandle,
    _error_bytes,
    _group_gpus,
    _same_shape,
)
from .worker_pool import WorkerPool


class Scheduler(WorkerPool):
    def _init_scheduler(self, num_cpus, num_gpus, resources, object_store_memory) -> None:
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
        self.ready: collections.deque[Task] = collections.deque()
        self._blocked_workers = 0  # workers lending their CPU back from a nested get
        self.fn_cost: dict[bytes, float] = {}  # EWMA of the workers' run times
        # Set when a task is queued behind another: a later idle worker looks
        # for work to steal back only while it is (cleared by a scan finding none).
        self._steal_hint = False
        self._steal_timer = None
        self._steal_watch = None  # [(worker, its current task)] the timer checks
        # Placement groups and actors waiting for resources, placed as running
        # work releases some.
        self._pg_pending: list[PlacementGroupState] = []
        self._waiting_actors: list[ActorState] = []
        # Tasks and actors asking for more than the node has in all: pending
        # (as in Ray, where more resources may appear), with one warning per shape.
        self.infeasible: list = []
        self._infeasible_warned: set = set()

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

    def _schedule(self) -> None:
        ready = self.ready
        if not ready:
            if self._steal_hint and self.idle:
                self._steal_for_idle()
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
                worker = self._pipeline_target(resources, self._short_cost(task.fn_id))
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
        elif not ready and idle and self._steal_hint:
            self._steal_for_idle()
        if ready and not idle and self._blocked_workers:
            self._maybe_grow_pool()

    def _note_cost(self, fn_id, run_s: float) -> None:
        """Fold a task's run time, as its worker measured it, into ``fn_cost``.

        The worker's own time: dispatch-to-done on the node would add the round
        trip and the wait behind queued tasks (a 5 ms task read 6-9 ms), and so
        would make queued work look longer than it is."""
        previous = self.fn_cost.get(fn_id)
        self.fn_cost[fn_id] = run_s if previous is None else 0.8 * previous + 0.2 * run_s

    def _short_cost(self, fn_id):
        """Seconds a task of ``fn_id`` is expected to take if known to be short
        (recent runs under SHORT_TASK_S); -1.0 if unknown or long."""
        cost = self.fn_cost.get(fn_id) if fn_id is not None else None
        return cost if cost is not None and cost < SHORT_TASK_S else -1.0

    def _pipeline_target(self, resources: dict, cost):
        """The busy worker to queue a task on (every worker is busy), or None.
        Any task may be the one next task of a worker running one; a task known
        to be short (``cost`` >= 0) may also join a deeper pipeline of short
        tasks within the budget. Whatever waits behind a task not known to be
        short is stolen back if a worker goes idle (_steal_for_idle).

        Not while the node has room for the task (a worker of the pool is
        starting): it takes the task when ready, whereas the busy worker's next
        task would wait for the whole current one while the starting worker
        took later work from the queue (so a task would run after later ones)."""
        if cost < 0.0 and self._fits(resources):
            return None
        best: WorkerHandle = None
        best_key = 0.0
        worker: WorkerHandle
        budget = PIPELINE_BUDGET_S - cost
        for worker in self.workers.values():
            if (worker.actor is not None or worker.lease is None
                    or worker.retiring or worker.blocked or not worker.ready):
                continue
            n = len(worker.assigned)
            if n == 1:
                pass  # its next task
            elif (cost < 0.0 or worker.long_queued or worker.queued_cost > budget
                    or n >= PIPELINE_MAX):
                continue
            if not _same_shape(worker.lease, resources):
                continue
            # Short pipelines first, then behind the least queued work.
            key = worker.queued_cost + 1.0 if worker.long_queued else worker.queued_cost
            if best is None or key < best_key:
                best = worker
                best_key = key
        return best

    def _steal_for_idle(self) -> None:
        """Workers are idle and nothing waits on the node: ask busy workers for
        the tasks queued behind a current one not known to be short. A queue of
        tasks all known to be short drains within the pipeline budget; one whose
        current task is still the same when the budget has passed (it overran)
        is stolen from then (_steal_overdue)."""
        wanted = len(self.idle)
        watch = None
        found = False
        worker: WorkerHandle
        for worker in list(self.workers.values()):
            if len(worker.assigned) < 2 or worker.actor is not None or worker.dead:
                continue
            if worker.stealing:
                found = True
                continue
            if worker.blocked:  # _block asked it already
                continue
            if not worker.long_queued:
                if watch is None:
                    watch = []
                watch.append((worker, next(iter(worker.assigned.values()))))
                continue
            found = True
            if wanted > 0 and self._steal_from(worker):
                wanted -= 1
        if watch is not None and self._steal_timer is None:
            self._steal_watch = watch
            self._steal_timer = self.loop.call_later(PIPELINE_BUDGET_S, self._steal_overdue)
        if not found and watch is None:
            self._steal_hint = False

    def _steal_overdue(self) -> None:
        self._steal_timer = None
        watch = self._steal_watch
        self._steal_watch = None
        if not self.idle or self.ready or self._closing or watch is None:
            return
        wanted = len(self.idle)
        worker: WorkerHandle
        head: Task
        for worker, head in watch:
            if (wanted > 0 and len(worker.assigned) > 1 and not worker.dead
                    and not worker.stealing and not worker.blocked
                    and next(iter(worker.assigned.values())) is head):
                # Its short task overran: from now on it counts as long (no
                # deep queue behind it, and what does queue is stolen at once).
                if head.cost >= 0.0:
                    worker.queued_cost -= head.cost
                    head.cost = -1.0
                    worker.long_queued += 1
                if self._steal_from(worker):
                    wanted -= 1
        self._steal_for_idle()  # pipelines still draining: watched anew

    def _steal_from(self, worker: WorkerHandle) -> bool:
        """Send the steal notice (and SIGUSR1, so that a worker inside a task
        reads it at once); it answers with rpc_requeue. Not when no idle worker
        could run what it would give back (it shares its worker's lease):
        stolen, it would only be queued back there, again and again."""
        tasks = iter(worker.assigned.values())
        next(tasks)
        if not self._fits(next(tasks).resources):
            return False
        worker.stealing = True
        self.counters["steals"] += 1
        self._send(worker, [P.NOTIFY, "steal", []])
        self._flush_worker(worker)
        try:
            os.kill(worker.pid, signal.SIGUSR1)
        except ProcessLookupError:
            pass
        return True


    def _unassign(self, worker: WorkerHandle, task: Task) -> None:
        """Bookkeeping of a task leaving ``worker.assigned`` (already popped)."""
        if not worker.assigned:
            worker.queued_cost = 0.0
            worker.long_queued = 0
        elif task.cost < 0.0:
            worker.long_queued -= 1
        else:
            worker.queued_cost -= task.cost

    def _dispatch(self, task: Task, worker: WorkerHandle) -> None:
        if task.pinned:  # a retry: the earlier attempt's pins go
            for object_id in task.pinned:
                self._unpin(object_id)
            task.pinned = ()
        task.worker = worker
        worker.last_task_name = task.name
        queued = bool(worker.assigned)
        if queued and not self._steal_hint:
            self._steal_hint = True
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

    def _forget_blocked(self, worker: WorkerHandle) -> None:
        """A dead worker no longer lends its CPU back (the worker pool's death path)."""
        if worker.blocked:
            worker.blocked = 0
            self._blocked_workers -= 1

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

    def rpc_resources(self, caller):
        return [self.total, self.available]
