"""miniray's API inside a task or actor that runs on a Ray cluster.

A program written against miniray sends its tasks to Ray through
``init(clusters=...)`` or ``backend="ray"``; the code of those tasks calls
miniray too (nested ``remote``, ``get``, ``put``, ``wait``, actors). Inside a
Ray worker those calls must go to that Ray cluster, through Ray's own API:
starting an embedded miniray node there would run nested work outside Ray's
scheduler, hold refs Ray cannot see, and leave shared memory behind when Ray
ends the worker.

:func:`maybe_install` (called when miniray is imported, and before any
auto-init) recognises a Ray worker and installs :class:`RayWorkerBridge` as
the core's router (``remote()`` of functions and actor classes) and as
``hooks.ray_worker`` (``get``/``put``/``wait``/``kill``/``get_actor``).
The refs and actor handles it returns are Ray's own.
"""

from __future__ import annotations

import sys

# Options that only mean something to miniray.cluster's placement.
_PLACEMENT_ONLY = ("cluster", "tags")


def in_ray_worker() -> bool:
    """True in a process Ray started to run tasks or actors (not a driver)."""
    ray = sys.modules.get("ray")
    if ray is None:
        return False
    try:
        from ray._private import worker as ray_worker
    except ImportError:  # pragma: no cover - an unusual Ray
        return False
    worker = getattr(ray_worker, "global_worker", None)
    return getattr(worker, "mode", None) == ray_worker.WORKER_MODE


def maybe_install() -> bool:
    """Install the bridge if this process is a Ray worker; True if it is."""
    from .._core import hooks

    if hooks.ray_worker is not None:
        return True
    if not in_ray_worker():
        return False
    bridge = RayWorkerBridge()
    hooks.router = bridge
    hooks.ray_worker = bridge
    return True


class RayWorkerBridge:
    """miniray's API, answered by the Ray cluster this worker belongs to."""

    def __init__(self):
        import ray

        self.ray = ray
        self._remotes: dict = {}

    def _ray_remote(self, key, target):
        remote = self._remotes.get(key)
        if remote is None:
            remote = self._remotes[key] = self.ray.remote(target)
        return remote

    @staticmethod
    def _options(options, what: str) -> dict:
        options = dict(options or {})
        cluster = options.pop("cluster", None)
        options.pop("tags", None)
        if cluster is not None:
            # Nested work stays on the cluster of the task that submits it.
            import warnings

            warnings.warn(f"{what}: cluster={cluster!r} is ignored inside a task that runs on "
                          "a Ray cluster; nested work runs on that cluster", RuntimeWarning,
                          stacklevel=4)
        return options

    # -- the router's side ------------------------------------------------------------
    def submit_task(self, function, args, kwargs, options):
        remote = self._ray_remote(function._fn_id, function._function)
        options = self._options(options, function._name)
        if options:
            remote = remote.options(**options)
        return remote.remote(*args, **kwargs)

    def create_actor(self, actor_class, args, kwargs, options):
        remote = self._ray_remote(("actor", actor_class._fn_id), actor_class._cls)
        options = self._options(options, actor_class.__name__)
        if options:
            remote = remote.options(**options)
        return remote.remote(*args, **kwargs)

    def get_actor(self, name, namespace=None):
        return self.ray.get_actor(name, namespace=namespace)

    # -- the API's side ---------------------------------------------------------------
    def get(self, object_refs, timeout=None):
        return self.ray.get(object_refs, timeout=timeout)

    def put(self, value):
        return self.ray.put(value)

    def wait(self, object_refs, num_returns=1, timeout=None, fetch_local=True):
        return self.ray.wait(list(object_refs), num_returns=num_returns, timeout=timeout,
                             fetch_local=fetch_local)

    def kill(self, actor, no_restart=True):
        return self.ray.kill(actor, no_restart=no_restart)
