"""No silent hangs, no silent exits: the failures a new user meets first (issue #19)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import miniray
from miniray.exceptions import RayTaskError

from .test_head import head  # noqa: F401 - the fixture


# -- actor handles given to a constructor -------------------------------------------

def test_actor_handle_passed_to_a_constructor_positional_keyword_and_nested(ray):
    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def add(self, k):
            self.n += k
            return self.n

    @ray.remote
    class User:
        def __init__(self, first, many, keyword=None, ref_list=None):
            self.handles = [h for h in (first, *many, keyword) if h is not None]
            self.ref_list = ref_list

        def bump(self):
            return [ray.get(h.add.remote(1)) for h in self.handles]

        def nested_ref_value(self):
            return ray.get(self.ref_list[0])

    a, b, c = Counter.remote(), Counter.remote(), Counter.remote()
    slow = ray.remote(lambda: "late").remote()
    user = User.remote(a, [b], keyword=c, ref_list=[slow])
    assert ray.get(user.bump.remote(), timeout=60) == [1, 1, 1]
    assert ray.get(user.nested_ref_value.remote(), timeout=60) == "late"
    # An actor handle as the only argument, and a task holding a handle in a dict.
    only = User.remote(a, [], keyword=None)
    assert ray.get(only.bump.remote(), timeout=60)[0] == 2

    @ray.remote
    def use(handles):
        return ray.get(handles["a"].add.remote(10))
    assert ray.get(use.remote({"a": a}), timeout=60) == 12


# -- errors whose cause is not an Exception, or cannot be rebuilt -------------------

def _run_driver(code: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(miniray.__file__)))]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("raise_line", ["sys.exit(1)", "raise KeyboardInterrupt",
                                        "raise GeneratorExit"])
def test_a_task_exiting_fails_the_driver_loudly_instead_of_ending_it(raise_line):
    result = _run_driver(f"""
        import sys
        import miniray as ray
        ray.init(num_cpus=1)

        @ray.remote
        def quit_early():
            {raise_line}

        ray.get(quit_early.remote())
        print("NOT REACHED")
    """)
    assert result.returncode not in (0, -2, 130), (result.returncode, result.stderr[-2000:])
    assert "NOT REACHED" not in result.stdout
    assert "RayTaskError" in result.stderr and "quit_early" in result.stderr, \
        result.stderr[-2000:]


@pytest.mark.parametrize("cause", [SystemExit, KeyboardInterrupt, GeneratorExit])
def test_a_task_exit_is_a_task_error_carrying_the_cause(ray, cause):
    @ray.remote
    def quit_early():
        raise cause(3)

    with pytest.raises(RayTaskError) as info:
        ray.get(quit_early.remote(), timeout=60)
    assert isinstance(info.value, Exception)
    assert not isinstance(info.value, cause)
    assert isinstance(info.value.cause, cause)
    assert cause.__name__ in str(info.value)
    assert ray.get(ray.remote(lambda: 1).remote(), timeout=60) == 1


def test_memory_errors_reach_the_driver_as_task_errors_of_their_class(ray):
    from miniray.exceptions import ObjectStoreFullError

    @ray.remote
    def out_of_memory():
        raise MemoryError("no more room")

    @ray.remote
    def store_full():
        raise ObjectStoreFullError("store is full")

    with pytest.raises(MemoryError) as info:
        ray.get(out_of_memory.remote(), timeout=60)
    assert isinstance(info.value, RayTaskError)
    assert "no more room" in str(info.value) and "out_of_memory" in str(info.value)
    with pytest.raises(ObjectStoreFullError) as info:
        ray.get(store_full.remote(), timeout=60)
    assert isinstance(info.value, RayTaskError) and isinstance(info.value, MemoryError)


def test_as_instanceof_cause_never_raises():
    class Odd(Exception):
        def __new__(cls, a, b):
            return super().__new__(cls)

    class Final(ValueError):
        def __init_subclass__(cls, **kwargs):
            raise TypeError("no subclasses")

    for cause in (MemoryError("m"), OSError(2, "gone"), Odd(1, 2), Final("f"),
                  UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")):
        error = RayTaskError("f", "Traceback...\n", cause).as_instanceof_cause()
        assert isinstance(error, RayTaskError)
        assert error.cause is cause


# An error class that cannot be rebuilt in the caller (two-argument __init__,
# unpicklable, importable only in the worker): tests/test_ray_exceptions_rest.py.


# -- generators that yield, then raise ----------------------------------------------

def _fail_after(n):
    for i in range(n):
        yield i
    raise KeyError(f"after {n}")


def test_streaming_generator_keeps_values_and_fails_at_the_failing_position(ray):
    stream = ray.remote(_fail_after).remote(2)
    refs = list(stream)  # the error is one more ref, not an error while iterating
    assert len(refs) == 3
    assert ray.get(refs[:2], timeout=60) == [0, 1]
    with pytest.raises(KeyError, match="after 2") as info:
        ray.get(refs[2], timeout=60)
    assert isinstance(info.value, RayTaskError)


def test_dynamic_generator_keeps_values_and_stores_the_error_last(ray):
    refs = list(ray.get(ray.remote(_fail_after).options(num_returns="dynamic").remote(3),
                        timeout=60))
    assert len(refs) == 4
    assert ray.get(refs[:3], timeout=60) == [0, 1, 2]
    with pytest.raises(KeyError, match="after 3"):
        ray.get(refs[3], timeout=60)


def test_fixed_num_returns_generator_keeps_the_values_before_the_error(ray):
    first, second, third = ray.remote(_fail_after).options(num_returns=3).remote(1)
    assert ray.get(first, timeout=60) == 0
    for ref in (second, third):
        with pytest.raises(KeyError, match="after 1"):
            ray.get(ref, timeout=60)

    @ray.remote
    class Maker:
        def make(self, n):
            yield from _fail_after(n)

    a, b = Maker.remote().make.options(num_returns=2).remote(1)
    assert ray.get(a, timeout=60) == 0
    with pytest.raises(KeyError):
        ray.get(b, timeout=60)
    # Yielding more than num_returns is still an error of the whole task.
    many = ray.remote(lambda: (yield from range(5))).options(num_returns=2).remote()
    with pytest.raises(ValueError, match="num_returns=2"):
        ray.get(many, timeout=60)


# -- infeasible resource requests stay pending ----------------------------------------

def test_infeasible_requests_stay_pending_warn_once_and_can_be_cancelled(ray_factory, capfd):
    from miniray.exceptions import TaskCancelledError
    from miniray.util import get_node_ip_address, state

    ray = ray_factory(num_cpus=2)
    node = f"node:{get_node_ip_address()}"
    assert ray.cluster_resources()[node] == 1.0
    assert ray.cluster_resources()["node:__internal_head__"] == 1.0

    @ray.remote
    def where():
        return "ran"

    # The usual way of pinning work to a node works.
    assert ray.get(where.options(resources={node: 0.01}).remote(), timeout=60) == "ran"
    too_many = [where.options(num_cpus=5).remote() for _ in range(3)]
    unknown = where.options(resources={"accelerator": 1}).remote()
    other_node = where.options(resources={"node:10.9.9.9": 1}).remote()
    pending = too_many + [unknown, other_node]
    ready, not_ready = ray.wait(pending, num_returns=len(pending), timeout=0.5)
    assert ready == [] and not_ready == pending
    # The node still runs what fits, behind the infeasible ones.
    assert ray.get([where.remote() for _ in range(4)], timeout=60) == ["ran"] * 4

    err = capfd.readouterr().err
    assert err.count("miniray: warning:") == 3, err  # once per shape, not per task
    assert "{'CPU': 5.0}" in err

    records = {r["task_id"]: r for r in state.list_tasks(limit=1000)}
    assert all(records[ref.hex()]["infeasible"] for ref in pending)
    from miniray import api
    from miniray._core.node import introspect

    demands = introspect.summary(api._runtime)["infeasible"]
    assert {"resources": {"CPU": 5.0}, "tasks": 3, "actors": 0} in demands
    # ... and in the dashboard's JSON.
    import json
    import urllib.request

    from tests.dashboard_util import local_url, running_dashboard

    with running_dashboard(api._runtime) as dashboard:
        url = local_url(dashboard)
        with urllib.request.urlopen(url + "/api/summary", timeout=30) as response:
            assert {"resources": {"CPU": 5.0}, "tasks": 3, "actors": 0} in \
                json.load(response)["infeasible"]
        with urllib.request.urlopen(url + "/api/tasks?limit=1000", timeout=30) as response:
            flagged = {t["task_id"] for t in json.load(response)["tasks"] if t["infeasible"]}
        assert flagged == {ref.hex() for ref in pending}

    for ref in pending:
        ray.cancel(ref)
    for ref in pending:
        with pytest.raises(TaskCancelledError):
            ray.get(ref, timeout=30)
    assert introspect.summary(api._runtime)["infeasible"] == []


def test_an_infeasible_actor_is_pending_creation_and_can_be_killed(ray_factory, capfd):
    from miniray.util import state

    ray = ray_factory(num_cpus=1)

    @ray.remote(num_cpus=4)
    class Big:
        def ping(self):
            return 1

    big = Big.remote()
    call = big.ping.remote()
    assert ray.wait([call], timeout=0.5) == ([], [call])
    actors = [a for a in state.list_actors() if a["class_name"] == "Big"]
    assert actors and actors[0]["state"] == "PENDING_CREATION" and actors[0]["infeasible"]
    assert "actor Big is infeasible" in capfd.readouterr().err
    ray.kill(big)
    with pytest.raises(miniray.exceptions.RayActorError):
        ray.get(call, timeout=30)
    assert ray.get(ray.remote(lambda: 3).remote(), timeout=60) == 3


def test_a_put_in_a_task_that_overflows_the_store_is_a_task_error_of_its_class(ray_factory):
    from miniray.exceptions import ObjectStoreFullError

    ray = ray_factory(num_cpus=1, object_store_memory=16 << 20)

    @ray.remote
    def put_too_much():
        return ray.put(b"x" * (32 << 20))

    with pytest.raises(ObjectStoreFullError) as info:
        ray.get(put_too_much.remote(), timeout=60)
    assert isinstance(info.value, RayTaskError) and "put_too_much" in str(info.value)
    assert ray.get(ray.remote(lambda: 4).remote(), timeout=60) == 4


def test_a_driver_of_a_head_is_warned_about_infeasible_work(head, capfd):  # noqa: F811
    from miniray.exceptions import TaskCancelledError
    from miniray.util import state

    miniray.init(address="auto")

    @miniray.remote(num_cpus=64)
    def huge():
        return 1

    ref = huge.remote()
    assert miniray.wait([ref], timeout=0.5) == ([], [ref])
    assert "of remote function" in capfd.readouterr().err  # printed here, not only in head.log
    assert [t["infeasible"] for t in state.list_tasks() if t["task_id"] == ref.hex()] == [True]
    assert miniray.cluster_resources()["node:127.0.0.1"] == 1.0
    import subprocess as sp

    status = sp.run([sys.executable, "-m", "miniray", "status"], env=head["env"],
                    capture_output=True, text=True, timeout=60).stdout
    assert "infeasible {'CPU': 64.0}: 1 task(s), 0 actor(s) pending" in status, status
    miniray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        miniray.get(ref, timeout=30)
    assert miniray.get(miniray.remote(lambda: 6).remote(), timeout=60) == 6
