"""Framing between the control plane and a cluster's driver process:
a 4-byte big-endian length, then a cloudpickle payload."""

from __future__ import annotations

import struct

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
