"""Ray's exceptions raised where Ray raises them: placement groups removed under
pending work, a full disk while spilling, an exception that cannot be rebuilt,
a class inheriting from an actor class."""

from __future__ import annotations

import os
import threading

import pytest

from miniray import exceptions


def test_removing_a_placement_group_fails_its_pending_work_with_rays_errors(ray):
    from miniray.util import placement_group, remove_placement_group

    pg = placement_group([{"CPU": 1}])
    assert ray.get(pg.ready(), timeout=30) is True

    @ray.remote(num_cpus=1)
    class Member:
        def ping(self):
            return "pong"

    @ray.remote
    def work():
        return 1

    member = Member.options(placement_group=pg).remote()
    assert ray.get(member.ping.remote(), timeout=30) == "pong"
    queued = work.options(placement_group=pg, num_cpus=1).remote()  # waits: Member holds it
    remove_placement_group(pg)
    with pytest.raises(exceptions.TaskPlacementGroupRemoved) as info:
        ray.get(queued, timeout=30)
    assert isinstance(info.value, exceptions.TaskUnschedulableError)  # what miniray raised before
    with pytest.raises(exceptions.ActorPlacementGroupRemoved, match="placement group") as info:
        ray.get(member.ping.remote(), timeout=30)
    assert isinstance(info.value, exceptions.ActorDiedError)
    with pytest.raises(exceptions.TaskPlacementGroupRemoved):
        ray.get(pg.ready(), timeout=30)
    assert ray.get(work.remote(), timeout=30) == 1


def test_an_actor_waiting_for_a_removed_group_gets_actor_placement_group_removed(ray):
    from miniray.util import placement_group, remove_placement_group

    pg = placement_group([{"CPU": 1}])
    assert ray.get(pg.ready(), timeout=30)

    @ray.remote(num_cpus=1)
    class Big:
        def ping(self):
            return "pong"

    waiting = Big.options(placement_group=pg, num_cpus=1).remote()
    blocker = Big.options(placement_group=pg, num_cpus=1).remote()  # waits: the bundle is taken
    assert ray.get(waiting.ping.remote(), timeout=30) == "pong"
    remove_placement_group(pg)
    for handle in (waiting, blocker):
        with pytest.raises(exceptions.ActorPlacementGroupRemoved):
            ray.get(handle.ping.remote(), timeout=30)


def test_spilling_to_a_full_disk_raises_out_of_disk_error(ray_factory):
    import miniray.api

    ray = ray_factory(object_store_memory=4 << 20)
    first = ray.put(b"a" * (3 << 20))
    spill_dir = miniray.api._runtime.spill.dir
    # The spill file of `first` is /dev/full: the kernel answers ENOSPC, as a full disk does.
    os.symlink("/dev/full", os.path.join(spill_dir, first.hex()))
    with pytest.raises(exceptions.OutOfDiskError, match="disk is full") as info:
        ray.put(b"b" * (3 << 20))
    assert isinstance(info.value, exceptions.ObjectStoreFullError)
    assert spill_dir in str(info.value)
    assert not os.path.lexists(os.path.join(spill_dir, first.hex()))  # nothing half-written
    assert ray.get(first, timeout=30) == b"a" * (3 << 20)  # still in the store, intact
    assert ray.get(ray.put(b"small"), timeout=30) == b"small"  # the node goes on


class TwoArgumentError(Exception):
    def __init__(self, code, detail):
        super().__init__(f"code {code}: {detail}")


def test_an_exception_that_cannot_be_rebuilt_is_an_unserializable_exception(ray, tmp_path):
    @ray.remote
    def two_args():
        raise TwoArgumentError(7, "seven")

    class Unpicklable(Exception):
        def __init__(self):
            super().__init__("holds a lock")
            self.lock = threading.Lock()

    @ray.remote
    def unpicklable():
        raise Unpicklable()

    (tmp_path / "only_in_that_worker.py").write_text(
        "class WorkerOnlyError(Exception):\n    pass\n")

    @ray.remote
    def worker_only(path):
        import sys

        sys.path.insert(0, path)
        import only_in_that_worker

        raise only_in_that_worker.WorkerOnlyError("from the worker")

    for ref, text, name in ((two_args.remote(), "code 7: seven", "TwoArgumentError"),
                            (unpicklable.remote(), "holds a lock", "Unpicklable"),
                            (worker_only.remote(str(tmp_path)), "only_in_that_worker", None)):
        with pytest.raises(exceptions.UnserializableException) as info:
            ray.get(ref, timeout=60)
        error = info.value
        assert isinstance(error, exceptions.RayTaskError)  # as miniray raised before
        assert isinstance(error.cause, exceptions.UnserializableException)
        assert text in str(error.cause) and "Failed to deserialize exception" in str(error.cause)
        if name is None:  # its class does not import here: the message says so
            assert "could not be rebuilt" in str(error)
        else:  # the type's name, its message and the remote traceback stay
            assert error.cause_name == name
            assert name in str(error) and text in str(error) and "Traceback" in str(error)
    with pytest.raises(ValueError) as info:  # a cause that travels is still itself
        ray.get(ray.remote(lambda: int("x")).remote(), timeout=60)
    assert not isinstance(info.value, exceptions.UnserializableException)


def test_inheriting_from_an_actor_class_raises_rays_error(ray):
    from miniray.actor import ActorClassInheritanceException

    class Base:
        def who(self):
            return "base"

    RemoteBase = ray.remote(Base)
    with pytest.raises(ActorClassInheritanceException, match="inherit from the plain class"):
        class Derived(RemoteBase):  # noqa: F841
            pass
    with pytest.raises(TypeError):  # Ray's exception is a TypeError
        type("Other", (RemoteBase,), {})

    @ray.remote
    class Derived(Base):
        def who(self):
            return "derived"

    assert ray.get(Derived.remote().who.remote(), timeout=30) == "derived"
