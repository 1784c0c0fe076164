"""Utilities: :class:`ActorPool`, :class:`~miniray.util.queue.Queue` (built on actors)
Ray's state API (:mod:`miniray.util.state`) and placement groups
(:mod:`miniray.util.placement_group`)."""

from . import state
from .actor_pool import ActorPool
from .helpers import (
    as_completed,
    deregister_serializer,
    disable_log_once_globally,
    enable_periodic_logging,
    get_node_ip_address,
    inspect_serializability,
    list_named_actors,
    log_once,
    map_unordered,
    register_serializer,
)
from .placement_group import (
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from .queue import Queue

__all__ = ["ActorPool", "Queue", "as_completed", "deregister_serializer",
           "disable_log_once_globally", "enable_periodic_logging",
           "get_current_placement_group", "get_node_ip_address", "get_placement_group",
           "inspect_serializability", "list_named_actors", "log_once", "map_unordered",
           "placement_group", "placement_group_table", "register_serializer",
           "remove_placement_group", "state"]


def __getattr__(name):
    # Subpackages with optional dependencies load on first use (joblib, metrics).
    if name in ("metrics", "joblib", "pdb", "collective", "ray_debugpy"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    from .._surface import missing

    raise missing(__name__, name)
