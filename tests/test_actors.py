import asyncio
import os
import signal
import time

import numpy as np
import pytest

from miniray import exceptions


def test_sync_actor_keeps_state_and_order(ray):
    @ray.remote
    class Counter:
        def __init__(self, start):
            self.value = start

        def incr(self, by=1):
            self.value += by
            return self.value

        def get(self):
            return self.value

    counter = Counter.remote(10)
    refs = [counter.incr.remote() for _ in range(100)]
    assert ray.get(refs) == list(range(11, 111))
    assert ray.get(counter.get.remote()) == 110


def test_actor_direct_instantiation_and_unknown_method(ray):
    @ray.remote
    class A:
        def f(self):
            return 1

    with pytest.raises(TypeError, match=r"A.remote\(\)"):
        A()
    a = A.remote()
    with pytest.raises(AttributeError, match="has no method 'g'"):
        a.g.remote()


def test_handles_passed_to_tasks(ray):
    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n

        def get(self):
            return self.n

    @ray.remote
    def bump(counter, times):
        return ray.get([counter.incr.remote() for _ in range(times)])[-1]

    counter = Counter.remote()
    ray.get([bump.remote(counter, 10) for _ in range(4)])
    assert ray.get(counter.get.remote()) == 40


def test_async_actor_runs_calls_concurrently(ray):
    @ray.remote
    class Sleeper:
        async def nap(self, t):
            await asyncio.sleep(t)
            return t

    actor = Sleeper.remote()
    ray.get(actor.nap.remote(0))
    start = time.monotonic()
    assert ray.get([actor.nap.remote(0.3) for _ in range(20)]) == [0.3] * 20
    assert time.monotonic() - start < 3.0  # 20 x 0.3 s sequentially would be 6 s


def test_threaded_actor(ray):
    @ray.remote(max_concurrency=4)
    class Threaded:
        def work(self, t):
            time.sleep(t)
            return os.getpid()

    actor = Threaded.remote()
    ray.get(actor.work.remote(0))
    start = time.monotonic()
    pids = ray.get([actor.work.remote(0.4) for _ in range(4)])
    assert len(set(pids)) == 1
    assert time.monotonic() - start < 1.5


def test_named_actors(ray):
    @ray.remote
    class Store:
        def __init__(self):
            self.items = {}

        def set(self, k, v):
            self.items[k] = v

        def get(self, k):
            return self.items.get(k)

    store = Store.options(name="store").remote()
    ray.get(store.set.remote("a", 1))
    same = ray.get_actor("store")
    assert ray.get(same.get.remote("a")) == 1
    with pytest.raises(ValueError, match="already exists"):
        Store.options(name="store").remote()
    again = Store.options(name="store", get_if_exists=True).remote()
    assert ray.get(again.get.remote("a")) == 1
    with pytest.raises(ValueError, match="no such named actor"):
        ray.get_actor("missing")


def test_method_num_returns(ray):
    @ray.remote
    class Pair:
        @ray.method(num_returns=2)
        def both(self):
            return 1, 2

    a, b = Pair.remote().both.remote()
    assert ray.get([a, b]) == [1, 2]


def test_exception_in_method_keeps_actor_alive(ray):
    @ray.remote
    class Fragile:
        def fail(self):
            raise RuntimeError("bad call")

        def ok(self):
            return "ok"

    actor = Fragile.remote()
    with pytest.raises(RuntimeError, match="bad call"):
        ray.get(actor.fail.remote())
    assert ray.get(actor.ok.remote()) == "ok"


def test_exception_in_init_surfaces_at_first_call(ray):
    @ray.remote
    class Broken:
        def __init__(self):
            raise ValueError("cannot start")

        def f(self):
            return 1

    actor = Broken.remote()
    with pytest.raises(exceptions.ActorDiedError, match="cannot start"):
        ray.get(actor.f.remote(), timeout=30)


def test_actor_restarts_and_then_dies(ray):
    @ray.remote(max_restarts=1)
    class Mortal:
        def pid(self):
            return os.getpid()

    actor = Mortal.remote()
    first = ray.get(actor.pid.remote())
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 20
    second = None
    while time.monotonic() < deadline:
        try:
            second = ray.get(actor.pid.remote(), timeout=10)
            break
        except exceptions.ActorDiedError:
            time.sleep(0.1)
    assert second is not None and second != first
    os.kill(second, signal.SIGKILL)
    time.sleep(0.5)
    with pytest.raises(exceptions.ActorDiedError, match="SIGKILL"):
        ray.get(actor.pid.remote(), timeout=10)


def test_max_task_retries_replays_inflight_call(ray, tmp_path):
    marker = tmp_path / "died"

    @ray.remote(max_restarts=1, max_task_retries=1)
    class Once:
        def risky(self, path):
            if not os.path.exists(path):
                open(path, "w").close()
                os._exit(1)
            return "second life"

    assert ray.get(Once.remote().risky.remote(str(marker)), timeout=30) == "second life"


def test_kill_actor(ray):
    @ray.remote
    class Victim:
        def ping(self):
            return "pong"

    actor = Victim.remote()
    assert ray.get(actor.ping.remote()) == "pong"
    ray.kill(actor)
    with pytest.raises(exceptions.ActorDiedError, match="killed"):
        ray.get(actor.ping.remote(), timeout=10)


def test_exit_actor(ray):
    @ray.remote(max_restarts=3)
    class Quitter:
        def quit(self):
            ray.actor.exit_actor()

        def ping(self):
            return 1

    import miniray.actor  # noqa: F401

    actor = Quitter.remote()
    ray.get(actor.quit.remote())
    time.sleep(0.3)
    with pytest.raises(exceptions.ActorDiedError, match="exit_actor"):
        ray.get(actor.ping.remote(), timeout=10)


def test_cancel_async_actor_call(ray):
    @ray.remote
    class Slow:
        async def wait(self):
            await asyncio.sleep(30)

    actor = Slow.remote()
    ref = actor.wait.remote()
    time.sleep(0.5)
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=10)


def test_actor_with_numpy_state(ray):
    @ray.remote
    class ParameterServer:
        def __init__(self, n):
            self.params = np.zeros(n)

        def apply(self, grad):
            self.params += grad
            return self.params.copy()

    ps = ParameterServer.remote(1_000_000)
    grad = ray.put(np.ones(1_000_000))
    for _ in range(3):
        out = ps.apply.remote(grad)
    assert ray.get(out)[0] == 3.0


async def test_async_actor_awaits_other_refs(ray):
    @ray.remote
    def double(x):
        return 2 * x

    @ray.remote
    class Gatherer:
        async def total(self, n):
            refs = [double.remote(i) for i in range(n)]
            return sum(await asyncio.gather(*refs))

    actor = Gatherer.remote()
    assert await actor.total.remote(10) == 90


def test_actor_without_handles_exits_after_its_queue_drains(ray):
    @ray.remote
    class Worker:
        def pid(self):
            return os.getpid()

        def slow(self):
            time.sleep(0.5)
            return "done"

    actor = Worker.remote()
    pid = ray.get(actor.pid.remote())
    result = actor.slow.remote()
    del actor  # no handle left, but a call is still running
    assert ray.get(result, timeout=10) == "done"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the actor process outlived its last handle")


def test_concurrency_groups_limit_each_group_on_its_own(ray):
    @ray.remote(concurrency_groups={"io": 2, "compute": 1})
    class Service:
        def __init__(self):
            import threading

            self.lock = threading.Lock()
            self.running = {}
            self.peak = {}

        def _run(self, group, seconds):
            import time

            with self.lock:
                self.running[group] = self.running.get(group, 0) + 1
                self.peak[group] = max(self.peak.get(group, 0), self.running[group])
            time.sleep(seconds)
            with self.lock:
                self.running[group] -= 1

        @ray.method(concurrency_group="io")
        def io(self, seconds):
            self._run("io", seconds)

        @ray.method(concurrency_group="compute")
        def compute(self, seconds):
            self._run("compute", seconds)

        def plain(self, seconds):
            self._run("default", seconds)

        def peaks(self):
            return dict(self.peak)

    service = Service.remote()
    assert ray.get(service.peaks.remote()) == {}  # started
    slow = [service.io.remote(0.4) for _ in range(4)] + [
        service.compute.remote(0.2) for _ in range(3)]
    # The default group has threads of its own: not queued behind the others.
    ready, _ = ray.wait([service.peaks.remote()], timeout=0.3)
    assert ready
    # A call can be put in another group, as in Ray.
    slow += [service.plain.options(concurrency_group="io").remote(0.4) for _ in range(2)]
    ray.get(slow)
    # Two "default" calls at once: they ran in "io" (the default group runs one).
    assert ray.get(service.peaks.remote()) == {"io": 2, "compute": 1, "default": 2}

    with pytest.raises(ValueError, match="no concurrency group 'nope'"):
        ray.get(service.plain.options(concurrency_group="nope").remote(0))


def test_concurrency_groups_of_async_actors_and_bad_declarations(ray):
    @ray.remote(concurrency_groups={"io": 3})
    class AsyncService:
        def __init__(self):
            self.running = 0
            self.peak = 0

        @ray.method(concurrency_group="io")
        async def fetch(self):
            import asyncio

            self.running += 1
            self.peak = max(self.peak, self.running)
            await asyncio.sleep(0.1)
            self.running -= 1

        async def peak_seen(self):
            return self.peak

    service = AsyncService.remote()
    ray.get([service.fetch.remote() for _ in range(9)])
    assert ray.get(service.peak_seen.remote()) == 3

    @ray.remote
    class Undeclared:
        @ray.method(concurrency_group="io")
        def f(self):
            return 1

    with pytest.raises(ValueError, match="concurrency group 'io'"):
        Undeclared.remote()
    with pytest.raises(ValueError, match="ints >= 1"):
        Undeclared.options(concurrency_groups={"io": 0}).remote()
    assert ray.get(Undeclared.options(concurrency_groups={"io": 1}).remote().f.remote()) == 1


def test_retry_exceptions_declared_on_an_actor_method(ray):
    @ray.remote(max_task_retries=2)
    class Flaky:
        def __init__(self):
            self.calls = 0

        @ray.method(retry_exceptions=True)
        def once(self):
            self.calls += 1
            if self.calls < 2:
                raise ValueError("first call fails")
            return self.calls

        def plain(self):
            raise ValueError("not retried")

    flaky = Flaky.remote()
    assert ray.get(flaky.once.remote()) == 2
    with pytest.raises(ValueError, match="not retried"):
        ray.get(flaky.plain.remote())
    # A list of exception classes: only those are retried.
    with pytest.raises(ValueError, match="first call fails"):
        ray.get(Flaky.remote().once.options(retry_exceptions=[KeyError]).remote())
    assert ray.get(Flaky.remote().once.options(retry_exceptions=[ValueError]).remote()) == 2
