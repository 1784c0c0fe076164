"""Compiled DAGs (dag.experimental_compile()): real actors, real shared-memory channels."""

from __future__ import annotations

import asyncio
import copy
import gc
import os
import pickle
import time

import numpy as np
import pytest

import miniray
from miniray._core.store import shm
from miniray.dag import DAGContext, DAGOperationFuture, InputNode, MultiOutputNode
from miniray.dag.compiled import CompiledDAG, CompiledDAGRef
from miniray.exceptions import (
    ActorDiedError,
    RayCgraphCapacityExceeded,
    RayChannelError,
    RayChannelTimeoutError,
    RaySystemError,
    RayTaskError,
)


@miniray.remote
class Stage:
    def __init__(self, factor=1):
        self.factor = factor
        self.calls = 0

    def inc(self, x):
        self.calls += 1
        return x + 1

    def scale(self, x):
        return x * self.factor

    def add(self, x, y=0, *, z=0):
        return x + y + z

    def fail_if_negative(self, x):
        if x < 0:
            raise ValueError(f"negative input {x}")
        return x

    def sleep_then(self, x):
        time.sleep(x)
        return x

    def array_info(self, a):
        """Where the array this method got lives: in a segment of the DAG?"""
        return {"sum": float(a.sum()), "writeable": bool(a.flags.writeable),
                "in_dag_segment": _mapped_from(a, "_g")}

    def make_array(self, n):
        return np.arange(n, dtype=np.float64)

    def num_calls(self):
        return self.calls

    def exit_now(self, x):
        miniray.actor.exit_actor()


@miniray.remote
class AsyncStage:
    async def inc(self, x):
        await asyncio.sleep(0)
        return x + 1


def _mapped_from(array, tag: str) -> bool:
    """Whether ``array``'s data lies in a mapping of a ``miniray_*`` file whose
    name contains ``tag`` (per /proc/self/maps)."""
    address = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                path = fields[5].strip() if len(fields) > 5 else ""
                return "miniray_" in path and tag in path
    return False


def _dag_segments(node_pid: int) -> list[str]:
    """This node's compiled-DAG segments (kind ``g``), not other nodes'."""
    return [n for n in shm.list_segments(node_pid) if n.split("_")[3].startswith("g")]


async def _await(awaitable):
    return await awaitable


def _open_files_of_dag(token: str) -> list:
    """This process's descriptors open on a file of the compiled DAG ``token``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if f"_g{token}" in target:
            found.append(target)
    return found


def _chain(a, b):
    with InputNode() as inp:
        return b.scale.bind(a.inc.bind(inp))


def test_two_actor_chain_sync(ray):
    a, b = Stage.remote(), Stage.remote(3)
    compiled = _chain(a, b).experimental_compile()
    try:
        assert isinstance(compiled, CompiledDAG)
        ref = compiled.execute(1)
        assert isinstance(ref, CompiledDAGRef)
        assert ray.get(ref) == 6
        for i in range(50):
            assert compiled.execute(i).get() == (i + 1) * 3
        # Several in flight, read out of order.
        refs = [compiled.execute(i) for i in range(5)]
        assert [ray.get(r) for r in reversed(refs)] == [(i + 1) * 3 for i in reversed(range(5))]
        # Get once, as in Ray; no copies, no pickling.
        ref = compiled.execute(7)
        assert ref.get() == 24
        with pytest.raises(ValueError, match="once"):
            ref.get()
        ref = compiled.execute(0)
        with pytest.raises(ValueError):
            pickle.dumps(ref)
        with pytest.raises(ValueError):
            copy.copy(ref)
        assert ray.get(ref) == 3
        # The loop runs on a background thread: normal calls still run (Ray's behaviour).
        assert ray.get(a.num_calls.remote()) == 58
        assert ray.get(b.add.remote(1, 2)) == 3
    finally:
        compiled.teardown()


def test_two_actor_chain_async_and_async_actor(ray):
    a, b = AsyncStage.remote(), Stage.remote(2)
    with InputNode() as inp:
        dag = b.scale.bind(a.inc.bind(inp))
    compiled = dag.experimental_compile(enable_asyncio=True)

    async def main():
        futures = [await compiled.execute_async(i) for i in range(4)]
        values = [await fut for fut in futures]
        fut = await compiled.execute_async(10)
        assert await fut == 22
        with pytest.raises(ValueError, match="once"):
            await fut
        return values

    try:
        assert asyncio.run(main()) == [2, 4, 6, 8]
        with pytest.raises(ValueError, match="execute_async"):
            compiled.execute(1)
    finally:
        compiled.teardown()
    # Torn down from the loop with a result still pending: awaiting it raises.
    with InputNode() as inp:
        dag = b.sleep_then.bind(a.inc.bind(inp))
    compiled = dag.experimental_compile(enable_asyncio=True)

    async def pending():
        fut = await compiled.execute_async(-0.5)   # b sleeps 0.5 s
        compiled.teardown()
        with pytest.raises(RayChannelError, match="torn down"):
            await fut

    asyncio.run(pending())
    assert _dag_segments(os.getpid()) == []
    # Torn down while its loop is idle (not running, not closed): nothing stays open.
    compiled = _chain(a, b).experimental_compile(enable_asyncio=True)
    loop = asyncio.new_event_loop()
    try:
        fut = loop.run_until_complete(compiled.execute_async(1))
        assert loop.run_until_complete(_await(fut)) == 4
        compiled.teardown()
        assert _open_files_of_dag(compiled.get_id()) == []
    finally:
        loop.close()
    sync_dag = _chain(Stage.remote(), Stage.remote())
    compiled = sync_dag.experimental_compile()
    with compiled:
        with pytest.raises(ValueError, match="enable_asyncio=False"):
            asyncio.run(compiled.execute_async(1))


def test_multi_output_kwargs_and_several_inputs(ray):
    a, b = Stage.remote(), Stage.remote(10)
    with InputNode() as inp:
        first = a.add.bind(inp[0], inp[1], z=inp.offset)   # 3 args: two positional, a kwarg
        scaled = b.scale.bind(first)
        summed = a.add.bind(first, y=scaled)               # a node as a keyword argument
        dag = MultiOutputNode([first, scaled, summed, first])
    compiled = dag.experimental_compile()
    try:
        refs = compiled.execute(1, 2, offset=100)
        assert isinstance(refs, list) and len(refs) == 4
        assert ray.get(refs) == [103, 1030, 1133, 103]
        refs = compiled.execute(0, 0, offset=1)
        assert ray.get(refs[2]) == 11 and ray.get(refs[0]) == 1
        with pytest.raises(ValueError, match="2 positional args"):
            compiled.execute(1, offset=3)
        with pytest.raises(ValueError, match="offset"):
            compiled.execute(1, 2)
    finally:
        compiled.teardown()


def test_values_that_are_not_plain_data_travel_by_cloudpickle(ray):
    class Vec:  # a local class: the C pickler cannot name it, cloudpickle ships it
        def __init__(self, v):
            self.v = v

        def __add__(self, other):
            return Vec(self.v + other)

    a, b = Stage.remote(), Stage.remote()
    with InputNode() as inp:
        dag = b.add.bind(a.add.bind(inp, 1), 10)
    with dag.experimental_compile() as compiled:
        out = ray.get(compiled.execute(Vec(5)))
        assert type(out).__name__ == "Vec" and out.v == 16
        assert ray.get(compiled.execute(Vec(0))).v == 11


def test_numpy_arrays_through_channels_zero_copy(ray):
    a, b = Stage.remote(), Stage.remote()
    with InputNode() as inp:
        info = a.array_info.bind(inp[0])
        made = b.make_array.bind(inp[1])
        dag = MultiOutputNode([info, made])
    compiled = dag.experimental_compile()
    try:
        big = np.arange(2_000_000, dtype=np.float64)       # 16 MB: its own segment
        info, array = ray.get(compiled.execute(big, 2_000_000))
        assert info == {"sum": float(big.sum()), "writeable": False, "in_dag_segment": True}
        assert np.array_equal(array, np.arange(2_000_000, dtype=np.float64))
        assert not array.flags.writeable and _mapped_from(array, "_g")
        small = np.arange(100, dtype=np.int64)              # copied through the slot
        info, _ = ray.get(compiled.execute(small, 10))
        assert info["sum"] == float(small.sum()) and not info["in_dag_segment"]
        mid = np.ones(25_000)   # 200 KB: pickle-5 buffers copied through the slot
        info, made = ray.get(compiled.execute(mid, 25_000))
        assert info == {"sum": 25_000.0, "writeable": False, "in_dag_segment": False}
        assert made.sum() == float(np.arange(25_000).sum()) and not _mapped_from(made, "_g")

        # The received array outlives the DAG (its mapping is its own), and no
        # large-value segment stays behind once read.
        compiled.teardown()
        assert float(array.sum()) == float(big.sum())
        assert _dag_segments(os.getpid()) == []
    finally:
        compiled.teardown()


def test_method_error_then_good_execution(ray):
    a, b = Stage.remote(), Stage.remote(2)
    with InputNode() as inp:
        dag = b.scale.bind(a.fail_if_negative.bind(inp))
    compiled = dag.experimental_compile()
    try:
        with pytest.raises(ValueError, match="negative input -1") as info:
            ray.get(compiled.execute(-1))
        assert isinstance(info.value, RayTaskError)
        assert "fail_if_negative" in str(info.value)
        assert ray.get(compiled.execute(4)) == 8
        bad, good = compiled.execute(-2), compiled.execute(5)
        assert ray.get(good) == 10
        with pytest.raises(ValueError, match="-2"):
            ray.get(bad)
    finally:
        compiled.teardown()


def test_missing_input_part_is_an_error_of_that_execution(ray):
    a, b = Stage.remote(), Stage.remote()
    with InputNode() as inp:
        dag = b.inc.bind(a.add.bind(inp[0]["x"], inp[0]["y"]))
    compiled = dag.experimental_compile()
    try:
        assert ray.get(compiled.execute({"x": 1, "y": 2})) == 4
        with pytest.raises(KeyError, match="y"):
            ray.get(compiled.execute({"x": 1}))
        assert ray.get(compiled.execute({"x": 5, "y": 5})) == 11
    finally:
        compiled.teardown()


def test_actor_killed_mid_execution_raises_instead_of_hanging(ray):
    a, b = Stage.remote(), Stage.remote()
    with InputNode() as inp:
        dag = b.sleep_then.bind(a.inc.bind(inp))
    compiled = dag.experimental_compile()
    try:
        assert ray.get(compiled.execute(-0.9)) == pytest.approx(0.1)
        ref = compiled.execute(29.0)   # b sleeps 30 s in the DAG's loop
        time.sleep(0.3)
        ray.kill(b)
        started = time.monotonic()
        with pytest.raises(ActorDiedError, match="died"):
            ref.get(timeout=20)
        # Bounds far from the bad cases (a hang until the 20 s get timeout, a
        # teardown waiting out the 30 s teardown_timeout), not performance checks.
        assert time.monotonic() - started < 15
        with pytest.raises(ActorDiedError):
            compiled.execute(1)
    finally:
        started = time.monotonic()
        compiled.teardown()
        assert time.monotonic() - started < 15
    assert _dag_segments(os.getpid()) == []
    assert ray.get(a.inc.remote(1)) == 2   # the other actor is fine


def test_actor_killed_during_async_execution(ray):
    a, b = Stage.remote(), Stage.remote()
    with InputNode() as inp:
        dag = b.sleep_then.bind(a.inc.bind(inp))
    compiled = dag.experimental_compile(enable_asyncio=True)

    async def main():
        fut = await compiled.execute_async(29.0)
        await asyncio.sleep(0.3)
        ray.kill(a)
        started = time.monotonic()
        with pytest.raises(ActorDiedError):
            await asyncio.wait_for(fut, 10)
        return time.monotonic() - started

    try:
        assert asyncio.run(main()) < 15   # wait_for's 10 s raises TimeoutError first
    finally:
        started = time.monotonic()
        compiled.teardown()   # b is still in its 29 s call: not waited for (was 30 s)
        assert time.monotonic() - started < 15
    assert _dag_segments(os.getpid()) == []


def test_exit_actor_in_a_compiled_method_breaks_the_dag_with_an_error(ray):
    a, b = Stage.remote(), Stage.remote()
    with InputNode() as inp:
        dag = b.inc.bind(a.exit_now.bind(inp))
    compiled = dag.experimental_compile()
    try:
        with pytest.raises(RayChannelError, match="loop of this compiled DAG stopped"):
            compiled.execute(1).get(timeout=20)
        with pytest.raises(RayChannelError, match="stopped"):
            compiled.execute(1)
    finally:
        compiled.teardown()
    assert _dag_segments(os.getpid()) == []


def test_inflight_limit(ray):
    a, b = Stage.remote(), Stage.remote()
    compiled = _chain(a, b).experimental_compile(_max_inflight_executions=2)
    try:
        first, second = compiled.execute(1), compiled.execute(2)
        with pytest.raises(RayCgraphCapacityExceeded, match="_max_inflight_executions"):
            compiled.execute(3)
        assert ray.get(first) == 2
        third = compiled.execute(3)
        assert ray.get([second, third]) == [3, 4]
        # Refs dropped without get do not count against the limit: their results
        # are read and thrown away (waited for when the DAG is at the limit).
        for i in range(10):
            compiled.execute(i)
        assert ray.get(compiled.execute(41)) == 42
        kept = compiled.execute(1)
        compiled.execute(2)   # dropped
        with pytest.raises(RayCgraphCapacityExceeded):   # `kept` still holds a slot
            compiled.execute(3)
        assert ray.get(kept) == 2
    finally:
        compiled.teardown()
    assert issubclass(RayCgraphCapacityExceeded, RaySystemError)


def test_get_timeout(ray):
    a, b = Stage.remote(), Stage.remote()
    with InputNode() as inp:
        dag = b.sleep_then.bind(a.add.bind(inp))
    compiled = dag.experimental_compile()
    try:
        ref = compiled.execute(1.0)
        with pytest.raises(RayChannelTimeoutError, match="not ready after 0.1 s"):
            ref.get(timeout=0.1)
        assert issubclass(RayChannelTimeoutError, TimeoutError)
        assert issubclass(RayChannelTimeoutError, RayChannelError)
        assert ray.get(ref) == 1.0   # asked again, it comes
    finally:
        compiled.teardown()


def test_teardown_frees_every_segment_and_blocks_use(ray):
    node_pid = os.getpid()
    assert _dag_segments(node_pid) == []
    a, b = Stage.remote(), Stage.remote()
    compiled = _chain(a, b).experimental_compile()
    segments = _dag_segments(node_pid)
    assert len(segments) >= 7   # input, a->b, output (each with its doorbell), control
    for name in segments:       # private to the node's user
        info = os.stat(os.path.join(shm.SHM_DIR, name))
        assert info.st_mode & 0o777 == 0o600 and info.st_uid == os.getuid()
    ref = compiled.execute(1)
    assert ray.get(ref) == 2
    unread = compiled.execute(np.ones(300_000))  # a large value left unread
    time.sleep(0.2)
    compiled.teardown()
    compiled.teardown()
    assert _dag_segments(node_pid) == []
    with pytest.raises(RayChannelError, match="torn down"):
        compiled.execute(1)
    with pytest.raises(RayChannelError, match="torn down"):
        unread.get()
    # The actors are free again: compile another DAG with them, as a context manager.
    with _chain(b, a).experimental_compile() as again:
        assert ray.get(again.execute(1)) == 2
    assert _dag_segments(node_pid) == []
    # Dropped without teardown: garbage collection tears it down.
    dropped = _chain(a, b).experimental_compile()
    assert ray.get(dropped.execute(5)) == 6
    del dropped
    gc.collect()
    assert _dag_segments(node_pid) == []
    # Left alive at shutdown: the fixture's shutdown tears it down (and checks leaks).
    kept = _chain(a, b).experimental_compile()
    assert ray.get(kept.execute(5)) == 6


def test_one_compiled_dag_per_actor(ray):
    a, b, c = Stage.remote(), Stage.remote(), Stage.remote()
    first = _chain(a, b).experimental_compile()
    try:
        before = _dag_segments(os.getpid())
        with pytest.raises(ValueError, match="one compiled DAG at a time"):
            _chain(c, b).experimental_compile()
        assert _dag_segments(os.getpid()) == before   # the failed compile left nothing
        assert ray.get(first.execute(1)) == 2         # and the first DAG still works
    finally:
        first.teardown()
    with _chain(c, b).experimental_compile() as second:
        assert ray.get(second.execute(1)) == 2
    with InputNode() as inp:
        dag = b.inc.bind(inp)
    compiled = dag.experimental_compile()
    compiled.teardown()
    with pytest.raises(ValueError, match="multiple times"):
        dag.experimental_compile()


def test_unsupported_graphs_get_clear_errors(ray):
    @ray.remote
    def task(x):
        return x

    a = Stage.remote()
    with InputNode() as inp:
        dag = a.inc.bind(task.bind(inp))
    with pytest.raises(NotImplementedError, match="actor methods only"):
        dag.experimental_compile()
    with InputNode() as inp:
        dag = Stage.bind().inc.bind(inp)
    with pytest.raises(ValueError, match="already created"):
        dag.experimental_compile()
    with InputNode() as inp:
        dag = a.add.bind([inp])
    with pytest.raises(ValueError, match="direct arguments"):
        dag.experimental_compile()
    with InputNode() as inp:
        dag = MultiOutputNode([a.inc.bind(inp), inp])
    with pytest.raises(ValueError, match="must be actor method calls"):
        dag.experimental_compile()
    with InputNode() as inp:
        dag = a.inc.bind(inp)
    with pytest.raises(ValueError, match="_max_inflight_executions"):
        dag.experimental_compile(_max_inflight_executions=-1)
    assert _dag_segments(os.getpid()) == []


def test_dag_context_and_names():
    from miniray.dag.compiled_dag_node import CompiledDAG as AtRaysPath
    from miniray.dag.context import DAGContext as ContextAtRaysPath
    from miniray.experimental.compiled_dag_ref import CompiledDAGFuture, CompiledDAGRef as Ref

    assert AtRaysPath is CompiledDAG and Ref is CompiledDAGRef and ContextAtRaysPath is DAGContext
    assert CompiledDAGFuture.__name__ == "CompiledDAGFuture"

    context = DAGContext.get_current()
    assert context is DAGContext.get_current()
    assert context.max_inflight_executions >= 1 and context.get_timeout > 0
    assert issubclass(DAGOperationFuture, object)
    import miniray.exceptions as exceptions

    for name in ("RayChannelError", "RayChannelTimeoutError", "RayCgraphCapacityExceeded"):
        assert name in exceptions.__all__


COMPILED_DRIVER = """
import sys, time
import numpy as np
import miniray as ray
from miniray.dag import InputNode
ray.init(num_cpus=2)

@ray.remote
class Stage:
    def inc(self, x):
        return x + 1

a, b = Stage.remote(), Stage.remote()
with InputNode() as inp:
    dag = b.inc.bind(a.inc.bind(inp))
compiled = dag.experimental_compile()
assert ray.get(compiled.execute(1)) == 3
unread = compiled.execute(np.ones(400_000))   # a large value in its own segment, unread
print("ready", flush=True)
time.sleep(60)
"""


def test_sigkilled_driver_leaves_no_channel_behind(tmp_path):
    """Channels carry the node's prefix: the crash watchdog removes them."""
    import signal
    import subprocess
    import sys

    from .conftest import _children_of

    script = tmp_path / "driver.py"
    script.write_text(COMPILED_DRIVER)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(miniray.__file__)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        assert len(_dag_segments(proc.pid)) >= 5   # channels, doorbells, control
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20
        while (shm.list_segments(proc.pid) or _children_of(proc.pid)) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert shm.list_segments(proc.pid) == []
        assert _children_of(proc.pid) == []
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_compile_on_the_nodes_own_loop_says_how():
    from .conftest import assert_nothing_leaked

    async def main():
        miniray.init(num_cpus=2)
        try:
            a = Stage.remote()
            with InputNode() as inp:
                dag = a.inc.bind(inp)
            with pytest.raises(RuntimeError, match="run_in_executor"):
                dag.experimental_compile()
            compiled = await asyncio.get_running_loop().run_in_executor(
                None, dag.experimental_compile)
            with compiled:
                assert compiled.execute(1).get() == 2
        finally:
            miniray.shutdown()

    asyncio.run(main())
    assert_nothing_leaked(os.getpid())


def test_a_loop_past_its_last_execution_counts_as_stopping():
    # The actor side of teardown-then-compile: a loop that has left run() has
    # released its channels but its thread may still be alive a moment; a new
    # compile on that actor must wait for it rather than call the actor busy
    # (seen on Python 3.13: "already part of a compiled DAG" right after teardown).
    import ctypes

    from miniray.dag import channel as _ch
    from miniray.dag import compiled as C

    loop = C._ActorLoop.__new__(C._ActorLoop)
    loop.channels = []
    loop.ending = False
    loop.control = None
    loop.control_word = ctypes.c_uint32(0)

    def closed():
        raise _ch.ChannelClosed()

    loop.run_once = closed
    loop.run()
    assert loop.stopping()
