"""Generator tasks: ``ObjectRefGenerator``, what a generator remote function returns."""

from __future__ import annotations

GENERATOR_MODES = ("streaming", "dynamic")


class ObjectRefGenerator:
    """The refs of the values a generator task (or actor method) yielded, in order.

    Like Ray's: iterate it (``for ref in gen``, or ``async for`` in asyncio code)
    to get one ObjectRef per yielded value. If the generator raised after some
    values, those refs come first, then one ref whose ``get`` raises the error
    (as in Ray).

    Each value is handed out as soon as the task has yielded and stored it
    (Ray's streaming generators), to the driver and to tasks and actors alike;
    a task waiting for the next value lends its CPU back meanwhile, as in
    ``get``. ``completed()`` is a ref that is ready once the generator has
    finished.
    """

    __slots__ = ("_refs", "_error", "_source", "_pos")

    def __init__(self, refs=None, error: bytes | None = None, source=None):
        self._refs = refs
        self._error = error
        self._source = source
        self._pos = 0

    def completed(self):
        """A ref that is ready once the generator has finished."""
        return self._source

    def _adopt(self, value) -> None:
        if not isinstance(value, ObjectRefGenerator):
            raise TypeError(
                "num_returns='streaming' is for generator functions (with yield), but the "
                f"task returned a {type(value).__name__}; drop the option or use yield")
        self._refs, self._error = value._refs, value._error

    def _step(self):
        if self._pos < len(self._refs):
            ref = self._refs[self._pos]
            self._pos += 1
            return ref
        if self._error is not None:
            error, self._error = self._error, None
            from ..exceptions import RayTaskError
            from .store.serialization import deserialize_inline

            exc = deserialize_inline(error)
            raise exc.as_instanceof_cause() if isinstance(exc, RayTaskError) else exc
        return None

    def __iter__(self):
        return self

    def __next__(self):
        if self._refs is None:
            from . import hooks
            from .refs import _require_client

            item = _require_client().generic("stream_next", self._source._id, self._pos)
            if item is not None:
                return self._streamed(item)
            self._adopt(hooks.get_blocking(self._source))
        ref = self._step()
        if ref is None:
            raise StopIteration
        return ref

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._refs is None:
            from .refs import _require_client

            item = await _require_client().generic_async("stream_next", self._source._id, self._pos)
            if item is not None:
                return self._streamed(item)
            self._adopt(await self._source)
        ref = self._step()
        if ref is None:
            raise StopAsyncIteration
        return ref

    def _streamed(self, item_id: bytes):
        from .refs import ObjectRef

        self._pos += 1  # the final list has it at the same place: resume after it
        return ObjectRef(item_id)

    def __reduce__(self):
        return (ObjectRefGenerator, (self._refs, self._error, self._source))

    def __repr__(self) -> str:
        if self._refs is None:
            return f"ObjectRefGenerator(pending, {self._source!r})"
        return f"ObjectRefGenerator({len(self._refs)} refs)"


def wants_generator(is_generator_function: bool, num_returns) -> bool:
    """Whether ``.remote()`` returns an ObjectRefGenerator (Ray's default for
    generator functions, and ``num_returns="streaming"``)."""
    return num_returns == "streaming" or (is_generator_function and num_returns is None)


# Ray's name for what a ``num_returns="dynamic"`` task's ref holds: the refs of the
# values it yielded. miniray's generator class is the same for both modes.
DynamicObjectRefGenerator = ObjectRefGenerator


def wait_mixed(client, items: list, num_returns: int, timeout, *, in_loop: bool):
    """``wait`` over ObjectRefs and ObjectRefGenerators together (as Ray's ``wait``).

    A generator is ready when its next value is available, or when it has ended
    (so ``next(gen)`` will not block: it returns a ref or stops). Returns what
    ``wait`` does, the items themselves; an awaitable when ``in_loop``.
    """
    coro = _wait_mixed(client, items, num_returns, timeout)
    if in_loop:
        return coro
    import asyncio

    runtime = getattr(client, "runtime", None)
    loop = runtime.loop if runtime is not None else getattr(client, "loop", None)
    if loop is None or getattr(client, "concurrent", True) is False:
        coro.close()
        raise TypeError(
            "wait() over ObjectRefGenerators runs in the driver and in async actors; "
            "in a task, take the next value with next(generator) instead (it lends "
            "the task's CPU back while it waits)")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


async def _wait_mixed(client, items, num_returns, timeout):
    import asyncio
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    ready: set[int] = set()
    watching: dict = {}
    for index, item in enumerate(items):
        if isinstance(item, ObjectRefGenerator):
            if item._refs is not None:  # ended and read: next() never blocks
                ready.add(index)
                continue
            waiter = client.generic_async("stream_next", item._source._id, item._pos)
        else:
            waiter = client.wait_async([item], 1, None, True)
        watching[asyncio.ensure_future(waiter)] = index
    try:
        while len(ready) < num_returns and watching:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = await asyncio.wait(watching, timeout=remaining,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                break
            for waiter in done:
                ready.add(watching.pop(waiter))
                waiter.result()  # a failure of the wait itself (not of the task) raises
    finally:
        for waiter in watching:
            waiter.cancel()
    chosen = set(sorted(ready)[:num_returns])
    return ([item for i, item in enumerate(items) if i in chosen],
            [item for i, item in enumerate(items) if i not in chosen])
