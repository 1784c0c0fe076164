"""ObjectRef: a handle to an object that is, or will be, in the object store."""

from __future__ import annotations

from .serialization import _collect_ref

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
    """

    __slots__ = ("_id", "_client", "__weakref__")

    def __init__(self, object_id: bytes, _counted: bool = False):
        self._id = object_id
        client = _client
        self._client = client
        if client is not None:
            client.add_local_ref(object_id, _counted)

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

    def future(self):
        """A ``concurrent.futures.Future`` that resolves to the value."""
        return _require_client().get_future(self)

    def as_future(self):
        """An ``asyncio.Future`` on the running loop."""
        import asyncio

        return asyncio.wrap_future(self.future())


def _rebuild_ref(object_id: bytes) -> ObjectRef:
    return ObjectRef(object_id)


def _require_client():
    if _client is None:
        from .. import api

        api._auto_init()
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
