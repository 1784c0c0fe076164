"""What the driver's and a worker's view of the node have in common.

A *client* is the process-wide object the public API talks to: in the driver
it hands work to the in-process node runtime; in a worker it sends requests
over the worker's socket. Both count local ObjectRefs (the node hears only
about the first and the last ref to an object in each process), encode task
arguments and decode values.
"""

from __future__ import annotations

import threading

from ..exceptions import RayTaskError, UnserializableException
from . import protocol
from .refs import IdGenerator, ObjectRef
import pickle

from .store.serialization import (
    INLINE_THRESHOLD,
    PICKLE5,
    PLAIN_TYPES,
    deserialize_inline,
    serialize,
)
from .store.object_store import read_file

# Value states as they travel in ``get`` replies: [state, data].
VALUE_INLINE = 0
VALUE_SHM = 1
VALUE_ERROR = 2
VALUE_SPILLED = 3  # data: the path of the object's spill file


class ClientBase:
    store = None  # LocalStore

    def __init__(self):
        self.ids = IdGenerator()
        self._ref_counts: dict[bytes, int] = {}
        self._ref_lock = threading.Lock()
        self._registered_functions: set[bytes] = set()

    # -- reference counting ---------------------------------------------------
    def add_local_ref(self, object_id: bytes, counted: bool) -> None:
        with self._ref_lock:
            n = self._ref_counts.get(object_id, 0)
            self._ref_counts[object_id] = n + 1
        if n == 0 and not counted:
            self._notify_add_ref(object_id)

    def remove_local_ref(self, object_id: bytes) -> None:
        with self._ref_lock:
            n = self._ref_counts.get(object_id, 0) - 1
            if n > 0:
                self._ref_counts[object_id] = n
                return
            self._ref_counts.pop(object_id, None)
        if n == 0:
            self._notify_remove_ref(object_id)

    def _notify_add_ref(self, object_id: bytes) -> None:
        raise NotImplementedError  # pragma: no cover - subclasses

    def _notify_remove_ref(self, object_id: bytes) -> None:
        raise NotImplementedError  # pragma: no cover - subclasses

    # -- arguments ------------------------------------------------------------
    def encode_args(self, args, kwargs, what: str):
        """Encode call arguments; returns (args, kwargs, contained_ids, keepalive)."""
        if not args and not kwargs:
            return (), None, (), None  # shared, allocation-free: nothing for the GC
        contained: list[bytes] = []
        keepalive: list = []
        enc_args = [self._encode_arg(a, f"argument {i} of {what}", contained, keepalive)
                    for i, a in enumerate(args)]
        enc_kwargs = None
        if kwargs:
            enc_kwargs = {k: self._encode_arg(v, f"keyword argument {k!r} of {what}",
                                              contained, keepalive)
                          for k, v in kwargs.items()}
        return enc_args, enc_kwargs, contained, keepalive

    def _encode_arg(self, value, what, contained, keepalive):
        kind = type(value)
        if kind in PLAIN_TYPES:  # the common case, without the general machinery
            data = pickle.dumps(value, PICKLE5)
            if len(data) < INLINE_THRESHOLD:
                return [protocol.ARG_VALUE, data]
        elif kind is ObjectRef:
            keepalive.append(value)
            return [protocol.ARG_REF, value._id]
        serialized = serialize(value, what)
        if serialized.contained:
            keepalive.extend(serialized.contained)
            contained.extend(r._id for r in serialized.contained)
        if serialized.is_small:
            return [protocol.ARG_VALUE, serialized.to_inline()]
        # Large arguments go through the object store once, like Ray does.
        ref = self.put_serialized(serialized)
        keepalive.append(ref)
        return [protocol.ARG_REF, ref._id]

    def put(self, value) -> ObjectRef:
        if type(value) is ObjectRef:
            raise TypeError(
                "Calling put() on an ObjectRef is not allowed; pass the ref itself "
                "(or wrap it in a list to store a reference to it)."
            )
        return self.put_serialized(serialize(value, "the value passed to put()"))

    def put_serialized(self, serialized) -> ObjectRef:
        raise NotImplementedError  # pragma: no cover - subclasses

    # -- values ---------------------------------------------------------------
    def placement_group_ready(self, pg_id: bytes) -> ObjectRef:
        """A ref the node sets to True once the placement group is created."""
        object_id = self.ids.new()
        self.generic("placement_group_ready", pg_id, object_id)
        return ObjectRef(object_id, _counted=True)

    def decode_value(self, object_id: bytes, state: int, data, on_release=None):
        if state == VALUE_INLINE:
            return deserialize_inline(data)
        if state == VALUE_SHM:
            return self.store.read(data, on_release)
        if state == VALUE_SPILLED:
            return read_file(data)
        raise rebuild_error(data)


def rebuild_error(data: bytes) -> BaseException:
    """The error a task stored, to raise in the caller. If it cannot be rebuilt
    here (its class does not import in this process), a RayTaskError saying so
    rather than the unpickling error itself."""
    try:
        error = deserialize_inline(data)
    except Exception as exc:
        text = f"(its error could not be rebuilt in this process: {exc!r})"
        return RayTaskError("a task", text, UnserializableException(text),
                            cause_name=type(exc).__name__).as_instanceof_cause()
    if isinstance(error, RayTaskError):
        error = error.as_instanceof_cause()
    return error


def describe_timeout(timeout) -> None:
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
        raise ValueError(f"timeout must be None or a non-negative number, got {timeout!r}")
