"""Generator tasks and actor methods (ObjectRefGenerator), and refs a task
creates with put() and returns inside its value."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from miniray import exceptions


def _first_then_wait_for(path, first="first"):
    """Yield ``first``, then whether ``path`` appeared within 20 s: true only if
    whoever reads the values got the first one before the generator ended."""
    yield first
    deadline = time.monotonic() + 20
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield os.path.exists(path)


def test_refs_put_inside_a_task_and_returned_stay_alive(ray):
    # The worker used to drop its refs before the node learnt that the return
    # value holds them: get() of a returned ref then raised ObjectLostError.
    @ray.remote
    def make(n):
        return [ray.put(np.full(100_000, i)) for i in range(n)] + [ray.put(i) for i in range(n)]

    refs = ray.get(make.remote(2))
    values = ray.get(refs)
    assert [v[0] if isinstance(v, np.ndarray) else v for v in values] == [0, 1, 0, 1]

    @ray.remote
    class Maker:
        def make(self):
            return {"ref": ray.put("kept")}

    assert ray.get(ray.get(Maker.remote().make.remote())["ref"]) == "kept"


def test_generator_task_yields_refs_in_order_then_the_error(ray):
    @ray.remote
    def gen(n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise KeyError(f"item {i}")
            yield np.full(200_000, i) if i % 2 else i

    stream = gen.remote(4)
    assert isinstance(stream, ray.ObjectRefGenerator)
    values = [ray.get(ref) for ref in stream]
    assert values[0] == 0 and values[1][0] == 1 and values[2] == 2 and values[3][0] == 3
    assert ray.get(stream.completed()) is not None

    got = []
    with pytest.raises(KeyError, match="item 2") as info:
        for ref in gen.remote(4, fail_at=2):
            got.append(ray.get(ref))
    assert isinstance(info.value, exceptions.RayTaskError)
    assert got[0] == 0 and got[1][0] == 1 and len(got) == 2

    # num_returns="dynamic": one ref whose value is the generator of refs.
    dynamic = ray.get(gen.options(num_returns="dynamic").remote(3))
    assert [ray.get(r) if i % 2 == 0 else ray.get(r)[0] for i, r in enumerate(dynamic)] == [0, 1, 2]
    # A static num_returns still splits the yielded values into that many refs.
    assert ray.get(gen.options(num_returns=2).remote(2))[0] == 0

    @ray.remote
    def total(stream):  # the generator passed on to another task
        return sum(int(np.asarray(ray.get(r)).flat[0]) for r in stream)

    assert ray.get(total.remote(ray.get(gen.options(num_returns="dynamic").remote(4)))) == 6

    @ray.remote
    def plain():
        return 1

    with pytest.raises(TypeError, match="is for generator functions"):
        next(plain.options(num_returns="streaming").remote())


def test_generator_actor_methods_sync_and_async_actors(ray):
    @ray.remote
    class Source:
        def items(self, n):
            for i in range(n):
                yield i * 10

        @ray.method(num_returns="streaming")
        def one(self):
            yield "x"

    @ray.remote
    class AsyncSource:
        async def ping(self):
            return 1

        def items(self, n):
            yield from range(n)

    source = Source.remote()
    assert [ray.get(r) for r in source.items.remote(3)] == [0, 10, 20]
    assert [ray.get(r) for r in source.one.remote()] == ["x"]
    assert [ray.get(r) for r in AsyncSource.remote().items.remote(2)] == [0, 1]


async def test_async_for_over_a_generator_task(ray):
    @ray.remote
    def gen(n):
        yield from range(n)

    assert [await ref async for ref in gen.remote(3)] == [0, 1, 2]


def test_driver_takes_each_value_while_the_generator_still_runs(ray, tmp_path):
    flag = tmp_path / "go"

    @ray.remote
    def waits_for_the_caller(path):
        yield from _first_then_wait_for(path)

    stream = waits_for_the_caller.remote(str(flag))
    assert ray.get(next(stream)) == "first"
    flag.touch()
    assert ray.get(next(stream)) is True
    with pytest.raises(StopIteration):
        next(stream)

    dropped = waits_for_the_caller.remote(str(flag))
    next(dropped)
    del dropped  # dropped mid-way: the node lets go of what it held for the caller
    import gc

    gc.collect()
    runtime = ray.api._runtime
    deadline = time.monotonic() + 10
    while runtime.streams and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not runtime.streams


async def test_async_for_takes_values_as_they_come(ray, tmp_path):
    flag = tmp_path / "go"

    @ray.remote
    def waits(path):
        yield from _first_then_wait_for(path, first=1)

    got = []
    async for ref in waits.remote(str(flag)):
        got.append(await ref)
        flag.touch()
    assert got == [1, True]


def test_async_generator_methods_stream_from_async_actors(ray):
    @ray.remote
    class Tokens:
        def __init__(self):
            import asyncio

            self.go = asyncio.Event()

        async def release(self):
            self.go.set()

        async def stream(self, n, fail_at=None):
            import asyncio

            for i in range(n):
                if i == fail_at:
                    raise KeyError(f"token {i}")
                if i == 1:
                    # Only a caller that got token 0 before the end can release it.
                    await asyncio.wait_for(self.go.wait(), 20)
                yield np.full(100_000, i) if i == 2 else f"t{i}"

        async def fixed(self):
            yield 1
            yield 2

    actor = Tokens.remote()
    stream = actor.stream.remote(3)
    assert isinstance(stream, ray.ObjectRefGenerator)
    assert ray.get(next(stream)) == "t0"
    actor.release.remote()  # the method yielding token 1 is still running
    assert ray.get(next(stream)) == "t1"
    assert ray.get(next(stream))[0] == 2
    with pytest.raises(StopIteration):
        next(stream)

    got = []
    with pytest.raises(KeyError, match="token 1") as info:
        for ref in actor.stream.remote(3, fail_at=1):
            got.append(ray.get(ref))
    assert got == ["t0"] and isinstance(info.value, exceptions.RayTaskError)

    assert ray.get(actor.fixed.options(num_returns=2).remote()) == [1, 2]
    dynamic = ray.get(actor.fixed.options(num_returns="dynamic").remote())
    assert [ray.get(r) for r in dynamic] == [1, 2]


def test_sync_generators_of_async_and_threaded_actors_stream(ray, tmp_path):
    # They used to hand every value over at the end of the generator.
    @ray.remote
    class AsyncActor:
        async def ping(self):
            return 1

        def items(self, path):
            yield from _first_then_wait_for(path)

    @ray.remote(max_concurrency=2)
    class Threaded:
        def items(self, path):
            yield from _first_then_wait_for(path)

    for i, actor in enumerate((AsyncActor.remote(), Threaded.remote())):
        flag = tmp_path / f"go{i}"
        stream = actor.items.remote(str(flag))
        assert ray.get(next(stream)) == "first"
        flag.touch()
        assert ray.get(next(stream)) is True


async def test_async_for_over_an_async_generator_method(ray):
    @ray.remote
    class Counter:
        async def count(self, n):
            import asyncio

            for i in range(n):
                await asyncio.sleep(0)
                yield i

    assert [await ref async for ref in Counter.remote().count.remote(4)] == [0, 1, 2, 3]


def test_async_def_remote_functions_are_refused_with_the_fix(ray):
    async def coroutine():
        return 1

    async def agen():
        yield 1

    for fn in (coroutine, agen):
        with pytest.raises(ValueError, match="asyncio.run"):
            ray.remote(fn)


def test_a_task_consuming_a_generator_takes_each_value_as_it_comes(ray_factory, tmp_path):
    # One CPU: the consumer waiting for the next value must lend it to the producer.
    ray = ray_factory(num_cpus=1)

    @ray.remote
    def produce(path):
        yield from _first_then_wait_for(path)

    @ray.remote
    def consume(path):
        got = []
        for ref in produce.remote(path):  # it can only run on the CPU consume lends
            got.append(ray.get(ref))
            open(path, "w").close()
        return got

    @ray.remote
    class AsyncConsumer:
        async def consume(self, stream, path):
            got = []
            async for ref in stream:
                got.append(await ref)
                open(path, "w").close()
            return got

    flag = tmp_path / "go"
    assert ray.get(consume.remote(str(flag))) == ["first", True]
    flag2 = tmp_path / "go2"
    consumer = AsyncConsumer.remote()
    assert ray.get(consumer.consume.remote(produce.remote(str(flag2)), str(flag2))) == [
        "first", True]
