"""Framing between the control plane and a cluster's driver process:
a 4-byte big-endian length, then a cloudpickle payload."""

from __future__ import annotations

import io
import struct
import threading

import cloudpickle

HEADER = struct.Struct("!I")


def pack(message) -> bytes:
    payload = cloudpickle.dumps(message, protocol=5)
    return HEADER.pack(len(payload)) + payload


def unpack(payload: bytes):
    return cloudpickle.loads(payload)


def recv_exact(sock, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv_message(sock):
    """Blocking read of one message; None at end of stream."""
    header = recv_exact(sock, HEADER.size)
    if header is None:
        return None
    payload = recv_exact(sock, HEADER.unpack(header)[0])
    if payload is None:
        return None
    return unpack(payload)


async def read_message(reader):
    """Read one message from an asyncio stream; None at end of stream."""
    import asyncio

    try:
        header = await reader.readexactly(HEADER.size)
        payload = await reader.readexactly(HEADER.unpack(header)[0])
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return unpack(payload)


# -- values with refs nested in them ----------------------------------------------------
# Refs cannot cross between miniray and Ray as they are. Arguments: a task's
# top-level ref arguments are resolved to values before they are sent (as Ray
# does); refs nested in lists, dicts or objects must arrive as refs the Ray
# worker can ``get``: the control plane sends their values beside the
# arguments, and the driver process ``ray.put``s them and puts the Ray refs in
# their places while it unpickles the arguments. Results: Ray refs nested in
# a task's result go the other way and become miniray refs (``put``).
_nested = threading.local()


def _nested_ref(index: int):
    return _nested.refs[index]


class _NestedPickler(cloudpickle.CloudPickler):
    def __init__(self, file, is_ref):
        super().__init__(file, protocol=5)
        self.is_ref = is_ref
        self.found: list = []

    def reducer_override(self, obj):
        if self.is_ref(obj):
            self.found.append(obj)
            return _nested_ref, (len(self.found) - 1,)
        return super().reducer_override(obj)


def dump_nested(obj, is_ref) -> tuple[bytes, list]:
    """Pickle ``obj``; every object in it for which ``is_ref`` is true becomes
    a placeholder. Returns the payload and those objects, in order."""
    buffer = io.BytesIO()
    pickler = _NestedPickler(buffer, is_ref)
    pickler.dump(obj)
    return buffer.getvalue(), pickler.found


def load_nested(payload: bytes, nested_values: bytes | None, put):
    """Unpickle what :func:`dump_nested` made; the placeholders become
    ``put(value)`` of the nested refs' values (``ray.put`` in the driver,
    miniray's ``put`` in the control plane)."""
    if nested_values is None:
        return unpack(payload)
    _nested.refs = [put(value) for value in unpack(nested_values)]
    try:
        return unpack(payload)
    finally:
        _nested.refs = None
