"""The task manager: a task's life from submit to its results.

Owns ``tasks`` (id -> Task) and ``functions`` (registered function blobs).

Invariants:
- A submitted task holds a ref on each argument until it ends (``_hold_args``)
  and becomes ready when its last dependency is; a failed dependency fails it.
- A task ends once: ``_finish_task`` / ``_fail_task`` release its holds and
  its lease share; a retry (``_should_retry``) requeues it instead.
"""

from __future__ import annotations

import os
import signal

from ...exceptions import TaskCancelledError
from . import direct as _direct
from .. import protocol as P
from ..client import VALUE_ERROR, VALUE_INLINE, VALUE_SHM
from . import events as _events
from ..store.serialization import deserialize_inline
from .state import (
    DRIVER,
    ObjectEntry,
    PENDING,
    Task,
    WorkerHandle,
    _error_bytes,
    _iter_args,
    _lost,
    _values_only,
)
from .scheduler import Scheduler


class TaskManager(Scheduler):
    def _init_tasks(self) -> None:
        self.tasks: dict[bytes, Task] = {}
        self.functions: dict[bytes, bytes] = {}

    # -- rpc methods (driver ops and worker requests/notifications) ----------------
    def rpc_register_function(self, caller, fn_id: bytes, blob: bytes) -> None:
        self.functions[fn_id] = blob

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

    def rpc_direct_done(self, caller, return_ids, results) -> None:
        """A direct call's result other than one inline value (direct.py)."""
        _direct.node_direct_done(self, caller, return_ids, results)

    def _on_task_done(self, worker: WorkerHandle, task_id: bytes, results,
                      run_s=-1.0) -> None:
        task: Task = self._take_assigned(worker, task_id)
        if task is None:
            return
        self.counters["tasks_finished"] += 1
        events = self.events
        events.task_ended(task, None)
        if worker.assigned:
            events.task_started(next(iter(worker.assigned.values())))
        if run_s >= 0.0 and task.fn_id is not None:
            self._note_cost(task.fn_id, run_s)
        self._finish_task(task)
        self._set_results(task.return_ids, results)

    def _set_results(self, return_ids, results) -> None:
        """A finished task's values as its worker encoded them (inline bytes or
        a shared-memory location, with the refs each contains)."""
        for object_id, (data, contained) in zip(return_ids, results):
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
        """A worker gives back tasks it had not started (it blocked in get, or
        was asked by _steal_for_idle): they go first in line."""
        worker.stealing = False
        for task_id in reversed(task_ids):
            task = worker.assigned.pop(task_id, None)
            if task is not None:
                self._unassign(worker, task)
                task.worker = None
                for object_id in task.pinned:
                    self._unpin(object_id)
                task.pinned = ()
                self.ready.appendleft(task)
        if (task_ids and not worker.assigned and worker.actor is None
                and not worker.dead and not worker.is_driver):
            # It finished its task before it read the steal notice (DONE came
            # first): given back what it held, it is idle.
            self._release_lease(worker)
            if not worker.blocked:
                self._make_idle(worker)

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
