"""The driver's client: the public API's door into the in-process node."""

from __future__ import annotations

import asyncio
import collections
import threading
import time

from ...exceptions import GetTimeoutError, ObjectLostError
from . import direct as _direct
from ..client import VALUE_ERROR, VALUE_INLINE, VALUE_SHM, VALUE_SPILLED, ClientBase
from ..refs import ObjectRef
from ..node.state import DRIVER, PENDING, ObjectEntry
from ..store.serialization import deserialize_inline
from ..store.object_store import read_file


class DriverClient(ClientBase):
    def __init__(self, runtime):
        super().__init__()
        self.runtime = runtime
        self.store = runtime.store
        self.objects = runtime.objects
        self._state_lock = runtime._state_lock
        self._wakers = {}  # id(loop) -> _LoopWaker, for loops other than the node's
        self._last_waker = None  # the one most used: one loop awaiting many refs
        # Direct calls (direct.py): None when turned off (MINIRAY_DIRECT=0).
        self.direct = _direct.DirectCaller(self) if _direct.enabled() else None
        runtime.direct_caller = self.direct

    # -- hooks ----------------------------------------------------------------
    def _notify_add_ref(self, object_id: bytes) -> None:
        self.runtime.post_lazy(self.runtime.rpc_add_ref, DRIVER, object_id)

    def _notify_remove_ref(self, object_id: bytes) -> None:
        self.runtime.post_lazy(self.runtime.rpc_remove_ref, DRIVER, object_id)

    def register_function(self, fn_id: bytes, blob_getter) -> None:
        if fn_id not in self._registered_functions:
            self.runtime.functions[fn_id] = blob_getter()
            self._registered_functions.add(fn_id)

    # -- objects ----------------------------------------------------------------
    def put_serialized(self, serialized) -> ObjectRef:
        object_id = self.ids.new()
        contained = [r._id for r in serialized.contained]
        runtime = self.runtime
        if contained:
            # Contained refs must be held before the caller can drop them: the
            # runtime takes the hold in order with later releases.
            self.objects[object_id] = ObjectEntry(1)
            data = serialized.to_inline() if serialized.is_small else self._write(serialized)
            runtime.post(runtime.rpc_put, DRIVER, object_id, data, contained)
            return ObjectRef(object_id, _counted=True)
        entry = ObjectEntry(1)
        if serialized.is_small:
            entry.state = VALUE_INLINE
            entry.data = serialized.to_inline()
            self.objects[object_id] = entry
        else:
            location = self._write(serialized)
            entry.state = VALUE_SHM
            entry.data = location
            entry.size = location[2]
            self.objects[object_id] = entry
            runtime._add_used(entry.size)
            if runtime._over_budget(0) > 0:
                runtime.post(runtime._spill_over)
        return ObjectRef(object_id, _counted=True)

    def _write(self, serialized) -> list:
        self.runtime.make_room_threadsafe(serialized.shm_size())
        return self.store.write(serialized)

    def submit_task(self, fn_id, args, kwargs, contained, options, num_returns):
        return_ids = self._new_returns(num_returns)
        direct = self.direct
        if direct is not None:  # direct.py
            if direct.submit_task(fn_id, args, kwargs, contained, options, return_ids):
                return _counted_refs(return_ids)
            if direct.inflight and args:
                direct.hand_over_args(args, kwargs)
        runtime = self.runtime
        runtime.post(runtime.rpc_submit, DRIVER, fn_id, args, kwargs, contained, options,
                     return_ids)
        return _counted_refs(return_ids)

    def submit_actor_task(self, actor_id, method, args, kwargs, contained, options, num_returns):
        return_ids = self._new_returns(num_returns)
        direct = self.direct
        if direct is not None:  # direct.py
            if direct.submit_actor_task(actor_id, method, args, kwargs, contained, options,
                                        return_ids):
                return _counted_refs(return_ids)
            if direct.inflight and args:
                direct.hand_over_args(args, kwargs)
        runtime = self.runtime
        runtime.post(runtime.rpc_actor_call, DRIVER, actor_id, return_ids[0], method, args,
                     kwargs, contained, return_ids, options)
        refs = _counted_refs(return_ids)
        if direct is not None:  # later direct calls wait until this one is done
            direct.routed_actor_call(actor_id, refs[0])
        return refs

    def _new_returns(self, num_returns) -> tuple:
        """Ids (with pending entries) for a submission's return values.

        A tuple: the GC stops tracking it at its first pass, so tasks in flight
        are not promoted and rescanned for it.
        """
        objects = self.objects
        if num_returns == 1:  # the common case, without the loops
            object_id = self.ids.new()
            objects[object_id] = ObjectEntry(1)
            return (object_id,)
        return_ids = tuple([self.ids.new() for _ in range(num_returns or 1)])
        for object_id in return_ids:
            objects[object_id] = ObjectEntry(1)
        return return_ids

    # -- refs fulfilled from outside the node (miniray.cluster) --------------------
    def new_future_ref(self) -> ObjectRef:
        """A ref whose value arrives later through :meth:`fulfill` (any thread).

        Works with get/wait/await and as a task argument like any other ref.
        """
        object_id = self.ids.new()
        self.objects[object_id] = ObjectEntry(1)
        return ObjectRef(object_id, _counted=True)

    def fulfill(self, ref: ObjectRef, value=None, error: BaseException | None = None) -> None:
        """Set the value (or the exception ``get`` raises) of a future ref."""
        from ..store.serialization import serialize

        runtime = self.runtime
        if error is not None:
            data = serialize(error, "the error of a future ref").to_inline()
            runtime.post(runtime.fulfill_value, ref._id, VALUE_ERROR, data, None, 0)
            return
        serialized = serialize(value, "the value of a future ref")
        contained = [r._id for r in serialized.contained] or None
        if serialized.is_small:
            runtime.post(runtime.fulfill_value, ref._id, VALUE_INLINE, serialized.to_inline(),
                         contained, 0)
        else:
            location = self._write(serialized)
            runtime.post(runtime.fulfill_value, ref._id, VALUE_SHM, location, contained,
                         location[2])
        # The contained refs must stay alive until the node holds them.
        runtime.post(_keep, serialized.contained)

    def _entries(self, refs):
        objects = self.objects
        entries = []
        for ref in refs:
            entry = objects.get(ref._id)
            if entry is None:
                raise ObjectLostError(ref.hex(), "no reference to it is held by the node")
            entries.append(entry)
        return entries

    def _value(self, object_id: bytes, entry: ObjectEntry):
        state = entry.state
        if state == VALUE_INLINE:
            # Set once, data before state (_set_value), and never changed: no lock.
            return deserialize_inline(entry.data)
        with self._state_lock:
            state = entry.state
            data = entry.data
            if state == VALUE_SHM:
                entry.pins += 1
        if state == VALUE_SHM:
            runtime = self.runtime
            try:
                return self.store.read(data, lambda: runtime.unpin_threadsafe(object_id))
            except BaseException:
                runtime.unpin_threadsafe(object_id)
                raise
        if state == VALUE_SPILLED:
            # The file stays until the object is deleted, and our ref keeps
            # it from that: no lock needed while reading it.
            return read_file(data)
        return self.decode_value(object_id, VALUE_ERROR, data)

    def _add_waiter(self, pending, wake, count) -> int:
        """Register ``wake`` on the entries still pending; returns how many.

        Under the state lock, so an entry that becomes ready meanwhile is either
        seen ready here or calls ``wake`` (after the count is complete).
        """
        with self._state_lock:
            for entry in pending:
                if entry.state == PENDING:
                    entry.waiters.append(wake)
                    count[0] += 1
            return count[0]

    def get(self, refs, timeout):
        direct = self.direct
        if direct is not None and direct.inflight:  # direct.py: read the replies here
            started = time.monotonic()
            if not direct.collect(refs, timeout):
                raise GetTimeoutError(
                    f"get() timed out after {timeout} s: a direct call of the "
                    f"{len(refs)} objects has not replied yet.")
            if timeout is not None:
                timeout = max(timeout - (time.monotonic() - started), 0.0)
        entries = self._entries(refs)
        pending = [e for e in entries if e.state == PENDING]
        if pending:
            lock = threading.Lock()
            lock.acquire()
            count = [0]

            def wake(object_id, entry):
                count[0] -= 1
                if count[0] == 0:
                    lock.release()

            registered = self._add_waiter(pending, wake, count)
            if registered and not lock.acquire(timeout=-1 if timeout is None else timeout):
                raise GetTimeoutError(
                    f"get() timed out after {timeout} s: "
                    f"{sum(e.state == PENDING for e in entries)} of {len(entries)} "
                    "objects are not ready yet.")
        return [self._value(r._id, e) for r, e in zip(refs, entries)]

    def get_async(self, refs, timeout, single=False):
        return self._get_async(refs, timeout, single)

    async def _get_async(self, refs, timeout, single):
        if self.direct is not None:
            self.direct.hand_over_refs(refs)
        entries = self._entries(refs)
        loop = asyncio.get_running_loop()
        pending = [e for e in entries if e.state == PENDING]
        if pending:
            future = loop.create_future()
            count = [0]
            call = self._caller_on(loop)

            def done():
                if not future.done():
                    future.set_result(None)

            def wake(object_id, entry):
                count[0] -= 1
                if count[0] == 0:
                    call(done)

            registered = self._add_waiter(pending, wake, count)
            if registered:
                try:
                    await asyncio.wait_for(future, timeout)
                except asyncio.TimeoutError:
                    raise GetTimeoutError(f"get() timed out after {timeout} s") from None
        values = [self._value(r._id, e) for r, e in zip(refs, entries)]
        return values[0] if single else values

    def await_ref(self, ref):
        """An asyncio future of the running loop for one ref (``await ref``).

        A bare future, not a coroutine: ``asyncio.gather(*refs)`` then costs
        one future and one small waiter per ref, nothing more.
        """
        loop = asyncio.get_running_loop()
        direct = self.direct
        if direct is not None and direct.inflight:  # direct.py: this loop reads the reply
            future = None if loop is self.runtime.loop else direct.await_on_loop(ref, loop)
            if future is not None:
                return future
            direct.hand_over([ref._id])
        entry = self.objects.get(ref._id)
        if entry is None:
            entry = self._entries([ref])[0]  # raises ObjectLostError
        future = loop.create_future()
        # The waiter holds ``ref``: in ``await f.remote()`` nothing else does, and
        # the object must not be freed before it is read.
        waiter = _RefWaiter(self, ref, entry, future,
                            None if loop is self.runtime.loop else self._waker(loop))
        if entry.state != PENDING or not self._wait_on(entry, waiter):
            waiter.resolve()
        return future

    def resolve_when_ready(self, ref, entry, future, loop) -> None:
        """Set ``future`` (of ``loop``) to the ref's value once its entry is ready."""
        waiter = _RefWaiter(self, ref, entry, future, self._waker(loop))
        if entry.state != PENDING or not self._wait_on(entry, waiter):
            waiter.resolve()

    def _wait_on(self, entry, waiter) -> bool:
        """Register ``waiter`` if the entry is still pending; False if it is ready
        (then the caller reads it now). Under the state lock, so the entry is
        either seen ready here or calls ``waiter`` once it becomes ready."""
        with self._state_lock:
            if entry.state == PENDING:
                entry.waiters.append(waiter)
                return True
        return False

    def _caller_on(self, loop):
        """How the node's thread runs a callback on ``loop``: directly on its
        own loop, else through that loop's batching waker."""
        if loop is self.runtime.loop:
            return _call_now
        return self._waker(loop).wake

    def _waker(self, loop) -> "_LoopWaker":
        waker = self._last_waker
        if waker is not None and waker.loop is loop:
            return waker
        waker = self._wakers.get(id(loop))
        if waker is None or waker.loop is not loop:
            if len(self._wakers) > 16:  # loops come and go (asyncio.run): drop closed ones
                for key, old in list(self._wakers.items()):
                    if old.loop.is_closed():
                        del self._wakers[key]
            waker = self._wakers[id(loop)] = _LoopWaker(loop)
        self._last_waker = waker
        return waker

    def get_future(self, ref):
        import concurrent.futures

        future = concurrent.futures.Future()
        if self.direct is not None:
            self.direct.hand_over_refs([ref])
        entry = self._entries([ref])[0]

        def resolve(*_):
            try:
                future.set_result(self._value(ref._id, entry))
            except BaseException as exc:
                future.set_exception(exc)

        if not self._wait_on(entry, resolve):
            resolve()
        return future

    def wait(self, refs, num_returns, timeout, fetch_local):
        if self.direct is not None:
            self.direct.hand_over_refs(refs)
        ids = [r._id for r in refs]
        ready = self.generic("wait", ids, num_returns, timeout)
        return _split(refs, ready)

    async def wait_async(self, refs, num_returns, timeout, fetch_local):
        if self.direct is not None:
            self.direct.hand_over_refs(refs)
        ids = [r._id for r in refs]
        ready = await self.generic_async("wait", ids, num_returns, timeout)
        return _split(refs, ready)

    # -- generic rpc ----------------------------------------------------------------
    def generic(self, method, *args):
        if method == "cancel" and self.direct is not None and self.direct.cancel(*args[:2]):
            return None  # a direct call in flight (direct.py)
        runtime = self.runtime
        fn = getattr(runtime, "rpc_" + method)
        if not runtime.owns_loop and threading.get_ident() == runtime._user_loop_thread:
            result = fn(DRIVER, *args)
            if isinstance(result, asyncio.Future):
                raise RuntimeError(
                    f"miniray.{method}() would block the event loop the node runs on; "
                    "await it instead.")
            return result
        import concurrent.futures

        outer = concurrent.futures.Future()

        def run():
            try:
                result = fn(DRIVER, *args)
            except BaseException as exc:
                outer.set_exception(exc)
                return
            if isinstance(result, asyncio.Future):
                def copy(f):
                    if f.exception() is not None:
                        outer.set_exception(f.exception())
                    else:
                        outer.set_result(f.result())
                result.add_done_callback(copy)
            else:
                outer.set_result(result)

        runtime.post(run)
        return outer.result()

    async def generic_async(self, method, *args):
        runtime = self.runtime
        fn = getattr(runtime, "rpc_" + method)
        loop = asyncio.get_running_loop()
        if loop is runtime.loop:
            result = fn(DRIVER, *args)
            if isinstance(result, asyncio.Future):
                return await result
            return result
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(self._call_on_runtime(fn, args), runtime.loop))

    async def _call_on_runtime(self, fn, args):
        result = fn(DRIVER, *args)
        if isinstance(result, asyncio.Future):
            return await result
        return result


def _counted_refs(return_ids) -> list:
    if len(return_ids) == 1:
        return [ObjectRef(return_ids[0], _counted=True)]
    return [ObjectRef(i, _counted=True) for i in return_ids]


def _call_now(fn) -> None:
    fn()


class _RefWaiter:
    """Sets an asyncio future to a ref's value once its entry is ready.

    Registered on the entry; the node's thread calls it, and it resolves the
    future at once on the node's own loop, or through the future's loop's
    batching waker.
    """

    __slots__ = ("client", "ref", "entry", "future", "waker")

    def __init__(self, client, ref, entry, future, waker):
        self.client = client
        self.ref = ref
        self.entry = entry
        self.future = future
        self.waker = waker

    def __call__(self, _object_id, _entry) -> None:
        waker = self.waker
        if waker is None:
            self.resolve()
        else:
            waker.wake(self.resolve)

    def resolve(self) -> None:
        future = self.future
        if future.done():  # cancelled meanwhile
            return
        try:
            value = self.client._value(self.ref._id, self.entry)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(value)


class _LoopWaker:
    """Wakes coroutines of one foreign loop in batches.

    A burst of results (``await asyncio.gather(*refs)``) costs one
    ``call_soon_threadsafe`` (one self-pipe write and loop wake-up) instead of
    one per ref. ``wake`` runs on the node's thread, ``_run`` on the loop's.
    """

    __slots__ = ("loop", "pending", "scheduled")

    def __init__(self, loop):
        self.loop = loop
        self.pending = collections.deque()
        self.scheduled = False

    def wake(self, fn) -> None:
        self.pending.append(fn)
        if not self.scheduled:
            self.scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._run)
            except RuntimeError:  # the loop closed meanwhile: nobody is waiting
                self.pending.clear()
                self.scheduled = False

    def _run(self) -> None:
        # Cleared before draining: a wake that lands meanwhile is either drained
        # below or schedules another run.
        self.scheduled = False
        pending = self.pending
        while pending:
            pending.popleft()()


def _keep(refs) -> None:
    del refs


def _split(refs, ready_ids):
    ready_set = set(ready_ids)
    ready = [r for r in refs if r._id in ready_set]
    not_ready = [r for r in refs if r._id not in ready_set]
    return ready, not_ready
