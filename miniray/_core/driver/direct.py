"""Direct calls, the driver's side: the driver's thread talks to a worker without the node's loop in the path.

A routed call costs four thread hand-offs in the driver process (caller ->
node loop -> worker -> node loop -> caller). A direct call costs none: the
caller's thread writes the task on a second socket of the worker (its *direct
channel*) and reads the reply itself, as Ray's owner does with a leased worker.

Each worker has two sockets: the node's (everything as before) and the direct
channel, whose driver end lives here (:class:`Channel`). The worker reads the
direct channel first on every wake-up, so a call written there before the node
wrote a later one is also run first. A task (or a sync actor call) that came on
the channel replies on it when its result is a single inline value; any other
result goes to the node as ``direct_done`` (the node holds contained refs and
accounts shared memory) and the channel carries only ``DIRECT_ROUTED``.

When a call goes direct (:meth:`DirectCaller.submit_task` /
:meth:`DirectCaller.submit_actor_task` return None otherwise, and the caller
takes the routed path):
- tasks: plain values as arguments (no refs), one return, the default
  resources (1 CPU), no placement group, runtime_env, max_calls,
  retry_exceptions or generator; the calling thread holds a *lease* on an idle
  task worker (taken from the node once, kept while used);
- actor calls: a sync actor (no async methods, ``max_concurrency`` 1, no
  concurrency groups) that is ALIVE, plain-value arguments, one return, no
  retry_exceptions or generator, and this driver's last routed call to the
  actor already finished (calls stay in submission order);
- both: ``MINIRAY_DIRECT`` is not ``0``, the node runs on another thread than
  the caller's, and the channel has no call in flight (one at a time: a burst
  of ``.remote()`` calls takes the routed path, which spreads it over workers).

Invariants:
- A channel has at most one call in flight. Its reply is read by whoever holds
  ``Channel.lock`` while ``Channel.reader`` is None (a thread in ``get``), or
  by the node's loop once it took the reading over (``reader == NODE``: the
  caller waits on the entry like any routed result then). The node takes over
  a reply nobody reads within ``TAKEOVER_S``, and at once when the driver needs
  the value other than through ``get`` (wait, await, an argument of a task).
- Return entries are created by the caller (as for routed calls); the reader
  sets inline values itself, under the state lock. Waiters registered on such
  an entry (dependent tasks, awaits) run on the node's loop.
- A lease holds the worker's resources like a routed task (``worker.lease``);
  the node takes it back when the lease sits unused for ``LEASE_IDLE_S`` or
  when routed work waits and no worker is idle. ``worker.long_queued`` is 1
  while leased so the scheduler never pipelines routed tasks onto it.
- A call whose worker dies (EOF on the channel) goes to the node as a task
  assigned to that worker: the node's usual retry / WorkerCrashedError /
  ActorDiedError handling decides, with the call's retries.
"""


from __future__ import annotations

import os
import signal
import socket
import threading
import time

from .. import protocol as P
from ..client import VALUE_ERROR, VALUE_INLINE
from ..node.direct import (
    DEFAULT_RESOURCES as _DEFAULT_RESOURCES,
    Channel,
    _node_lease,
    _node_lost,
    _node_release,
    _node_take_over,
    _record_ended,
    _record_sent,
    _run_waiters,
)
from ..node.state import PENDING

LEASE_RETRY_S = 0.02  # after a refused lease, route for this long before asking again

_TASK_OPTION_KEYS = frozenset(("name", "resources", "max_retries", "retry_exceptions",
                               "task_events"))
_ACTOR_OPTION_KEYS = frozenset(("name", "max_task_retries", "task_events"))


def enabled() -> bool:
    return os.environ.get("MINIRAY_DIRECT", "1") != "0"


class Call:
    """One direct call in flight: what the node needs if its worker dies."""

    __slots__ = ("task_id", "return_ids", "message", "name", "fn_id", "resources",
                 "retries", "actor_id", "cancelled", "force", "sent_at", "record")

    def __init__(self, task_id, return_ids, message, name):
        self.task_id = task_id
        self.return_ids = return_ids
        self.message = message
        self.name = name
        self.fn_id = None
        self.resources = None
        self.retries = 0
        self.actor_id = None
        self.cancelled = False
        self.force = False
        self.sent_at = 0.0
        self.record = True  # into the event bus (enable_task_events)


class _Slot:
    """One calling thread's lease: the node fills it in (``_grant_lease``); the
    slot itself names the thread as the channel's holder."""

    __slots__ = ("channel", "refused_until", "requested")

    def __init__(self):
        self.channel = None
        self.refused_until = 0.0
        self.requested = False


class _Local(threading.local):
    def __init__(self):
        self.token = _Slot()


class DirectCaller:
    """The driver side: decides, sends, reads; one per DriverClient."""

    def __init__(self, client):
        self.client = client
        self.runtime = runtime = client.runtime
        self.objects = client.objects
        self._state_lock = client._state_lock
        self.local = _Local()
        # object id -> (channel, call) for calls whose reply is unread.
        self.inflight: dict = {}
        # actor id -> a ref of this driver's last routed call to it (kept alive
        # so its entry gets its value): direct calls wait until it is done.
        self.last_routed: dict = {}
        self._last_options = None  # the last task options found fit (checked by identity)
        self.stats = {"tasks": 0, "actor_calls": 0, "routed": 0, "leases": 0,
                      "node_reads": 0, "lost": 0}
        runtime.direct_leases = set()

    # -- eligibility and sending -------------------------------------------------
    def _on_node_thread(self) -> bool:
        runtime = self.runtime
        return (not runtime.owns_loop
                and threading.get_ident() == runtime._user_loop_thread)

    def submit_task(self, fn_id, args, kwargs, contained, options, return_ids):
        """Send the task on this thread's leased worker; False: route it."""
        if options is not self._last_options:  # a function's options: one dict per site
            if (num_keys_outside(options, _TASK_OPTION_KEYS) or options.get("retry_exceptions")
                    or options.get("resources") != _DEFAULT_RESOURCES):
                return False
            self._last_options = options
        if (contained or kwargs or len(return_ids) != 1 or not _values_only(args)
                or self._on_node_thread()):
            return False
        channel = self._lease()
        if channel is None:
            return False
        if not channel.lock.acquire(False):
            return False
        try:
            if (channel.inflight is not None or channel.holder is not self.local.token
                    or channel.dead):
                return False
            worker = channel.worker
            object_id = return_ids[0]
            name = options.get("name", "task")
            message = [P.TASK, object_id, fn_id, args, kwargs, list(return_ids), name,
                       None, None, None]
            data = P.pack(message)
            if fn_id not in worker.known_functions:
                blob = self.runtime.functions.get(fn_id)
                if blob is None:
                    return False
                worker.known_functions.add(fn_id)
                data = P.pack([P.FUNCTION, fn_id, blob]) + data
            call = Call(object_id, return_ids, message, name)
            call.fn_id = fn_id
            call.record = options.get("task_events", True)
            call.resources = _DEFAULT_RESOURCES
            retries = options.get("max_retries", 3)
            call.retries = float("inf") if retries == -1 else retries
            return self._send(channel, call, data, "tasks")
        finally:
            channel.lock.release()

    def submit_actor_task(self, actor_id, method, args, kwargs, contained, options,
                          return_ids) -> bool:
        if (contained or kwargs or len(return_ids) != 1
                or num_keys_outside(options, _ACTOR_OPTION_KEYS) or not _values_only(args)
                or self._on_node_thread()):
            return False
        last = self.last_routed.get(actor_id)
        if last is not None:
            entry = self.objects.get(last._id)
            if entry is not None and entry.state == PENDING:
                return False
            del self.last_routed[actor_id]
        actor = self.runtime.actors.get(actor_id)
        if actor is None or actor.state != "ALIVE" or not getattr(actor, "direct_ok", False):
            return False
        worker = actor.worker
        channel = getattr(worker, "direct", None) if worker is not None else None
        if channel is None or channel.dead or worker.dead:
            return False
        if not channel.lock.acquire(False):
            return False
        try:
            if channel.inflight is not None or channel.reader is not None:
                return False
            object_id = return_ids[0]
            name = options.get("name") or method
            message = [P.ACTOR_CALL, object_id, method, args, kwargs, list(return_ids), name,
                       None]
            call = Call(object_id, return_ids, message, name)
            call.actor_id = actor_id
            call.record = options.get("task_events", True)
            retries = options.get("max_task_retries")
            call.retries = actor.max_task_retries if retries is None else (
                float("inf") if retries == -1 else retries)
            return self._send(channel, call, P.pack(message), "actor_calls")
        finally:
            channel.lock.release()

    def routed_actor_call(self, actor_id, ref) -> None:
        self.last_routed[actor_id] = ref
        self.stats["routed"] += 1

    def _send(self, channel: Channel, call: Call, data: bytes, kind: str) -> bool:
        if not channel.send(data):
            return False  # the worker is gone: route this one, the node notices
        call.sent_at = channel.last_used = time.monotonic()
        channel.inflight = call
        channel.calls += 1
        self.inflight[call.task_id] = (channel, call)
        self.stats[kind] += 1
        # The node's view (counters, the task table), in order with routed
        # submissions, whenever it next drains its queue: no wake-up.
        self.runtime.post_lazy(_record_sent, self.runtime, call.task_id, call.name,
                               channel.worker.worker_id, call.actor_id, time.time(),
                               call.record)
        return True

    # -- leases --------------------------------------------------------------------
    def _lease(self):
        """This thread's leased channel, or None (then the call is routed).

        Without one it asks the node for one and routes this call: the thread
        never waits for the node's loop (under load a round trip to it costs
        more than a call)."""
        slot = self.local.token
        channel = slot.channel
        if channel is not None:
            if (channel.holder is slot and not channel.dead and not channel.want_back
                    and not channel.worker.dead):
                return channel
            slot.channel = None
        if slot.requested or time.monotonic() < slot.refused_until:
            return None
        slot.requested = True
        self.runtime.post(_grant_lease, self.runtime, slot, self.stats)
        return None

    # -- reading replies -----------------------------------------------------------
    def collect(self, refs, timeout) -> bool:
        """Read the replies of the direct calls among ``refs`` on this thread.

        False if the timeout passed first (the calls stay in flight)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        inflight = self.inflight
        for ref in refs:
            item = inflight.get(ref._id)
            if item is None:
                continue
            channel, call = item
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not channel.lock.acquire(timeout=-1 if remaining is None else remaining):
                return False
            try:
                while channel.inflight is call and channel.reader is None:
                    if not self._read(channel, None if deadline is None
                                      else max(deadline - time.monotonic(), 0.0)):
                        return False
            finally:
                channel.lock.release()
            self._after_call(channel)
        return True

    def _read(self, channel: Channel, timeout) -> bool:
        """One read of the channel (lock held); False on timeout."""
        sock = channel.sock
        try:
            if timeout is not None:
                sock.settimeout(timeout)
            try:
                size = sock.recv_into(channel.buffer)
            finally:
                if timeout is not None:
                    sock.settimeout(None)
        except BlockingIOError:
            if timeout is not None:
                return False
            # An event loop's reader (await_on_loop) left the descriptor non-blocking.
            sock.setblocking(True)
            return True
        except socket.timeout:
            return False
        except OSError:
            size = 0
        if not size:
            self._lost(channel)
            return True
        channel.unpacker.feed(channel.view[:size])
        for message in channel.unpacker:
            self._on_reply(channel, message, False)
        return True

    def _on_reply(self, channel: Channel, message, on_node: bool) -> None:
        call = channel.inflight
        if call is None or message[1] != call.task_id:
            return  # pragma: no cover - a reply of a call already handed over
        kind = message[0]
        runtime = self.runtime
        run_s = -1.0
        if kind == P.DONE:
            state, data = VALUE_INLINE, message[2][0][0]
            if len(message) > 3:
                run_s = message[3]
        elif kind == P.FAILED:
            state, data = VALUE_ERROR, message[2]
        else:  # DIRECT_ROUTED: the node sets the value (direct_done)
            state = None
        if state is not None:
            object_id = call.task_id
            if on_node:
                runtime._set_value(object_id, state, data)
            else:
                entry = self.objects.get(object_id)
                if entry is not None:
                    with self._state_lock:
                        if entry.state == PENDING:
                            entry.data = data
                            entry.state = state
                            waiters = entry.waiters
                            entry.waiters = None
                        else:  # pragma: no cover - set already
                            waiters = None
                    if waiters:
                        runtime.post(_run_waiters, object_id, entry, waiters)
        channel.inflight = None
        self.inflight.pop(call.task_id, None)
        if state is not None:  # DIRECT_ROUTED: recorded by the node when it sets the value
            runtime.post_lazy(_record_ended, runtime, call.task_id, time.time(),
                              data if state == VALUE_ERROR else None, call.record,
                              call.fn_id, run_s)

    def _lost(self, channel: Channel) -> None:
        """EOF: the worker died with the call in flight; the node decides its fate."""
        call = channel.inflight
        channel.dead = True
        channel.inflight = None
        self.stats["lost"] += 1
        if call is not None:
            self.inflight.pop(call.task_id, None)
            self.runtime.post(_node_lost, self.runtime, channel, call)

    def _after_call(self, channel: Channel) -> None:
        if channel.want_back and channel.holder is self.local.token and channel.inflight is None:
            channel.holder = None
            self.local.token.channel = None
            self.runtime.post(_node_release, self.runtime, channel)

    # -- await on the caller's own loop ---------------------------------------------
    def await_on_loop(self, ref, loop):
        """``await ref`` of a direct call: the awaiting loop reads the reply
        (no thread in between); None if the call is not one it can read."""
        item = self.inflight.get(ref._id)
        if item is None:
            return None
        channel, call = item
        if not channel.lock.acquire(False):
            return None
        try:
            if channel.inflight is not call or channel.reader is not None:
                return None
            channel.reader = loop
        finally:
            channel.lock.release()
        future = loop.create_future()
        loop.add_reader(channel.fd, self._loop_read, channel, loop, future, ref)
        future.add_done_callback(lambda f: f.cancelled() and self._loop_gave_up(
            channel, call, loop))
        return future

    def _loop_read(self, channel: Channel, loop, future, ref) -> None:
        try:
            size = channel.sock.recv_into(channel.buffer, 0, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            size = 0
        if size:
            channel.unpacker.feed(channel.view[:size])
            for message in channel.unpacker:
                self._on_reply(channel, message, False)
            if channel.inflight is not None:
                return  # part of the reply: the rest comes
        loop.remove_reader(channel.fd)
        channel.reader = None
        if not size:
            self._lost(channel)
        else:
            self._after_call(channel)
        if future.done():
            return
        client = self.client
        entry = self.objects.get(ref._id)
        if entry is None:
            future.set_exception(_lost_error(ref))
            return
        client.resolve_when_ready(ref, entry, future, loop)

    def _loop_gave_up(self, channel: Channel, call: Call, loop) -> None:
        """The await was cancelled before the reply came: the node reads it."""
        if channel.reader is not loop or channel.inflight is not call:
            return
        try:
            loop.remove_reader(channel.fd)
        except Exception:  # pragma: no cover - the loop is closing
            pass
        channel.reader = None
        self.runtime.post(_node_take_over, self, channel)

    # -- hand-offs to the node -----------------------------------------------------
    def hand_over(self, object_ids) -> None:
        """The value of these calls is needed other than by ``get`` on this
        thread: the node reads their replies from now on."""
        for object_id in object_ids:
            item = self.inflight.get(object_id)
            if item is not None:
                self.runtime.post(_node_take_over, self, item[0])

    def hand_over_refs(self, refs) -> None:
        if self.inflight:
            self.hand_over([r._id for r in refs])

    def hand_over_args(self, args, kwargs) -> None:
        ids = [a[1] for a in args if a[0] == P.ARG_REF]
        if kwargs:
            ids += [a[1] for a in kwargs.values() if a[0] == P.ARG_REF]
        self.hand_over(ids)

    # -- cancel ----------------------------------------------------------------------
    def cancel(self, object_id: bytes, force: bool) -> bool:
        """Cancel a direct call in flight; False if ``object_id`` is none."""
        item = self.inflight.get(object_id)
        if item is None:
            return False
        channel, call = item
        if force and call.actor_id is not None:
            raise ValueError("force=True is not supported for actor tasks; "
                             "use miniray.kill(actor) to stop the actor.")
        call.cancelled = True
        call.force = force
        pid = channel.worker.pid
        if force:
            _signal(pid, signal.SIGKILL)
            return True
        channel.send(P.pack([P.CANCEL, call.task_id]))
        _signal(pid, signal.SIGUSR1)
        return True


def _grant_lease(runtime, slot: _Slot, stats: dict) -> None:
    """On the node's loop: lease a worker to the thread of ``slot``, if one is free."""
    channel = _node_lease(runtime, slot)
    if channel is None:
        slot.refused_until = time.monotonic() + LEASE_RETRY_S
    else:
        stats["leases"] += 1
        slot.channel = channel
    slot.requested = False


def num_keys_outside(options: dict, allowed) -> bool:
    for key in options:
        if key not in allowed:
            return True
    return False


def _values_only(args) -> bool:
    for arg in args:
        if arg[0] != P.ARG_VALUE:
            return False
    return True


def _lost_error(ref):
    from ..exceptions import ObjectLostError

    return ObjectLostError(ref.hex(), "no reference to it is held by the node")


def _signal(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# -- on the node's loop ---------------------------------------------------------------
