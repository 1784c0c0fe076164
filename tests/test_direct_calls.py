"""Direct calls (miniray/_core/direct.py): the driver's thread writes a call on
the worker's direct socket and reads the reply itself.

Whether a call went direct is read from the driver's counters, never from
timings. Real workers throughout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from miniray import exceptions
from miniray._core.refs import get_client


def stats():
    return dict(get_client().direct.stats)


def delta(before, key):
    return get_client().direct.stats[key] - before[key]


def lease_a_worker(ray):
    """Until the workers are up the node has none to lease: calls take the
    routed path. Returns once this thread's calls go direct."""
    noop = ray.remote(lambda: None)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        before = stats()
        ray.get(noop.remote())
        if delta(before, "tasks"):
            return
        time.sleep(0.05)
    raise AssertionError("no direct call within 20 s")


def test_simple_task_actor_call_and_await_go_direct(ray):
    @ray.remote
    def square(x):
        return x * x

    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def add(self, k):
            self.n += k
            return self.n

    counter = Counter.remote()
    ray.get(counter.add.remote(0))
    lease_a_worker(ray)
    before = stats()
    assert [ray.get(square.remote(i)) for i in range(50)] == [i * i for i in range(50)]
    assert delta(before, "tasks") == 50
    assert [ray.get(counter.add.remote(1)) for _ in range(30)] == list(range(1, 31))
    assert delta(before, "actor_calls") == 30

    async def main():
        return [await square.remote(i) for i in range(20)]

    assert asyncio.run(main()) == [i * i for i in range(20)]
    assert delta(before, "tasks") == 70
    # The node records them (events and counters), off the calls' path.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        counters = get_client().generic("stats")["counters"]
        if counters.get("tasks_direct", 0) >= 100:
            break
        time.sleep(0.05)
    assert counters["tasks_direct"] >= 100
    from miniray.util import state

    names = {t["name"] for t in state.list_tasks(limit=10_000)}
    assert any(name.endswith("square") for name in names)


def test_unusual_calls_take_the_routed_path(ray):
    @ray.remote
    def ident(x=None):
        return x

    @ray.remote
    def pair():
        return 1, 2

    @ray.remote
    def gen():
        yield 1
        yield 2

    @ray.remote
    class Async:
        async def m(self):
            return "async"

    @ray.remote(max_concurrency=2)
    class Threaded:
        def m(self):
            return "threaded"

    slow = ray.remote(lambda: time.sleep(0.3) or 5)
    not_ready = slow.remote()
    a, t = Async.remote(), Threaded.remote()
    ray.get([a.m.remote(), t.m.remote()])
    before = stats()
    assert ray.get(ident.remote(not_ready)) == 5  # a ref argument (not ready yet)
    assert ray.get(ident.remote(ray.put(3))) == 3  # a ref argument (ready)
    assert ray.get(ident.options(num_cpus=2).remote(1)) == 1  # other resources
    assert ray.get(ident.options(num_cpus=0.5).remote(1)) == 1
    assert ray.get(ident.options(runtime_env={"env_vars": {"A": "1"}}).remote(1)) == 1
    assert ray.get(ident.options(max_calls=1).remote(1)) == 1
    assert ray.get(ident.options(retry_exceptions=True).remote(1)) == 1
    assert ray.get(ident.remote(x=1)) == 1  # keyword arguments
    assert ray.get(pair.options(num_returns=2).remote()) == [1, 2]
    assert list(ray.get(r) for r in gen.remote()) == [1, 2]
    assert ray.get(a.m.remote()) == "async"
    assert ray.get(t.m.remote()) == "threaded"
    pg = ray.util.placement_group([{"CPU": 1}])
    ray.get(pg.ready())
    from miniray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    assert ray.get(ident.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
        pg)).remote(1)) == 1
    ray.util.remove_placement_group(pg)
    assert delta(before, "tasks") == 0 and delta(before, "actor_calls") == 0


def test_direct_switch_off(ray_factory, monkeypatch):
    monkeypatch.setenv("MINIRAY_DIRECT", "0")
    ray = ray_factory(num_cpus=2)
    assert get_client().direct is None
    assert ray.get(ray.remote(lambda: 7).remote()) == 7


def test_worker_killed_mid_direct_call_is_retried_or_reported(ray, tmp_path):
    marker = tmp_path / "died"

    @ray.remote(max_retries=1)
    def die_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return "again"

    lease_a_worker(ray)
    before = stats()
    assert ray.get(die_once.remote(str(marker))) == "again"
    assert delta(before, "lost") == 1

    @ray.remote(max_retries=0)
    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    lease_a_worker(ray)  # the dead worker's lease went with it
    with pytest.raises(exceptions.WorkerCrashedError, match="SIGKILL|signal 9|killed"):
        ray.get(die.remote())
    assert delta(before, "lost") == 2
    # The node is whole again: workers replaced, direct calls work.
    assert ray.get(ray.remote(lambda: 1).remote()) == 1
    lease_a_worker(ray)


def test_actor_killed_mid_direct_call(ray):
    @ray.remote
    class Victim:
        def pid(self):
            return os.getpid()

        def hang(self):
            time.sleep(30)

    victim = Victim.remote()
    pid = ray.get(victim.pid.remote())
    before = stats()
    ref = victim.hang.remote()
    assert delta(before, "actor_calls") == 1
    threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(ref, timeout=20)
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(victim.pid.remote(), timeout=20)

    @ray.remote(max_restarts=1, max_task_retries=1)
    class Phoenix:
        def pid(self):
            return os.getpid()

        def die_once(self, path):
            if not os.path.exists(path):
                open(path, "w").close()
                os._exit(1)
            return "retried"

    phoenix = Phoenix.remote()
    ray.get(phoenix.pid.remote())
    path = os.path.join(get_client().runtime.spill_dir, "phoenix")
    before = stats()
    assert ray.get(phoenix.die_once.remote(path), timeout=30) == "retried"
    assert delta(before, "actor_calls") == 1 and delta(before, "lost") == 1


def test_actor_call_order_mixing_direct_and_routed_calls(ray):
    @ray.remote
    class Log:
        def __init__(self):
            self.seen = []

        def add(self, i, _dep=None):
            self.seen.append(i)
            return i

        def seen_list(self):
            return self.seen

    @ray.remote
    def later(seconds):
        time.sleep(seconds)
        return None

    log = Log.remote()
    ray.get(log.seen_list.remote())
    before = stats()
    refs = []
    for i in range(60):
        if i % 7 == 3:  # a routed call waiting for a ref argument
            refs.append(log.add.remote(i, later.remote(0.05)))
        else:
            refs.append(log.add.remote(i))
        if i % 5 == 0:
            ray.get(refs[-1])  # lets the next calls go direct again
    assert ray.get(refs) == list(range(60))
    assert ray.get(log.seen_list.remote()) == list(range(60))
    assert delta(before, "actor_calls") > 5
    assert delta(before, "routed") > 5


def test_cancel_a_direct_call(ray):
    @ray.remote
    def sleepy():
        time.sleep(30)

    lease_a_worker(ray)
    before = stats()
    ref = sleepy.remote()
    assert delta(before, "tasks") == 1
    time.sleep(0.2)
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=20)
    ref = sleepy.remote()
    assert delta(before, "tasks") == 2
    time.sleep(0.2)
    ray.cancel(ref, force=True)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=20)
    assert ray.get(ray.remote(lambda: "fine").remote()) == "fine"


def test_get_timeout_then_value_of_a_direct_call(ray):
    @ray.remote
    def slow():
        time.sleep(0.5)
        return "late"

    ref = slow.remote()
    with pytest.raises(exceptions.GetTimeoutError):
        ray.get(ref, timeout=0.05)
    assert ray.get(ref, timeout=20) == "late"


def test_direct_results_passed_on_and_stored(ray):
    @ray.remote
    def make(n):
        return list(range(n))

    @ray.remote
    def total(xs):
        return sum(xs)

    lease_a_worker(ray)
    before = stats()
    first = make.remote(10)
    assert delta(before, "tasks") == 1
    assert ray.get(total.remote(first)) == 45  # read by the node: nobody called get
    boxed = ray.put([make.remote(5)])
    inner = ray.get(boxed)[0]
    assert ray.get(inner) == [0, 1, 2, 3, 4]
    ready, _ = ray.wait([make.remote(3)], timeout=20)
    assert ray.get(ready[0]) == [0, 1, 2]
    # A result too large to travel inline comes back through the node.
    big = make.remote(200_000)
    assert len(ray.get(big)) == 200_000
    # A value nobody reads is collected by the node; the lease is freed.
    make.remote(1)
    time.sleep(0.3)
    assert ray.get(make.remote(2)) == [0, 1]


def test_direct_calls_from_several_threads(ray):
    @ray.remote
    def add(a, b):
        return a + b

    @ray.remote
    class Acc:
        def echo(self, x):
            return x

    acc = Acc.remote()
    ray.get(acc.echo.remote(0))
    errors = []

    def work(k):
        try:
            for i in range(150):
                assert ray.get(add.remote(k, i)) == k + i
                assert ray.get(acc.echo.remote((k, i))) == (k, i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    before = stats()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert delta(before, "tasks") + delta(before, "actor_calls") > 0


def test_batches_still_use_every_worker(ray):
    @ray.remote
    def pid():
        time.sleep(0.05)
        return os.getpid()

    ray.get(pid.remote())  # this thread holds a lease now
    assert len(set(ray.get([pid.remote() for _ in range(20)]))) == 2


async def test_node_on_the_callers_loop_routes_its_calls_and_threads_go_direct():
    import miniray

    from .conftest import assert_nothing_leaked

    miniray.init(num_cpus=2, include_dashboard=False)  # inside async def: this loop
    try:
        @miniray.remote
        def f(x):
            return x + 1

        before = stats()
        # The loop's own thread never waits on a worker: its calls are routed.
        assert [await f.remote(i) for i in range(20)] == list(range(1, 21))
        assert delta(before, "tasks") == 0

        def in_a_thread():
            deadline = time.monotonic() + 20
            out = []
            while time.monotonic() < deadline and delta(before, "tasks") < 20:
                out.append(miniray.get(f.remote(len(out))))
            return out

        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(None, in_a_thread)
        assert out == list(range(1, len(out) + 1))
        assert delta(before, "tasks") >= 20
    finally:
        miniray.shutdown()
    assert_nothing_leaked(os.getpid())
