"""The actor manager: creation, the per-actor call queue, restarts, kill, names.

Owns ``actors`` (id -> ActorState), ``named_actors`` and the node's
``namespace``.

Invariants:
- An actor runs on its own worker; its calls run in submission order
  (``queue`` -> ``inflight`` through ``_actor_pump``).
- A dead actor's worker restarts it while ``restarts_left``; calls in flight
  are retried up to ``max_task_retries``, else fail with ActorDiedError.
- When the last handle of an actor is gone, the actor exits once idle.
"""

from __future__ import annotations

import os
import signal

from ...exceptions import ActorAlreadyExistsError, ActorDiedError, ActorPlacementGroupRemoved
from .. import protocol as P
from ..store.serialization import deserialize_inline
from .state import (
    ActorState,
    DRIVER,
    ObjectEntry,
    Task,
    WorkerHandle,
    _PG_REMOVED,
    _error_bytes,
    _iter_args,
    _unready_arguments,
)
from .placement_groups import PlacementGroups


class ActorManager(PlacementGroups):
    def _init_actors(self, namespace) -> None:
        self.namespace = namespace
        self.actors: dict[bytes, ActorState] = {}
        self.named_actors: dict[tuple, bytes] = {}

    def _actor_setup_failed(self, actor: ActorState, error: bytes) -> None:
        actor.death_error = error
        actor.death_cause = self.setup_cause
        actor.no_restart = True
        self._actor_dead(actor)

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
