"""Control messages between the node runtime and its workers.

Messages are msgpack arrays whose first item is the kind. msgpack is
self-delimiting, so a stream of packed arrays needs no length prefix and the
C ``Unpacker`` splits it with no Python-level framing; many messages are
written with one ``send`` (coalesced).

Encoded argument forms (``args`` lists and ``kwargs`` values):
    [ARG_VALUE, inline_bytes]               a value serialized by the caller
    [ARG_REF, object_id]                    an ObjectRef, resolved by the node
    [ARG_REF, object_id, data]              ... after resolution: data is inline
                                            bytes or a shared-memory location
Task results: ``[data, contained_ids]`` per return value.
"""

from __future__ import annotations

import msgpack



def group_resource(key: str, pg_hex: str, index: int = -1) -> str:
    """The node resource that is ``key`` inside a placement group: in bundle
    ``index``, or in any of its bundles (``-1``). Ray's names, e.g.
    ``CPU_group_0_<id>``; the driver asks for them and the node holds them."""
    return f"{key}_group_{pg_hex}" if index == -1 else f"{key}_group_{index}_{pg_hex}"


# node -> worker
FUNCTION = 1  # [FUNCTION, fn_id, pickled]
TASK = 2  # [TASK, task_id, fn_id, args, kwargs, return_ids, name, gpu_ids, placement, env]
CANCEL = 3  # [CANCEL, task_id]
FREE = 4  # [FREE, [location, ...]]
REPLY = 5  # [REPLY, request_id, ok, payload]
EXIT = 6  # [EXIT]
ACTOR_CREATE = 7  # [ACTOR_CREATE, actor_id, fn_id, args, kwargs, options]
ACTOR_CALL = 8  # [ACTOR_CALL, task_id, method, args, kwargs, return_ids, name, group]

# worker -> node
DONE = 20  # [DONE, task_id, results]
FAILED = 21  # [FAILED, task_id, error_bytes, cancelled]
REQUEST = 22  # [REQUEST, request_id, method, args]
NOTIFY = 23  # [NOTIFY, method, args]
READY = 24  # [READY, pid]
ACTOR_READY = 25  # [ACTOR_READY, actor_id, error_bytes_or_None, is_async]
# worker -> driver, on the direct socket (direct.py): the result of a direct
# call went to the node (NOTIFY direct_done); DONE and FAILED come as above.
DIRECT_ROUTED = 26  # [DIRECT_ROUTED, task_id]

ARG_VALUE = 0
ARG_REF = 1
# In place of a result's (or a put's) contained ids: its data is a serialized
# error, raised by whoever gets the value. A generator that raised after some
# values keeps them and fails only the positions it did not reach (as Ray).
RESULT_ERROR = -1


# Before a peer has presented the token, a listener holds at most this much of
# what it sent (the hello is ~100 bytes), waits at most this long for it, and
# keeps at most this many such peers at once: another local user can reach a
# loopback port, and must not make the head buffer or hold anything for free.
HANDSHAKE_MAX_BYTES = 4096
HANDSHAKE_DEADLINE_S = 5.0
MAX_UNAUTHENTICATED = 32


def new_handshake_unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(raw=False, max_buffer_size=HANDSHAKE_MAX_BYTES)


def new_unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(raw=False, max_buffer_size=2**31 - 1)


def new_packer() -> msgpack.Packer:
    return msgpack.Packer(use_bin_type=True)


def pack(message) -> bytes:
    return msgpack.packb(message, use_bin_type=True)
