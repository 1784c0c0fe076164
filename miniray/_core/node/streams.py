"""Generator streams: the values of generator tasks, handed out as they are yielded.

Owns ``streams`` (the task's return id -> _Stream). Each yielded value is held
by the stream until the task ends or its generator is dropped.
"""

from __future__ import annotations

from .state import DRIVER, ObjectEntry, PENDING, _Stream
from .actors import ActorManager


class Streams(ActorManager):
    def _init_streams(self) -> None:
        # Generator tasks' values as they are yielded: the task's return id ->
        # the ids of the values stored so far (held until the task ends).
        self.streams: dict[bytes, _Stream] = {}

    # -- introspection -------------------------------------------------------------------
    # -- generator tasks: values handed out as they are yielded -----------------------
    def rpc_stream_item(self, caller, source_id: bytes, index: int, item_id: bytes) -> None:
        entry = self.objects.get(source_id)
        if entry is None or entry.state != PENDING:
            return  # nobody waits for it, or the task already ended
        stream = self._stream_of(source_id, entry)
        if index != len(stream.items):
            return  # a retried attempt yielding what the first one did
        self._incref(item_id)
        stream.items.append(item_id)
        waiting, stream.waiters = stream.waiters, []
        for wanted, future in waiting:
            if future.done():
                continue
            if wanted < len(stream.items):
                future.set_result(stream.items[wanted])
            else:
                stream.waiters.append((wanted, future))

    def rpc_stream_next(self, caller, source_id: bytes, index: int):
        """The id of value ``index`` of a generator task, once yielded; None once
        the task has ended (the caller then reads its return value)."""
        stream = self.streams.get(source_id)
        if stream is not None and index < len(stream.items):
            return stream.items[index]
        entry = self.objects.get(source_id)
        if entry is None or entry.state != PENDING:
            return None
        stream = self._stream_of(source_id, entry)
        future = self.loop.create_future()
        stream.waiters.append((index, future))
        if caller is not DRIVER:  # a task waiting for the next value lends its CPU, as in get
            self._block(caller)
            future.add_done_callback(lambda f: self._unblock(caller))
        return future

    def _stream_of(self, source_id: bytes, entry: ObjectEntry) -> _Stream:
        """The stream of a generator task still running (created on first use)."""
        stream = self.streams.get(source_id)
        if stream is None:
            stream = self.streams[source_id] = _Stream()
            entry.waiters.append(self._stream_ended)
        return stream

    def _stream_ended(self, source_id: bytes, entry) -> None:
        stream = self.streams.pop(source_id, None)
        if stream is None:
            return
        for _, future in stream.waiters:
            if not future.done():
                future.set_result(None)
        # The return value holds every value now; the stream's holds go.
        for item_id in stream.items:
            self._decref(item_id)
