"""The dispatcher: places queued work on clusters, runs it, collects results,
and retries cluster-level failures elsewhere with jittered backoff.

Everything here runs on the control loop (one thread), so member counters and
breakers need no locks.
"""

from __future__ import annotations

import asyncio
import threading

import cloudpickle

from .errors import ClusterConnectionLost, ClusterUnavailableError
from .policies import rank
from .registry import DRAINING
from .results import is_cluster_level, user_error
from .retry import Backoff

# Set on threads whose remote() calls must reach the local node unrouted
# (the control loop's thread, and a user thread creating a local actor).
bypass = threading.local()


class WorkItem:
    __slots__ = ("request", "function", "args", "kwargs", "options", "refs", "num_returns",
                 "attempts", "avoid", "holds_slot")

    def __init__(self, request, function, args, kwargs, options, refs, num_returns):
        self.request = request
        self.function = function
        self.args = args
        self.kwargs = kwargs
        self.options = options
        self.refs = refs
        self.num_returns = num_returns
        self.attempts: list = []
        self.avoid: set = set()
        self.holds_slot = True


async def resolve_refs(args, kwargs):
    """Top-level ObjectRef arguments become their values (as Ray does for a
    task's arguments) without blocking the loop: a Ray cluster cannot read
    the local node's objects."""
    from .._core.refs import ObjectRef

    if any(isinstance(a, ObjectRef) for a in args):
        args = [await a.as_future() if isinstance(a, ObjectRef) else a for a in args]
    if any(isinstance(v, ObjectRef) for v in kwargs.values()):
        kwargs = {k: (await v.as_future() if isinstance(v, ObjectRef) else v)
                  for k, v in kwargs.items()}
    return args, kwargs


async def pack_args(args, kwargs) -> bytes:
    """The wire form of a call's arguments for a Ray cluster: top-level refs
    as values, refs nested at any depth as Ray refs made by the driver."""
    from .._core.refs import ObjectRef

    from . import _wire

    args, kwargs = await resolve_refs(args, kwargs)
    payload, nested = _wire.dump_nested((args, kwargs), lambda obj: isinstance(obj, ObjectRef))
    values = None
    if nested:
        values = cloudpickle.dumps([await ref.as_future() for ref in nested], protocol=5)
    return cloudpickle.dumps((payload, values), protocol=5)


class Dispatcher:
    def __init__(self, registry, queue, policy, settings, client, blobs):
        self.registry = registry
        self.queue = queue
        self.policy = policy
        self.settings = settings
        self.client = client
        self.blobs = blobs
        self.backoff = Backoff(settings.backoff_base, settings.backoff_cap)
        self._wake_scheduled = False
        self._tasks: set = set()
        self.counters = {"submitted": 0, "completed": 0, "failed": 0, "retries": 0}
        self.closed = False

    # -- queue ---------------------------------------------------------------------
    def enqueue(self, item: WorkItem) -> None:
        if self.closed:
            self._fail(item, ClusterUnavailableError(item.request.name, message=(
                f"{item.request.name}: the cluster control plane was shut down")))
            return
        self.counters["submitted"] += 1
        self.queue.push(item)
        self.wake()

    def wake(self) -> None:
        """Try to place waiting work soon (coalesced: once per loop turn)."""
        if not self._wake_scheduled:
            self._wake_scheduled = True
            asyncio.get_running_loop().call_soon(self._place_pending)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def choose(self, request, avoid=()):
        """The best member with room for ``request`` now, or None."""
        members = [m for m in self.registry if m.accepting and not m.saturated]
        if request.cluster is not None:
            members = [m for m in members if m.name == request.cluster]
        members = self.policy.filter(request, members)
        if not members:
            return None
        fresh = [m for m in members if m.name not in avoid] or members
        return rank(self.policy, request, fresh)[0]

    def _place_pending(self) -> None:
        self._wake_scheduled = False
        if not len(self.queue):
            return
        for item in self.queue.items():
            if not any(m.accepting and not m.saturated for m in self.registry):
                return
            member = self.choose(item.request, item.avoid)
            if member is None:
                continue
            self.queue.remove(item)
            member.inflight += 1
            member.counters["dispatched"] += 1
            self._spawn(self._execute(item, member))

    # -- running -------------------------------------------------------------------
    async def _execute(self, item: WorkItem, member) -> None:
        try:
            if member.backend.kind == "local":
                values = await self._run_local(item)
            else:
                values = await self._run_remote(item, member)
        except BaseException as exc:
            member.inflight -= 1
            member.update_drain()
            if isinstance(exc, asyncio.CancelledError):
                self._fail(item, ClusterUnavailableError(item.request.name, item.attempts,
                                                         "the control plane shut down"))
                raise
            if is_cluster_level(exc):
                await self._retry(item, member, exc)
            else:
                member.counters["app_errors"] += 1
                member.breaker.record_success()  # the cluster answered
                self.counters["failed"] += 1
                error = exc if member.backend.kind == "local" else user_error(
                    exc, item.request.name, member.name)
                self._fail(item, error)
        else:
            member.inflight -= 1
            member.update_drain()
            member.counters["succeeded"] += 1
            member.breaker.record_success()
            self.counters["completed"] += 1
            if item.num_returns == 1:
                values = [values]
            for ref, value in zip(item.refs, values):
                self.client.fulfill(ref, value)
        finally:
            self.wake()

    async def _run_local(self, item: WorkItem):
        bypass.on = True  # the control loop's thread never routes
        refs = item.function._remote(item.args, item.kwargs, item.options)
        if item.num_returns == 1:
            return await refs.as_future()
        if item.num_returns == 0:
            return []
        return [await ref.as_future() for ref in refs]

    async def _run_remote(self, item: WorkItem, member):
        payload = await pack_args(item.args, item.kwargs)
        function = item.function
        return await member.backend.run_task(
            function._fn_id, self.blobs.getter(function._fn_id, function._function), payload,
            item.options, item.num_returns)

    async def _retry(self, item: WorkItem, member, exc: BaseException) -> None:
        reason = str(exc) if isinstance(exc, ClusterConnectionLost) else \
            f"{type(exc).__name__}: {exc}"
        item.attempts.append((member.name, reason))
        item.avoid.add(member.name)
        member.counters["cluster_failures"] += 1
        if member.breaker.record_failure(reason):
            self.on_member_down(member, f"breaker opened: {reason}")
        if len(item.attempts) >= self.settings.max_attempts:
            self.counters["failed"] += 1
            self._fail(item, ClusterUnavailableError(item.request.name, item.attempts))
            return
        self.counters["retries"] += 1
        member.counters["retried_elsewhere"] += 1
        await asyncio.sleep(self.backoff.delay(len(item.attempts)))
        self.queue.push(item, front=True)

    def on_member_down(self, member, reason: str) -> None:
        """A member's breaker opened: drop its connection so everything in
        flight there fails over now instead of hanging on a dead cluster."""
        member.health.alive = False
        member.backend.disconnect(reason)

    def _fail(self, item: WorkItem, error: BaseException) -> None:
        for ref in item.refs:
            self.client.fulfill(ref, error=error)

    async def close(self) -> None:
        self.closed = True
        for item in self.queue.items():
            self.queue.remove(item)
            self._fail(item, ClusterUnavailableError(
                item.request.name, item.attempts,
                f"{item.request.name}: the cluster control plane was shut down before "
                "it could run"))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def drain(self, member) -> None:
        member.admin_state = DRAINING
        member.update_drain()


class FunctionBlobs:
    """Pickled functions and classes by id, made once per process."""

    def __init__(self):
        self._blobs: dict = {}

    def getter(self, fn_id, obj):
        def get():
            blob = self._blobs.get(fn_id)
            if blob is None:
                blob = self._blobs[fn_id] = cloudpickle.dumps(obj, protocol=5)
            return blob
        return get
