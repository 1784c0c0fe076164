"""Ray Core names from issue #20, each tested for its behaviour: runtime context,
actor built-ins, async constructors, generators in wait, ray.cloudpickle, util helpers."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time

import pytest

import miniray
from miniray import exceptions


def test_runtime_context_node_id_and_ids(ray):
    context = ray.get_runtime_context()
    assert context.node_id == context.get_node_id()
    assert context.job_id == context.get_job_id()
    assert context.task_id is None and context.actor_id is None

    @ray.remote
    def where():
        c = miniray.get_runtime_context()
        return c.node_id, c.task_id, c.is_canceled()

    node_id, task_id, canceled = ray.get(where.remote())
    assert node_id == context.node_id  # one node: the same id everywhere
    assert task_id is not None and canceled is False
    with pytest.raises(RuntimeError, match="driver"):
        context.is_canceled()


def test_is_canceled_true_in_a_task_after_cancel(ray, tmp_path):
    started, report = tmp_path / "started", tmp_path / "report"

    @ray.remote
    def long_task(started, report):
        open(started, "w").close()
        try:
            for _ in range(400):
                time.sleep(0.05)
        except exceptions.TaskCancelledError:
            # Cleanup code may ask why it stopped.
            with open(report, "w") as f:
                f.write(str(miniray.get_runtime_context().is_canceled()))
            raise
        return "finished"

    ref = long_task.remote(str(started), str(report))
    deadline = time.monotonic() + 20
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=20)
    assert report.read_text() == "True"


def test_is_canceled_in_an_async_actor_method(ray):
    @ray.remote
    class Service:
        def __init__(self):
            self.seen = None
            self.started = asyncio.Event()

        async def wait_started(self):
            await self.started.wait()

        async def work(self):
            self.started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.seen = miniray.get_runtime_context().is_canceled()
                raise

        async def seen_flag(self):
            return self.seen

    service = Service.remote()
    ref = service.work.remote()
    ray.get(service.wait_started.remote(), timeout=20)
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=20)
    assert ray.get(service.seen_flag.remote(), timeout=20) is True


def test_ray_ready_and_ray_call(ray):
    @ray.remote
    class Slow:
        def __init__(self):
            time.sleep(0.3)
            self.value = 41

    actor = Slow.remote()
    assert ray.get(actor.__ray_ready__.remote(), timeout=20) is True
    assert ray.get(actor.__ray_call__.remote(lambda self, x: self.value + x, 1)) == 42

    @ray.remote
    class Broken:
        def __init__(self):
            raise ValueError("constructor failed")

    with pytest.raises(exceptions.RayActorError):
        ray.get(Broken.remote().__ray_ready__.remote(), timeout=20)


def test_async_init_runs_before_any_method(ray):
    @ray.remote
    class Connection:
        async def __init__(self, delay):
            self.log = ["init start"]
            await asyncio.sleep(delay)
            self.loop = asyncio.get_running_loop()
            # A task started in the constructor runs on the loop the methods use.
            self.background = asyncio.get_running_loop().create_task(asyncio.sleep(0))
            self.log.append("init done")

        async def call(self):
            self.log.append("call")
            await self.background
            return self.log, self.loop is asyncio.get_running_loop()

    actor = Connection.remote(0.3)
    log, same_loop = ray.get(actor.call.remote(), timeout=20)
    assert log == ["init start", "init done", "call"]
    assert same_loop

    @ray.remote
    def five():
        return 5

    @ray.remote
    class AwaitsRefs:
        async def __init__(self, refs):
            self.value = await refs[0] + await miniray.get(five.remote())

        async def get(self):
            return self.value

    assert ray.get(AwaitsRefs.remote([ray.put(3)]).get.remote(), timeout=20) == 8

    @ray.remote
    class Failing:
        async def __init__(self):
            await asyncio.sleep(0)
            raise KeyError("no database")

        async def call(self):
            return 1

    with pytest.raises(exceptions.RayActorError, match="no database"):
        ray.get(Failing.remote().call.remote(), timeout=20)


def test_enable_task_events_false_keeps_calls_out_of_the_state_api(ray):
    from miniray.util import state

    @ray.remote
    class Worker:
        @miniray.method(enable_task_events=False)
        def quiet(self):
            return "quiet"

        def loud(self):
            return "loud"

    @ray.remote(enable_task_events=False)
    def quiet_task():
        return "task"

    @ray.remote(enable_task_events=False)
    class QuietActor:
        def call(self):
            return "quiet actor"

    worker = Worker.remote()
    assert ray.get([worker.quiet.remote(), worker.loud.remote()]) == ["quiet", "loud"]
    assert ray.get(quiet_task.remote()) == "task"
    assert ray.get(quiet_task.options(enable_task_events=True).remote()) == "task"
    assert ray.get(QuietActor.remote().call.remote()) == "quiet actor"
    names = [t["name"] for t in state.list_tasks(limit=1000)]
    assert "Worker.loud" in names
    assert sum(n.endswith("quiet_task") for n in names) == 1  # the True override
    assert "Worker.quiet" not in names and "QuietActor.call" not in names
    with pytest.raises(TypeError, match="enable_task_events"):
        miniray.method(enable_task_events="no")
    with pytest.raises(TypeError, match="enable_task_events"):
        quiet_task.options(enable_task_events=1).remote()


def test_dynamic_object_ref_generator(ray):
    @ray.remote(num_returns="dynamic")
    def split(n):
        for i in range(n):
            yield i * 10

    gen = ray.get(split.remote(3))
    assert isinstance(gen, miniray.DynamicObjectRefGenerator)
    assert [ray.get(ref) for ref in gen] == [0, 10, 20]


def test_wait_over_generators_is_ready_when_the_next_value_is(ray, tmp_path):
    gate = tmp_path / "gate"

    @ray.remote
    def gated(gate):
        yield "first"
        while not os.path.exists(gate):
            time.sleep(0.01)
        yield "second"

    @ray.remote
    def quick():
        yield 1

    slow_gen = gated.remote(str(gate))
    assert ray.get(next(slow_gen)) == "first"
    # The second value waits for the gate: not ready yet.
    ready, pending = ray.wait([slow_gen], timeout=0.3)
    assert ready == [] and pending == [slow_gen]
    gate.touch()
    ready, pending = ray.wait([slow_gen], timeout=20)
    assert ready == [slow_gen]
    assert ray.get(next(slow_gen)) == "second"
    # A generator that has ended is ready too: next() stops at once.
    ready, _ = ray.wait([slow_gen], timeout=20)
    assert ready == [slow_gen]
    with pytest.raises(StopIteration):
        next(slow_gen)

    # Generators and refs mixed, results in input order.
    quick_gen = quick.remote()
    ref = ray.put(5)
    ready, pending = ray.wait([quick_gen, ref], num_returns=2, timeout=20)
    assert ready == [quick_gen, ref] and pending == []
    with pytest.raises(ValueError, match="num_returns"):
        ray.wait([quick_gen], num_returns=2)


async def test_wait_over_generators_in_async_code(ray):
    @ray.remote
    def count(n):
        yield from range(n)

    gen = count.remote(2)
    ready, pending = await ray.wait([gen], timeout=20)
    assert ready == [gen]
    assert await (await gen.__anext__()) == 0


def test_cloudpickle_is_rays_name_for_the_serializer():
    import miniray.cloudpickle as cloudpickle

    offset = 3
    data = cloudpickle.dumps(lambda x: x + offset)
    assert cloudpickle.loads(data)(1) == 4
    lock = threading.Lock()
    with pytest.raises(TypeError, match="lock"):
        cloudpickle.dumps_debug(lambda: lock)


def test_inspect_serializability_names_the_culprit():
    lock = threading.Lock()

    def uses_lock():
        return lock

    ok, failures = miniray.util.inspect_serializability(uses_lock, print_file=io.StringIO())
    assert not ok
    assert {f.name for f in failures} == {"lock"}
    assert miniray.util.inspect_serializability([1, 2], print_file=io.StringIO()) == (True,
                                                                                       set())


def test_as_completed_map_unordered_and_named_actors(ray):
    @ray.remote
    def square(x):
        time.sleep(0.01 * (5 - x))
        return x * x

    assert sorted(miniray.util.as_completed([square.remote(i) for i in range(5)],
                                            chunk_size=2)) == [0, 1, 4, 9, 16]
    assert sorted(miniray.util.map_unordered(square, range(5), backpressure_size=2,
                                             chunk_size=1)) == [0, 1, 4, 9, 16]

    @ray.remote
    class Named:
        def ping(self):
            return "pong"

    actor = Named.options(name="registry").remote()
    ray.get(actor.ping.remote())
    assert miniray.util.list_named_actors() == ["registry"]
    assert miniray.util.list_named_actors(all_namespaces=True) == [
        {"name": "registry", "namespace": ray.get_runtime_context().namespace}]
    assert miniray.util.get_node_ip_address() == "127.0.0.1"


class _Point:
    def __init__(self, x):
        self.x = x

    def __reduce__(self):
        raise TypeError("a _Point is not picklable on its own")


def test_register_serializer_makes_a_class_travel(ray):
    @ray.remote
    def read(point):
        return point.x

    with pytest.raises(Exception, match="not picklable"):
        ray.put(_Point(1))
    miniray.util.register_serializer(_Point, serializer=lambda p: p.x,
                                     deserializer=lambda x: _Point(x * 10))
    try:
        assert ray.get(read.remote(_Point(4))) == 40
    finally:
        miniray.util.deregister_serializer(_Point)
    with pytest.raises(Exception, match="not picklable"):
        ray.put(_Point(1))
    with pytest.raises(ValueError, match="no serializer"):
        miniray.util.deregister_serializer(_Point)


def test_log_once():
    from miniray.util import helpers

    key = f"test-key-{time.monotonic()}"
    assert miniray.util.log_once(key) is True
    assert miniray.util.log_once(key) is False
    assert helpers._log_once_disabled is False


def test_state_getters_and_summaries(ray):
    from miniray.util import state

    @ray.remote
    class Holder:
        def ping(self):
            return miniray.get_runtime_context().get_actor_id()

    holder = Holder.remote()
    actor_id = ray.get(holder.ping.remote())
    assert state.get_actor(actor_id)["class_name"] == "Holder"
    assert state.get_actor("00" * 16) is None
    assert state.summarize_actors() == {"Holder": {"ALIVE": 1}}
    task = state.list_tasks(filters=[("name", "=", "Holder.ping")])[0]
    assert state.get_task(task["task_id"])["name"] == "Holder.ping"
    node_id = ray.get_runtime_context().get_node_id()
    assert state.get_node(node_id)["alive"] is True
    worker = state.list_workers()[0]
    assert state.get_worker(worker["worker_id"])["pid"] == worker["pid"]

    import numpy as np

    big = ray.put(np.zeros(100_000))
    assert state.get_objects(big.hex())[0]["size"] >= 800_000
    assert state.summarize_objects()["total_objects"] >= 1

    group = miniray.util.placement_group([{"CPU": 1}], name="g")
    ray.get(group.ready())
    groups = state.list_placement_groups(filters=[("name", "=", "g")])
    assert [g["state"] for g in groups] == ["CREATED"]
    assert state.get_placement_group(groups[0]["placement_group_id"])["strategy"] == "PACK"
    miniray.util.remove_placement_group(group)


def test_duplicate_actor_name_raises_actor_already_exists(ray):
    @ray.remote
    class Named:
        pass

    first = Named.options(name="only-one").remote()
    with pytest.raises(exceptions.ActorAlreadyExistsError, match="already exists") as info:
        Named.options(name="only-one").remote()
    assert isinstance(info.value, ValueError) and isinstance(info.value, exceptions.RayError)
    del first


def test_state_logs(ray):
    from miniray.util import state

    @ray.remote
    class Talker:
        def say(self, text):
            print(text, flush=True)
            return miniray.get_runtime_context().get_actor_id()

    actor = Talker.remote()
    actor_id = ray.get(actor.say.remote("hello from the actor"))
    files = state.list_logs()
    assert files["worker_out"] and all(n.endswith(".out") for n in files["worker_out"])
    assert all(n.endswith(".err") for n in state.list_logs(glob_filter="*.err")["worker_err"])
    deadline = time.monotonic() + 20
    text = ""
    while "hello from the actor" not in text and time.monotonic() < deadline:
        text = "".join(state.get_log(actor_id=actor_id, tail=50))
        time.sleep(0.05)
    assert "hello from the actor" in text
    with pytest.raises(ValueError, match="exactly one"):
        state.get_log()


def test_wait_over_generators_inside_a_task_says_what_to_do(ray):
    @ray.remote
    def produce():
        yield 1

    @ray.remote
    def consumer():
        gen = produce.remote()
        try:
            miniray.wait([gen], timeout=5)
        except TypeError as exc:
            return str(exc), miniray.get(next(gen))
        return "no error", None

    message, first = ray.get(consumer.remote(), timeout=30)
    assert "next(generator)" in message and first == 1
