"""Value serialization: pickle protocol 5 with out-of-band buffers.

A value becomes a pickle stream (``meta``) plus a list of raw buffers (numpy
arrays, bytes-like objects, torch CPU tensors). Small values travel *inline*
in control messages; large ones are written into shared memory in the layout

    [u64 meta_len][u32 nbuf][u64 len]*nbuf [meta] [pad to 64] [buf0] [pad] [buf1] ...

and read back as read-only, zero-copy views of the mapping.

Plain builtin values skip cloudpickle (whose pickler is set up in Python and
costs microseconds); everything else goes through cloudpickle so functions and
classes defined in ``__main__`` travel by value.
"""

from __future__ import annotations

import pickle
import struct
import threading

import cloudpickle

from ..exceptions import RayError

PICKLE5 = 5
INLINE_THRESHOLD = 100 * 1024  # bytes; like Ray's max_direct_call_object_size
ALIGN = 64

PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None), complex})
_HEADER = struct.Struct("<QI")
_LEN = struct.Struct("<Q")
_INLINE_OOB = b"\x00"  # first byte of an inline value that carries its buffers

_local = threading.local()


class SerializationError(RayError, TypeError):
    """A value could not be pickled."""


class SerializedValue:
    """Output of :func:`serialize`: pickle stream, raw buffers, contained refs."""

    __slots__ = ("meta", "buffers", "contained", "size")

    def __init__(self, meta: bytes, buffers: list, contained: list):
        self.meta = meta
        self.buffers = buffers
        self.contained = contained
        size = len(meta)
        for b in buffers:  # memoryviews
            size += b.nbytes
        self.size = size

    @property
    def is_small(self) -> bool:
        return self.size < INLINE_THRESHOLD

    def to_inline(self) -> bytes:
        """One bytes object holding the value; buffers are copied in."""
        if not self.buffers:
            return self.meta
        import msgpack

        return _INLINE_OOB + msgpack.packb([self.meta] + self.buffers)

    def shm_size(self) -> int:
        nbuf = len(self.buffers)
        pos = _HEADER.size + _LEN.size * nbuf + len(self.meta)
        for b in self.buffers:
            pos = _align(pos) + b.nbytes
        return pos

    def write_into(self, view: memoryview) -> int:
        """Write the shared-memory layout into ``view``; returns bytes written."""
        meta = self.meta
        nbuf = len(self.buffers)
        _HEADER.pack_into(view, 0, len(meta), nbuf)
        pos = _HEADER.size
        for b in self.buffers:
            _LEN.pack_into(view, pos, b.nbytes)
            pos += _LEN.size
        view[pos:pos + len(meta)] = meta
        pos += len(meta)
        for b in self.buffers:
            pos = _align(pos)
            n = b.nbytes
            view[pos:pos + n] = b
            pos += n
        return pos


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def _collect_ref(ref) -> None:
    """Called by ObjectRef.__reduce__ while a value is being serialized."""
    stack = getattr(_local, "contained", None)
    if stack is not None:
        stack.append(ref)


def serialize(value, what: str = "value") -> SerializedValue:
    buffers: list = []
    if type(value) in PLAIN_TYPES:
        return SerializedValue(pickle.dumps(value, PICKLE5), buffers, [])

    def keep_out_of_band(pickle_buffer) -> bool:
        try:
            buffers.append(pickle_buffer.raw())
        except BufferError:  # not contiguous: let pickle copy it in-band
            return True
        return False

    previous = getattr(_local, "contained", None)
    contained: list = []
    _local.contained = contained
    try:
        meta = cloudpickle.dumps(value, protocol=PICKLE5, buffer_callback=keep_out_of_band)
    except Exception as exc:  # pickling raises many types (TypeError, PicklingError, ...)
        raise SerializationError(
            f"Could not serialize {what} of type {type(value).__name__}: {exc}. "
            "Values passed to or returned from remote functions must be picklable "
            "with cloudpickle; pass a picklable description instead (for example a "
            "path or parameters) and build the object inside the task."
        ) from exc
    finally:
        _local.contained = previous
    return SerializedValue(meta, buffers, contained)


def serialize_function(fn) -> bytes:
    try:
        return cloudpickle.dumps(fn, protocol=PICKLE5)
    except Exception as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        raise SerializationError(
            f"Could not serialize remote function or class {name}: {exc}. "
            "It probably captures an unpicklable object (a lock, socket, open file or "
            "client) in a global or closure; create that object inside the function instead."
        ) from exc


def deserialize_inline(data) -> object:
    if data[0] == 0:  # _INLINE_OOB; a pickle stream starts with 0x80
        import msgpack

        parts = msgpack.unpackb(data[1:], raw=False)
        return pickle.loads(parts[0], buffers=parts[1:])
    return pickle.loads(data)


def deserialize_view(view: memoryview) -> object:
    """Deserialize the shared-memory layout; buffers stay views of ``view``."""
    meta_len, nbuf = _HEADER.unpack_from(view, 0)
    pos = _HEADER.size
    lengths = []
    for _ in range(nbuf):
        lengths.append(_LEN.unpack_from(view, pos)[0])
        pos += _LEN.size
    meta = view[pos:pos + meta_len]
    pos += meta_len
    bufs = []
    for n in lengths:
        pos = _align(pos)
        bufs.append(view[pos:pos + n])
        pos += n
    return pickle.loads(meta, buffers=bufs)
