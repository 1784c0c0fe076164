"""ObjectRef: a handle to an object that is, or will be, in the object store."""

from __future__ import annotations

import asyncio

from .store.serialization import _collect_ref

_client = None  # the CoreClient of this process (driver or worker), set by context


def set_client(client) -> None:
    global _client
    _client = client


def get_client():
    return _client


class ObjectRef:
    """A reference to a (possibly future) object; Ray's ``ObjectRef``.

    Hashable and comparable by id. Awaitable in asyncio code (``await ref``);
    ``ref.future()`` gives a ``concurrent.futures.Future``. While any ObjectRef
    to an object is alive in any process, the object is kept.

    A ref also follows asyncio's Future protocol on the running loop
    (``done``, ``result``, ``exception``, ``cancelled``, ``cancel``,
    ``add_done_callback``, ``get_loop``), so ``asyncio.gather``, ``wait``,
    ``wait_for`` and ``as_completed`` take refs directly. Those methods describe
    the wait on the loop that last awaited the ref; ``cancel()`` stops that wait,
    not the task (``miniray.cancel(ref)`` does that).
    """

    __slots__ = ("_id", "_client", "_fut", "__weakref__")

    # asyncio's Future protocol (see the section below): ``asyncio.isfuture(ref)``
    # is true, so gather/wait/wait_for/as_completed take refs as they are instead
    # of wrapping each in a Task (half the per-ref cost of ``gather(*refs)``).
    _asyncio_future_blocking = False

    def __init__(self, object_id: bytes, _counted: bool = False):
        self._id = object_id
        self._fut = None
        client = _client
        self._client = client
        if client is not None:
            if _counted:
                # A new id, counted by the node already, that no other thread
                # knows yet: no lock needed for its first local count.
                client._ref_counts[object_id] = 1
            else:
                client.add_local_ref(object_id, False)

    def __del__(self):
        client = self._client
        if client is not None:
            try:
                client.remove_local_ref(self._id)
            except Exception:  # interpreter shutdown: modules may be gone
                pass

    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    def task_id(self) -> str:
        return self._id.hex()

    def __repr__(self) -> str:
        return f"ObjectRef({self._id.hex()})"

    def __hash__(self) -> int:
        return hash(self._id)

    def __eq__(self, other) -> bool:
        return type(other) is ObjectRef and other._id == self._id

    def __ne__(self, other) -> bool:
        return not self.__eq__(other)

    def __reduce__(self):
        _collect_ref(self)
        return (_rebuild_ref, (self._id,))

    def __await__(self):
        client = _require_client()
        await_ref = getattr(client, "await_ref", None)
        if await_ref is not None:
            return await_ref(self).__await__()
        return client.get_async([self], None, single=True).__await__()

    # -- asyncio Future protocol ---------------------------------------------------
    # Bound to the running loop of the last caller. The value is read once, into
    # that loop's future, and kept while the ref lives (like a resolved Future).
    def _loop_future(self):
        loop = asyncio.get_running_loop()
        fut = self._fut
        if fut is None or fut.get_loop() is not loop or fut.cancelled():
            client = _require_client()
            await_ref = getattr(client, "await_ref", None)
            if await_ref is not None:
                fut = await_ref(self)
            else:
                fut = asyncio.ensure_future(client.get_async([self], None, single=True))
            self._fut = fut
        return fut

    def get_loop(self):
        """The running loop (asyncio Future protocol)."""
        return self._loop_future().get_loop()

    def add_done_callback(self, fn, *, context=None):
        """Call ``fn(ref)`` on the running loop once the value is ready."""
        self._loop_future().add_done_callback(_RefCallback(self, fn), context=context)

    def remove_done_callback(self, fn) -> int:
        """Remove ``fn`` added by :meth:`add_done_callback`; returns how many."""
        fut = self._fut
        if fut is None:
            return 0
        return fut.remove_done_callback(_RefCallback(self, fn))

    def done(self) -> bool:
        """Whether the value was read into this ref's asyncio future (or the wait
        was cancelled). Use ``miniray.wait`` to ask whether an object is ready."""
        fut = self._fut
        return fut is not None and fut.done()

    def cancelled(self) -> bool:
        """Whether the wait on this ref's asyncio future was cancelled."""
        fut = self._fut
        return fut is not None and fut.cancelled()

    def cancel(self, msg=None) -> bool:
        """Stop waiting for the value (asyncio Future protocol). The task goes on
        running: ``miniray.cancel(ref)`` cancels the task."""
        fut = self._fut
        return fut is not None and fut.cancel(msg)

    def result(self):
        """The value, once :meth:`done` (asyncio Future protocol); ``ray.get``
        and ``await ref`` are the usual ways to read it."""
        return self._done_future().result()

    def exception(self):
        """The exception reading the value raised (or None), once :meth:`done`."""
        return self._done_future().exception()

    def _done_future(self):
        fut = self._fut
        if fut is None or not fut.done():
            raise asyncio.InvalidStateError(
                f"{self!r} has not been awaited to completion on an event loop; use "
                "ray.get(ref) or await ref to read its value")
        return fut

    def future(self):
        """A ``concurrent.futures.Future`` that resolves to the value."""
        return _require_client().get_future(self)

    def as_future(self):
        """An ``asyncio.Future`` on the running loop."""
        return asyncio.wrap_future(self.future())


class _RefCallback:
    """``fn(ref)`` as a future's done callback; equal for the same ref and fn, so
    ``remove_done_callback`` finds it."""

    __slots__ = ("ref", "fn")

    def __init__(self, ref, fn):
        self.ref = ref
        self.fn = fn

    def __call__(self, _future):
        self.fn(self.ref)

    def __eq__(self, other):
        return (type(other) is _RefCallback and other.ref is self.ref
                and other.fn == self.fn)

    def __hash__(self):
        return hash((id(self.ref), self.fn))


def _rebuild_ref(object_id: bytes) -> ObjectRef:
    return ObjectRef(object_id)


def _require_client():
    if _client is None:
        from . import hooks

        hooks.auto_init()
    return _client


class IdGenerator:
    """Unique 16-byte ids: an 8-byte random per-process prefix + a counter."""

    __slots__ = ("_prefix", "_next")

    def __init__(self):
        import itertools
        import os

        self._prefix = os.urandom(8)
        self._next = itertools.count(1).__next__  # thread-safe under the GIL

    def new(self) -> bytes:
        return self._prefix + self._next().to_bytes(8, "little")
