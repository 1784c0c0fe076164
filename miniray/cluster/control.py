"""The control plane: a thread with its own asyncio loop that owns the
registry, health monitor, queue and dispatcher, and the router the core
consults on every ``remote()``."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
import warnings


from .config import Settings, check_unique
from .dispatcher import Dispatcher, FunctionBlobs, WorkItem, bypass, pack_args
from .errors import (ClusterConnectionLost, ClusterError, ClusterUnavailableError,
                     NoEligibleClusterError)
from .health import HealthMonitor
from .local_backend import LocalBackend
from .policies import PlacementRequest, default_policy
from .queue import WorkQueue
from .ray_backend import RayClusterBackend
from .registry import ACTIVE, CORDONED, Member, Registry
from .results import user_error

_PLACEMENT_ONLY = ("cluster", "tags")


def placement_request(kind: str, name: str, options: dict, default_cpus: float):
    cluster = options.get("cluster")
    if cluster is not None and not isinstance(cluster, str):
        raise TypeError(f"{name}: cluster= must be a cluster name (str), got {cluster!r}")
    tags = options.get("tags") or []
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) and t for t in tags):
        raise TypeError(f"{name}: tags= must be a list of strings, got {options.get('tags')!r}")
    resources = dict(options.get("resources") or {})
    cpus = options.get("num_cpus", default_cpus)
    if cpus:
        resources["CPU"] = cpus
    if options.get("num_gpus"):
        resources["GPU"] = options["num_gpus"]
    return PlacementRequest(kind, name, resources, cluster,
                            [t for t in tags if not t.startswith("~")],
                            [t[1:] for t in tags if t.startswith("~")])


class ControlPlane:
    """Runs on its own thread; user threads talk to it through the router."""

    def __init__(self, configs: list, settings: Settings, policy=None, strict: bool = False):
        from .._core.refs import get_client

        self.client = get_client()
        if self.client is None:
            raise RuntimeError("miniray.cluster needs a running node: call miniray.init() "
                               "first (or miniray.init(clusters=...))")
        check_unique(configs)
        if not configs:
            raise ValueError("no clusters to connect to: give at least one ClusterConfig")
        self.settings = settings
        self.policy = policy or default_policy()
        self.strict = strict
        self.registry = Registry()
        self.queue = WorkQueue(settings.queue_size)
        self.blobs = FunctionBlobs()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="miniray-cluster",
                                        daemon=True)
        self.configs = configs
        self.dispatcher = Dispatcher(self.registry, self.queue, self.policy, settings,
                                     self.client, self.blobs)
        self.monitor = None
        self.closed = False
        self._actors: dict = {}  # key -> _RemoteActor, control loop only
        self._local_actors: list = []  # weak refs to handles of actors placed on "local"
        self._actor_tasks: set = set()

    def spawn(self, coro) -> None:
        """A task on the control loop that shutdown cancels."""
        task = self.loop.create_task(coro)
        self._actor_tasks.add(task)
        task.add_done_callback(self._actor_tasks.discard)

    # -- lifecycle -----------------------------------------------------------------
    def _run_loop(self) -> None:
        bypass.on = True
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro, timeout: float | None = None):
        """Run a coroutine on the control loop from another thread and wait."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("ControlPlane.call() from the control loop would deadlock")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        try:
            self.call(self._start())
        except BaseException:
            self.stop()
            raise

    async def _start(self) -> None:
        for config in self.configs:
            backend = LocalBackend() if config.is_local else RayClusterBackend(
                config, self.settings)
            backend.on_lost = self._on_lost
            if not config.is_local:
                backend.put_local = self.client.put
            self.registry.add(Member(config, backend, self.settings))
        members = list(self.registry)
        results = await asyncio.gather(
            *(asyncio.wait_for(m.backend.probe(), self.settings.connect_timeout + 10)
              for m in members), return_exceptions=True)
        failed = []
        for member, result in zip(members, results):
            if isinstance(result, BaseException):
                reason = (f"no answer in {self.settings.connect_timeout:g}s"
                          if isinstance(result, asyncio.TimeoutError) else str(result))
                failed.append(f"{member.name}: {reason}")
                member.health.error = reason
                member.health.failures += 1
                member.breaker.trip()
            else:
                h = member.health
                h.alive, h.total, h.available = True, result["total"], result["available"]
                h.nodes, h.latency_s, h.checks = result["nodes"], result["latency_s"], 1
                h.checked_at = h.ok_at = time.time()
        if failed:
            if self.strict or len(failed) == len(members):
                raise ClusterUnavailableError(
                    "connect", message="cannot connect to " + "; ".join(failed))
            warnings.warn("miniray.cluster: unreachable at start, retried through the "
                          "breaker: " + "; ".join(failed), RuntimeWarning, stacklevel=3)
        self.monitor = HealthMonitor(self.registry, self.settings, self._on_health)
        self.monitor.start()

    def stop(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._thread.is_alive():
            try:
                self.call(self._stop(), timeout=60)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(10)
        if not self.loop.is_running():
            self.loop.close()

    async def _stop(self) -> None:
        if self.monitor is not None:
            await self.monitor.stop()
        await self.dispatcher.close()
        tasks = list(self._actor_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(m.backend.close() for m in self.registry),
                             return_exceptions=True)

    # -- events from the monitor and backends -------------------------------------------
    def _on_health(self, member, opened: bool) -> None:
        if opened:
            self.dispatcher.on_member_down(member, f"breaker opened: {member.health.error}")
        self.dispatcher.wake()

    def _on_lost(self, backend, reason: str) -> None:
        member = self.registry.get(backend.name)
        member.health.alive = False
        member.health.error = reason
        member.breaker.last_error = reason
        member.breaker.trip()
        self.dispatcher.wake()

    # -- the router's side (user threads) -------------------------------------------------
    def _check_eligible(self, request) -> None:
        members = list(self.registry)
        if request.cluster is not None:
            if request.cluster not in self.registry:
                raise NoEligibleClusterError(
                    f"{request.name}: no cluster named {request.cluster!r}; "
                    f"known: {self.registry.names()}")
            members = [self.registry.get(request.cluster)]
        if not self.policy.filter(request, members):
            raise NoEligibleClusterError(
                f"{request.name}: no cluster can ever run it (cluster={request.cluster!r}, "
                f"tags={request.tags}, resources={request.resources}); clusters: "
                + ", ".join(f"{m.name} tags={m.tags} total={m.health.total}"
                            for m in self.registry))

    def submit_task(self, function, args, kwargs, options):
        name = function._name
        request = placement_request("task", name, options, 1)
        self._check_eligible(request)
        num_returns = options.get("num_returns", 1)
        if not isinstance(num_returns, int) or num_returns < 0:
            raise ValueError(f"num_returns of {name} must be a non-negative int")
        refs = [self.client.new_future_ref() for _ in range(max(1, num_returns))]
        clean = {k: v for k, v in options.items() if k not in _PLACEMENT_ONLY}
        item = WorkItem(request, function, args, kwargs, clean, refs, num_returns)
        self.queue.reserve(self.settings.block_when_full)
        self.loop.call_soon_threadsafe(self.dispatcher.enqueue, item)
        if num_returns == 1:
            return refs[0]
        return None if num_returns == 0 else refs

    def create_actor(self, actor_class, args, kwargs, options):
        name = actor_class.__name__
        request = placement_request("actor", name, options, 0)
        self._check_eligible(request)
        handle = RoutedActorHandle(self, None, uuid.uuid4().hex, name)
        member = self.call(self._place_actor(request, handle, actor_class, args, kwargs,
                                             options))
        if member.backend.kind == "local":
            bypass.on = True
            try:
                local = actor_class._remote(args, kwargs, self._clean(options))
            finally:
                bypass.on = False
            self.loop.call_soon_threadsafe(self._count_local_actor, local)
            return local
        return handle

    @staticmethod
    def _clean(options) -> dict:
        return {k: v for k, v in options.items() if k not in _PLACEMENT_ONLY}

    def _count_local_actor(self, handle) -> None:
        import weakref

        try:
            self._local_actors.append(weakref.ref(handle))
        except TypeError:  # no weak refs: counted for good
            self._local_actors.append(lambda: True)
        self.registry.get("local").local_actors -= 1  # placed; now counted by its handle

    def actors_on(self, member) -> int:
        """Actors placed on ``member`` that may still be alive: they hold no
        CPU in Ray once running, so placement must count them itself."""
        if member.backend.kind == "local":
            self._local_actors = [ref for ref in self._local_actors if ref() is not None]
            return len(self._local_actors) + member.local_actors
        generation = member.backend.generation
        return sum(1 for state in self._actors.values()
                   if state.member is member and state.error is None and not state.killed
                   and state.generation in (None, generation))

    async def _place_actor(self, request, handle, actor_class, args, kwargs, options):
        member = await self._choose_actor_member(request)
        # Counted at once (on the loop) so that actors created one after the
        # other see each other and spread.
        if member.backend.kind == "local":
            member.local_actors += 1
        else:
            handle._cluster = member.name
            self._actors[handle._key] = _RemoteActor(self, member, handle, actor_class, args,
                                                     kwargs, self._clean(options))
        return member

    def _count_actors(self) -> None:
        for member in self.registry:
            member.actors = self.actors_on(member)

    async def _choose_actor_member(self, request):
        while True:
            self._count_actors()
            member = self.dispatcher.choose(request)
            if member is None:  # actors hold resources, not in-flight slots
                members = [m for m in self.registry if m.accepting]
                if request.cluster is not None:
                    members = [m for m in members if m.name == request.cluster]
                members = self.policy.filter(request, members)
                member = members[0] if members else None
            if member is not None:
                return member
            await asyncio.sleep(0.05)

    def get_actor(self, name: str, namespace: str | None = None):
        """A handle to the actor named ``name`` on one of the Ray clusters
        (created by this program or any other driver of that cluster), or
        None."""
        return self.call(self._get_actor(name, namespace))

    async def _get_actor(self, name, namespace):
        for state in self._actors.values():
            options = state.options
            if options.get("name") == name and options.get("namespace") == namespace \
                    and state.error is None and not state.killed:
                return state.handle
        for member in self.registry:
            backend = member.backend
            if backend.kind == "local" or not member.accepting or not backend.connected:
                continue
            key = uuid.uuid4().hex
            try:
                class_name = await backend.attach_actor(key, name, namespace)
            except Exception:  # not there, or the cluster does not answer: try the next
                continue
            handle = RoutedActorHandle(self, member.name, key, class_name)
            state = _RemoteActor(self, member, handle, None, (), {}, {}, attached=True)
            state.generation = backend.generation
            self._actors[key] = state
            return handle
        return None

    # -- admin ---------------------------------------------------------------------
    def status(self) -> dict:
        """A JSON-ready snapshot of every member, the queue and the counters."""
        return self.call(self._status())

    async def _status(self) -> dict:
        self._count_actors()
        return {
            "clusters": [m.snapshot() for m in self.registry],
            "queue": {"waiting": len(self.queue), "maxsize": self.queue.maxsize,
                      "waited_for_room": self.queue.waited_for_room,
                      "by_request": _queue_summary(self.queue.items())},
            "counters": dict(self.dispatcher.counters),
            "settings": vars(self.settings),
        }

    async def set_state(self, name: str, action: str) -> dict:
        member = self.registry.get(name)
        if action == "drain":
            self.dispatcher.drain(member)
        elif action == "cordon":
            member.admin_state = CORDONED
        elif action in ("undrain", "uncordon"):
            member.admin_state = ACTIVE
        else:
            raise ValueError(f"unknown action {action!r}")
        self.dispatcher.wake()
        return member.snapshot()

    async def check(self, name: str) -> dict:
        member = self.registry.get(name)
        snapshot = await self.monitor.check(member)
        self.dispatcher.wake()
        return snapshot


def _queue_summary(items) -> dict:
    summary: dict = {}
    for item in items:
        summary[item.request.name] = summary.get(item.request.name, 0) + 1
    return summary


class _RemoteActor:
    """An actor on a Ray cluster: calls are sent in submission order."""

    def __init__(self, plane, member, handle, actor_class, args, kwargs, options,
                 attached: bool = False):
        self.plane = plane
        self.member = member
        self.handle = handle
        self.options = options
        self.calls: asyncio.Queue = asyncio.Queue()
        self.error: BaseException | None = None
        self.killed = False
        self.generation = None
        if not attached:  # attached: an existing actor found by name
            self.calls.put_nowait(("create", actor_class, args, kwargs, options))
        plane.spawn(self._run())

    async def _run(self) -> None:
        backend = self.member.backend
        while True:
            entry = await self.calls.get()
            if entry[0] == "kill":
                if self.error is None and backend.generation == self.generation:
                    backend.kill_actor(self.handle._key, entry[1])
                self.error = ClusterError(f"actor {self.handle._class_name} was killed")
                continue
            try:
                payload = await pack_args(entry[2], entry[3])
                if entry[0] == "create":
                    cls = entry[1]
                    if not backend.connected:
                        await backend.connect()
                    await backend.create_actor(
                        self.handle._key, cls._fn_id,
                        self.plane.blobs.getter(cls._fn_id, cls._cls), payload, entry[4])
                    self.generation = backend.generation
                    continue
                _, method, _, _, num_returns, refs = entry
                if self.error is not None:
                    raise self.error
                if backend.generation != self.generation or not backend.connected:
                    raise ClusterConnectionLost(
                        self.member.name, f"actor {self.handle._class_name} was lost with the "
                        "connection to its cluster (actors stay on their cluster)")
                future = backend.call_actor(self.handle._key, method, payload, num_returns)
            except BaseException as exc:
                if entry[0] == "create":
                    self.error = user_error(exc, f"{self.handle._class_name}.__init__",
                                            self.member.name)
                else:
                    self._fail(entry[5], exc)
                continue
            self.member.actor_calls_inflight += 1
            self.plane.spawn(self._finish(future, entry[5], num_returns, method))

    async def _finish(self, future, refs, num_returns, method) -> None:
        try:
            values = await future
        except BaseException as exc:
            self._fail(refs, exc, method)
        else:
            if num_returns == 1:
                values = [values]
            for ref, value in zip(refs, values):
                self.plane.client.fulfill(ref, value)
        finally:
            self.member.actor_calls_inflight -= 1

    def _fail(self, refs, exc, method: str = "") -> None:
        error = user_error(exc, f"{self.handle._class_name}.{method}", self.member.name) \
            if method else exc
        for ref in refs:
            self.plane.client.fulfill(ref, error=error)


class RoutedActorHandle:
    """Handle of an actor placed on a Ray cluster: ``handle.method.remote()``
    gives refs, as with a local actor. The actor stays on its cluster."""

    def __init__(self, plane, cluster: str, key: str, class_name: str):
        self._plane = plane
        self._cluster = cluster
        self._key = key
        self._class_name = class_name

    @property
    def cluster(self) -> str:
        """The name of the cluster the actor lives on."""
        return self._cluster

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)
        return _RoutedMethod(self, method, 1)

    def _call(self, method, args, kwargs, num_returns):
        plane = self._plane
        refs = [plane.client.new_future_ref() for _ in range(max(1, num_returns))]
        plane.loop.call_soon_threadsafe(self._enqueue, ("call", method, args, kwargs,
                                                        num_returns, refs))
        if num_returns == 1:
            return refs[0]
        return None if num_returns == 0 else refs

    def _enqueue(self, entry) -> None:
        state = self._plane._actors[self._key]
        if entry[0] == "kill":
            state.killed = True  # no longer counted for placement, even before it is sent
        state.calls.put_nowait(entry)

    def _kill(self, no_restart: bool = True) -> None:
        self._plane.loop.call_soon_threadsafe(self._enqueue, ("kill", no_restart))

    def __repr__(self) -> str:
        return f"Actor({self._class_name}, cluster={self._cluster!r}, {self._key[:8]})"

    def __reduce__(self):
        raise TypeError("a handle of an actor on a Ray cluster cannot be passed to tasks "
                        "(yet): call its methods from the driver")


class _RoutedMethod:
    def __init__(self, handle, method, num_returns):
        self._handle = handle
        self._method = method
        self._num_returns = num_returns

    def remote(self, *args, **kwargs):
        return self._handle._call(self._method, args, kwargs, self._num_returns)

    def options(self, num_returns: int = 1, **ignored):
        return _RoutedMethod(self._handle, self._method, num_returns)


class Router:
    """What the core calls on every driver-side ``remote()`` (hooks.router)."""

    def __init__(self, plane: ControlPlane):
        self.plane = plane

    def get_actor(self, name: str, namespace: str | None = None):
        """A handle to the named actor on a Ray cluster, or None."""
        return self.plane.get_actor(name, namespace)

    def submit_task(self, function, args, kwargs, options):
        if getattr(bypass, "on", False):
            return NotImplemented
        return self.plane.submit_task(function, args, kwargs, options)

    def create_actor(self, actor_class, args, kwargs, options):
        if getattr(bypass, "on", False):
            return NotImplemented
        return self.plane.create_actor(actor_class, args, kwargs, options)
