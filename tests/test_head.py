"""A real head node started and stopped with the CLI; drivers joining it."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import miniray
from miniray._core.store import shm

from .conftest import _children_of

PY = sys.executable


def _cli(env, *args, check=True, timeout=60):
    proc = subprocess.run([PY, "-m", "miniray", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"miniray {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def _head_info(tmp):
    with open(os.path.join(tmp, f"miniray-{os.getuid()}", "head.json")) as f:
        return json.load(f)


@pytest.fixture
def head(tmp_path, monkeypatch):
    """A head with 2 CPUs under a private session root; stopped and checked after."""
    env = dict(os.environ, MINIRAY_TMPDIR=str(tmp_path))
    env.pop("MINIRAY_ADDRESS", None)
    monkeypatch.setenv("MINIRAY_TMPDIR", str(tmp_path))
    out = _cli(env, "start", "--head", "--num-cpus", "2", "--port", "0",
               "--include-dashboard", "false").stdout
    assert "miniray head started" in out and "miniray stop" in out
    info = _head_info(tmp_path)
    info["env"] = env
    info["tmp"] = str(tmp_path)
    try:
        yield info
    finally:
        gc.collect()
        miniray.shutdown()
        stopped = _cli(env, "stop")
        assert ("Stopped the miniray head" in stopped.stdout
                or "No running miniray head" in stopped.stdout)
        _assert_head_gone(info)


def _assert_head_gone(info):
    pid = info["pid"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = os.path.exists(f"/proc/{pid}") and _state(pid) != "Z"
        if not alive and not _children_of(pid) and not shm.list_segments(pid):
            break
        time.sleep(0.05)
    assert not (os.path.exists(f"/proc/{pid}") and _state(pid) != "Z"), "head still running"
    assert not _children_of(pid), "workers outlived the head"
    assert not shm.list_segments(pid), f"segments left: {shm.list_segments(pid)}"
    root = os.path.join(info["tmp"], f"miniray-{os.getuid()}")
    assert not os.path.exists(os.path.join(root, "head.json"))
    assert not os.path.exists(os.path.join(root, "head.token"))
    assert not os.path.exists(os.path.join(root, "head.sock"))


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


def _run_driver(env, code, timeout=60):
    proc = subprocess.run([PY, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_status_and_token_file_are_private(head):
    root = os.path.join(head["tmp"], f"miniray-{os.getuid()}")
    assert os.stat(root).st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(root, "head.token")).st_mode & 0o777 == 0o600
    assert os.stat(os.path.join(root, "head.sock")).st_mode & 0o777 == 0o600
    out = _cli(head["env"], "status").stdout
    assert "CPU          0 / 2 in use" in out
    assert "Workers      2 (2 task" in out
    assert "Drivers      0 connected" in out
    data = json.loads(_cli(head["env"], "status", "--json").stdout)
    assert data["resources_total"]["CPU"] == 2.0
    assert data["pid"] == head["pid"]
    # python -m miniray and the console script are the same program.
    script = os.path.join(os.path.dirname(PY), "miniray")
    if os.path.exists(script):
        again = subprocess.run([script, "status", "--json"], env=head["env"],
                               capture_output=True, text=True, timeout=60)
        assert json.loads(again.stdout)["pid"] == head["pid"]


def test_driver_in_process_tasks_actors_objects_async(head):
    import numpy as np

    ctx = miniray.init(address="auto")
    assert ctx["node_id"] == f"node-{head['pid']}"

    @miniray.remote
    def double(x):
        return x * 2

    @miniray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def inc(self, by=1):
            self.n += by
            return self.n

    assert miniray.get([double.remote(i) for i in range(20)]) == [2 * i for i in range(20)]
    big = np.arange(2_000_000, dtype=np.int64)
    ref = miniray.put(big)
    back = miniray.get(ref)
    assert not back.flags.writeable and int(back.sum()) == int(big.sum())
    assert int(miniray.get(double.remote(ref)).sum()) == 2 * int(big.sum())
    counter = Counter.remote()
    assert miniray.get([counter.inc.remote() for _ in range(5)]) == [1, 2, 3, 4, 5]
    ready, not_ready = miniray.wait([double.remote(1), double.remote(2)], num_returns=2,
                                    timeout=30)
    assert len(ready) == 2 and not not_ready
    assert miniray.cluster_resources()["CPU"] == 2.0

    async def main():
        values = await asyncio.gather(*[double.remote(i) for i in range(5)])
        single = await miniray.get(double.remote(21))
        ready, _ = await miniray.wait([double.remote(3)], timeout=30)
        return values, single, len(ready)

    assert asyncio.run(main()) == ([0, 2, 4, 6, 8], 42, 1)

    @miniray.remote
    def boom():
        raise KeyError("remote failure")

    with pytest.raises(KeyError, match="remote failure"):
        miniray.get(boom.remote())
    with pytest.raises(miniray.exceptions.GetTimeoutError):
        @miniray.remote
        def slow():
            time.sleep(5)
        miniray.get(slow.remote(), timeout=0.2)
    # More than the head has stays pending (as in Ray), with a warning here too.
    infeasible = double.options(num_gpus=1).remote(1)
    assert miniray.wait([infeasible], timeout=0.2)[0] == []
    miniray.cancel(infeasible)
    del infeasible
    del back, ref
    miniray.shutdown()
    # Everything this driver held is released on the head.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = json.loads(_cli(head["env"], "status", "--json").stdout)
        if status["object_store"]["objects"] == 0 and status["actors"]["alive"] == 0:
            break
        time.sleep(0.2)
    assert status["object_store"]["objects"] == 0
    assert status["actors"]["alive"] == 0  # non-detached actors die with their driver


def test_two_drivers_share_a_detached_actor(head):
    env = head["env"]
    _run_driver(env, """
        import miniray as ray
        ray.init(address="auto")
        @ray.remote
        class Store:
            def __init__(self): self.items = {}
            def set(self, k, v): self.items[k] = v
            def get(self, k): return self.items.get(k)
        s = Store.options(name="shared", lifetime="detached").remote()
        ray.get(s.set.remote("answer", 42))
    """)
    out = _run_driver(env, f"""
        import miniray as ray
        ray.init(address="127.0.0.1:{head['address'].rsplit(':', 1)[1]}")
        s = ray.get_actor("shared")
        print(ray.get(s.get.remote("answer")))
        ray.kill(s)
    """)
    assert out.strip() == "42"


def test_killed_driver_releases_its_objects(head):
    env = head["env"]
    proc = subprocess.Popen([PY, "-c", textwrap.dedent("""
        import sys, time, numpy as np, miniray as ray
        ray.init(address="auto")
        @ray.remote
        def hold(x):
            time.sleep(60)
        refs = [ray.put(np.ones(200_000)) for _ in range(5)]
        pending = hold.remote(refs[0])
        print("ready", flush=True)
        time.sleep(120)
    """)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        status = json.loads(_cli(env, "status", "--json").stdout)
        assert status["object_store"]["objects"] >= 5
        assert status["drivers"] == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = json.loads(_cli(env, "status", "--json").stdout)
            if status["drivers"] == 0 and status["object_store"]["objects"] <= 1:
                break
            time.sleep(0.2)
        assert status["drivers"] == 0
        # Only the running task's own argument may still be held (by the task).
        assert status["object_store"]["objects"] <= 1
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


def test_wrong_token_and_bad_arguments(head, monkeypatch):
    address = head["address"]
    with pytest.raises(PermissionError, match="refused"):
        miniray.init(address=address, _token="not-the-token")
    assert not miniray.is_initialized()
    with pytest.raises(ValueError, match="belong to the head"):
        miniray.init(address="auto", num_cpus=4)
    with pytest.raises(ValueError, match="not understood"):
        miniray.init(address="no-port-here")
    status = json.loads(_cli(head["env"], "status", "--json").stdout)
    assert status["counters"].get("drivers_rejected", 0) >= 1


def test_no_head_running(tmp_path, monkeypatch):
    env = dict(os.environ, MINIRAY_TMPDIR=str(tmp_path))
    monkeypatch.setenv("MINIRAY_TMPDIR", str(tmp_path))
    with pytest.raises(ConnectionError, match="miniray start --head"):
        miniray.init(address="auto")
    assert not miniray.is_initialized()
    status = _cli(env, "status", check=False)
    assert status.returncode == 1 and "miniray start --head" in status.stderr
    stop = _cli(env, "stop")
    assert "No running miniray head" in stop.stdout
    start = _cli(env, "start", check=False)
    assert start.returncode == 2 and "--head" in start.stderr


def test_second_head_is_refused_and_sigkilled_head_leaves_nothing(head):
    again = _cli(head["env"], "start", "--head", "--port", "0", "--include-dashboard",
                 "false", check=False)
    assert again.returncode == 1 and "already running" in again.stderr
    # A head killed outright: its watchdog reclaims workers and shared memory,
    # and `miniray stop` cleans the stale files.
    miniray.init(address="auto")
    ref = miniray.put(b"x" * 1_000_000)
    assert len(miniray.get(ref)) == 1_000_000
    os.kill(head["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _children_of(head["pid"]):
        time.sleep(0.05)
    assert not _children_of(head["pid"])
    with pytest.raises(miniray.exceptions.RaySystemError):
        @miniray.remote
        def f():
            return 1
        miniray.get(f.remote(), timeout=10)
    # (the fixture's `miniray stop` then reports no head and removes the files)


def test_head_serves_the_dashboard(tmp_path):
    pytest.importorskip("aiohttp")
    import urllib.request

    env = dict(os.environ, MINIRAY_TMPDIR=str(tmp_path))
    env.pop("MINIRAY_ADDRESS", None)
    out = _cli(env, "start", "--head", "--num-cpus", "1", "--port", "0",
               "--include-dashboard", "true", "--dashboard-port", "0").stdout
    info = _head_info(tmp_path)
    info["tmp"] = str(tmp_path)
    try:
        url = info["dashboard_url"]
        assert url and f"dashboard:  {url}" in out
        assert _cli(env, "dashboard", "--no-browser").stdout.strip() == url
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url + "/api/summary", timeout=5) as response:
                    summary = json.load(response)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert summary["pid"] == info["pid"]
        _run_driver(env, """
            import miniray as ray
            ray.init(address="auto")
            @ray.remote
            def shown_on_dashboard(): return 1
            assert ray.get(shown_on_dashboard.remote()) == 1
        """)
        with urllib.request.urlopen(url + "/api/tasks?name=shown_on_dashboard",
                                    timeout=5) as response:
            tasks = json.load(response)
        assert json.dumps(tasks).count("shown_on_dashboard") >= 1
    finally:
        _cli(env, "stop")
        _assert_head_gone(info)
