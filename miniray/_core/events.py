"""The node's event bus: what happened, kept in bounded memory.

The scheduler calls the ``task_*``/``actor_*``/``worker_*``/``object_*``
methods at every state change. Each call is a few attribute writes and one
``deque.append``: the scheduler never waits on a consumer, and memory is
bounded by the caps whatever the run length (a million tasks leave the same
footprint as ten thousand).

Two views for consumers (the dashboard, ``miniray status``), both read on the
node's loop:

* tables of the most recent records (tasks, actors, workers), capped, oldest
  evicted first;
* per-kind rings of change events, each with its own contiguous sequence
  numbers, so a reader keeps one cursor per kind and learns exactly how many
  events it missed when it fell behind (drop-oldest, counted).
"""

from __future__ import annotations

import collections
import itertools
import time

# Ray's task states (ray.util.state), so tools and habits carry over.
PENDING_ARGS_AVAIL = "PENDING_ARGS_AVAIL"
PENDING_NODE_ASSIGNMENT = "PENDING_NODE_ASSIGNMENT"
SUBMITTED_TO_WORKER = "SUBMITTED_TO_WORKER"
RUNNING = "RUNNING"
FINISHED = "FINISHED"
FAILED = "FAILED"
TASK_STATES = (PENDING_ARGS_AVAIL, PENDING_NODE_ASSIGNMENT, SUBMITTED_TO_WORKER, RUNNING,
               FINISHED, FAILED)
KINDS = ("task", "actor", "worker", "object")

DEFAULT_CAPS = {
    "tasks": 10_000,        # task records kept for /api/tasks and the DAG
    "dead_actors": 1_000,
    "dead_workers": 200,
    "events": 20_000,       # per kind
    "metrics": 900,         # one sample a second: 15 minutes
}


class TaskRecord:
    __slots__ = ("task_id", "name", "state", "kind", "actor_id", "submitted_at", "started_at",
                 "ended_at", "worker_id", "deps", "returns", "error", "attempt", "func_or_method")

    def to_dict(self, full: bool = False) -> dict:
        out = {
            "task_id": self.task_id.hex(),
            "name": self.name,
            "state": self.state,
            "type": self.kind,
            "actor_id": self.actor_id.hex() if self.actor_id else None,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": (self.ended_at - self.started_at
                           if self.ended_at and self.started_at else None),
            "worker_id": self.worker_id,
            "attempt": self.attempt,
        }
        if self.error is not None:
            summary, text = describe_error(self.error)
            out["error"] = summary
            if full:
                out["traceback"] = text
        else:
            out["error"] = None
        if full:
            out["dependencies"] = [d.hex() for d in self.deps]
            out["returns"] = [r.hex() for r in self.returns]
        return out


def describe_error(error: bytes) -> tuple[str, str]:
    """(one line, full text) of a serialized task error."""
    try:
        from .serialization import deserialize_inline

        exc = deserialize_inline(error)
    except Exception as decode_error:  # the class may not import in the node
        return f"<undecodable error: {decode_error!r}>", ""
    text = str(exc)
    cause = getattr(exc, "cause", None)
    name = type(cause).__name__ if cause is not None else type(exc).__name__
    last = ""
    if cause is not None:
        last = str(cause)
    else:
        lines = [line for line in text.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else ""
    summary = last if last.startswith(name) else f"{name}: {last}"
    return summary[:500], text


class _Ring:
    """Events of one kind with contiguous sequence numbers."""

    __slots__ = ("items", "first_seq", "next_seq")

    def __init__(self, cap: int):
        self.items: collections.deque = collections.deque(maxlen=cap)
        self.first_seq = 0
        self.next_seq = 0

    def append(self, item) -> None:
        items = self.items
        if len(items) == items.maxlen:
            self.first_seq += 1
        items.append(item)
        self.next_seq += 1

    def since(self, cursor: int):
        """(events after cursor, how many were lost to the cap)."""
        if cursor >= self.next_seq:
            return [], 0
        lost = 0
        if cursor < self.first_seq:
            lost = self.first_seq - cursor
            cursor = self.first_seq
        start = cursor - self.first_seq
        return list(itertools.islice(self.items, start, None)), lost


class EventBus:
    """Bounded records and change events of one node."""

    def __init__(self, caps: dict | None = None):
        self.caps = {**DEFAULT_CAPS, **(caps or {})}
        self.tasks: collections.OrderedDict[bytes, TaskRecord] = collections.OrderedDict()
        self.producers: dict[bytes, TaskRecord] = {}  # return object id -> its task
        self.actors: dict[bytes, dict] = {}
        self.dead_actors: collections.deque = collections.deque()
        self.workers: dict[int, dict] = {}
        self.dead_workers: collections.deque = collections.deque(
            maxlen=self.caps["dead_workers"])
        cap = self.caps["events"]
        self.rings = {kind: _Ring(cap) for kind in KINDS}
        self._task_ring = self.rings["task"]
        self.metrics: collections.deque = collections.deque(maxlen=self.caps["metrics"])
        self.evicted_tasks = 0

    # -- tasks (hot path: keep these lean) ---------------------------------------
    def task_submitted(self, task, deps_pending: int) -> None:
        record = TaskRecord()
        task_id = task.task_id
        record.task_id = task_id
        record.name = task.name
        record.state = PENDING_ARGS_AVAIL if deps_pending else PENDING_NODE_ASSIGNMENT
        actor = task.actor
        if actor is not None:
            record.kind = "ACTOR_TASK"
            record.actor_id = actor.actor_id
        else:
            record.kind = "NORMAL_TASK"
            record.actor_id = None
        now = time.time()
        record.submitted_at = now
        record.started_at = None
        record.ended_at = None
        record.worker_id = None
        record.deps = task.held or ()
        record.returns = task.return_ids
        record.error = None
        record.attempt = 0
        tasks = self.tasks
        tasks[task_id] = record
        producers = self.producers
        for object_id in record.returns:
            producers[object_id] = record
        if len(tasks) > self.caps["tasks"]:
            _, old = tasks.popitem(last=False)
            for object_id in old.returns:
                if producers.get(object_id) is old:
                    del producers[object_id]
            self.evicted_tasks += 1
        self._task_ring.append((now, record, record.state))

    def task_state(self, task_id: bytes, state: str) -> None:
        record = self.tasks.get(task_id)
        if record is not None:
            record.state = state
            self._task_ring.append((time.time(), record, state))

    def task_dispatched(self, task_id: bytes, worker_id: int, queued: bool) -> None:
        record = self.tasks.get(task_id)
        if record is not None:
            now = time.time()
            state = SUBMITTED_TO_WORKER if queued else RUNNING
            record.state = state
            record.worker_id = worker_id
            if not queued:
                record.started_at = now
            self._task_ring.append((now, record, state))

    def task_started(self, task_id: bytes) -> None:
        """A pipelined task reached the front of its worker's queue."""
        record = self.tasks.get(task_id)
        if record is not None and record.state == SUBMITTED_TO_WORKER:
            now = time.time()
            record.state = RUNNING
            record.started_at = now
            self._task_ring.append((now, record, RUNNING))

    def task_ended(self, task_id: bytes, error) -> None:
        record = self.tasks.get(task_id)
        if record is not None:
            now = time.time()
            state = FINISHED if error is None else FAILED
            record.state = state
            record.error = error
            record.ended_at = now
            if record.started_at is None:
                record.started_at = now
            self._task_ring.append((now, record, state))

    def task_retried(self, task_id: bytes) -> None:
        record = self.tasks.get(task_id)
        if record is not None:
            record.attempt += 1
            record.state = PENDING_NODE_ASSIGNMENT
            record.started_at = None
            self._task_ring.append((time.time(), record, PENDING_NODE_ASSIGNMENT))

    # -- actors, workers, objects ---------------------------------------------------
    def actor_state(self, actor, state: str | None = None) -> None:
        state = state or actor.state
        record = self.actors.get(actor.actor_id)
        worker = actor.worker
        if record is None:
            record = {
                "actor_id": actor.actor_id.hex(), "class_name": actor.class_name,
                "name": actor.name or "", "namespace": actor.namespace,
                "created_at": time.time(),
            }
            self.actors[actor.actor_id] = record
        record.update({
            "state": state, "pid": worker.pid if worker is not None else None,
            "worker_id": worker.worker_id if worker is not None else None,
            "num_restarts": actor.num_restarts, "death_cause": actor.death_cause or None,
            "is_async": actor.is_async, "pending_calls": len(actor.queue),
            "resources": actor.options.get("resources", {}),
        })
        if state == "DEAD":
            self.dead_actors.append(actor.actor_id)
            if len(self.dead_actors) > self.caps["dead_actors"]:
                self.actors.pop(self.dead_actors.popleft(), None)
        self.rings["actor"].append((time.time(), record, state))

    def worker_state(self, worker, state: str, reason: str | None = None) -> None:
        record = self.workers.get(worker.worker_id)
        if record is None:
            record = {"worker_id": worker.worker_id, "pid": worker.pid,
                      "started_at": time.time(), "exit_reason": None}
            self.workers[worker.worker_id] = record
        actor = worker.actor
        record["state"] = state
        record["type"] = "ACTOR" if actor is not None else "TASK"
        record["actor_id"] = actor.actor_id.hex() if actor is not None else None
        record["actor_class"] = actor.class_name if actor is not None else None
        if reason is not None:
            record["exit_reason"] = reason
        if state == "DEAD":
            record["ended_at"] = time.time()
            del self.workers[worker.worker_id]
            self.dead_workers.append(record)
        self.rings["worker"].append((time.time(), record, state))

    def object_event(self, object_id: bytes, state: str, size: int) -> None:
        self.rings["object"].append(
            (time.time(), {"object_id": object_id.hex(), "size": size}, state))

    # -- reading ------------------------------------------------------------------
    def events_since(self, cursors: dict, kinds=KINDS, limit: int = 1000) -> dict:
        """Changes after ``cursors`` (kind -> seq), coalesced to the latest state
        of each item, newest ``limit`` per kind. Returns ``{"events": {kind:
        [...]}, "cursors": {...}, "lost": {kind: n}, "changes": {kind: n}}``."""
        out = {"events": {}, "cursors": {}, "lost": {}, "changes": {}}
        for kind in kinds:
            ring = self.rings[kind]
            items, lost = ring.since(cursors.get(kind, 0))
            out["cursors"][kind] = ring.next_seq
            out["lost"][kind] = lost
            out["changes"][kind] = len(items)
            latest: dict = {}
            for t, record, state in reversed(items):
                key = id(record)
                if key not in latest:
                    latest[key] = (t, record, state)
                    if len(latest) >= limit:
                        break
            events = []
            for t, record, state in reversed(list(latest.values())):
                if kind == "task":
                    item = record.to_dict()
                else:
                    item = dict(record)
                item["state"] = state
                item["time"] = t
                events.append(item)
            out["events"][kind] = events
        return out

    def cursors(self) -> dict:
        return {kind: ring.next_seq for kind, ring in self.rings.items()}

    def list_tasks(self, state=None, name=None, offset: int = 0, limit: int = 100):
        """(total matching, newest first page) of the task table."""
        states = None
        if state:
            states = {state} if isinstance(state, str) else set(state)
        matching = [r for r in reversed(self.tasks.values())
                    if (states is None or r.state in states)
                    and (not name or name in r.name)]
        return len(matching), [r.to_dict() for r in matching[offset:offset + limit]]

    def get_task(self, task_id: bytes):
        record = self.tasks.get(task_id)
        return None if record is None else record.to_dict(full=True)

    def task_counts(self) -> dict:
        counts = dict.fromkeys(TASK_STATES, 0)
        for record in self.tasks.values():
            counts[record.state] += 1
        return counts

    def dag(self, limit: int = 200) -> dict:
        """The newest ``limit`` tasks as nodes, edges from the refs they consumed."""
        records = list(itertools.islice(reversed(self.tasks.values()), limit))
        in_view = {id(r) for r in records}
        nodes = [{"id": r.task_id.hex(), "name": r.name, "state": r.state, "type": "task"}
                 for r in reversed(records)]
        edges = []
        objects = {}
        for r in records:
            for dep in r.deps:
                producer = self.producers.get(dep)
                if producer is not None and id(producer) in in_view:
                    edges.append({"source": producer.task_id.hex(),
                                  "target": r.task_id.hex(), "object_id": dep.hex()})
                else:  # a put() object or a task no longer in the table
                    key = dep.hex()
                    objects[key] = {"id": key, "name": "object " + key[:8], "state": "OBJECT",
                                    "type": "object"}
                    edges.append({"source": key, "target": r.task_id.hex(), "object_id": key})
        return {"nodes": list(objects.values()) + nodes, "edges": edges}
