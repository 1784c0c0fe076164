import time

import pytest

from miniray.exceptions import GetTimeoutError
from miniray.util import ActorPool, Queue
from miniray.util.queue import Empty, Full


def test_actor_pool_map_orders_and_unordered(ray):
    @ray.remote
    class Doubler:
        def double(self, x):
            time.sleep(0.01 * (x % 3))
            return 2 * x

    pool = ActorPool([Doubler.remote() for _ in range(2)])
    assert list(pool.map(lambda a, v: a.double.remote(v), range(20))) == [2 * i for i in range(20)]
    out = list(pool.map_unordered(lambda a, v: a.double.remote(v), range(20)))
    assert sorted(out) == [2 * i for i in range(20)]
    pool.submit(lambda a, v: a.double.remote(v), 5)
    assert pool.has_next()
    assert pool.get_next() == 10
    assert not pool.has_next()
    with pytest.raises(StopIteration):
        pool.get_next()


def test_actor_pool_timeout_and_push_pop(ray):
    @ray.remote
    class Slow:
        def run(self, t):
            time.sleep(t)
            return t

    a, b = Slow.remote(), Slow.remote()
    pool = ActorPool([a])
    pool.submit(lambda actor, v: actor.run.remote(v), 1.0)
    with pytest.raises(GetTimeoutError):
        pool.get_next_unordered(timeout=0.05)
    pool.push(b)
    with pytest.raises(ValueError):
        pool.push(b)
    assert pool.pop_idle() is b
    assert pool.get_next() == 1.0


def test_queue_between_tasks(ray):
    queue = Queue(maxsize=5)

    @ray.remote
    def producer(q, n):
        for i in range(n):
            q.put(i)
        return "done"

    @ray.remote
    def consumer(q, n):
        return [q.get(timeout=10) for _ in range(n)]

    consumed = consumer.remote(queue, 20)
    assert ray.get(producer.remote(queue, 20)) == "done"
    assert ray.get(consumed) == list(range(20))
    assert queue.empty() and len(queue) == 0


def test_queue_empty_full_and_batches(ray):
    queue = Queue(maxsize=2)
    with pytest.raises(Empty):
        queue.get_nowait()
    with pytest.raises(Empty):
        queue.get(timeout=0.05)
    queue.put_nowait_batch([1, 2])
    assert queue.full()
    with pytest.raises(Full):
        queue.put_nowait(3)
    with pytest.raises(Full):
        queue.put(3, timeout=0.05)
    assert queue.get_nowait_batch(2) == [1, 2]
    with pytest.raises(ValueError):
        Queue(maxsize=-1)
    queue.shutdown()


async def test_queue_async(ray):
    queue = Queue()
    await queue.put_async("a")
    assert await queue.get_async(timeout=5) == "a"
