"""Direct calls, the node's side: channels, leases, and the bookkeeping of
calls the driver's thread made without the node (see driver/direct.py for
how a call flows, and docs/direct-calls.md).

Every worker has a second socket, its *direct channel* (:class:`Channel`,
the driver's end). The node leases idle task workers to driver threads
(``_node_lease``), takes leases back (``revoke``: unused, or routed work
waiting), records direct calls in its counters and task table when it next
drains its queue (``_record_sent``/``_record_ended``), reads replies nobody
else reads (``_node_take_over``), and turns a call whose worker died into a
task of its own handling (``_node_lost``).

Invariants:
- A channel has at most one call in flight. Its reply is read by whoever holds
  ``Channel.lock`` while ``Channel.reader`` is None (a driver thread in
  ``get``), by an awaiting loop (``reader`` is that loop), or by the node's
  loop (``reader == NODE``).
- A lease holds the worker's resources like a routed task (``worker.lease``);
  ``worker.long_queued`` is 1 while leased so the scheduler never queues
  routed tasks on it; the leased channels are ``runtime.direct_leases``.
"""

from __future__ import annotations

import socket
import threading
import time

from .. import protocol as P
from ...exceptions import ActorDiedError, OutOfMemoryError, TaskCancelledError, WorkerCrashedError
from .events import FAILED, FINISHED, RUNNING
from .state import Task, _describe_exit, _error_bytes

NODE = "node"  # Channel.reader while the node's loop reads the channel
LEASE_IDLE_S = 0.1  # a lease unused this long goes back to the node
TAKEOVER_S = 0.01  # a reply nobody reads this long is read by the node
_RECV_BYTES = 256 * 1024
DEFAULT_RESOURCES = {"CPU": 1.0}  # what a direct task (and its lease) asks for


class Channel:
    """The driver's end of one worker's direct socket."""

    def __init__(self, worker, sock: socket.socket):
        self.worker = worker
        self.sock = sock
        self.fd = sock.fileno()
        self.lock = threading.Lock()  # reading, and the in-flight slot
        self.send_lock = threading.Lock()  # writing (a cancel may write while a get reads)
        self.unpacker = P.new_unpacker()
        self.buffer = bytearray(_RECV_BYTES)
        self.view = memoryview(self.buffer)
        self.inflight: Call | None = None
        self.reader = None  # None: a thread holding ``lock``; NODE: the node's loop
        self.dead = False
        # Task workers only: the lease.
        self.holder = None  # the lease's owner (a thread's token) or None
        self.want_back = False  # the node asked for the worker back
        self.last_used = 0.0
        self.calls = 0

    def close(self) -> None:
        self.dead = True
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> bool:
        with self.send_lock:
            try:
                self.sock.sendall(data)
            except OSError:  # the worker died (EPIPE): its lease is worth nothing now
                self.dead = True
                return False
        return True


def _run_waiters(object_id, entry, waiters) -> None:
    for waiter in waiters:
        waiter(object_id, entry)


def _node_lease(runtime, holder):
    """Lease an idle task worker to ``holder``; None if none is free or work waits."""
    if runtime._closing or runtime.setup_error is not None or runtime.ready or not runtime.idle:
        return None
    if not runtime._fits(DEFAULT_RESOURCES):
        return None
    for index in range(len(runtime.idle) - 1, -1, -1):
        worker = runtime.idle[index]
        channel = getattr(worker, "direct", None)
        if (channel is not None and not channel.dead and worker.ready and not worker.dead
                and not worker.retiring and worker.actor is None and channel.inflight is None
                and channel.reader is None):
            del runtime.idle[index]
            break
    else:
        return None
    runtime._acquire(DEFAULT_RESOURCES)
    worker.lease = dict(DEFAULT_RESOURCES)
    worker.long_queued = 1  # never a pipelining target while leased
    channel.holder = holder
    channel.want_back = False
    channel.last_used = time.monotonic()
    runtime.direct_leases.add(channel)
    runtime.counters["direct_leases"] += 1
    return channel


def _node_release(runtime, channel: Channel) -> None:
    if channel not in runtime.direct_leases:
        return
    runtime.direct_leases.discard(channel)
    channel.holder = None
    worker = channel.worker
    if worker.dead:
        return
    worker.long_queued = 0
    runtime._release_lease(worker)
    if not worker.assigned and not worker.blocked and worker not in runtime.idle:
        runtime._make_idle(worker)
    runtime._schedule()


def revoke(runtime, channel: Channel) -> None:
    """Take a lease back now if no call is in flight; else once its reply is
    read (by the node itself when no thread is reading it)."""
    channel.want_back = True
    if not channel.lock.acquire(False):
        return
    try:
        if channel.inflight is None and channel.reader is None:
            _node_release(runtime, channel)
            return
    finally:
        channel.lock.release()
    caller = runtime.direct_caller
    if caller is not None and channel.inflight is not None and channel.reader is None:
        _node_take_over(caller, channel)


def on_backlog(runtime) -> None:
    """Routed work waits and no worker is idle: leases go back."""
    for channel in list(runtime.direct_leases):
        if not channel.want_back:
            revoke(runtime, channel)


def tick(runtime, caller) -> None:
    try:
        _tick(runtime, caller)
    except Exception:  # pragma: no cover - a bug here must not stop the node's tick
        import traceback

        traceback.print_exc()


def _tick(runtime, caller) -> None:
    now = time.monotonic()
    for channel in list(runtime.direct_leases):
        if channel.dead or channel.worker.dead:
            runtime.direct_leases.discard(channel)
        elif channel.inflight is None and now - channel.last_used > LEASE_IDLE_S:
            revoke(runtime, channel)
    if caller is not None and caller.inflight:
        for channel, call in list(caller.inflight.values()):
            if channel.reader is None and now - call.sent_at > TAKEOVER_S:
                _node_take_over(caller, channel)


def _record_sent(runtime, task_id, name, worker_id, actor_id, sent, record) -> None:
    """A direct call in the node's counters and task table (as RUNNING)."""
    counters = runtime.counters
    counters["tasks_direct"] += 1
    counters["tasks_submitted" if actor_id is None else "actor_calls_submitted"] += 1
    counters["tasks_dispatched"] += 1
    if not record:
        return
    bus = runtime.events
    tasks = bus.tasks
    tasks[task_id] = (task_id, name, RUNNING, actor_id, sent, sent, None, worker_id, 0, None,
                      (), (task_id,))
    if len(tasks) > bus.task_cap:
        tasks.popitem(last=False)
        bus.evicted_tasks += 1
    bus.task_ring.add(sent, task_id, RUNNING)


def _record_ended(runtime, task_id, ended, error, record, fn_id=None, run_s=-1.0) -> None:
    runtime.counters["tasks_finished" if error is None else "tasks_failed"] += 1
    if fn_id is not None and run_s >= 0.0:  # an actor call has no fn_id
        runtime._note_cost(fn_id, run_s)
    if not record:
        return
    bus = runtime.events
    state = FINISHED if error is None else FAILED
    done = bus.tasks.get(task_id)
    if type(done) is tuple and done[2] != state:
        bus.tasks[task_id] = done[:2] + (state,) + done[3:6] + (ended,) + done[7:9] + (
            error,) + done[10:]
    bus.task_ring.add(ended, task_id, state)


def _node_take_over(caller, channel: Channel) -> None:
    if channel.reader is not None or channel.inflight is None:
        return
    if not channel.lock.acquire(False):
        return  # a thread is reading it now
    try:
        if channel.reader is not None or channel.inflight is None:
            return
        channel.reader = NODE
    finally:
        channel.lock.release()
    caller.stats["node_reads"] += 1
    runtime = caller.runtime
    runtime.loop.add_reader(channel.fd, _node_read, caller, channel)


def _node_read(caller, channel: Channel) -> None:
    """The node's loop reads a reply (a reader callback, like a worker's data):
    what the value makes ready is scheduled and written at once."""
    runtime = caller.runtime
    runtime._batching = True
    try:
        _node_read_reply(caller, channel)
        runtime._schedule()
    finally:
        runtime._batching = False
    if runtime._flush_pending:
        runtime._flush_all()


def _node_read_reply(caller, channel: Channel) -> None:
    runtime = caller.runtime
    try:
        size = channel.sock.recv_into(channel.buffer, 0, socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        size = 0
    if not size:
        runtime.loop.remove_reader(channel.fd)
        channel.reader = None
        call = channel.inflight
        channel.dead = True
        channel.inflight = None
        if call is not None:
            caller.inflight.pop(call.task_id, None)
            _node_lost(runtime, channel, call)
        return
    channel.unpacker.feed(channel.view[:size])
    for message in channel.unpacker:
        caller._on_reply(channel, message, True)
    if channel.inflight is None:
        runtime.loop.remove_reader(channel.fd)
        channel.reader = None
        if channel.want_back and channel in runtime.direct_leases:
            _node_release(runtime, channel)


def _node_lost(runtime, channel: Channel, call) -> None:
    """A direct call's worker died: hand the call to the node's own handling."""

    runtime.direct_leases.discard(channel)
    message = call.message
    task = Task()
    task.task_id = call.task_id
    task.args = message[3]
    task.kwargs = message[4]
    task.contained = None
    task.return_ids = call.return_ids
    task.name = call.name
    task.retries_left = call.retries
    task.retry_exceptions = False
    task.has_refs = False
    task.held = ()
    task.cost = -1.0
    task.dispatched_at = 0.0
    worker = channel.worker
    if call.actor_id is None:
        task.fn_id = call.fn_id
        task.resources = call.resources
    else:
        task.fn_id = None
        task.method = message[2]
        task.resources = {}
        task.actor = runtime.actors.get(call.actor_id)
    runtime.tasks[task.task_id] = task
    runtime.events.task_submitted(task)
    if call.cancelled:
        task.cancelled = task.force_cancelled = True
    if not worker.dead and (task.actor is None or task.actor.worker is worker):
        # The node has not seen the death yet: its handling of it covers the call.
        task.worker = worker
        worker.assigned[task.task_id] = task
        worker.long_queued += 1
        if task.actor is not None:
            task.actor.inflight[task.task_id] = task
        return
    actor = task.actor
    if call.cancelled:
        runtime._fail_task(task, _error_bytes(TaskCancelledError(task.task_id.hex())))
    elif actor is None and call.actor_id is not None:
        runtime._fail_task(task, _error_bytes(ActorDiedError(
            "No such actor (it was never created on this node or was removed).")))
    elif actor is not None:
        if actor.state == "DEAD":
            runtime._fail_task(task, runtime._actor_death_error(actor))
        elif task.retries_left > 0:
            task.retries_left -= 1
            runtime.counters["tasks_retried"] += 1
            actor.queue.appendleft(task)
            runtime._actor_pump(actor)
        else:
            runtime._fail_task(task, _error_bytes(ActorDiedError(
                f"The actor {actor.class_name} died while running {task.name}: "
                f"{actor.death_cause}.", actor.actor_id.hex())))
    elif task.retries_left > 0:
        task.retries_left -= 1
        runtime.counters["tasks_retried"] += 1
        runtime.events.task_retried(task)
        runtime.ready.appendleft(task)
        runtime._schedule()
    else:
        reason = _death_reason(worker)
        oom = getattr(worker, "oom_killed", None)  # set by memory_monitor
        if oom:
            runtime._fail_task(task, _error_bytes(OutOfMemoryError(
                f"Task {task.name} was killed to free memory: {oom}.")))
            return
        runtime._fail_task(task, _error_bytes(WorkerCrashedError(
            f"The worker running {task.name} died ({reason}) and the task has no "
            "retries left; raise max_retries to retry it.")))


def _death_reason(worker) -> str:
    """As the node words it (worker_pool._on_worker_lost), from the exit status."""
    code = worker.proc.poll()
    if code is None:
        try:
            code = worker.proc.wait(0.5)
        except Exception:
            code = None
    return _describe_exit(code)


def node_direct_done(runtime, worker, return_ids, results) -> None:
    """A direct call's result that is not one inline value (shared memory,
    contained refs, several values): set on the node, as ``_on_task_done``."""
    _record_ended(runtime, return_ids[0], time.time(), None, True)
    runtime._set_results(return_ids, results)
