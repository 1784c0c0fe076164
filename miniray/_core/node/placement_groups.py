"""Placement groups: bundles reserved on the node and the resources named after them.

Owns ``placement_groups`` and ``_pgs_removed``. A created group holds its
bundles' resources out of ``available`` and adds ``CPU_group_<id>`` and
``CPU_group_<i>_<id>`` resources (see protocol.group_resource) that work in
the group asks for; removing it kills its actors and fails its queued work.
"""

from __future__ import annotations

from ...exceptions import TaskPlacementGroupRemoved
from ..client import VALUE_ERROR, VALUE_INLINE
from .state import (
    DRIVER,
    ObjectEntry,
    PlacementGroupState,
    _PG_REMOVED,
    _TRUE,
    _error_bytes,
)
from .tasks import TaskManager


class PlacementGroups(TaskManager):
    def _init_placement_groups(self) -> None:
        # Placement groups (miniray.util.placement_group) by id.
        self.placement_groups: dict[bytes, PlacementGroupState] = {}
        self._pgs_removed = 0

    # -- placement groups ------------------------------------------------------------
    def rpc_create_placement_group(self, caller, pg_id: bytes, bundles: list, strategy: str,
                                   name: str) -> None:
        if name and any(pg.name == name and pg.state != "REMOVED"
                        for pg in self.placement_groups.values()):
            raise ValueError(f"A placement group named {name!r} already exists; remove it "
                             "or pick another name.")
        base: dict = {}
        for bundle in bundles:
            for key, amount in bundle.items():
                base[key] = base.get(key, 0.0) + amount
        short = {k: v for k, v in base.items() if self.total.get(k, 0.0) < v - 1e-9}
        if short:
            raise ValueError(
                f"The placement group {bundles} needs {base} in all, more than this node has "
                f"({ {k: self.total.get(k, 0.0) for k in short} }), so it could never be "
                "created. Ask for less, or start the node with more.")
        pg = PlacementGroupState(pg_id, bundles, strategy, name, base)
        hex_id = pg_id.hex()
        from ..protocol import group_resource

        for index, bundle in enumerate(bundles):
            for key, amount in bundle.items():
                for resource in (group_resource(key, hex_id, index),
                                 group_resource(key, hex_id)):
                    pg.keys[resource] = pg.keys.get(resource, 0.0) + amount
        for resource, amount in pg.keys.items():
            self.total[resource] = amount
            self.available[resource] = 0.0  # until the group is reserved
        self.placement_groups[pg_id] = pg
        self._pg_pending.append(pg)
        if self.infeasible:
            self._recheck_infeasible()
        self._place_waiting()

    def _reserve_placement_group(self, pg: PlacementGroupState) -> None:
        self._acquire(pg.base)
        for resource, amount in pg.keys.items():
            self.available[resource] = amount
        pg.state = "CREATED"
        ready, pg.ready_ids = pg.ready_ids, []
        for object_id in ready:
            self._set_value(object_id, VALUE_INLINE, _TRUE)

    def rpc_placement_group_ready(self, caller, pg_id: bytes, object_id: bytes) -> None:
        self.objects[object_id] = ObjectEntry(1)
        if caller is not DRIVER:
            caller.held[object_id] += 1
        pg = self.placement_groups.get(pg_id)
        if pg is None or pg.state == "REMOVED":
            self._set_value(object_id, VALUE_ERROR, _error_bytes(TaskPlacementGroupRemoved(
                f"The placement group {pg_id.hex()} was removed (or never existed).")))
        elif pg.state == "CREATED":
            self._set_value(object_id, VALUE_INLINE, _TRUE)
        else:
            pg.ready_ids.append(object_id)

    def rpc_remove_placement_group(self, caller, pg_id: bytes) -> None:
        pg = self.placement_groups.get(pg_id)
        if pg is None or pg.state == "REMOVED":
            return
        hex_id = pg_id.hex()
        was_created = pg.state == "CREATED"
        pg.state = "REMOVED"
        self._pgs_removed += 1
        if pg in self._pg_pending:
            self._pg_pending.remove(pg)
        for resource in pg.keys:
            self.total.pop(resource, None)
            self.available.pop(resource, None)
        error = _error_bytes(TaskPlacementGroupRemoved(
            f"The placement group {hex_id} was removed before this work could run in it."))
        ready, pg.ready_ids = pg.ready_ids, []
        for object_id in ready:
            self._set_value(object_id, VALUE_ERROR, error)
        # Queued anywhere, not only at the head, where _schedule would find it.
        in_group = [t for t in self.ready if self._in_removed_group(t.resources)]
        for task in in_group:
            self.ready.remove(task)
            self._fail_task(task, error)
        for actor in list(self.actors.values()):
            if actor.state != "DEAD" and self._in_removed_group(actor.lease or {}):
                self._kill_actor(actor, _PG_REMOVED)
        if was_created:
            self._release(pg.base)  # tasks still running in it finish
        self._schedule()

    def rpc_get_placement_group(self, caller, name: str):
        for pg in self.placement_groups.values():
            if pg.name == name and pg.state != "REMOVED":
                return [pg.pg_id, pg.bundles]
        return None

    def rpc_placement_group_table(self, caller) -> dict:
        return {pg.pg_id.hex(): {
            "placement_group_id": pg.pg_id.hex(), "name": pg.name, "strategy": pg.strategy,
            "state": pg.state, "bundles": dict(enumerate(pg.bundles)),
        } for pg in self.placement_groups.values()}

    def _placement_of(self, placement):
        """``[pg_id, bundles, capture]`` for the worker's runtime context, from a
        submission's ``[pg_id, capture]`` (None outside a group or once removed)."""
        if placement is None:
            return None
        pg = self.placement_groups.get(placement[0])
        return None if pg is None else [pg.pg_id, pg.bundles, bool(placement[1])]
