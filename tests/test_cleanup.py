"""Nothing is left behind: not after shutdown, a killed driver, or a killed worker."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import miniray
from miniray._core.store import shm

from .conftest import _children_of

DRIVER = textwrap.dedent("""
    import sys, time, numpy as np
    import miniray as ray
    ray.init(num_cpus=2)

    @ray.remote
    def big():
        return np.ones(2_000_000)

    keep = [ray.put(np.zeros(1_000_000)), big.remote()]
    ray.get(keep[1])
    print("ready", flush=True)
    time.sleep(60)
""")


def _wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_sigkilled_driver_leaves_no_segments_or_workers(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(miniray.__file__)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        assert shm.list_segments(proc.pid), "the driver should have segments while alive"
        assert _children_of(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _wait_until(lambda: not shm.list_segments(proc.pid)), shm.list_segments(proc.pid)
        assert _wait_until(lambda: not _children_of(proc.pid)), _children_of(proc.pid)
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_init_sweeps_segments_of_dead_nodes():
    # A pid that is certainly not running (above pid_max on Linux).
    name = "miniray_4194999_4194999_a1_dead00"
    fd = shm.create(name, 4096)
    os.close(fd)
    assert name in os.listdir("/dev/shm")
    miniray.init(num_cpus=1)
    try:
        assert name not in os.listdir("/dev/shm")
    finally:
        miniray.shutdown()


def test_killed_worker_keeps_its_objects_and_leaks_nothing(ray):
    @ray.remote
    def make():
        return np.full(1_000_000, 7.0), os.getpid()

    value_ref = make.remote()
    array, pid = ray.get(value_ref)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    # The object lived in the dead worker's arena: the node adopted it.
    assert ray.get(value_ref)[0][5] == 7.0
    del array

    @ray.remote
    def ping():
        return "pong"

    assert ray.get(ping.remote()) == "pong"  # the pool replaced the worker


def test_speedups_selection_follows_the_environment():
    code = ("import miniray, miniray._speedups as s, miniray._core as c; "
            "print(s.COMPILED, c._is_compiled(), miniray._core.node.runtime.__file__[-3:])")
    pure = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, MINIRAY_PUREPYTHON="1"), check=True)
    assert pure.stdout.split() == ["False", "False", ".py"]


@pytest.mark.skipif(not os.environ.get("MINIRAY_EXPECT_COMPILED"),
                    reason="set MINIRAY_EXPECT_COMPILED=1 where the extension must be built")
def test_compiled_speedups_are_used():
    import miniray._core as core
    import miniray._speedups as s

    assert s.COMPILED
    assert core._is_compiled()


def test_sources_newer_than_their_extension_are_reported(tmp_path):
    # An edited .py (or .pxd) beside an older compiled module would keep the
    # old code running silently in an editable install.
    import importlib.machinery

    from miniray._core import _stale_sources

    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    core, speedups = tmp_path / "core", tmp_path / "speedups"
    core.mkdir()
    speedups.mkdir()
    for path in (core / "runtime.py", core / "runtime.pxd", core / "driver.py",
                 speedups / "allocator.py"):
        path.write_text("")
    for path in (core / ("runtime" + suffix), core / ("driver" + suffix),
                 speedups / ("_allocator_c" + suffix)):
        path.write_bytes(b"")
    now = time.time()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            os.utime(path, (now - 100, now - 100))
    assert _stale_sources(str(core), str(speedups), suffix) == []
    os.utime(core / "runtime.pxd", (now, now))
    os.utime(speedups / "allocator.py", (now, now))
    assert _stale_sources(str(core), str(speedups), suffix) == [
        str(core / "runtime.pxd"), str(speedups / "allocator.py")]


def test_stale_sources_in_subfolders_are_reported(tmp_path):
    # The compiled core modules sit in subpackages (_core/node/, _core/worker/, ...).
    import importlib.machinery

    from miniray._core import _stale_sources

    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    core, speedups = tmp_path / "core", tmp_path / "speedups"
    (core / "node").mkdir(parents=True)
    speedups.mkdir()
    for path in (core / "node" / "scheduler.py", core / "node" / "scheduler.pxd"):
        path.write_text("")
    (core / "node" / ("scheduler" + suffix)).write_bytes(b"")
    now = time.time()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            os.utime(path, (now - 100, now - 100))
    assert _stale_sources(str(core), str(speedups), suffix) == []
    os.utime(core / "node" / "scheduler.pxd", (now, now))
    assert _stale_sources(str(core), str(speedups), suffix) == [
        str(core / "node" / "scheduler.pxd")]
