"""Utilities: :class:`ActorPool`, :class:`~miniray.util.queue.Queue` (built on actors)
Ray's state API (:mod:`miniray.util.state`) and placement groups
(:mod:`miniray.util.placement_group`)."""

from . import state
from .actor_pool import ActorPool
from .placement_group import (
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from .queue import Queue


def get_node_ip_address() -> str:
    """The address of this node, as in the node's ``node:<ip>`` resource
    (``resources={f"node:{get_node_ip_address()}": 0.01}`` pins work to it)."""
    from .._core.runtime import NODE_IP

    return NODE_IP


__all__ = ["ActorPool", "Queue", "get_current_placement_group", "get_node_ip_address",
           "get_placement_group", "placement_group", "placement_group_table",
           "remove_placement_group", "state"]
