"""ActorPool: spread calls over a fixed set of actors (Ray's ``ray.util.ActorPool``)."""

from __future__ import annotations

from .. import api
from ..exceptions import GetTimeoutError


class ActorPool:
    """Run ``fn(actor, value)`` calls on whichever actor of the pool is free.

    ``fn`` must return an ObjectRef, e.g. ``lambda a, v: a.double.remote(v)``.
    ``map`` yields results in submission order, ``map_unordered`` as they finish.
    A call submitted while every actor is busy waits in the pool (not in an
    actor's queue) until one is returned.

    Example::

        pool = ActorPool([Worker.remote() for _ in range(4)])
        results = list(pool.map(lambda a, v: a.work.remote(v), range(100)))
    """

    def __init__(self, actors):
        actors = list(actors)
        self._idle_actors = actors
        self._future_to_actor: dict = {}  # ref -> (submission index, actor)
        self._index_to_future: dict = {}
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending_submits: list = []

    def map(self, fn, values):
        """Apply ``fn`` to every value; yield results in the order of ``values``."""
        while self.has_next():  # results left from earlier submits are dropped, as in Ray
            self.get_next_unordered()
        for value in values:
            self.submit(fn, value)
        while self.has_next():
            yield self.get_next()

    def map_unordered(self, fn, values):
        """Like :meth:`map`, but yield each result as soon as it is ready."""
        while self.has_next():
            self.get_next_unordered()
        for value in values:
            self.submit(fn, value)
        while self.has_next():
            yield self.get_next_unordered()

    def submit(self, fn, value) -> None:
        """Schedule ``fn(actor, value)`` on a free actor, or queue it until one is."""
        if self._idle_actors:
            actor = self._idle_actors.pop()
            future = fn(actor, value)
            index = self._next_task_index
            self._future_to_actor[future] = (index, actor)
            self._index_to_future[index] = future
            self._next_task_index += 1
        else:
            self._pending_submits.append((fn, value))

    def has_next(self) -> bool:
        """True while submitted calls have results not yet returned."""
        return bool(self._future_to_actor) or bool(self._pending_submits)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False):
        """Return the next result in submission order.

        Raises ``StopIteration`` when nothing is pending and ``TimeoutError``
        (``GetTimeoutError``) when ``timeout`` passes first.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        while self._next_return_index not in self._index_to_future:
            if not self._pending_submits:  # pragma: no cover - guarded by has_next
                raise StopIteration("No more results to get")
            self._drain_one_for_pending(timeout)
        future = self._index_to_future[self._next_return_index]
        ready, _ = api._wait_blocking([future], timeout=timeout)
        if not ready:
            if ignore_if_timedout:
                del self._index_to_future[self._next_return_index]
                self._next_return_index += 1
                _, actor = self._future_to_actor.pop(future)
                self._return_actor(actor)
            raise GetTimeoutError("Timed out waiting for the next result of the ActorPool")
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        _, actor = self._future_to_actor.pop(future)
        self._return_actor(actor)
        return api._get_blocking(future)

    def _drain_one_for_pending(self, timeout):
        ready, _ = api._wait_blocking(list(self._future_to_actor), num_returns=1,
                                      timeout=timeout)
        if not ready:
            raise GetTimeoutError("Timed out waiting for a free actor in the ActorPool")

    def get_next_unordered(self, timeout: float | None = None, ignore_if_timedout: bool = False):
        """Return any ready result (the first to finish)."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        ready, _ = api._wait_blocking(list(self._future_to_actor), num_returns=1,
                                      timeout=timeout)
        if not ready:
            raise GetTimeoutError("Timed out waiting for a result of the ActorPool")
        future = ready[0]
        index, actor = self._future_to_actor.pop(future)
        del self._index_to_future[index]
        self._next_return_index = max(self._next_return_index, index + 1)
        self._return_actor(actor)
        return api._get_blocking(future)

    def _return_actor(self, actor) -> None:
        self._idle_actors.append(actor)
        if self._pending_submits:
            self.submit(*self._pending_submits.pop(0))

    def has_free(self) -> bool:
        """True if an actor is idle and no submit is waiting."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self):
        """Remove and return an idle actor, or None."""
        return self._idle_actors.pop() if self.has_free() else None

    def push(self, actor) -> None:
        """Add an actor to the pool."""
        busy = {id(a) for _, a in self._future_to_actor.values()}
        if actor in self._idle_actors or id(actor) in busy:
            raise ValueError("Actor already belongs to this ActorPool")
        self._return_actor(actor)
