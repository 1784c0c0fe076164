"""A driver connected to a head node (``miniray.init(address=...)``).

It speaks the worker protocol (a driver is, to the node, a worker that never
runs tasks) from an I/O loop on a background thread, so user threads, the
user's own event loop and the node's replies never wait on one another.
Objects it puts go into its own shared-memory arena, like a worker's.
"""

from __future__ import annotations

import asyncio
import threading
import types

from .. import protocol as P
from ..worker.worker import WorkerClient


class RemoteDriverClient(WorkerClient):
    def __init__(self, sock, info: dict, address: str):
        if info.get("store_dir"):  # segments go where the head's node keeps them
            from ..store import shm

            shm.set_dir(info["store_dir"])
        super().__init__(sock, info["node_pid"], info["capacity"], info["arena_size"], 0)
        self.address = address
        self.info = info
        # check_feasible() reads client.runtime.total.
        self.runtime = types.SimpleNamespace(total=dict(info["total"]))
        self.concurrent = True
        self.warns_infeasible = True  # check_feasible: the head's warning is in its log
        self.closed = threading.Event()
        self._thread = None

    def start(self) -> None:
        from ..loop import new_event_loop

        self.loop = new_event_loop()
        ready = threading.Event()
        errors = []

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop_thread_id = threading.get_ident()
            try:
                self.loop.run_until_complete(self._connect())
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name="miniray-driver-io", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]

    async def _connect(self) -> None:
        client = self

        class Protocol(asyncio.Protocol):
            def connection_made(self, transport):
                client.transport = transport

            def data_received(self, data):
                client._feed_concurrent(data)

            def connection_lost(self, exc):
                client._on_lost()

        self.sock.setblocking(False)
        if self.sock.family == getattr(__import__("socket"), "AF_UNIX", None):
            await self.loop.create_unix_connection(Protocol, sock=self.sock)
        else:
            await self.loop.create_connection(Protocol, sock=self.sock)
        leftover = self.info.pop("_leftover", b"")
        if leftover:
            self._feed_concurrent(leftover)
        self._flush_now()

    def _on_lost(self) -> None:
        self.closed.set()
        from ...exceptions import RaySystemError

        error = RaySystemError(
            f"Lost the connection to the miniray head at {self.address!r} (did it stop?). "
            "Call miniray.shutdown() and init() again once it runs.")
        for request_id, waiter in list(self.replies.items()):
            self.replies.pop(request_id, None)
            _fail(waiter, error)

    def _dispatch_concurrent(self, message) -> None:
        if message[0] == P.EXIT:  # the head is stopping
            return
        super()._dispatch_concurrent(message)

    def _request_from_thread(self, method, args):
        if self.closed.is_set():
            from ...exceptions import RaySystemError

            raise RaySystemError(f"The connection to the miniray head at {self.address!r} "
                                 "is closed.")
        return super()._request_from_thread(method, args)

    # -- async API from any loop ------------------------------------------------
    def _on_io_loop(self, coro):
        """Await ``coro`` (bound to the I/O loop) from whatever loop is running."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return coro
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def get_async(self, refs, timeout, single=False):
        async def run():
            values = await self._on_io_loop(self.get_async_values(refs, timeout))
            return values[0] if single else values
        return run()

    def generic_async(self, method, *args):
        return self._on_io_loop(self.request_async(method, *args))

    async def wait_async(self, refs, num_returns, timeout, fetch_local):
        ready = await self._on_io_loop(
            self.request_async("wait", [r._id for r in refs], num_returns, timeout))
        ready_set = set(ready)
        return ([r for r in refs if r._id in ready_set],
                [r for r in refs if r._id not in ready_set])

    def get_future(self, ref):
        import concurrent.futures

        future = concurrent.futures.Future()

        async def run():
            try:
                future.set_result((await self.get_async_values([ref], None))[0])
            except BaseException as exc:
                future.set_exception(exc)
        asyncio.run_coroutine_threadsafe(run(), self.loop)
        return future

    # -- lifecycle ------------------------------------------------------------------
    def shutdown(self) -> None:
        """Disconnect: the head releases everything this driver held."""
        loop = self.loop
        if loop is not None and self._thread is not None and self._thread.is_alive():
            def close():
                self._flush_now()
                if self.transport is not None:
                    self.transport.close()
                loop.call_later(0.05, loop.stop)
            loop.call_soon_threadsafe(close)
            self._thread.join(5)
            if not loop.is_running():
                loop.close()
        # The head adopts segments that still hold objects it may hand out.
        self.store.close(unlink=False)


def _fail(waiter, error) -> None:
    try:
        if isinstance(waiter, asyncio.Future):
            if not waiter.done():
                waiter.get_loop().call_soon_threadsafe(
                    lambda: waiter.done() or waiter.set_exception(error))
        elif not waiter.done():
            waiter.set_exception(error)
    except Exception:  # pragma: no cover
        pass


class RemoteNode:
    """What ``api._runtime`` holds for a driver connected to a head."""

    def __init__(self, client: RemoteDriverClient):
        self.client = client
        self.node_pid = client.node_pid
        self.loop = client.loop  # the I/O loop: blocking on it would stop the replies

    def shutdown(self) -> None:
        self.client.shutdown()
