"""The worker process: runs tasks, or hosts one actor.

A task worker (and a sync actor with ``max_concurrency == 1``) is a single
thread doing blocking reads of its socket: no thread hop between receiving a
task and running it. A nested ``get`` inside a task sends a request and pumps
the socket until the reply comes, holding back the tasks queued to it (the node
takes those back while the worker is blocked, so nested tasks never deadlock).

Async actors and threaded actors switch the worker to *concurrent* mode: an
asyncio loop (uvloop when installed) owns the socket, async methods run as
tasks on it and sync methods in a thread pool, both bounded by
``max_concurrency``.

Cancelling a running sync task: the node sends CANCEL and then SIGUSR1; the
handler drains the socket and raises ``TaskCancelledError`` in the task if it
is the one cancelled. The node also keeps the next task queued here while one
runs (no round trip between the two); when another worker goes idle it sends
a steal notice and SIGUSR1, and the handler hands back the tasks not started
(``_give_back_queued``), so a long task never holds back work another worker
could start. ``in_io`` marks where the handler must not read the socket (the
main thread is reading it, writing to it or walking the inbox): it only notes
the signal, and what came with it is read at the next safe point.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import itertools
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from types import AsyncGeneratorType, GeneratorType

from ...exceptions import (
    ActorDiedError,
    GetTimeoutError,
    ObjectStoreFullError,
    OutOfDiskError,
    RayTaskError,
    TaskCancelledError,
)
from .. import context
from .. import protocol as P
from ..client import VALUE_SHM, ClientBase
from ..generators import ObjectRefGenerator
from ..store.object_store import STORE_FULL_GRACE_S, LocalStore
from ..refs import ObjectRef, set_client
from ..store.serialization import INLINE_THRESHOLD, PICKLE5, PLAIN_TYPES, deserialize_inline, serialize

_FLUSH_FAST_TASK_S = 0.001
# Under coverage measurement (the test suite), data is saved at most this often:
# workers ended by kill() get SIGKILL and would otherwise lose all of it.
_COVERAGE_SAVE_S = 1.0
_coverage = None
_coverage_saved_at = 0.0


def _save_coverage_now_and_then() -> None:
    global _coverage_saved_at
    now = time.monotonic()
    if now - _coverage_saved_at > _COVERAGE_SAVE_S:
        _coverage_saved_at = now
        try:
            _coverage.save()
        except Exception:  # pragma: no cover - measurement must never break a worker
            pass
_RECV_TIMEOUT_S = 1.0
_RECV_BUFFER_BYTES = 256 * 1024  # one recv takes up to this; more arrives in the next


class _ExitWorker(BaseException):
    """Raised to unwind the worker's loop on EXIT."""


class WorkerClient(ClientBase):
    def __init__(self, sock: socket.socket, node_pid: int, capacity: int, arena_size: int,
                 worker_id: int):
        super().__init__()
        self.sock = sock
        self.node_pid = node_pid
        self.worker_id = worker_id
        self.store = LocalStore(node_pid, capacity, arena_size)
        self.store.reserve = self._reserve
        self.store.on_full = self._on_store_full
        self.unpacker = P.new_unpacker()
        # One receive buffer for the worker's life: recv(1 MiB) allocated (by
        # mmap), shrank (mremap) and freed (munmap, a TLB flush) a fresh buffer
        # per message, ~30 % of a no-op task's worker CPU in page faults.
        self.recv_buffer = bytearray(_RECV_BUFFER_BYTES)
        self.recv_view = memoryview(self.recv_buffer)
        self.inbox: collections.deque = collections.deque()
        self.out: collections.deque = collections.deque()
        self.send_lock = threading.Lock()
        self.function_blobs: dict[bytes, bytes] = {}
        self.functions: dict[bytes, object] = {}
        self.replies: dict[int, object] = {}
        self.request_ids = itertools.count(1)
        self.current_task: bytes | None = None
        self.current_task_name: str = ""
        self.cancelled: set[bytes] = set()
        # Called before the worker goes idle (its replies about to be flushed):
        # batched state such as application metrics goes out with them.
        self.idle_hooks: list = []
        self.async_constructor = None  # (cls, args, kwargs, name) of an async __init__
        self.in_io = False
        self.cancel_signalled = False
        self.flush_wanted = False  # a flush the signal handler could not do
        self.concurrent = False
        self.loop = None
        self.transport = None
        self.actor = None
        self.actor_id: bytes | None = None
        self.actor_is_async = False
        self.running_async: dict[bytes, object] = {}
        self.concurrency_groups = {}
        self.executors = {}  # concurrency group (None: the default) -> (semaphore, pool)
        self.method_groups = {}  # method name -> its declared concurrency group
        self.loop_thread_id = None
        self.gpu_ids_set = False
        # Direct calls (direct.py): the driver writes tasks on a second socket
        # and reads their replies there; task id -> return ids while running.
        self.direct_sock = None
        self.direct_unpacker = None
        self.direct_ids: dict = {}
        self.poller = None

    def set_direct(self, sock: socket.socket) -> None:
        import select

        self.direct_sock = sock
        self.direct_unpacker = P.new_unpacker()
        self.poller = select.poll()
        self.poller.register(self.sock.fileno(), select.POLLIN)
        self.poller.register(sock.fileno(), select.POLLIN)

    # -- transport ------------------------------------------------------------
    def send(self, message) -> None:
        if self.direct_ids and (message[0] == P.DONE or message[0] == P.FAILED):
            return_ids = self.direct_ids.pop(message[1], None)
            if return_ids is not None:
                self._reply_direct(message, return_ids)
                return
        self.out.append(P.pack(message))
        if self.concurrent:
            self._schedule_flush()

    def _reply_direct(self, message, return_ids) -> None:
        """The outcome of a direct call: one inline value (or an error) on the
        direct socket; any other result through the node, which must hold its
        contained refs and account its shared memory."""
        if message[0] == P.DONE:
            results = message[2]
            if len(results) != 1 or results[0][1] or type(results[0][0]) is not bytes:
                self.out.append(P.pack([P.NOTIFY, "direct_done", [return_ids, results]]))
                message = [P.DIRECT_ROUTED, message[1]]
        # What the task told the node (refs, metrics, ...) goes out before its result.
        self.flush()
        self.in_io = True
        try:
            self.direct_sock.sendall(P.pack(message))
        except OSError:  # the driver is gone; the node will say so
            pass
        finally:
            self.in_io = False

    def flush(self) -> None:
        if self.concurrent:
            self._schedule_flush()
            return
        was_in_io = self.in_io
        with self.send_lock:
            self._send_out(was_in_io)
        if self.flush_wanted:
            self.flush_wanted = False
            self.flush()
        elif self.cancel_signalled and not was_in_io and self.current_task is not None:
            # SIGUSR1 came while writing: what it announced (a cancel, a steal)
            # is read now rather than after the task.
            self._on_sigusr1(signal.SIGUSR1, None)

    def _flush_from_handler(self) -> None:
        """flush() for the signal handler, which runs on the main thread between
        two of its steps: the lock may be held (another thread is writing), and
        then the writer flushes once it is done instead."""
        if self.concurrent:
            self._schedule_flush()
            return
        if not self.send_lock.acquire(False):
            self.flush_wanted = True
            return
        try:
            self._send_out(self.in_io)
        finally:
            self.send_lock.release()

    def _send_out(self, was_in_io: bool) -> None:
        """Write everything queued in one ``sendall`` (send_lock held), in_io
        meanwhile so a signal handler only takes note."""
        self.in_io = True
        try:
            parts = []
            out = self.out
            while out:
                parts.append(out.popleft())
            if parts:
                self.sock.sendall(b"".join(parts))
        finally:
            self.in_io = was_in_io

    def _recv_blocking(self) -> bool:
        if self.direct_sock is not None:
            return self._recv_either()
        # The socket keeps a 1 s timeout (set once): idle workers wake up to
        # flush late notifications such as unpins.
        # in_io until what was read is fed too: the handler must not feed
        # the unpacker (or touch the inbox) in the middle of it.
        self.in_io = True
        try:
            size = self.sock.recv_into(self.recv_buffer)
            if not size:
                raise _ExitWorker("node connection closed")
            self._feed(self.recv_view[:size])
        except (socket.timeout, BlockingIOError):  # SO_RCVTIMEO elapsed (EAGAIN)
            return False
        finally:
            self.in_io = False
        return True

    def _recv_either(self) -> bool:
        """Wait for the node's socket or the direct one (1 s at most, as above).

        The direct socket is read first: a direct call written before the node
        wrote a later call of the same caller then also runs first."""
        # in_io until what was read is fed too (see _recv_blocking).
        self.in_io = True
        try:
            ready = self.poller.poll(_RECV_TIMEOUT_S * 1000)
            if not ready:
                return False
            self._read_direct()
            node_fd = self.sock.fileno()
            for fd, _ in ready:
                if fd == node_fd:
                    try:
                        size = self.sock.recv_into(self.recv_buffer, 0, socket.MSG_DONTWAIT)
                    except (BlockingIOError, InterruptedError):
                        continue
                    if not size:
                        raise _ExitWorker("node connection closed")
                    self._feed(self.recv_view[:size])
        finally:
            self.in_io = False
        return True

    def _read_direct(self) -> None:
        sock = self.direct_sock
        while True:
            try:
                size = sock.recv_into(self.recv_buffer, 0, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                size = 0
            if not size:  # the driver closed it (shutdown): the node says the rest
                self.poller.unregister(sock.fileno())
                self.direct_sock = None
                return
            unpacker = self.direct_unpacker
            unpacker.feed(self.recv_view[:size])
            for message in unpacker:
                kind = message[0]
                if kind == P.TASK or kind == P.ACTOR_CALL:
                    self.direct_ids[message[1]] = message[5]
                    self.inbox.append(message)
                elif not self._on_control(kind, message):
                    self.inbox.append(message)  # pragma: no cover - nothing else comes
            if size < len(self.recv_buffer):
                return

    def _feed(self, data) -> None:
        """Unpack what arrived (the unpacker copies it: the buffer is reused)."""
        self.unpacker.feed(data)
        for message in self.unpacker:
            kind = message[0]
            if kind == P.REPLY:
                self.replies[message[1]] = message
            elif not self._on_control(kind, message):
                self.inbox.append(message)

    def _on_control(self, kind: int, message) -> bool:
        """Handle a message that never waits for the task loop; False if not one."""
        if kind == P.FREE:
            for location in message[1]:
                self.store.free(location)
        elif kind == P.FUNCTION:
            self.function_blobs[message[1]] = message[2]
        elif kind == P.CANCEL:
            self._on_cancel(message[1])
        elif kind == P.NOTIFY and message[1] == "steal":
            self._give_back_queued()
        else:
            return False
        return True

    def _give_back_queued(self) -> None:
        """The node asks for the tasks queued here and not started (another
        worker is idle). Every task the node sent before the notice is in the
        inbox now: they go back, and the answer goes even if none is left (the
        node waits for it before it asks again)."""
        inbox = self.inbox
        direct_ids = self.direct_ids  # a direct call's task is not the node's to move
        returned = [m[1] for m in inbox if m[0] == P.TASK and m[1] not in direct_ids]
        if returned:
            keep = [m for m in inbox if m[0] != P.TASK or m[1] in direct_ids]
            inbox.clear()  # in place: run_sync holds a reference to this deque
            inbox.extend(keep)
        self.notify("requeue", returned)
        self._flush_from_handler()

    def _on_cancel(self, task_id: bytes) -> None:
        for message in self.inbox:
            if message[0] in (P.TASK, P.ACTOR_CALL) and message[1] == task_id:
                self.inbox.remove(message)
                self._send_cancelled(task_id)
                # Now, not after the task running here (it may run long).
                self._flush_from_handler()
                return
        if self.concurrent:
            task = self.running_async.get(task_id)
            if task is not None:
                task.cancel()
            else:
                self.cancelled.add(task_id)
            return
        self.cancelled.add(task_id)

    def _on_sigusr1(self, signum, frame) -> None:
        if self.concurrent:
            pass
        elif self.in_io:
            # The CANCEL that came with this signal is in the socket, unread:
            # the next task to start reads it first (see _run_task).
            self.cancel_signalled = True
        else:
            self._read_what_is_there()
        if self.current_task is not None and self.current_task in self.cancelled:
            raise TaskCancelledError(self.current_task.hex())

    def _read_what_is_there(self) -> None:
        self.cancel_signalled = False
        self.in_io = True  # a second signal meanwhile only takes note
        if self.direct_sock is not None:
            self._read_direct()
        self.sock.setblocking(False)
        try:
            while True:
                try:
                    size = self.sock.recv_into(self.recv_buffer)
                except (BlockingIOError, InterruptedError):
                    break
                if not size:
                    break
                self._feed(self.recv_view[:size])
        finally:
            self.sock.setblocking(True)
            self.in_io = False

    # -- requests to the node ------------------------------------------------
    def notify(self, method: str, *args) -> None:
        self.send([P.NOTIFY, method, list(args)])

    def request(self, method: str, *args):
        if self.concurrent:
            return self._request_from_thread(method, args)
        request_id = next(self.request_ids)
        self.send([P.REQUEST, request_id, method, list(args)])
        self.flush()
        replies = self.replies
        while request_id not in replies:
            self._recv_blocking()
            self._return_queued_tasks_if_asked()
            if self.current_task is not None and self.current_task in self.cancelled:
                raise TaskCancelledError(self.current_task.hex())
        return self._unwrap(replies.pop(request_id))

    def _return_queued_tasks_if_asked(self) -> None:
        # While blocked, the node may send RETURN_QUEUED (as a NOTIFY-kind
        # message in the inbox): hand back the tasks not started yet.
        self.in_io = True  # walking the inbox: the signal handler must not feed it
        try:
            self._return_queued_tasks()
        finally:
            self.in_io = False
        if self.cancel_signalled:
            self._read_what_is_there()

    def _return_queued_tasks(self) -> None:
        keep = collections.deque()
        returned = []
        for message in self.inbox:
            if message[0] == P.TASK and message[1] not in self.direct_ids:
                returned.append(message[1])
            elif message[0] == P.NOTIFY and message[1] == "return_queued":
                if returned:
                    self.notify("requeue", returned)
                    self.flush()
                returned = []
                keep = collections.deque(m for m in keep if m[0] != P.TASK
                                         or m[1] in self.direct_ids)
                continue
            keep.append(message)
        # In place: run_sync holds a reference to this deque.
        self.inbox.clear()
        self.inbox.extend(keep)

    def _unwrap(self, reply):
        _, _, ok, payload = reply
        if ok:
            return payload
        raise deserialize_inline(payload)

    def _request_from_thread(self, method, args):
        import concurrent.futures

        if threading.get_ident() == self.loop_thread_id:
            raise RuntimeError(
                f"miniray.{method}() would block the actor's event loop; "
                "use 'await' on the ObjectRef (or on miniray.get(...)) inside async methods."
            )
        future = concurrent.futures.Future()
        request_id = next(self.request_ids)
        self.replies[request_id] = future
        self.loop.call_soon_threadsafe(
            self._send_now, [P.REQUEST, request_id, method, list(args)])
        return future.result()

    async def request_async(self, method: str, *args):
        future = self.loop.create_future()
        request_id = next(self.request_ids)
        self.replies[request_id] = future
        self._send_now([P.REQUEST, request_id, method, list(args)])
        return await future

    # -- ClientBase hooks ------------------------------------------------------
    def _notify_add_ref(self, object_id: bytes) -> None:
        self.send([P.NOTIFY, "add_ref", [object_id]])

    def _notify_remove_ref(self, object_id: bytes) -> None:
        self.send([P.NOTIFY, "remove_ref", [object_id]])

    def put_serialized(self, serialized) -> ObjectRef:
        object_id = self.ids.new()
        contained = [r._id for r in serialized.contained]
        if serialized.is_small:
            self.notify("put", object_id, serialized.to_inline(), contained)
        else:
            location = self.store.write(serialized)
            self.notify("put", object_id, location, contained)
        return ObjectRef(object_id, _counted=True)

    def _reserve(self, size: int) -> None:
        """Take ``size`` bytes of the node's store budget before writing them
        (the node spills to make room, or raises ObjectStoreFullError)."""
        if self.concurrent and threading.get_ident() == self.loop_thread_id:
            # An async actor's loop must not block: account without waiting.
            self.notify("reserve", size, False, True)
            return
        if size < 0:
            self.notify("reserve", size)
            return
        # As the driver's put: a store full of objects about to be unpinned
        # makes room a moment later.
        deadline = time.monotonic() + STORE_FULL_GRACE_S
        pause = 0.005
        while True:
            try:
                self.request("reserve", size)
                return
            except OutOfDiskError:
                raise
            except ObjectStoreFullError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _on_store_full(self, size: int) -> bool:
        if self.concurrent and threading.get_ident() == self.loop_thread_id:
            return False
        try:
            return bool(self.request("reserve", size, True))
        except Exception:
            return False

    def register_function(self, fn_id: bytes, blob_getter) -> None:
        if fn_id not in self._registered_functions:
            self.notify("register_function", fn_id, blob_getter())
            self._registered_functions.add(fn_id)

    def submit_task(self, fn_id, args, kwargs, contained, options, num_returns):
        return_ids = [self.ids.new() for _ in range(num_returns)]
        self.notify("submit", fn_id, args, kwargs, contained, options, return_ids)
        self.flush()
        return [ObjectRef(i, _counted=True) for i in return_ids]

    def submit_actor_task(self, actor_id, method, args, kwargs, contained, options,
                          num_returns):
        return_ids = [self.ids.new() for _ in range(num_returns or 1)]
        self.notify("actor_call", actor_id, return_ids[0], method, args, kwargs, contained,
                    return_ids, options)
        self.flush()
        return [ObjectRef(i, _counted=True) for i in return_ids]

    def decode_replies(self, object_ids, values):
        out = []
        for object_id, (state, data) in zip(object_ids, values):
            if state == VALUE_SHM:  # the node pinned it for us with the reply
                try:
                    value = self.decode_value(object_id, state, data, _Unpin(self, object_id))
                except BaseException:
                    self.notify("unpin", object_id)
                    raise
                out.append(value)
            else:
                out.append(self.decode_value(object_id, state, data))
        return out

    def get(self, refs, timeout):
        ids = [r._id for r in refs]
        values = self.request("get", ids, timeout)
        if values is None:
            raise GetTimeoutError(f"get() timed out after {timeout} s")
        return self.decode_replies(ids, values)

    async def get_async_values(self, refs, timeout):
        ids = [r._id for r in refs]
        values = await self.request_async("get", ids, timeout)
        if values is None:
            raise GetTimeoutError(f"get() timed out after {timeout} s")
        return self.decode_replies(ids, values)

    def get_async(self, refs, timeout, single=False):
        async def run():
            values = await self.get_async_values(refs, timeout)
            return values[0] if single else values
        if not self.concurrent:
            raise RuntimeError("await on ObjectRefs needs an async actor in a worker")
        return run()

    def get_future(self, ref):
        import concurrent.futures

        future = concurrent.futures.Future()

        def done(result):
            try:
                future.set_result(result)
            except Exception as exc:  # pragma: no cover
                future.set_exception(exc)

        if self.concurrent:
            async def run():
                try:
                    done((await self.get_async_values([ref], None))[0])
                except BaseException as exc:
                    future.set_exception(exc)
            self.loop.call_soon_threadsafe(lambda: self.loop.create_task(run()))
        else:
            try:
                done(self.get([ref], None)[0])
            except BaseException as exc:
                future.set_exception(exc)
        return future

    async def wait_async(self, refs, num_returns, timeout, fetch_local):
        if not self.concurrent:
            raise RuntimeError("await on miniray.wait() needs an async actor in a worker")
        ready = await self.request_async("wait", [r._id for r in refs], num_returns, timeout)
        ready_set = set(ready)
        return ([r for r in refs if r._id in ready_set],
                [r for r in refs if r._id not in ready_set])

    def wait(self, refs, num_returns, timeout, fetch_local):
        ready = self.request("wait", [r._id for r in refs], num_returns, timeout)
        ready_set = set(ready)
        return ([r for r in refs if r._id in ready_set],
                [r for r in refs if r._id not in ready_set])

    def generic(self, method, *args):
        return self.request(method, *args)

    def generic_async(self, method, *args):
        return self.request_async(method, *args)

    # -- running tasks ---------------------------------------------------------
    def load_function(self, fn_id: bytes):
        fn = self.functions.get(fn_id)
        if fn is None:
            blob = self.function_blobs.pop(fn_id)
            fn = pickle.loads(blob)
            self.functions[fn_id] = fn
        return fn

    def decode_args(self, args, kwargs):
        if not kwargs and all(a[0] == P.ARG_VALUE and a[1][0] != 0 for a in args):
            loads = pickle.loads  # the common case: small plain pickles
            return [loads(a[1]) for a in args], {}
        pos = [self._decode_arg(a) for a in args]
        kw = {k: self._decode_arg(v) for k, v in kwargs.items()} if kwargs else {}
        return pos, kw

    def _decode_arg(self, arg):
        if arg[0] == P.ARG_VALUE:
            return deserialize_inline(arg[1])
        object_id, state, data = arg[1], arg[2], arg[3]
        if state == VALUE_SHM:
            self.notify("pin", object_id)
            return self.decode_value(object_id, state, data, _Unpin(self, object_id))
        return self.decode_value(object_id, state, data)

    def encode_results(self, value, return_ids, name):
        n = len(return_ids)
        if n == 1 and type(value) in PLAIN_TYPES:
            data = pickle.dumps(value, PICKLE5)
            if len(data) < INLINE_THRESHOLD:
                return [[data, None]]
        if n == 1:
            values = (value,)
        elif n == 0:
            return []
        else:
            failed = None
            if type(value) is GeneratorType:
                values, failed = self._drain_fixed(value, n, name)
            else:
                try:
                    values = tuple(value)
                except TypeError:
                    raise ValueError(
                        f"{name} was declared with num_returns={n} but returned a "
                        f"{type(value).__name__}, which is not iterable") from None
            if failed is not None:
                # What the generator yielded before it raised is kept; the
                # positions it did not reach hold the error.
                results = self._encode_values(values, name)
                return results + [[failed, P.RESULT_ERROR]] * (n - len(values))
            if len(values) != n:
                raise ValueError(
                    f"{name} was declared with num_returns={n} but returned "
                    f"{len(values)} values")
        return self._encode_values(values, name)

    def _drain_fixed(self, generator, n: int, name):
        """The values of a generator task with a fixed ``num_returns`` (at most
        n + 1, to report one too many), and the error bytes if it raised."""
        values = []
        try:
            for item in generator:
                values.append(item)
                if len(values) > n:
                    break
        except (TaskCancelledError, _ExitWorker, _ExitActor):
            raise
        except BaseException as exc:
            if len(values) < n:
                return values, self._error_bytes(name, exc)
            # Every return already has its value: no ref is left to carry the
            # error, so it is reported where the worker's output goes.
            print(f"miniray: {name} raised after yielding all its {n} return values: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return tuple(values), None

    def _encode_values(self, values, name) -> list:
        results = []
        for i, v in enumerate(values):
            serialized = serialize(v, f"return value {i} of {name}")
            contained = [r._id for r in serialized.contained] or None
            if serialized.is_small:
                results.append([serialized.to_inline(), contained])
            else:
                results.append([self.store.write(serialized), contained])
        return results

    def _send_cancelled(self, task_id: bytes) -> None:
        error = TaskCancelledError(task_id.hex())
        self.send([P.FAILED, task_id, serialize(error).to_inline(), True])

    def _error_bytes(self, name: str, exc: BaseException) -> bytes:
        error = RayTaskError.from_exception(name, exc, pid=os.getpid())
        error.traceback_str = _trim_traceback(error.traceback_str)
        try:
            data = serialize(error).to_inline()
            # The caller rebuilds the cause from its pickle: a class whose
            # __init__ does not take its own args back (or a __reduce__ that
            # fails) would turn into a bare TypeError there, task name and
            # traceback lost. Failing here once costs only the error path.
            deserialize_inline(data)
            return data
        except Exception:
            # Keep the type's name, its message and the traceback as text.
            error.cause = None
            return serialize(error).to_inline()

    def _drain_generator(self, generator, name, source_id: bytes) -> ObjectRefGenerator:
        """Store each value a generator task yields as its own object, telling the
        node at once (so the caller can take it while the task goes on); an error
        after some values becomes one more ref, at the failing position, whose
        ``get`` raises it (Ray's streaming and dynamic generators)."""
        refs = []
        try:
            for item in generator:
                self._stream_value(refs, item, name, source_id)
                self._flush_item()
        except (TaskCancelledError, _ExitWorker, _ExitActor):
            raise
        except BaseException as exc:
            self._stream_error(refs, self._error_bytes(name, exc), source_id)
        return ObjectRefGenerator(refs)

    async def _drain_async_generator(self, generator, name,
                                     source_id: bytes) -> ObjectRefGenerator:
        """_drain_generator for an ``async def`` generator (async actors)."""
        refs = []
        try:
            async for item in generator:
                self._stream_value(refs, item, name, source_id)
                self._flush_now()
        except (TaskCancelledError, _ExitWorker, _ExitActor, asyncio.CancelledError):
            raise
        except BaseException as exc:
            self._stream_error(refs, self._error_bytes(name, exc), source_id)
        return ObjectRefGenerator(refs)

    def _stream_value(self, refs: list, item, name, source_id: bytes) -> None:
        """Store one yielded value and tell the node (its caller may take it now)."""
        ref = self.put_serialized(serialize(item, f"value {len(refs)} yielded by {name}"))
        self.notify("stream_item", source_id, len(refs), ref._id)
        refs.append(ref)

    def _stream_error(self, refs: list, error: bytes, source_id: bytes) -> None:
        ref = self.put_error(error)
        self.notify("stream_item", source_id, len(refs), ref._id)
        refs.append(ref)

    def put_error(self, error: bytes) -> ObjectRef:
        """A new object whose ``get`` raises ``error`` (serialized)."""
        object_id = self.ids.new()
        self.notify("put", object_id, error, P.RESULT_ERROR)
        return ObjectRef(object_id, _counted=True)

    def _flush_item(self) -> None:
        # A sync generator of an async actor runs on the loop, which cannot run
        # a scheduled flush before the generator ends: write each value now.
        if self.concurrent and threading.get_ident() == self.loop_thread_id:
            self._flush_now()
        else:
            self.flush()

    def run_task(self, message) -> None:
        env = message[9]
        if env is None:
            self._run_task(message)
            return
        # The task's runtime_env env_vars, for its run only: the worker is reused.
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            self._run_task(message)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _run_task(self, message) -> None:
        _, task_id, fn_id, args, kwargs, return_ids, name, gpu_ids, placement, _ = message
        if placement is not None or context.current_placement_group is not None:
            context.set_placement(placement)
        if gpu_ids is not None or self.gpu_ids_set:
            # Like Ray: a task sees only the GPUs it was given.
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpu_ids or ()))
            self.gpu_ids_set = gpu_ids is not None
        if self.cancel_signalled:
            self._read_what_is_there()
        if task_id in self.cancelled:
            self.cancelled.discard(task_id)
            self._send_cancelled(task_id)
            return
        self.current_task = task_id
        self.current_task_name = name
        started = time.perf_counter()
        try:
            fn = self.load_function(fn_id)
            pos, kw = self.decode_args(args, kwargs)
            value = fn(*pos, **kw)
            del pos, kw
            if type(value) is GeneratorType and len(return_ids) == 1:
                value = self._drain_generator(value, name, return_ids[0])
            results = self.encode_results(value, return_ids, name)
        except TaskCancelledError:
            self.current_task = None
            self.cancelled.discard(task_id)
            self._send_cancelled(task_id)
            return
        except _ExitWorker:
            raise
        except BaseException as exc:  # the user's error travels to the caller
            self.current_task = None
            if task_id in self.cancelled:
                self.cancelled.discard(task_id)
                self._send_cancelled(task_id)
                return
            self.send([P.FAILED, task_id, self._error_bytes(name, exc), False])
            return
        self.current_task = None
        # With the run time measured here: the node's estimate of what a task of
        # this function costs (its round trip is not the worker's time).
        self.send([P.DONE, task_id, results, time.perf_counter() - started])
        # Only now: refs inside the value (ray.put in the task) must be held by
        # the node, through DONE's contained ids, before this worker lets go.
        del value

    # -- actors ------------------------------------------------------------------
    def create_actor(self, message) -> None:
        _, actor_id, fn_id, args, kwargs, options = message
        self.actor_id = actor_id
        cls = self.load_function(fn_id)
        name = getattr(cls, "__name__", "Actor")

        is_async = any(
            inspect.iscoroutinefunction(m) or inspect.isasyncgenfunction(m)
            for _, m in inspect.getmembers(cls, predicate=inspect.isfunction)
        )
        max_concurrency = options.get("max_concurrency") or (1000 if is_async else 1)
        self.actor_is_async = is_async
        self.concurrency_groups = options.get("concurrency_groups") or {}
        os.environ.update(options.get("env") or {})  # the process is the actor's alone
        try:
            pos, kw = self.decode_args(args, kwargs)
            context.current_actor_id = actor_id
            context.set_placement(options.get("placement"))
            if inspect.iscoroutinefunction(getattr(cls, "__init__", None)):
                # Awaited on the actor's loop once the worker runs it (it may await refs).
                self.async_constructor = (cls, pos, kw, name)
                raise _SwitchToConcurrent(max_concurrency, True)
            self.actor = cls(*pos, **kw)
        except _SwitchToConcurrent:
            raise
        except BaseException as exc:
            self.send([P.ACTOR_READY, actor_id, self._error_bytes(f"{name}.__init__", exc),
                       is_async])
            self.flush()
            return
        self.send([P.ACTOR_READY, actor_id, None, is_async])
        self.flush()
        if is_async or max_concurrency > 1 or self.concurrency_groups:
            raise _SwitchToConcurrent(max_concurrency, is_async)

    def _actor_method(self, method_name: str):
        """The bound method a call names; Ray's built-ins ``__ray_ready__`` (true once
        the constructor has run) and ``__ray_call__`` (``fn(actor, *args)``) included."""
        if method_name == "__ray_ready__":
            return _ray_ready
        if method_name == "__ray_call__":
            actor = self.actor
            return lambda fn, *args, **kwargs: fn(actor, *args, **kwargs)
        return getattr(self.actor, method_name)

    async def _construct_async(self) -> None:
        """An actor with ``async def __init__``: the constructor is awaited on the
        actor's loop (so it can await refs and start tasks that outlive it), and only
        then does the actor report ready: the node sends no call before that."""
        cls, pos, kw, name = self.async_constructor
        self.async_constructor = None
        instance = cls.__new__(cls)
        try:
            await cls.__init__(instance, *pos, **kw)
        except BaseException as exc:
            self.send([P.ACTOR_READY, self.actor_id,
                       self._error_bytes(f"{name}.__init__", exc), True])
            return
        self.actor = instance
        self.send([P.ACTOR_READY, self.actor_id, None, True])

    def run_actor_call(self, message) -> None:
        _, task_id, method_name, args, kwargs, return_ids, name, group = message
        if task_id in self.cancelled:
            self.cancelled.discard(task_id)
            self._send_cancelled(task_id)
            return
        self.current_task = task_id
        try:
            if self.actor is None:
                raise ActorDiedError("The actor's constructor failed")
            if group is not None:  # a sync actor has no groups (they make it threaded)
                raise self._no_such_group(group)
            method = self._actor_method(method_name)
            pos, kw = self.decode_args(args, kwargs)
            value = method(*pos, **kw)
            del pos, kw
            if type(value) is GeneratorType and len(return_ids) == 1:
                value = self._drain_generator(value, name, return_ids[0])
            results = self.encode_results(value, return_ids, name)
        except TaskCancelledError:
            self.current_task = None
            self._send_cancelled(task_id)
            return
        except _ExitActor:
            self.current_task = None
            self.notify("actor_exit", self.actor_id)
            self.send([P.DONE, task_id, self.encode_results(None, return_ids, name)])
            raise _ExitWorker("exit_actor")
        except _ExitWorker:
            raise
        except BaseException as exc:
            self.current_task = None
            self.send([P.FAILED, task_id, self._error_bytes(name, exc), False])
            return
        self.current_task = None
        self.send([P.DONE, task_id, results])
        del value  # after DONE, as in run_task

    # -- main loops ----------------------------------------------------------------
    def run_sync(self) -> None:
        inbox = self.inbox
        while True:
            if _coverage is not None:
                _save_coverage_now_and_then()
            if not inbox:
                for hook in self.idle_hooks:
                    hook()
                self.flush()
                self._recv_blocking()
                continue
            message = inbox.popleft()
            kind = message[0]
            started = time.perf_counter()
            if kind == P.TASK:
                self.run_task(message)
            elif kind == P.ACTOR_CALL:
                self.run_actor_call(message)
            elif kind == P.ACTOR_CREATE:
                self.create_actor(message)
            elif kind == P.EXIT:
                raise _ExitWorker("exit")
            elif kind == P.NOTIFY:
                continue  # a stale return_queued: nothing is queued
            # Replies of fast tasks wait for the next flush so a pipelined burst
            # goes out in one write; a slow task's reply goes out at once.
            if not inbox or time.perf_counter() - started > _FLUSH_FAST_TASK_S:
                self.flush()

    def run_concurrent(self, max_concurrency: int, is_async: bool) -> None:
        from ..loop import new_event_loop

        self.concurrent = True
        loop = self.loop = new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop_thread_id = threading.get_ident()
        from concurrent.futures import ThreadPoolExecutor

        # Each concurrency group has its own limit (and, in a threaded actor, its
        # own threads): calls of one group never wait behind another's.
        for group, limit in ((None, max_concurrency), *self.concurrency_groups.items()):
            pool = None if is_async else ThreadPoolExecutor(
                limit, thread_name_prefix=f"actor-{group or 'default'}")
            self.executors[group] = (asyncio.Semaphore(limit), pool)
        self.stopped = loop.create_future()
        worker = self

        class Protocol(asyncio.Protocol):
            def connection_made(self, transport):
                worker.transport = transport

            def data_received(self, data):
                worker._feed_concurrent(data)

            def connection_lost(self, exc):
                if not worker.stopped.done():
                    worker.stopped.set_result(None)

        async def main():
            self.sock.setblocking(False)
            await loop.create_unix_connection(Protocol, sock=self.sock)
            self._flush_now()
            # Messages that arrived before the switch.
            pending = list(self.inbox)
            self.inbox.clear()
            for message in pending:
                self._dispatch_concurrent(message)
            if self.async_constructor is not None:
                await self._construct_async()
            if _coverage is not None:
                def save_periodically():
                    _save_coverage_now_and_then()
                    loop.call_later(_COVERAGE_SAVE_S, save_periodically)
                save_periodically()
            await self.stopped

        try:
            loop.run_until_complete(main())
        finally:
            for _, pool in self.executors.values():
                if pool is not None:
                    pool.shutdown(wait=False, cancel_futures=True)

    def _schedule_flush(self) -> None:
        loop = self.loop
        if threading.get_ident() == self.loop_thread_id:
            loop.call_soon(self._flush_now)
        else:
            loop.call_soon_threadsafe(self._flush_now)

    def _flush_now(self) -> None:
        parts = []
        out = self.out
        while out:
            parts.append(out.popleft())
        if parts and self.transport is not None:
            self.transport.write(b"".join(parts))

    def _send_now(self, message) -> None:
        self.out.append(P.pack(message))
        self._flush_now()

    def _feed_concurrent(self, data: bytes) -> None:
        self.unpacker.feed(data)
        for message in self.unpacker:
            self._dispatch_concurrent(message)

    def _dispatch_concurrent(self, message) -> None:
        kind = message[0]
        if kind == P.REPLY:
            waiter = self.replies.pop(message[1], None)
            if waiter is None:
                return
            try:
                value = self._unwrap(message)
            except BaseException as exc:
                _set_exception(waiter, exc)
            else:
                _set_result(waiter, value)
        elif kind == P.ACTOR_CALL:
            self.loop.create_task(self._run_call_concurrent(message))
        elif self._on_control(kind, message):
            pass
        elif kind == P.EXIT:
            if not self.stopped.done():
                self.stopped.set_result(None)

    def _executor(self, method_name: str, group):
        """(semaphore, thread pool or None) of the concurrency group a call runs in."""
        if group is None:
            group = self.method_groups.get(method_name, False)
            if group is False:
                options = getattr(getattr(type(self.actor), method_name, None),
                                  "__miniray_method_options__", None) or {}
                group = self.method_groups[method_name] = options.get("concurrency_group")
        executor = self.executors.get(group)
        if executor is None:
            raise self._no_such_group(group)
        return executor

    def _no_such_group(self, group) -> ValueError:
        return ValueError(
            f"The actor has no concurrency group {group!r} (its groups: "
            f"{sorted(self.concurrency_groups)}); define it with "
            f"concurrency_groups={{{group!r}: n}} when creating the actor.")

    async def _run_call_concurrent(self, message) -> None:
        _, task_id, method_name, args, kwargs, return_ids, name, group = message
        if task_id in self.cancelled:
            self.cancelled.discard(task_id)
            self._send_cancelled(task_id)
            return
        try:
            semaphore, pool = self._executor(method_name, group)
        except ValueError as exc:
            self.send([P.FAILED, task_id, self._error_bytes(name, exc), False])
            return
        async with semaphore:
            self.running_async[task_id] = asyncio.current_task()
            try:
                method = self._actor_method(method_name)
                pos, kw = self.decode_args(args, kwargs)
                if inspect.iscoroutinefunction(method):
                    value = await method(*pos, **kw)
                elif pool is not None:
                    value = await self.loop.run_in_executor(pool, lambda: method(*pos, **kw))
                else:
                    value = method(*pos, **kw)
                    if inspect.isawaitable(value):
                        value = await value
                if type(value) is AsyncGeneratorType:
                    if len(return_ids) == 1:
                        value = await self._drain_async_generator(value, name, return_ids[0])
                    else:  # a static num_returns: the values, split as a sequence
                        value = [item async for item in value]
                elif type(value) is GeneratorType and len(return_ids) == 1:
                    if pool is not None:  # a threaded actor: not on the loop
                        value = await self.loop.run_in_executor(
                            pool, self._drain_generator, value, name, return_ids[0])
                    else:
                        value = self._drain_generator(value, name, return_ids[0])
                results = self.encode_results(value, return_ids, name)
            except asyncio.CancelledError:
                self._send_cancelled(task_id)
                return
            except _ExitActor:
                self.notify("actor_exit", self.actor_id)
                self.send([P.DONE, task_id, self.encode_results(None, return_ids, name)])
                self._flush_now()
                self.stopped.set_result(None)
                return
            except BaseException as exc:
                self.send([P.FAILED, task_id, self._error_bytes(name, exc), False])
                return
            finally:
                self.running_async.pop(task_id, None)
            self.send([P.DONE, task_id, results])


def _set_recv_timeout(sock) -> None:
    # The kernel times the blocking recv out (SO_RCVTIMEO): with a Python-level
    # timeout every recv and send would first poll(), two syscalls per message.
    sock.setblocking(True)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                        struct.pack("ll", int(_RECV_TIMEOUT_S), 0))
    except OSError:  # pragma: no cover - a platform without it: Python's timeout
        sock.settimeout(_RECV_TIMEOUT_S)


def _ray_ready():
    return True


class _SwitchToConcurrent(Exception):
    def __init__(self, max_concurrency: int, is_async: bool):
        self.max_concurrency = max_concurrency
        self.is_async = is_async


class _ExitActor(BaseException):
    """Raised by ``miniray.actor.exit_actor()``."""


class _Unpin:
    """Finalizer of a shared-memory mapping in a worker: tells the node."""

    __slots__ = ("client", "object_id")

    def __init__(self, client, object_id):
        self.client = client
        self.object_id = object_id

    def __call__(self):
        try:
            self.client.send([P.NOTIFY, "unpin", [self.object_id]])
        except Exception:  # interpreter shutdown
            pass


def _set_result(waiter, value):
    if hasattr(waiter, "get_loop"):
        if not waiter.done():
            waiter.set_result(value)
    else:
        waiter.set_result(value)


def _set_exception(waiter, exc):
    if hasattr(waiter, "get_loop"):
        if not waiter.done():
            waiter.set_exception(exc)
    else:
        waiter.set_exception(exc)


_CORE_FILES = f"{os.sep}miniray{os.sep}_core{os.sep}"


def _trim_traceback(text: str, own: str = _CORE_FILES) -> str:
    """Drop miniray's own frames (files whose path has ``own``) from a remote traceback."""
    lines = text.splitlines(keepends=True)
    out = []
    skip = False
    for line in lines:
        if line.startswith('  File "') and own in line:
            skip = True
            continue
        if skip and line.startswith("    "):
            continue
        skip = False
        out.append(line)
    return "".join(out)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    fd, node_pid, capacity, arena_size, worker_id = (int(x) for x in argv[:5])
    direct_fd = int(argv[5]) if len(argv) > 5 else -1
    if os.environ.get("COVERAGE_PROCESS_START"):
        try:
            import coverage

            global _coverage
            # Started here, or already at interpreter start by coverage's .pth hook.
            _coverage = coverage.process_startup() or coverage.Coverage.current()
        except ImportError:  # pragma: no cover
            pass
    sock = socket.socket(fileno=fd)
    _set_recv_timeout(sock)
    client = WorkerClient(sock, node_pid, capacity, arena_size, worker_id)
    if direct_fd >= 0:
        client.set_direct(socket.socket(fileno=direct_fd))
    set_client(client)
    context.set_worker_context(client)
    signal.signal(signal.SIGUSR1, client._on_sigusr1)
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(_ExitWorker("SIGTERM")))
    code = 0
    try:
        try:
            from ..runtime_env import run_setup_hook

            setup_error = run_setup_hook()
            if setup_error is not None:  # the node fails the work; this worker ends
                client.send([P.READY, os.getpid(), setup_error])
                client.flush()
                raise _ExitWorker("setup hook failed")
            client.send([P.READY, os.getpid()])
            client.flush()
            client.run_sync()
        except _SwitchToConcurrent as switch:
            client.run_concurrent(switch.max_concurrency, switch.is_async)
    except (_ExitWorker, ConnectionError):
        pass
    except BaseException:  # pragma: no cover - a bug in the worker itself
        traceback.print_exc()
        code = 1
    finally:
        try:
            if not client.concurrent:
                client.flush()
        except OSError:
            pass
        # The node adopts this worker's segments: objects in them may still be
        # referenced, so closing must not unlink them.
        client.store.close(unlink=False)
        set_client(None)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown (slow; may run user finalizers against a closed node),
    # but let coverage write its data first.
    if os.environ.get("COVERAGE_PROCESS_START"):
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":
    main()
