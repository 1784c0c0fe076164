"""An actor-backed FIFO queue shared by tasks and actors (Ray's ``ray.util.queue``)."""

from __future__ import annotations

import asyncio
import queue as _stdlib_queue

from .. import api


class Empty(_stdlib_queue.Empty):
    """Raised by ``get`` on an empty queue (non-blocking, or after the timeout)."""


class Full(_stdlib_queue.Full):
    """Raised by ``put`` on a full queue (non-blocking, or after the timeout)."""


class _QueueActor:
    def __init__(self, maxsize):
        self.maxsize = maxsize
        self.queue = asyncio.Queue(maxsize)

    def qsize(self):
        return self.queue.qsize()

    def empty(self):
        return self.queue.empty()

    def full(self):
        return self.queue.full()

    async def put(self, item, timeout=None):
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            raise Full(f"the queue stayed full for {timeout} s") from None

    async def get(self, timeout=None):
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            raise Empty(f"the queue stayed empty for {timeout} s") from None

    def put_nowait(self, item):
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            raise Full("the queue is full") from None

    def put_nowait_batch(self, items):
        if self.maxsize > 0 and len(items) + self.qsize() > self.maxsize:
            raise Full(f"cannot add {len(items)} items to a queue of {self.qsize()} "
                       f"with maxsize {self.maxsize}")
        for item in items:
            self.queue.put_nowait(item)

    def get_nowait(self):
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            raise Empty("the queue is empty") from None

    def get_nowait_batch(self, num_items):
        if num_items > self.qsize():
            raise Empty(f"cannot get {num_items} items from a queue of {self.qsize()}")
        return [self.queue.get_nowait() for _ in range(num_items)]


class Queue:
    """A first-in first-out queue backed by an async actor.

    Pass it to tasks and actors; all of them see the same queue. ``put`` and
    ``get`` block by default (optionally with a ``timeout``); the ``*_async``
    variants are awaitable. ``Empty`` and ``Full`` are raised as in
    ``queue.Queue``.

    Args:
        maxsize: the most items the queue holds; ``0`` means unbounded.
        actor_options: options for the backing actor (e.g. ``{"name": ...}``).
    """

    def __init__(self, maxsize: int = 0, actor_options: dict | None = None):
        if not isinstance(maxsize, int) or maxsize < 0:
            raise ValueError(f"maxsize must be a non-negative int, got {maxsize!r}")
        self.maxsize = maxsize
        actor_class = api.remote(_QueueActor)
        self.actor = actor_class.options(**(actor_options or {})).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """The number of items in the queue."""
        return api._get_blocking(self.actor.qsize.remote())

    def qsize(self) -> int:
        """The number of items in the queue."""
        return self.size()

    def empty(self) -> bool:
        """True if the queue holds no item."""
        return api._get_blocking(self.actor.empty.remote())

    def full(self) -> bool:
        """True if the queue holds ``maxsize`` items."""
        return api._get_blocking(self.actor.full.remote())

    @staticmethod
    def _check_timeout(timeout):
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item``; waits while the queue is full (``Full`` after ``timeout``)."""
        if not block:
            return api._get_blocking(self.actor.put_nowait.remote(item))
        self._check_timeout(timeout)
        api._get_blocking(self.actor.put.remote(item, timeout))

    async def put_async(self, item, block: bool = True, timeout: float | None = None) -> None:
        """Awaitable :meth:`put`."""
        if not block:
            return await self.actor.put_nowait.remote(item)
        self._check_timeout(timeout)
        await self.actor.put.remote(item, timeout)

    def get(self, block: bool = True, timeout: float | None = None):
        """Remove and return an item; waits while empty (``Empty`` after ``timeout``)."""
        if not block:
            return api._get_blocking(self.actor.get_nowait.remote())
        self._check_timeout(timeout)
        return api._get_blocking(self.actor.get.remote(timeout))

    async def get_async(self, block: bool = True, timeout: float | None = None):
        """Awaitable :meth:`get`."""
        if not block:
            return await self.actor.get_nowait.remote()
        self._check_timeout(timeout)
        return await self.actor.get.remote(timeout)

    def put_nowait(self, item) -> None:
        """``put(item, block=False)``."""
        return self.put(item, block=False)

    def put_nowait_batch(self, items) -> None:
        """Add all ``items`` at once, or none (``Full``)."""
        if not isinstance(items, (list, tuple)):
            raise TypeError("put_nowait_batch takes a list of items")
        api._get_blocking(self.actor.put_nowait_batch.remote(list(items)))

    def get_nowait(self):
        """``get(block=False)``."""
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> list:
        """Remove and return ``num_items`` items at once, or none (``Empty``)."""
        if not isinstance(num_items, int) or num_items < 0:
            raise ValueError("num_items must be a non-negative int")
        return api._get_blocking(self.actor.get_nowait_batch.remote(num_items))

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """Stop the backing actor; the queue cannot be used afterwards."""
        if self.actor is not None:
            api.kill(self.actor)
        self.actor = None
