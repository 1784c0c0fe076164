"""Ray's scheduling strategies (``ray.util.scheduling_strategies``) on one node.

``PlacementGroupSchedulingStrategy`` runs a task or actor inside a placement
group (see :mod:`miniray.util.placement_group`). ``NodeAffinitySchedulingStrategy``
names a node: this node's id (``get_runtime_context().get_node_id()``) or any id
with ``soft=True`` runs here; another id with ``soft=False`` is refused, since it
could never run. The strings ``"DEFAULT"`` and ``"SPREAD"`` are accepted and
schedule as usual.
"""

from __future__ import annotations

__all__ = ["NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy"]


class PlacementGroupSchedulingStrategy:
    """Run inside ``placement_group``, in bundle ``placement_group_bundle_index``
    (``-1``: any bundle)."""

    def __init__(self, placement_group, placement_group_bundle_index: int = -1,
                 placement_group_capture_child_tasks: bool | None = None):
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks


class NodeAffinitySchedulingStrategy:
    """Run on the node ``node_id`` (``soft=True``: anywhere if it is not available)."""

    def __init__(self, node_id: str, soft: bool, _spill_on_unavailable: bool = False,
                 _fail_on_unavailable: bool = False):
        self.node_id = node_id
        self.soft = soft


def requested_group(options: dict, what: str) -> tuple:
    """``(group, bundle index, capture)`` the options ask for; group ``None``
    when they name none (or ``"default"``). ``capture``: child tasks go into the
    group too (``placement_group_capture_child_tasks``)."""
    from .placement_group import PlacementGroup

    strategy = options.get("scheduling_strategy")
    group = options.get("placement_group")
    index = options.get("placement_group_bundle_index", -1)
    capture = options.get("placement_group_capture_child_tasks")
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        group, index = strategy.placement_group, strategy.placement_group_bundle_index
        capture = strategy.placement_group_capture_child_tasks
    elif isinstance(strategy, NodeAffinitySchedulingStrategy):
        _check_node(strategy, what)
    elif strategy not in (None, "DEFAULT", "SPREAD"):
        raise ValueError(
            f"scheduling_strategy of {what} must be 'DEFAULT', 'SPREAD', a "
            f"PlacementGroupSchedulingStrategy or a NodeAffinitySchedulingStrategy, "
            f"got {strategy!r}")
    if group is None or group == "default":
        return None, -1, False
    if not isinstance(group, PlacementGroup):
        raise TypeError(f"placement_group of {what} must be a PlacementGroup, got {group!r}")
    if not isinstance(index, int) or not -1 <= index < group.bundle_count:
        raise ValueError(f"placement_group_bundle_index of {what} must be -1 or a bundle "
                         f"index below {group.bundle_count}, got {index!r}")
    return group, index, bool(capture)


def placement_resources(resources: dict, group, index: int) -> dict:
    """``resources`` renamed into bundle ``index`` (-1: any) of ``group``.

    A group's resources are node resources named ``CPU_group_<id>`` (any bundle)
    and ``CPU_group_<i>_<id>`` (bundle ``i``), which the group holds once
    created, so the scheduler places work in a group like any other request.
    """
    from .placement_group import group_resource

    pg_hex = group._id.hex()
    return {group_resource(key, pg_hex, index): amount
            for key, amount in resources.items() if amount}


def _check_node(strategy: NodeAffinitySchedulingStrategy, what: str) -> None:
    if strategy.soft:
        return
    from ..api import get_runtime_context

    here = get_runtime_context().get_node_id()
    if strategy.node_id != here:
        raise ValueError(f"{what} is pinned to node {strategy.node_id!r} with soft=False, "
                         f"but this node is {here!r}: it could never run. Use soft=True or "
                         "this node's id.")


def __getattr__(name):
    from .._surface import missing

    raise missing(__name__, name)
