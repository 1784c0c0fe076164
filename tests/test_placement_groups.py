"""Placement groups and scheduling strategies on one node; actors wait for
their resources instead of oversubscribing the node."""

from __future__ import annotations

import time

import pytest

from miniray import exceptions


def test_groups_reserve_bundles_and_run_work_inside(ray):
    from miniray.util import (get_placement_group, placement_group, placement_group_table,
                              remove_placement_group)
    from miniray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="SPREAD", name="pair")
    assert ray.get(pg.ready(), timeout=30) is True and pg.wait(5)
    assert ray.available_resources()["CPU"] == 0  # both CPUs belong to the group
    assert placement_group_table(pg)["state"] == "CREATED"
    assert get_placement_group("pair") == pg and pg.bundle_count == 2

    @ray.remote
    def held():
        time.sleep(0.1)
        return ray.get_runtime_context().get_assigned_resources()

    in_bundles = [held.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, i))
                  .remote() for i in (0, 1)]
    assert ray.get(in_bundles, timeout=30) == [{"CPU": 1.0}, {"CPU": 1.0}]
    legacy = held.options(placement_group=pg, placement_group_bundle_index=-1).remote()
    assert ray.get(legacy, timeout=30) == {"CPU": 1.0}

    @ray.remote
    def passed_on(group):  # a group handle travels to tasks
        return group.bundle_specs

    assert ray.get(passed_on.options(placement_group=pg).remote(pg)) == [{"CPU": 1.0}] * 2

    @ray.remote(num_cpus=1)
    class Member:
        def ping(self):
            return "pong"

    member = Member.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote()
    assert ray.get(member.ping.remote(), timeout=30) == "pong"

    # A second group waits for the first's resources, and gets them on removal.
    later = placement_group([{"CPU": 2}])
    assert not later.wait(0.3)
    assert placement_group_table(later)["state"] == "PENDING"
    queued = held.options(placement_group=pg, num_cpus=2).remote()  # waits: needs the group's 2
    remove_placement_group(pg)
    assert later.wait(30)
    with pytest.raises(exceptions.ActorDiedError, match="placement group was removed"):
        ray.get(member.ping.remote(), timeout=30)
    with pytest.raises(exceptions.TaskUnschedulableError):
        ray.get(queued, timeout=30)
    with pytest.raises(exceptions.TaskUnschedulableError):
        ray.get(pg.ready(), timeout=30)
    with pytest.raises(ValueError, match="was removed"):
        held.options(placement_group=pg).remote()
    remove_placement_group(later)
    assert ray.available_resources()["CPU"] == 2
    assert not any("_group_" in key for key in ray.cluster_resources())
    with pytest.raises(ValueError, match="Failed to look up"):
        get_placement_group("pair")


def test_bad_groups_are_refused_with_the_reason(ray):
    from miniray.util import placement_group
    from miniray.util.scheduling_strategies import (NodeAffinitySchedulingStrategy,
                                                    PlacementGroupSchedulingStrategy)

    with pytest.raises(ValueError, match="could never be created"):
        placement_group([{"CPU": 2}, {"CPU": 1}])
    with pytest.raises(ValueError, match="non-empty list"):
        placement_group([])
    with pytest.raises(ValueError, match="bundle 0"):
        placement_group([{"CPU": -1}])
    with pytest.raises(ValueError, match="STRICT_SPREAD"):
        placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    with pytest.raises(ValueError, match="strategy must be"):
        placement_group([{"CPU": 1}], strategy="TIGHT")
    pg = placement_group([{"CPU": 1}], name="one")
    with pytest.raises(ValueError, match="already exists"):
        placement_group([{"CPU": 1}], name="one")

    @ray.remote
    def f():
        return 1

    with pytest.raises(ValueError, match="bundle index below 1"):
        f.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 1)).remote()
    with pytest.raises(ValueError, match="could never run"):
        f.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg), num_cpus=2).remote()
    with pytest.raises(ValueError, match="scheduling_strategy"):
        f.options(scheduling_strategy="NEAREST").remote()
    here = ray.get_runtime_context().get_node_id()
    assert ray.get(f.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        here, soft=False)).remote()) == 1
    assert ray.get(f.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        "elsewhere", soft=True)).remote()) == 1
    with pytest.raises(ValueError, match="soft=False"):
        f.options(scheduling_strategy=NodeAffinitySchedulingStrategy("elsewhere", soft=False))\
            .remote()


def test_actors_wait_for_their_resources_like_in_ray(ray):
    @ray.remote(num_cpus=1)
    class Worker:
        def ping(self):
            return 1

    workers = [Worker.remote() for _ in range(3)]  # 2 CPUs: the third waits
    pings = [w.ping.remote() for w in workers]
    assert ray.get(pings[:2], timeout=60) == [1, 1]  # starting may be slow (coverage)
    ready, _ = ray.wait([pings[2]], timeout=0.5)  # it cannot be ready, however long
    assert not ready
    assert ray.available_resources()["CPU"] == 0
    ray.kill(workers[0])
    assert ray.get(pings[2], timeout=30) == 1
    waiting = Worker.remote()
    ray.kill(waiting)  # killed while waiting: it never starts, and nothing leaks
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(waiting.ping.remote(), timeout=30)


def test_current_group_and_capture_of_child_tasks(ray):
    from miniray.util import get_current_placement_group, placement_group, remove_placement_group
    from miniray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group([{"CPU": 1}])
    ray.get(pg.ready())

    @ray.remote
    def where():
        return get_current_placement_group()

    @ray.remote
    def parent():
        return (get_current_placement_group(), ray.get(where.remote()),
                ray.get(where.options(scheduling_strategy="DEFAULT").remote()),
                ray.get(where.options(placement_group="default").remote()))

    @ray.remote
    class Probe:
        def group(self):
            return get_current_placement_group(), ray.get(where.remote())

    assert get_current_placement_group() is None  # the driver
    assert ray.get(where.remote()) is None
    plain = PlacementGroupSchedulingStrategy(pg)
    assert ray.get(where.options(scheduling_strategy=plain).remote()) == pg
    assert ray.get(where.options(scheduling_strategy="DEFAULT", placement_group=pg).remote()) == pg
    # Without capture a child runs outside the group; with it, inside (unless it opts out).
    assert ray.get(parent.options(scheduling_strategy=plain).remote()) == (pg, None, None, None)
    capture = PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)
    assert ray.get(parent.options(scheduling_strategy=capture).remote()) == (pg, pg, None, None)
    assert ray.get(parent.options(placement_group=pg,
                                  placement_group_capture_child_tasks=True).remote()) == \
        (pg, pg, None, None)
    # A later task on the same worker, outside the group, sees no group.
    assert ray.get([where.remote() for _ in range(4)]) == [None] * 4
    probe = Probe.options(scheduling_strategy=capture).remote()
    assert ray.get(probe.group.remote()) == (pg, pg)
    ray.kill(probe)
    remove_placement_group(pg)
