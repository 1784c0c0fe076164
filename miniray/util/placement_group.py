"""Placement groups (Ray's ``ray.util.placement_group``) on one node.

A placement group reserves bundles of resources (``[{"CPU": 2}, {"CPU": 1,
"GPU": 1}]``) all at once: it is created when every bundle fits in what the
node has free, and until it is removed nothing outside it can use them. Tasks
and actors run inside it with ``scheduling_strategy=
PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)`` (or the
older ``.options(placement_group=pg, placement_group_bundle_index=i)``) and then
take their resources from the group (bundle ``i``, or any bundle with ``-1``).

On one node every strategy (``PACK``, ``SPREAD``, ``STRICT_PACK``,
``STRICT_SPREAD``) places all bundles on the node; ``STRICT_SPREAD`` with more
than one bundle can never be placed and is refused. A group asking for more
than the node has in total is refused at once (Ray would wait forever).
Removing a group kills the actors in it and fails its queued tasks; tasks
already running in it finish.
"""

from __future__ import annotations

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
VALID_PLACEMENT_GROUP_STRATEGIES = set(STRATEGIES)  # Ray's name

__all__ = ["PlacementGroup", "get_current_placement_group", "get_placement_group",
           "placement_group", "placement_group_table", "remove_placement_group"]


from .._core.protocol import group_resource  # noqa: F401  (the node's names for group resources)


class PlacementGroup:
    """A handle to a placement group; picklable, so tasks can use it too."""

    def __init__(self, pg_id: bytes, bundle_specs: list):
        self._id = pg_id
        self.bundle_specs = bundle_specs

    @property
    def id(self):
        """The group's id (``.hex()``)."""
        return _PlacementGroupID(self._id)

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def ready(self):
        """An ObjectRef that becomes ready (value ``True``) once the group is created."""
        from ..api import _client

        return _client().placement_group_ready(self._id)

    def wait(self, timeout_seconds: float = 30) -> bool:
        """Wait up to ``timeout_seconds`` for the group; True if it was created."""
        from ..api import wait

        ready, _ = wait([self.ready()], timeout=timeout_seconds)
        return bool(ready)

    def __eq__(self, other) -> bool:
        return isinstance(other, PlacementGroup) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __reduce__(self):
        return (PlacementGroup, (self._id, self.bundle_specs))

    def __repr__(self) -> str:
        return f"PlacementGroup({self._id.hex()}, {self.bundle_specs})"


class _PlacementGroupID:
    __slots__ = ("_binary",)

    def __init__(self, binary: bytes):
        self._binary = binary

    def hex(self) -> str:
        return self._binary.hex()

    def binary(self) -> bytes:
        return self._binary

    def __eq__(self, other) -> bool:
        return isinstance(other, _PlacementGroupID) and other._binary == self._binary

    def __hash__(self) -> int:
        return hash(self._binary)

    def __repr__(self) -> str:
        return f"PlacementGroupID({self.hex()})"


def placement_group(bundles: list, strategy: str = "PACK", name: str = "",
                    lifetime: str | None = None, **_ray_only) -> PlacementGroup:
    """Reserve ``bundles`` (a list of resource dicts) as one group.

    Returns at once; ``pg.ready()`` / ``pg.wait()`` tell when the resources are
    reserved (at once if they are free, else when running work releases them).
    """
    import os

    from ..api import _client

    if not isinstance(bundles, (list, tuple)) or not bundles:
        raise ValueError("bundles must be a non-empty list of resource dicts, "
                         "e.g. [{'CPU': 1}, {'CPU': 1}]")
    specs = []
    for i, bundle in enumerate(bundles):
        if not isinstance(bundle, dict) or not bundle:
            raise ValueError(f"bundle {i} must be a non-empty dict like {{'CPU': 1}}, "
                             f"got {bundle!r}")
        for key, amount in bundle.items():
            if not isinstance(key, str) or not isinstance(amount, (int, float)) or amount < 0:
                raise ValueError(f"bundle {i}: {key!r} must map to a non-negative number, "
                                 f"got {amount!r}")
        if not any(bundle.values()):
            raise ValueError(f"bundle {i} asks for nothing: {bundle!r}")
        specs.append({k: float(v) for k, v in bundle.items()})
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "STRICT_SPREAD" and len(specs) > 1:
        raise ValueError("STRICT_SPREAD puts each bundle on a different node, and this is "
                         "one node: use PACK or SPREAD (both place every bundle here)")
    if lifetime not in (None, "detached"):
        raise ValueError(f"lifetime must be None or 'detached', got {lifetime!r}")
    unknown = set(_ray_only) - {"_max_cpu_fraction_per_node", "_soft_target_node_id",
                                "bundle_label_selector"}
    if unknown:
        raise TypeError(f"placement_group() got unexpected keyword arguments {sorted(unknown)}")
    pg_id = os.urandom(16)
    _client().generic("create_placement_group", pg_id, specs, strategy, name or "")
    return PlacementGroup(pg_id, specs)


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Give the group's resources back; its actors are killed, its queued tasks fail."""
    from ..api import _client

    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"expected a PlacementGroup, got {type(placement_group).__name__}")
    _client().generic("remove_placement_group", placement_group._id)


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The live group created with ``name=placement_group_name``."""
    from ..api import _client

    found = _client().generic("get_placement_group", placement_group_name)
    if found is None:
        raise ValueError(f"Failed to look up placement group with name: "
                         f"{placement_group_name}")
    pg_id, specs = found
    return PlacementGroup(pg_id, specs)


def get_current_placement_group() -> PlacementGroup | None:
    """The placement group the calling task or actor was scheduled in; ``None``
    in the driver and in work placed outside any group (as in Ray)."""
    from .._core import context

    return context.current_placement_group


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict:
    """State of every group (id hex -> info), or of one group."""
    from ..api import _client

    table = _client().generic("placement_group_table")
    if placement_group is not None:
        return table.get(placement_group._id.hex(), {})
    return table


def __getattr__(name):
    from .._surface import missing

    raise missing(__name__, name)
