"""The node's records (objects, tasks, workers, actors, groups) and shared helpers.

Plain data, no behaviour: the components (see runtime.py) own and change
them. Compiled, ObjectEntry, Task and WorkerHandle are extension types
(state.pxd) whose fields the hot paths read as C struct members.
"""

from __future__ import annotations

import collections
import os
import signal
import time

from .. import protocol as P
from ..store.serialization import serialize


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
# The folder holding the miniray package (miniray/_core/node/ is three below it).
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
DRIVER = None  # the caller id of the driver process in rpc methods


def detect_gpus() -> int:
    """The node's GPUs: ``CUDA_VISIBLE_DEVICES`` if set, else the /dev/nvidia<N> devices."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return len([d for d in os.listdir("/dev") if d.startswith("nvidia") and d[6:].isdigit()])
    except OSError:  # pragma: no cover
        return 0


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


# Out of the cpdef methods (the components' .pxd files) that use them: Cython compiles no
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
    from ...exceptions import ObjectLostError

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


