"""The base of the node: cross-thread plumbing and the wire to processes.

Owns ``_ops`` (operations posted from other threads), ``_wake_pending``, the
per-worker output buffers' flushing (``_flush_pending``, ``_flush_scheduled``,
``_batching``, ``_pack``) and what every component uses: ``node_pid``,
``events`` (the event bus) and ``counters``. The loop it posts to is the
runtime's (``loop``, ``thread``).

Invariants:
- Only the runtime loop runs component code; another thread calls ``post``
  (or ``call_threadsafe_wait``), which queues the call and wakes the loop at
  most once per burst.
- ``_send`` only buffers; messages are written once per batch (the end of
  ``_drain_ops`` or of a worker's ``data_received``), so a burst of tasks to
  one worker is one ``write``.
"""

from __future__ import annotations

import collections
import os
import threading

from .. import protocol as P
from . import direct as _direct
from . import events as _events
from .state import WorkerHandle


class NodeCore:
    def _init_core(self, event_caps) -> None:
        self.node_pid = os.getpid()
        self._ops: collections.deque = collections.deque()
        self._wake_pending = False
        self._flush_pending: set = set()
        self._flush_scheduled = False
        self._batching = False  # in _drain_ops or a worker's data_received: they flush at the end
        self._pack = P.new_packer().pack  # runtime thread only: a Packer is not thread-safe
        self.events = _events.EventBus(event_caps)
        self.counters = collections.Counter()

    # -- cross-thread plumbing -----------------------------------------------------
    def post(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the runtime loop, batching wake-ups."""
        self._ops.append((fn, args))
        if not self._wake_pending:
            self._wake_pending = True
            if self.owns_loop or threading.get_ident() != self._loop_thread_id():
                self.loop.call_soon_threadsafe(self._drain_ops)
            else:
                self.loop.call_soon(self._drain_ops)

    def post_lazy(self, fn, *args) -> None:
        """Like post, but no wake-up: for bookkeeping that may wait for the next tick."""
        self._ops.append((fn, args))

    def _loop_thread_id(self):
        return self.thread.ident if self.thread is not None else self._user_loop_thread

    def call_threadsafe_wait(self, fn, *args, timeout=None):
        import concurrent.futures

        future = concurrent.futures.Future()

        def run():
            if self._ops:  # what was posted before (direct calls' records, lazily) first
                self._drain_ops()
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def _run_queued_ops(self) -> bool:
        """Run the queued operations now, from a thread other than the node's.

        The driver's ``del ref`` reaches the node lazily; a large put right
        after it would otherwise land in never-touched memory beside the slot
        about to be freed. Returns whether anything ran.
        """
        if not self._ops or self._closing or threading.get_ident() == self._loop_thread_id():
            return False
        try:
            self.call_threadsafe_wait(self._drain_ops, timeout=5.0)
        except Exception:  # pragma: no cover - a stuck node: write cold, as before
            return False
        return True

    def _drain_ops(self) -> None:
        self._wake_pending = False
        ops = self._ops
        self._batching = True
        try:
            while ops:
                fn, args = ops.popleft()
                try:
                    fn(*args)
                except Exception:  # pragma: no cover - a runtime bug must not kill the loop
                    import traceback

                    traceback.print_exc()
            self._schedule()
            if self.ready and self.direct_leases:  # direct.py: routed work waits
                _direct.on_backlog(self)
        finally:
            self._batching = False
        if self._flush_pending:  # write now rather than one loop iteration later
            self._flush_all()

    def _send(self, worker: WorkerHandle, message) -> None:
        worker.out.append(self._pack(message))
        self._flush_pending.add(worker)
        # Inside a batch the batch's end flushes; scheduling a flush too would
        # cost every sync task one more loop iteration (a poll and two GIL hops).
        if not self._flush_scheduled and not self._batching:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_all)

    def _set_batching(self, batching: bool) -> None:
        """Inside a batch (a worker's data_received) sends wait for its end's flush."""
        self._batching = batching

    def _flush_all(self) -> None:
        self._flush_scheduled = False
        pending = self._flush_pending
        self._flush_pending = set()
        for worker in pending:
            self._flush_worker(worker)

    def _flush_worker(self, worker: WorkerHandle) -> None:
        if worker.out and worker.transport is not None and not worker.dead:
            data = b"".join(worker.out)
            worker.out.clear()
            worker.transport.write(data)

    def _on_loop(self, fn, *args):
        if threading.get_ident() == self._loop_thread_id():
            return fn(*args)
        return self.call_threadsafe_wait(fn, *args)

    # Defined by the components above (Scheduler._schedule, NodeRuntime._on_message);
    # declared on the base so the worker pool's and the drivers' protocols,
    # which hold the node as this class, call them as C methods when compiled.
    def _schedule(self) -> None:
        raise NotImplementedError

    def _on_message(self, worker: WorkerHandle, message) -> None:
        raise NotImplementedError
