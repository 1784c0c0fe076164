"""get/wait/init decide from the calling frame, not from "is a loop running here".

Notebook cells are simulated with code compiled as IPython and the asyncio REPL
compile it (``PyCF_ALLOW_TOP_LEVEL_AWAIT``) and run on a running loop; the real
kernel is in test_notebooks.py.
"""

from __future__ import annotations

import ast
import asyncio
import glob
import os
import subprocess
import sys

import pytest

import miniray
from miniray import api
from miniray._core import caller

from .conftest import assert_nothing_leaked


@miniray.remote
def square(x):
    return x * x


def _cell(source: str):
    return compile(source, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


async def test_top_level_await_code_gets_values_and_awaitables_as_asked(ray):
    # One statement (one code object, flagged as a coroutine) mixing both forms.
    ns = {"ray": ray, "square": square, "asyncio": asyncio}
    await eval(_cell(
        "out = []\n"
        "for i in (2, 3):\n"
        "    out.append((ray.get(square.remote(i)), await ray.get(square.remote(i)),\n"
        "                await square.remote(i), ray.get([square.remote(i)], timeout=10)))\n"
        "ready, rest = ray.wait([square.remote(1)], timeout=10)\n"
        "aready, arest = await ray.wait([square.remote(1)], timeout=10)\n"
        "values = [ray.get(r) for r in [square.remote(4)]]\n"
        "gathered = await asyncio.gather(*[square.remote(i) for i in range(3)])\n"), ns)
    assert ns["out"] == [(4, 4, 4, [4]), (9, 9, 9, [9])]
    assert (len(ns["ready"]), len(ns["rest"])) == (1, 0)
    assert (len(ns["aready"]), len(ns["arest"])) == (1, 0)
    assert ns["values"] == [16] and ns["gathered"] == [0, 1, 4]


async def test_sync_code_in_a_running_loop_gets_values(ray):
    # A sync function called from a coroutine, a loop callback: Ray's semantics.
    def helper():
        ready, not_ready = ray.wait([square.remote(1), square.remote(2)], num_returns=2)
        return sum(ray.get([square.remote(i) for i in range(4)])), len(ready)

    assert helper() == (14, 2)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(lambda: done.set_result(ray.get(square.remote(5))))
    assert await done == 25


async def test_async_code_keeps_every_await_form(ray):
    assert await ray.get(square.remote(3)) == 9
    assert await square.remote(3) == 9
    assert await asyncio.gather(ray.get(square.remote(1)), ray.get(square.remote(2))) == [1, 4]
    assert await asyncio.wait_for(ray.get([square.remote(2)]), 10) == [4]
    ready, rest = await ray.wait([square.remote(1), square.remote(2)], num_returns=2)
    assert (len(ready), len(rest)) == (2, 0)
    assert await ray.wait([]) == ([], [])
    # A comprehension's own frame (Python < 3.12) counts as the async def around it.
    assert await asyncio.gather(*[ray.get(square.remote(i)) for i in range(3)]) == [0, 1, 4]

    async def agen():
        yield await ray.get(square.remote(6))

    assert [v async for v in agen()] == [36]


async def test_init_from_sync_code_in_a_loop_runs_the_node_on_its_own_thread():
    def start():  # a notebook cell, a loop callback: sync code with a running loop
        miniray.init(num_cpus=1, include_dashboard=False)

    start()
    try:
        assert api._runtime.owns_loop
        assert api._runtime.loop is not asyncio.get_running_loop()
        # Awaiting across threads: the caller's loop is not the node's.
        assert await asyncio.gather(*[square.remote(i) for i in range(50)]) == \
            [i * i for i in range(50)]
        assert await miniray.get(square.remote(4)) == 16
        # Sync code on this loop may block: the node does not run here.
        assert (lambda: miniray.get(square.remote(5)))() == 25
    finally:
        miniray.shutdown()
    assert_nothing_leaked(os.getpid())


async def test_sync_get_on_the_nodes_own_loop_raises_at_once():
    miniray.init(num_cpus=1, include_dashboard=False)  # from an async def: this loop
    try:
        assert api._runtime.loop is asyncio.get_running_loop()
        ref = square.remote(3)
        assert await ref == 9

        def blocking_get():
            return miniray.get(ref)

        def blocking_wait():
            return miniray.wait([ref], timeout=5)

        for call, name in ((blocking_get, "get"), (blocking_wait, "wait")):
            with pytest.raises(RuntimeError,
                               match=rf"miniray\.{name}\(\).*await miniray\.{name}"):
                call()
        # Calls that never block are served; libraries fail as clearly.
        assert (lambda: miniray.wait([ref], timeout=0))() == ([ref], [])

        def never_blocks():
            return miniray.get(ref, timeout=0)

        assert never_blocks() == 9
        from miniray.util import ActorPool

        @miniray.remote
        class Echo:
            def echo(self, v):
                return v

        pool = ActorPool([Echo.remote()])
        with pytest.raises(RuntimeError, match="event loop that the miniray node runs on"):
            list(pool.map(lambda a, v: a.echo.remote(v), [1]))
        # The same work from a thread is fine.
        assert await asyncio.get_running_loop().run_in_executor(
            None, lambda: miniray.get([square.remote(i) for i in range(3)])) == [0, 1, 4]
    finally:
        miniray.shutdown()
    assert_nothing_leaked(os.getpid())


async def test_init_in_an_async_generator_runs_the_node_on_that_loop():
    async def lifespan():  # aiohttp's cleanup_ctx, FastAPI's lifespan
        miniray.init(num_cpus=1, include_dashboard=False)
        try:
            yield
        finally:
            miniray.shutdown()

    steps = lifespan()
    await steps.__anext__()
    try:
        assert api._runtime.loop is asyncio.get_running_loop()
        assert await square.remote(2) == 4
    finally:
        with pytest.raises(StopAsyncIteration):
            await steps.__anext__()
    assert_nothing_leaked(os.getpid())


def test_auto_init_in_a_coroutine_outlives_that_loop():
    # The first .remote() starts the node; on the coroutine's loop it would die with
    # asyncio.run's loop and the second run would find it closed.
    async def main(n):
        return await square.remote(n), await miniray.get(square.remote(n))

    try:
        assert asyncio.run(main(2)) == (4, 4)
        assert api._runtime.owns_loop
        assert asyncio.run(asyncio.wait_for(main(3), 30)) == (9, 9)
    finally:
        miniray.shutdown()
    assert_nothing_leaked(os.getpid())


async def test_init_in_top_level_await_code_keeps_the_node_off_that_loop():
    ns = {"miniray": miniray}
    await eval(_cell("miniray.init(num_cpus=1, include_dashboard=False)\n"
                     "await asyncio.sleep(0)\n"), {**ns, "asyncio": asyncio})
    try:
        assert api._runtime.owns_loop
    finally:
        miniray.shutdown()
    assert_nothing_leaked(os.getpid())


def test_async_actor_awaits_get_and_wait_and_sync_get_there_says_await(ray):
    @ray.remote
    class Waiter:
        async def both(self, refs):
            ready, rest = await miniray.wait(refs, num_returns=len(refs), timeout=10)
            return len(ready), len(rest), await miniray.get(refs)

        async def sync_helper(self, refs):
            def helper():
                return miniray.get(refs)

            return helper()

    waiter = Waiter.remote()
    refs = [square.remote(i) for i in range(3)]
    assert ray.get(waiter.both.remote(refs)) == (3, 0, [0, 1, 4])
    with pytest.raises(RuntimeError, match=r"miniray\.get\(\).*await"):
        ray.get(waiter.sync_helper.remote(refs))


_PROBE = r'''
import ast, asyncio, importlib.util, sys
spec = importlib.util.spec_from_file_location("caller", sys.argv[1])
caller = importlib.util.module_from_spec(spec)
spec.loader.exec_module(caller)


async def _value(v):
    return ("awaitable", v)


def get(v=None):
    return _value(v) if caller.wants_awaitable(sys._getframe(1)) else ("value", v)


CELL = """
out = [(get(i), await get(i), await get(v=i)) for i in range(2)]
for i in range(1):
    out.append((get(i), await get(i)))
plain = [get(i) for i in range(2)]
"""


async def real():
    c = [get(i) for i in range(2)]
    return await get(1), await asyncio.gather(*c), type(get(2)).__name__


async def main():
    ns = {"get": get}
    await eval(compile(CELL, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT), ns)
    first, gathered, kind = await real()
    print(ns["out"], ns["plain"], first, gathered, kind)

asyncio.run(main())
'''

_PROBE_EXPECTED = ("[(('value', 0), ('awaitable', 0), ('awaitable', 0)), "
                   "(('value', 1), ('awaitable', 1), ('awaitable', 1)), "
                   "(('value', 0), ('awaitable', 0))] [('value', 0), ('value', 1)] "
                   "('awaitable', 1) [('awaitable', 0), ('awaitable', 1)] coroutine")


def _interpreters():
    """This Python, and 3.10-3.13 where installed (pyenv, or on PATH)."""
    found = {f"{sys.version_info.major}.{sys.version_info.minor}": sys.executable}
    for minor in (10, 11, 12, 13):
        version = f"3.{minor}"
        candidates = sorted(glob.glob(os.path.expanduser(
            f"~/.pyenv/versions/{version}.*/bin/python{version}")))
        candidates += [os.path.join(p, f"python{version}")
                       for p in os.environ.get("PATH", "").split(os.pathsep)]
        for path in candidates:
            if version not in found and os.access(path, os.X_OK):
                found[version] = path
    return sorted(found.items())


@pytest.mark.parametrize("version,python", _interpreters())
def test_the_frame_rule_reads_bytecode_alike_on_every_python(version, python):
    """caller.py is stdlib-only: run its rule under each interpreter at hand, since
    f_lasti and the call opcodes differ between 3.10, 3.11, 3.12 and 3.13."""
    proc = subprocess.run([python, "-c", _PROBE, caller.__file__], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == _PROBE_EXPECTED


@miniray.remote
def _count_to(n):
    for i in range(n):
        yield i


async def test_wait_over_generators_follows_the_same_rule(ray):
    # A list holding an ObjectRefGenerator takes its own path through wait():
    # sync code on a running loop gets the pair, awaiting code an awaitable.
    def helper():
        return ray.wait([_count_to.remote(2)], timeout=20)

    ready, _ = helper()
    assert len(ready) == 1
    ready, _ = await ray.wait([_count_to.remote(2)], timeout=20)
    assert len(ready) == 1
