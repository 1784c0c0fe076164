"""The dispatch queue: submissions wait here until a cluster has room.

Two sides: user threads :meth:`reserve` a slot (blocking, or raising
:class:`QueueFullError`, when ``maxsize`` submissions already wait), and the
control loop holds the waiting items and hands slots back as items leave.
Retried items re-enter without a slot: they were admitted once already.
"""

from __future__ import annotations

import threading
from collections import deque

from .errors import QueueFullError


class WorkQueue:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._slots = threading.BoundedSemaphore(maxsize)
        self._items: deque = deque()
        self.enqueued_total = 0
        self.waited_for_room = 0

    def reserve(self, block: bool = True, timeout: float | None = None) -> None:
        """Take a slot (user thread). Raises QueueFullError when full and not
        waiting, or when ``timeout`` passes."""
        if self._slots.acquire(blocking=False):
            return
        if block:
            self.waited_for_room += 1
            if self._slots.acquire(timeout=timeout):
                return
        raise QueueFullError(
            f"the cluster dispatch queue is full ({self.maxsize} submissions waiting for a "
            "cluster with room); wait for results, raise settings.queue_size, or set "
            "block_when_full=True to make remote() wait")

    def release_slot(self) -> None:
        self._slots.release()

    # -- control-loop side --------------------------------------------------------------
    def push(self, item, front: bool = False) -> None:
        self.enqueued_total += 1
        if front:
            self._items.appendleft(item)
        else:
            self._items.append(item)

    def remove(self, item) -> None:
        self._items.remove(item)
        if item.holds_slot:
            item.holds_slot = False
            self._slots.release()

    def items(self) -> list:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)
