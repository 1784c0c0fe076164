"""miniray.cluster: one logical pool over the local node and several real Ray
clusters.

    import miniray as ray
    ray.init(clusters="clusters.yaml")          # or miniray.cluster.connect([...])

    f.options(cluster="mac").remote(x)         # pinned
    f.options(tags=["arm64"]).remote(x)        # by tag ("~arm64": preferred, not required)
    f.remote(x)                                # the policy chooses
    miniray.cluster.submit_job("python train.py", cluster="linux")

Refs work with ``get``/``wait``/``await``; failures raise, naming the cluster.
Importing this package does not import Ray: each Ray cluster is reached
through a driver process of its own. See docs/cluster.md.
"""

from __future__ import annotations

import threading

from .config import ClusterConfig, Settings, load_config, parse_config
from .errors import (ClusterConfigError, ClusterConnectionLost, ClusterError,
                     ClusterUnavailableError, NoEligibleClusterError, QueueFullError)
from .policies import (CompositePolicy, FreeResources, Policy, PlacementRequest, ResourceFit,
                       TagAffinity, WeightedPreference, default_policy)

__all__ = [
    "ClusterConfig", "Settings", "load_config", "connect", "disconnect", "current", "status",
    "drain", "undrain", "cordon", "check", "kill", "submit_job", "Policy", "CompositePolicy",
    "ResourceFit", "TagAffinity", "FreeResources", "WeightedPreference", "default_policy",
    "PlacementRequest", "ClusterError", "ClusterConfigError", "ClusterConnectionLost",
    "ClusterUnavailableError", "NoEligibleClusterError", "QueueFullError",
]

_lock = threading.Lock()
_plane = None


def current():
    """The connected control plane, or None."""
    return _plane


def _require():
    if _plane is None:
        raise RuntimeError("miniray.cluster is not connected: call "
                           "miniray.init(clusters=...) or miniray.cluster.connect(...)")
    return _plane


def _as_configs(clusters) -> tuple[list, Settings | None]:
    import os

    if isinstance(clusters, (str, os.PathLike)):
        return load_config(clusters)
    if isinstance(clusters, ClusterConfig):
        clusters = [clusters]
    if not isinstance(clusters, (list, tuple)):
        raise ClusterConfigError(
            "clusters must be a path to a YAML/TOML file or a list of ClusterConfig, got "
            f"{type(clusters).__name__}")
    configs = []
    for entry in clusters:
        if isinstance(entry, dict):
            entry = ClusterConfig(**entry)
        if not isinstance(entry, ClusterConfig):
            raise ClusterConfigError(f"{entry!r} is not a ClusterConfig (or a mapping of one)")
        configs.append(entry)
    return configs, None


def connect(clusters, *, settings: Settings | None = None, policy: Policy | None = None,
            include_local: bool = True, strict: bool = False):
    """Connect to the clusters and route every ``remote()`` of this driver
    through the control plane.

    Args:
        clusters: a ``.yaml``/``.yml``/``.toml`` file, or a list of
            :class:`ClusterConfig` (or mappings of their fields).
        settings: control-plane knobs (queue size, health interval, breaker,
            retries); a file's ``settings:`` section otherwise.
        policy: placement policy (default :func:`default_policy`).
        include_local: add the embedded node as the member ``"local"`` when the
            list has none (a file says so with its ``local:`` section).
        strict: raise if any cluster is unreachable now (otherwise only when
            all are; the others are retried through their breakers).

    Returns the control plane (``status()``, ``registry``, ``settings``).
    """
    global _plane
    from .._core import hooks
    from .._core.refs import get_client

    configs, file_settings = _as_configs(clusters)
    from_file = file_settings is not None
    settings = settings or file_settings or Settings()
    if include_local and not from_file and not any(c.is_local for c in configs):
        configs = [ClusterConfig("local"), *configs]
    if policy is not None and not isinstance(policy, Policy):
        raise TypeError(f"policy must be a miniray.cluster.Policy, got {policy!r}")
    if get_client() is None:
        import miniray

        miniray.init()
    with _lock:
        if _plane is not None:
            raise RuntimeError("miniray.cluster is already connected; call "
                               "miniray.cluster.disconnect() first")
        from .control import ControlPlane, Router

        plane = ControlPlane(configs, settings, policy, strict=strict)
        plane.start()
        _plane = plane
        hooks.router = Router(plane)
        hooks.shutdown_callbacks.append(disconnect)
    try:
        from . import admin

        admin.register()
    except ImportError:  # pragma: no cover - the dashboard package is part of miniray
        pass
    return plane


def disconnect() -> None:
    """Stop routing: close every cluster's driver, fail queued work. Safe to
    call twice; ``miniray.shutdown()`` calls it."""
    global _plane
    from .._core import hooks

    with _lock:
        plane, _plane = _plane, None
        if plane is None:
            return
        if isinstance(hooks.router, object) and getattr(hooks.router, "plane", None) is plane:
            hooks.router = None
        if disconnect in hooks.shutdown_callbacks:
            hooks.shutdown_callbacks.remove(disconnect)
    from . import admin

    admin.unregister()
    plane.stop()


def status() -> dict:
    """Every cluster's health, breaker and admin state, the queue and counters."""
    return _require().status()


def drain(name: str) -> dict:
    """Send no new work to ``name``; its in-flight work finishes (state
    ``draining``, then ``drained``)."""
    plane = _require()
    return plane.call(plane.set_state(name, "drain"))


def undrain(name: str) -> dict:
    """Let ``name`` take new work again (ends a drain or a cordon)."""
    plane = _require()
    return plane.call(plane.set_state(name, "undrain"))


def cordon(name: str) -> dict:
    """Send no new work to ``name`` (in-flight work goes on)."""
    plane = _require()
    return plane.call(plane.set_state(name, "cordon"))


def check(name: str) -> dict:
    """Run a health check of ``name`` now (also probes an open breaker)."""
    plane = _require()
    return plane.call(plane.check(name))


def kill(actor, *, no_restart: bool = True) -> None:
    """Kill an actor placed on a Ray cluster (``miniray.kill`` for local ones)."""
    from .control import RoutedActorHandle

    if not isinstance(actor, RoutedActorHandle):
        import miniray

        return miniray.kill(actor, no_restart=no_restart)
    actor._kill(no_restart)


def submit_job(entrypoint: str, runtime_env: dict | None = None, cluster: str | None = None,
               *, tags=None, submission_id: str | None = None, metadata: dict | None = None):
    """Run a whole script on a Ray cluster through Ray's Job Submission API.

    The cluster needs ``dashboard=`` in its config. Returns a
    :class:`~miniray.cluster.jobs.JobHandle` (``status()``, ``wait()``,
    ``logs()``, ``stop()``).
    """
    from .jobs import submit_job as _submit

    return _submit(_require(), entrypoint, runtime_env, cluster, tags, submission_id, metadata)


def _init_hook(address=None, backend=None, clusters=None):
    """Called by ``miniray.init`` for ``clusters=``, ``backend="ray"`` or a
    ``ray://`` address, after the local node started."""
    if clusters is not None:
        configs, settings = _as_configs(clusters)
        if address is not None:
            configs = [*configs, ClusterConfig("ray", address)]
        plane = connect(configs, settings=settings, include_local=settings is None)
        return {"clusters": plane.registry.names()}
    if address is None:
        import os

        address = os.environ.get("RAY_ADDRESS")
    if not address:
        raise ClusterConfigError(
            "backend='ray' needs the cluster's address: miniray.init(backend='ray', "
            "address='ray://head:10001') or 'host:6379' for a driver on a cluster node "
            "(or set RAY_ADDRESS)")
    plane = connect([ClusterConfig("ray", address)], include_local=False, strict=True)
    return {"backend": "ray", "clusters": plane.registry.names(),
            "ray_version": plane.registry.get("ray").backend.info.get("ray_version")}
