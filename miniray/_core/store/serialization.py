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

import io
import linecache
import os
import pickle
import struct
import threading
import types
from collections import ChainMap

import cloudpickle

from ...exceptions import RayError

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


def _rebuild_code(constructor, args, filename, lines):
    """Unpickle a code object under its original file name.

    ``lines`` is the source when the driver found it only in ``linecache``
    (a notebook cell, ``exec``'d code), so tracebacks here can quote it too.
    """
    code = constructor(*args)
    if lines is not None and filename not in linecache.cache:
        # An mtime of None tells linecache.checkcache never to drop the entry.
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
    return code.replace(co_filename=filename)


def _reduce_code(code):
    """cloudpickle's reduction of a code object, keeping ``co_filename``.

    cloudpickle >= 3.1.3 pickles every code object with the file name
    ``<dynamic-code>``, so remote tracebacks would lose the user's file and
    source lines; the name (and the source, when no file holds it) travels
    beside cloudpickle's own payload.
    """
    constructor, args = _CLOUDPICKLE_CODE_REDUCE(code)
    filename = code.co_filename
    lines = None
    if not os.path.exists(filename):
        entry = linecache.cache.get(filename)
        if entry is not None and entry[2]:
            lines = list(entry[2])
    return _rebuild_code, (constructor, args, filename, lines)


_CLOUDPICKLE_CODE_REDUCE = cloudpickle.CloudPickler.dispatch_table.get(types.CodeType)


class _Pickler(cloudpickle.CloudPickler):
    if _CLOUDPICKLE_CODE_REDUCE is not None:
        dispatch_table = ChainMap({types.CodeType: _reduce_code},
                                  cloudpickle.CloudPickler.dispatch_table)


def _dumps(value, buffer_callback=None) -> bytes:
    with io.BytesIO() as file:
        _Pickler(file, protocol=PICKLE5, buffer_callback=buffer_callback).dump(value)
        return file.getvalue()


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
        meta = _dumps(value, keep_out_of_band)
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
        return _dumps(fn)
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
