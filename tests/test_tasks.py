import asyncio
import os
import sys
import time

import numpy as np
import pytest

from miniray import exceptions


def test_remote_function_roundtrip(ray):
    @ray.remote
    def add(a, b=10):
        return a + b

    assert ray.get(add.remote(1)) == 11
    assert ray.get(add.remote(1, b=2)) == 3
    assert ray.get([add.remote(i) for i in range(100)]) == [i + 10 for i in range(100)]


def test_messages_larger_than_the_worker_receive_buffer(ray):
    # The worker reads into one reused 256 KiB buffer: a function whose
    # pickle is several times that, and a burst of tasks, arrive in pieces.
    table = os.urandom(1 << 20)

    @ray.remote
    def lookup(i):
        return table[i]

    assert ray.get([lookup.remote(i) for i in range(0, 1 << 20, 4099)]) == \
        [table[i] for i in range(0, 1 << 20, 4099)]


def test_calling_remote_function_directly_is_a_type_error(ray):
    @ray.remote
    def f():
        return 1

    with pytest.raises(TypeError, match=r"f.remote\(\)"):
        f()


def test_dag_resolves_refs_and_keeps_nested_refs(ray):
    @ray.remote
    def inc(x):
        return x + 1

    @ray.remote
    def kind(x):
        return type(x[0]).__name__

    ref = ray.put(1)
    for _ in range(50):
        ref = inc.remote(ref)
    assert ray.get(ref) == 51
    assert ray.get(kind.remote([inc.remote(1)])) == "ObjectRef"


def test_num_returns(ray):
    @ray.remote(num_returns=3)
    def three():
        return 1, 2, 3

    refs = three.remote()
    assert len(refs) == 3
    assert ray.get(refs) == [1, 2, 3]

    @ray.remote(num_returns=2)
    def wrong():
        return 1

    a, b = wrong.remote()
    with pytest.raises(exceptions.RayTaskError, match="num_returns=2"):
        ray.get(a)


def test_exception_carries_remote_traceback_and_original_type(ray):
    @ray.remote
    def boom(x):
        raise KeyError(f"missing {x}")

    with pytest.raises(KeyError) as info:
        ray.get(boom.remote(7))
    err = info.value
    assert isinstance(err, exceptions.RayTaskError)
    assert "missing 7" in str(err)
    assert "boom" in err.traceback_str
    assert "raise KeyError" in err.traceback_str


def test_remote_traceback_names_the_script_file_and_source_line(tmp_path):
    # A function defined in __main__ travels by value (cloudpickle >= 3.1.3
    # renames its code "<dynamic-code>"): the traceback must still show the
    # user's file and the failing line.
    import subprocess

    script = tmp_path / "user_script.py"
    script.write_text(
        "import miniray as ray\n"
        "ray.init(num_cpus=1, include_dashboard=False)\n"
        "@ray.remote\n"
        "def boom(x):\n"
        "    return helper(x)\n"
        "def helper(x):\n"
        "    raise KeyError(f'missing {x}')  # marker-line\n"
        "try:\n"
        "    ray.get(boom.remote(7))\n"
        "except KeyError as e:\n"
        "    print(e.traceback_str)\n"
        "ray.shutdown()\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert f'File "{script}", line 5, in boom' in out.stdout, out.stdout
    assert f'File "{script}", line 7, in helper' in out.stdout, out.stdout
    assert "# marker-line" in out.stdout
    assert "<dynamic-code>" not in out.stdout


def test_remote_traceback_quotes_source_known_only_to_linecache(ray):
    # Notebook cells and exec'd code have no file on disk: their source is in
    # the driver's linecache, and the worker's traceback quotes it from there.
    import linecache

    filename = "<cell-for-miniray-test-41>"
    source = "def cell_fn(x):\n    raise ValueError('cell failed ' + str(x))  # from-the-cell\n"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {}
    exec(compile(source, filename, "exec"), namespace)
    cell_fn = ray.remote(namespace["cell_fn"])

    with pytest.raises(ValueError) as info:
        ray.get(cell_fn.remote(3))
    assert f'File "{filename}", line 2, in cell_fn' in info.value.traceback_str
    assert "# from-the-cell" in info.value.traceback_str


def test_error_propagates_through_dependencies(ray):
    @ray.remote
    def boom():
        raise ValueError("upstream")

    @ray.remote
    def use(x):
        return x

    with pytest.raises(ValueError, match="upstream"):
        ray.get(use.remote(boom.remote()))


def test_put_get_large_numpy_is_zero_copy(ray):
    array = np.arange(2_000_000, dtype=np.float64)
    ref = ray.put(array)
    out = ray.get(ref)
    assert np.array_equal(out, array)
    assert not out.flags.writeable  # a read-only view of shared memory
    assert not np.shares_memory(out, array)

    @ray.remote
    def total(a):
        assert not a.flags.writeable
        return float(a.sum())

    assert ray.get(total.remote(ref)) == float(array.sum())
    # A large argument passed by value goes through the store automatically.
    assert ray.get(total.remote(array)) == float(array.sum())


def test_large_task_result_lives_in_shared_memory(ray):
    @ray.remote
    def make(n):
        return np.ones(n, dtype=np.uint8)

    out = ray.get(make.remote(5_000_000))
    assert out.sum() == 5_000_000 and not out.flags.writeable


def test_objects_are_freed_when_refs_drop(ray):
    ref = ray.put(np.zeros(1_000_000))
    stats = ray.api._node_stats()
    assert stats["driver_store"]["allocated_count"] >= 1
    del ref
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = ray.api._node_stats()
        store = stats["driver_store"]
        if store["allocated_count"] == store["freed_count"]:
            break
        time.sleep(0.05)
    assert store["allocated_count"] == store["freed_count"]
    assert stats["store_used"] == 0


def test_value_is_pinned_while_a_view_is_alive(ray):
    ref = ray.put(np.full(1_000_000, 3.0))
    view = ray.get(ref)
    del ref
    time.sleep(0.2)
    ray.put(np.zeros(1_000_000))  # would reuse the slot if it had been freed
    assert view[0] == 3.0 and view[-1] == 3.0


def test_wait_is_order_preserving_and_times_out(ray):
    @ray.remote
    def sleepy(t):
        time.sleep(t)
        return t

    refs = [sleepy.remote(0.5), sleepy.remote(0.0), sleepy.remote(0.0)]
    ready, pending = ray.wait(refs, num_returns=2, timeout=5)
    assert ready == [refs[1], refs[2]]
    assert pending == [refs[0]]
    ready, pending = ray.wait(refs, num_returns=3, timeout=0.01)
    assert len(ready) + len(pending) == 3


def test_get_timeout(ray):
    @ray.remote
    def slow():
        time.sleep(2)

    with pytest.raises(exceptions.GetTimeoutError):
        ray.get(slow.remote(), timeout=0.1)


def test_get_of_non_ref_is_type_error(ray):
    with pytest.raises(TypeError, match="ObjectRef"):
        ray.get(1)
    with pytest.raises(TypeError, match="item 1"):
        ray.get([ray.put(1), 2])


def test_unpicklable_argument_is_named(ray):
    import threading

    @ray.remote
    def f(x, lock=None):
        return 1

    with pytest.raises(TypeError, match="keyword argument 'lock' of"):
        f.remote(1, lock=threading.Lock())


def test_nested_tasks_do_not_deadlock(ray):
    @ray.remote
    def leaf(i):
        return i

    @ray.remote
    def parent(n):
        return sum(ray.get([leaf.remote(i) for i in range(n)]))

    # More parents than CPUs: each blocked parent lends its CPU back.
    assert ray.get([parent.remote(5) for _ in range(6)], timeout=60) == [10] * 6
    # The extra workers started meanwhile go away once idle.
    deadline = time.monotonic() + 15
    while ray.api._node_stats()["workers"] > 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray.api._node_stats()["workers"] == 2


def test_max_calls_retires_the_worker(ray):
    import collections

    @ray.remote
    def pid():
        return os.getpid()

    @ray.remote(max_calls=2)
    def pid_twice():
        return os.getpid()

    # Without max_calls a worker keeps running the function.
    plain = collections.Counter(ray.get(pid.remote()) for _ in range(6))
    assert max(plain.values()) > 2
    # With it, no worker runs it more than twice, one call at a time or in a burst.
    sequential = collections.Counter(ray.get(pid_twice.remote()) for _ in range(6))
    assert max(sequential.values()) <= 2 and len(sequential) >= 3
    burst = collections.Counter(ray.get([pid_twice.remote() for _ in range(20)]))
    assert max(burst.values()) <= 2 and sum(burst.values()) == 20
    assert ray.get(pid_twice.options(max_calls=0).remote()) > 0
    # The pool stays at one worker per CPU: each retired worker was replaced.
    deadline = time.monotonic() + 15
    while ray.api._node_stats()["workers"] != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray.api._node_stats()["workers"] == 2
    with pytest.raises(ValueError, match="max_calls"):
        pid.options(max_calls=-1).remote()


def test_worker_crash_is_retried_then_reported(ray, tmp_path):
    marker = tmp_path / "crashed"

    @ray.remote(max_retries=1)
    def crash_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(1)
        return "recovered"

    assert ray.get(crash_once.remote(str(marker))) == "recovered"

    @ray.remote(max_retries=0)
    def crash_always():
        os._exit(3)

    with pytest.raises(exceptions.WorkerCrashedError, match="exit code 3"):
        ray.get(crash_always.remote())


def test_retry_exceptions(ray, tmp_path):
    counter = tmp_path / "count"
    counter.write_text("0")

    @ray.remote(max_retries=3, retry_exceptions=[OSError])
    def flaky(path):
        n = int(open(path).read()) + 1
        open(path, "w").write(str(n))
        if n < 3:
            raise OSError("try again")
        return n

    assert ray.get(flaky.remote(str(counter))) == 3

    @ray.remote(max_retries=3, retry_exceptions=[OSError])
    def wrong_type():
        raise ValueError("not retried")

    with pytest.raises(ValueError):
        ray.get(wrong_type.remote())


def test_cancel_queued_and_running(ray):
    @ray.remote
    def sleeper():
        for _ in range(200):
            time.sleep(0.05)
        return "finished"

    running = [sleeper.remote() for _ in range(2)]
    queued = sleeper.remote()
    time.sleep(0.5)
    ray.cancel(queued)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(queued, timeout=10)
    ray.cancel(running[0])
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(running[0], timeout=10)
    ray.cancel(running[1], force=True)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(running[1], timeout=10)


def test_resources_and_infeasible_requests(ray_factory):
    ray = ray_factory(num_cpus=2, resources={"special": 1})
    assert ray.cluster_resources()["CPU"] == 2
    assert ray.cluster_resources()["special"] == 1

    @ray.remote(resources={"special": 1})
    def uses_special():
        return ray.get_runtime_context().get_worker_id()

    assert ray.get(uses_special.remote()).startswith("worker-")
    # As in Ray: more than the node has stays pending (tests/test_trust.py), not an error.
    for ref in (uses_special.options(resources={"special": 2}).remote(),
                uses_special.options(num_gpus=1).remote()):
        assert ray.wait([ref], timeout=0.2) == ([], [ref])
        ray.cancel(ref)


def test_memory_is_a_schedulable_resource_like_in_ray(ray_factory):
    # memory=... used to wait forever: the node had no "memory" resource to give.
    ray = ray_factory(num_cpus=2, _memory=1000)
    assert ray.cluster_resources()["memory"] == 1000

    @ray.remote(memory=600)
    def reserve():
        return ray.available_resources()["memory"]

    assert ray.get(reserve.remote(), timeout=30) <= 400
    # Two 600-byte tasks cannot hold memory at once; both still finish.
    assert len(ray.get([reserve.remote() for _ in range(2)], timeout=30)) == 2
    too_much = reserve.options(memory=2000).remote()
    assert ray.wait([too_much], timeout=0.2)[0] == []
    ray.cancel(too_much)
    with pytest.raises(ValueError, match="non-negative number of bytes"):
        reserve.options(memory="1GB").remote()


def test_invalid_options(ray):
    with pytest.raises(ValueError, match="Invalid option"):
        @ray.remote(num_cpu=1)
        def f():
            pass


async def test_await_refs_in_asyncio(ray):
    @ray.remote
    def square(x):
        return x * x

    assert await square.remote(3) == 9
    assert await ray.get(square.remote(4)) == 16
    refs = [square.remote(i) for i in range(200)]
    assert await asyncio.gather(*refs) == [i * i for i in range(200)]
    ready, _ = await ray.wait(refs, num_returns=200)
    assert len(ready) == 200


async def test_refs_follow_asyncio_future_protocol(ray):
    @ray.remote
    def square(x):
        return x * x

    @ray.remote
    def fail():
        raise KeyError("boom")

    @ray.remote
    def nap(seconds):
        time.sleep(seconds)
        return "woke"

    ref = square.remote(5)
    assert asyncio.isfuture(ref)
    assert not ref.done()
    with pytest.raises(asyncio.InvalidStateError, match="ray.get"):
        ref.result()
    # gather takes refs as they are (no wrapping Task) and keeps errors in place.
    out = await asyncio.gather(ref, fail.remote(), square.remote(6), return_exceptions=True)
    assert out[0] == 25 and out[2] == 36
    assert isinstance(out[1], KeyError) and isinstance(out[1], exceptions.RayTaskError)
    assert ref.done() and ref.result() == 25 and ref.exception() is None
    with pytest.raises(KeyError):
        await asyncio.gather(square.remote(1), fail.remote())
    # asyncio.wait hands back the refs themselves.
    fast, slow = square.remote(2), nap.remote(0.5)
    done, pending = await asyncio.wait([fast, slow], return_when=asyncio.FIRST_COMPLETED)
    assert done == {fast} and pending == {slow}
    assert [r.result() for r in done] == [4]
    # A timed-out wait stops waiting; the task itself goes on and can be awaited again.
    slow = nap.remote(0.6)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(slow, 0.05)
    assert await slow == "woke"
    assert sorted([await r for r in asyncio.as_completed([square.remote(i) for i in range(4)])]) \
        == [0, 1, 4, 9]
    # Callbacks get the ref; remove_done_callback finds the same (ref, fn) pair.
    seen = []
    ref = square.remote(7)
    ref.add_done_callback(seen.append)
    ref.add_done_callback(print)
    assert ref.remove_done_callback(print) == 1
    assert await ref == 49
    await asyncio.sleep(0)
    assert seen == [ref]


async def test_init_inside_running_loop_uses_that_loop():
    import miniray

    miniray.init(num_cpus=1)
    try:
        from miniray.api import _runtime

        assert _runtime.loop is asyncio.get_running_loop()

        @miniray.remote
        def f(x):
            return x + 1

        assert await f.remote(1) == 2
        assert await miniray.get([f.remote(i) for i in range(10)]) == list(range(1, 11))
    finally:
        miniray.shutdown()


def test_spilling_under_memory_pressure(ray_factory):
    ray = ray_factory(object_store_memory=24 << 20, _arena_size=32 << 20)
    refs = [ray.put(np.full(1_000_000, i, dtype=np.float64)) for i in range(6)]  # 48 MB
    stats = ray.api._node_stats()
    assert stats["counters"].get("objects_spilled", 0) >= 1
    assert stats["store_used"] <= 24 << 20
    for i, ref in enumerate(refs):
        assert ray.get(ref)[123] == i

    @ray.remote
    def first(a):
        return float(a[0])

    assert ray.get([first.remote(r) for r in refs]) == [float(i) for i in range(6)]


def test_put_after_del_reuses_the_freed_slot(ray):
    # The driver's release reaches the node lazily. A large put right after a
    # del must run the queued free first and take the warm slot just freed,
    # not fault in never-touched pages beside it (several times the copy).
    runtime = ray.api._client().runtime
    array = np.ones(4 << 20, dtype=np.uint8)  # an arena slot, not a dedicated segment

    def where(ref):
        return tuple(runtime.objects[ref._id].data[:2])

    ref = ray.put(array)
    first = where(ref)
    for _ in range(5):
        del ref
        ref = ray.put(array)
        assert where(ref) == first
    assert ray.get(ref)[-1] == 1


def _rss_kib(address: int) -> int:
    with open("/proc/self/smaps") as f:
        lines = iter(f)
        for line in lines:
            if line.startswith(f"{address:x}-"):
                for field in lines:
                    if field.startswith("Rss:"):
                        return int(field.split()[1])
    raise AssertionError("mapping not found in /proc/self/smaps")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise populate is Linux's")
def test_populate_faults_in_a_range_in_one_call():
    import ctypes

    from miniray._core.store import shm

    name = shm.segment_name(os.getpid())
    fd = shm.create(name, 8 << 20)
    try:
        region, _ = shm.map_region(fd, 0, 8 << 20, writable=True)
        anchor = ctypes.c_char.from_buffer(region)
        address = ctypes.addressof(anchor)
        del anchor
        assert _rss_kib(address) == 0
        shm.populate(region, 1 << 20, 4 << 20)
        assert _rss_kib(address) == 4096
        region.close()
    finally:
        os.close(fd)
        shm.unlink(name)


def test_object_store_full_when_everything_is_pinned(ray_factory):
    ray = ray_factory(object_store_memory=8 << 20)
    view = ray.get(ray.put(np.zeros(700_000)))  # 5.6 MB, pinned by the view
    with pytest.raises(exceptions.ObjectStoreFullError, match="object_store_memory"):
        ray.put(np.zeros(700_000))
    del view
    with pytest.raises(exceptions.ObjectStoreFullError, match="does not fit"):
        ray.put(np.zeros(2_000_000))


def test_reinit_and_auto_init():
    import miniray

    @miniray.remote
    def f():
        return 5

    try:
        assert ray_get_auto(miniray, f) == 5
        with pytest.raises(RuntimeError, match="ignore_reinit_error"):
            miniray.init()
        miniray.init(ignore_reinit_error=True)
    finally:
        miniray.shutdown()
    assert not miniray.is_initialized()


def ray_get_auto(miniray, f):
    return miniray.get(f.remote())


def test_runtime_context_and_nodes(ray):
    @ray.remote
    def where():
        ctx = ray.get_runtime_context()
        return ctx.get_task_id(), ctx.worker_mode

    task_id, mode = ray.get(where.remote())
    assert task_id and mode == "WORKER_MODE"
    assert ray.nodes()[0]["Alive"]
    assert ray.available_resources()["CPU"] <= 2
