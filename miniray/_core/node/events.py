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

_now = time.time

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


# A finished task's record is a plain tuple of atomic values, which the cyclic
# GC stops tracking: 10,000 kept Task objects cost every task ~4 us in collections.
_Done = collections.namedtuple("_Done", (
    "task_id", "name", "state", "actor_id", "submitted_at", "started_at", "ended_at",
    "worker_id", "attempt", "error", "deps_ids", "return_ids"))
_STATE, _NAME, _RETURN_IDS = 2, 1, 11


def _done_record(task) -> tuple:
    actor = task.actor
    return (task.task_id, task.name, task.state,
            actor.actor_id if actor is not None else None, task.submitted_at,
            task.started_at, task.ended_at, task.worker_id, task.attempt, task.error,
            tuple(task.deps_ids or ()), tuple(task.return_ids))


def _view(record):
    """Attribute access to a table record (a live Task or a finished tuple)."""
    return _Done._make(record) if type(record) is tuple else record


def _state_of(record) -> str:
    return record[_STATE] if type(record) is tuple else record.state


def _name_of(record) -> str:
    return record[_NAME] if type(record) is tuple else record.name


def _return_ids_of(record):
    return record[_RETURN_IDS] if type(record) is tuple else record.return_ids


def task_dict(task, full: bool = False) -> dict:
    """JSON-ready view of a task kept in the table (live Task or finished record)."""
    task = _view(task)
    if type(task) is _Done:
        actor_id = task.actor_id
    else:
        actor_id = task.actor.actor_id if task.actor is not None else None
    started, ended = task.started_at, task.ended_at
    out = {
        "task_id": task.task_id.hex(),
        "name": task.name,
        "state": task.state,
        "type": "ACTOR_TASK" if actor_id is not None else "NORMAL_TASK",
        "actor_id": actor_id.hex() if actor_id is not None else None,
        "submitted_at": task.submitted_at,
        "started_at": started,
        "ended_at": ended,
        "duration_s": ended - started if ended and started else None,
        "worker_id": task.worker_id,
        "attempt": task.attempt,
        "error": None,
    }
    if task.error is not None:
        summary, text = describe_error(task.error)
        out["error"] = summary
        if full:
            out["traceback"] = text
    if full:
        out["dependencies"] = [d.hex() for d in (task.deps_ids or ())]
        out["returns"] = [r.hex() for r in task.return_ids]
    return out


def describe_error(error: bytes) -> tuple[str, str]:
    """(one line, full text) of a serialized task error."""
    try:
        from ..store.serialization import deserialize_inline

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

    __slots__ = ("items", "next_seq")

    def __init__(self, cap: int):
        self.items: collections.deque = collections.deque(maxlen=cap)
        self.next_seq = 0

    def append(self, item) -> None:
        self.items.append(item)
        self.next_seq += 1

    def __len__(self) -> int:
        return len(self.items)

    @property
    def first_seq(self) -> int:
        return self.next_seq - len(self.items)

    def since(self, cursor: int):
        """(events after cursor, how many were lost to the cap)."""
        if cursor >= self.next_seq:
            return [], 0
        first = self.first_seq
        lost = 0
        if cursor < first:
            lost = first - cursor
            cursor = first
        return self._events_from(cursor - first), lost

    def _events_from(self, start: int) -> list:
        return list(itertools.islice(self.items, start, None))


class _TaskRing(_Ring):
    """The task ring, stored as three columns of atomic values (``items`` holds
    the task ids): appending allocates no tuple, so the hot path adds nothing
    for the cyclic GC to count or scan (3-4 events a task)."""

    __slots__ = ("times", "states", "_times_append", "_items_append", "_states_append")

    def __init__(self, cap: int):
        super().__init__(cap)
        self.times: collections.deque = collections.deque(maxlen=cap)
        self.states: collections.deque = collections.deque(maxlen=cap)
        # Bound once: three appends per event, 3-4 events per task.
        self._times_append = self.times.append
        self._items_append = self.items.append
        self._states_append = self.states.append

    def add(self, t: float, task_id: bytes, state: str) -> None:
        self._times_append(t)
        self._items_append(task_id)
        self._states_append(state)
        self.next_seq += 1

    def _events_from(self, start: int) -> list:
        return list(zip(itertools.islice(self.times, start, None),
                        itertools.islice(self.items, start, None),
                        itertools.islice(self.states, start, None)))


class EventBus:
    """Bounded records and change events of one node."""

    def __init__(self, caps: dict | None = None):
        for key, value in (caps or {}).items():
            if key not in DEFAULT_CAPS:
                raise ValueError(f"unknown event cap {key!r}; the caps are {sorted(DEFAULT_CAPS)}")
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"event cap {key!r} must be a positive int, got {value!r}")
        self.caps = {**DEFAULT_CAPS, **(caps or {})}
        self.tasks: collections.OrderedDict = collections.OrderedDict()  # id -> Task
        self.task_cap = self.caps["tasks"]
        self.actors: dict[bytes, dict] = {}
        self.dead_actors: collections.deque = collections.deque()
        self.workers: dict[int, dict] = {}
        self.dead_workers: collections.deque = collections.deque(
            maxlen=self.caps["dead_workers"])
        cap = self.caps["events"]
        self.task_ring = _TaskRing(cap)
        self.rings = {kind: self.task_ring if kind == "task" else _Ring(cap) for kind in KINDS}
        self.metrics: collections.deque = collections.deque(maxlen=self.caps["metrics"])
        self.evicted_tasks = 0

    # -- tasks (hot path: keep these lean) ---------------------------------------
    # The runtime's Task objects are the records (their arguments are dropped
    # when they finish), so recording costs attribute writes and appends only.
    # Ring entries name the task by id, never the Task: 20,000 events holding
    # Task objects cost every task ~10 us in cyclic-GC collections.
    def task_submitted(self, task) -> None:
        now = _now()
        task.state = state = PENDING_ARGS_AVAIL if task.deps else PENDING_NODE_ASSIGNMENT
        task.submitted_at = now
        task.deps_ids = task.held
        if not task.record_events:  # enable_task_events=False: state only, no record
            return
        tasks = self.tasks
        tasks[task.task_id] = task
        if len(tasks) > self.task_cap:
            tasks.popitem(last=False)
            self.evicted_tasks += 1
        self.task_ring.add(now, task.task_id, state)

    def task_state(self, task, state) -> None:
        task.state = state
        if task.record_events:
            self.task_ring.add(_now(), task.task_id, state)

    def task_dispatched(self, task, worker_id, queued) -> None:
        now = _now()
        task.worker_id = worker_id
        if queued:
            task.state = state = SUBMITTED_TO_WORKER
        else:
            task.state = state = RUNNING
            task.started_at = now
        if task.record_events:
            self.task_ring.add(now, task.task_id, state)

    def task_started(self, task) -> None:
        """A pipelined task reached the front of its worker's queue."""
        if task.state == SUBMITTED_TO_WORKER:
            now = _now()
            task.state = RUNNING
            task.started_at = now
            if task.record_events:
                self.task_ring.add(now, task.task_id, RUNNING)

    def task_ended(self, task, error) -> None:
        now = _now()
        task.state = state = FINISHED if error is None else FAILED
        task.error = error
        task.ended_at = now
        if task.started_at is None:
            task.started_at = now
        task_id = task.task_id
        if task_id in self.tasks:
            self.tasks[task_id] = _done_record(task)
        if task.record_events:
            self.task_ring.add(now, task_id, state)

    def task_retried(self, task) -> None:
        task.attempt += 1
        task.state = PENDING_NODE_ASSIGNMENT
        task.started_at = None
        if task.record_events:
            self.task_ring.add(_now(), task.task_id, PENDING_NODE_ASSIGNMENT)

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
            is_task = kind == "task"
            for t, record, state in reversed(items):
                key = record if is_task else id(record)
                if key not in latest:
                    latest[key] = (t, record, state)
                    if len(latest) >= limit:
                        break
            events = []
            tasks = self.tasks
            for t, record, state in reversed(list(latest.values())):
                if is_task:
                    task = tasks.get(record)
                    if task is None:  # evicted from the table since: nothing to show
                        continue
                    item = task_dict(task)
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
                    if (states is None or _state_of(r) in states)
                    and (not name or name in _name_of(r))]
        return len(matching), [task_dict(r) for r in matching[offset:offset + limit]]

    def get_task(self, task_id: bytes):
        record = self.tasks.get(task_id)
        return None if record is None else task_dict(record, full=True)

    def producers(self) -> dict:
        """Return object id -> the task in the table that makes it."""
        return {object_id: _view(task) for task in self.tasks.values()
                for object_id in _return_ids_of(task)}

    def task_counts(self) -> dict:
        counts = dict.fromkeys(TASK_STATES, 0)
        for record in self.tasks.values():
            counts[_state_of(record)] += 1
        return counts

    def dag(self, limit: int = 200) -> dict:
        """The newest ``limit`` tasks as nodes, edges from the refs they consumed."""
        records = [_view(r) for r in itertools.islice(reversed(self.tasks.values()), limit)]
        in_view = {id(r) for r in records}
        producers = {object_id: r for r in records for object_id in r.return_ids}
        nodes = [{"id": r.task_id.hex(), "name": r.name, "state": r.state, "type": "task"}
                 for r in reversed(records)]
        edges = []
        objects = {}
        for r in records:
            for dep in r.deps_ids or ():
                producer = producers.get(dep)
                if producer is not None and id(producer) in in_view:
                    edges.append({"source": producer.task_id.hex(),
                                  "target": r.task_id.hex(), "object_id": dep.hex()})
                else:  # a put() object or a task no longer in the table
                    key = dep.hex()
                    objects[key] = {"id": key, "name": "object " + key[:8], "state": "OBJECT",
                                    "type": "object"}
                    edges.append({"source": key, "target": r.task_id.hex(), "object_id": key})
        return {"nodes": list(objects.values()) + nodes, "edges": edges}
