"""The object store under real memory limits: small /dev/shm, a full tmpfs,
the node-wide budget, spilled reads racing restores, warm mappings.

The tmpfs tests run a node in a child process inside ``unshare -m`` with a
private tmpfs of a chosen size mounted on /dev/shm (as a container has), so
what they measure of /dev/shm is the node's alone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import miniray
from miniray import exceptions
from miniray._core.store import shm

from .conftest import _children_of

REPO = os.path.dirname(os.path.dirname(os.path.abspath(miniray.__file__)))
MiB = 1 << 20

SCENARIO = textwrap.dedent("""
    import json, os, sys, threading, time
    import numpy as np
    import miniray as ray

    mode, capacity, filler = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    def shm_used():
        st = os.statvfs("/dev/shm")
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    peak = [0]
    stop = [False]

    def sample():
        while not stop[0]:
            peak[0] = max(peak[0], shm_used() - filler)
            time.sleep(0.002)

    threading.Thread(target=sample, daemon=True).start()
    kwargs = {} if mode == "default" else {"object_store_memory": capacity}
    info = ray.init(num_cpus=2, include_dashboard=False, **kwargs)
    capacity = info["object_store_memory"]
    if filler:  # another tenant takes most of /dev/shm after the store was sized
        fd = os.open("/dev/shm/other_tenant", os.O_CREAT | os.O_RDWR, 0o600)
        os.posix_fallocate(fd, 0, filler)
        os.close(fd)
    ITEMS = (10 << 20) // 8  # 10 MiB results

    @ray.remote
    def produce(i):
        return np.full(ITEMS, i, dtype=np.int64)

    @ray.remote
    def check(x, i):
        return bool((x == i).all())

    n = 30 if mode == "default" else 3 * capacity // (10 << 20) + 1
    refs = [produce.remote(i) for i in range(n)]
    ray.wait(refs, num_returns=n)
    puts = [ray.put(np.full(ITEMS, -i, dtype=np.int64)) for i in range(1, 4)]
    tasks_ok = ray.get([check.remote(r, i) for i, r in enumerate(refs)])
    reads_ok = []
    for i, r in enumerate(refs):
        v = ray.get(r)
        reads_ok.append(bool(v[0] == i and v[-1] == i and len(v) == ITEMS))
        del v
    puts_ok = [bool((ray.get(p) == -i).all()) for i, p in enumerate(puts, 1)]
    runtime = ray.api._client().runtime
    counters = dict(runtime.counters)
    store_dir = runtime.store_dir
    del refs, puts, r
    time.sleep(0.5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and shm_used() - filler > (1 << 20):
        time.sleep(0.1)
    after = shm_used() - filler
    stop[0] = True
    ray.shutdown()
    left = [n for n in os.listdir("/dev/shm") if n != "other_tenant"]
    if store_dir != "/dev/shm":  # file-backed: our node's files there are gone too
        left += [n for n in os.listdir(store_dir) if n.startswith(f"miniray_{os.getpid()}_")]
    print(json.dumps({
        "capacity": capacity, "n": n, "tasks_ok": tasks_ok, "reads_ok": reads_ok,
        "puts_ok": puts_ok, "peak": peak[0], "after": after, "left": left,
        "store_dir": store_dir, "spilled": counters.get("objects_spilled", 0),
        "workers_died": counters.get("workers_died", 0),
    }))
""")


def _run_in_tmpfs(tmp_path, size_mib: int, *args, timeout=110):
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to give the node a private /dev/shm")
    probe = subprocess.run(["unshare", "-m", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("mounting a private tmpfs needs root and mount namespaces "
                    f"(unshare -m failed: {probe.stderr.decode().strip()})")
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = (f"mount -t tmpfs -o size={size_mib}m tmpfs /dev/shm && exec "
           + " ".join([sys.executable, str(script)] + [str(a) for a in args]))
    proc = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True,
                          timeout=timeout, env=env)
    out = proc.stdout.decode()
    assert proc.returncode == 0, (
        f"the node died (exit {proc.returncode}; -7 is SIGBUS):\n{out}\n"
        f"{proc.stderr.decode()[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), proc.stderr.decode()


def _assert_all_read_back(result):
    assert all(result["tasks_ok"]) and len(result["tasks_ok"]) == result["n"]
    assert all(result["reads_ok"]) and len(result["reads_ok"]) == result["n"]
    assert all(result["puts_ok"])
    assert result["workers_died"] == 0
    assert result["left"] == [], f"segments left behind: {result['left']}"


@pytest.mark.parametrize("size_mib", [64, 256])
def test_default_settings_in_a_small_dev_shm_back_the_store_with_files(tmp_path, size_mib):
    result, err = _run_in_tmpfs(tmp_path, size_mib, "default", 0, 0)
    _assert_all_read_back(result)
    assert result["store_dir"] != "/dev/shm"
    assert "too small for the object store" in err and err.count("WARNING") == 1, err
    # 300 MiB of results held, none of it in the container's /dev/shm.
    assert result["peak"] < 4 * MiB, result


@pytest.mark.parametrize("size_mib,capacity_mib", [(64, 32), (256, 96)])
def test_three_times_the_budget_held_stays_within_the_budget(tmp_path, size_mib, capacity_mib):
    result, _ = _run_in_tmpfs(tmp_path, size_mib, "budget", capacity_mib * MiB, 0)
    _assert_all_read_back(result)
    assert result["store_dir"] == "/dev/shm"
    assert result["n"] * 10 * MiB >= 3 * result["capacity"]
    assert result["spilled"] > 0
    slack = 12 * MiB  # one 10 MiB object in flight past the check, and page rounding
    assert result["peak"] <= result["capacity"] + slack, result
    assert result["after"] <= 1 * MiB, f"pages not given back after the refs went: {result}"


def test_a_tmpfs_filled_by_another_process_spills_instead_of_sigbus(tmp_path):
    # The store was sized when /dev/shm was empty; then another tenant took
    # 200 of its 256 MiB. Writes past what is left must spill, not fault.
    result, _ = _run_in_tmpfs(tmp_path, 256, "filler", 128 * MiB, 200 * MiB)
    _assert_all_read_back(result)
    assert result["spilled"] > 0


def test_spilled_reads_race_restores_without_errors(ray_factory):
    # Small objects, 4x the store: every dispatch of a task taking a spilled
    # object restores it (spilling another), while threads read them all.
    ray = ray_factory(object_store_memory=4 * MiB, include_dashboard=False)
    items = (256 << 10) // 8
    refs = [ray.put(np.full(items, i, dtype=np.int64)) for i in range(64)]

    @ray.remote
    def first(x):
        return int(x[0])

    errors: list = []
    reads = [0]
    stop = threading.Event()

    def reader(k):
        while not stop.is_set():
            for i in range(k, len(refs), 4):
                try:
                    v = ray.get(refs[i])
                    if int(v[0]) != i or int(v[-1]) != i:
                        errors.append(f"object {i} read back as {int(v[0])}")
                    del v
                except Exception as exc:  # noqa: BLE001 - any error fails the test
                    errors.append(repr(exc))
                reads[0] += 1

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not errors:
            # Objects put and dropped: each spills others, then leaves room in
            # which the dispatches below restore spilled objects.
            scratch = [ray.put(np.zeros(items, dtype=np.int64)) for _ in range(8)]
            del scratch
            assert ray.get([first.remote(r) for r in refs]) == list(range(len(refs)))
    finally:
        stop.set()
        for t in threads:
            t.join()
    runtime = ray.api._client().runtime
    assert runtime.counters["objects_restored"] > 0 and runtime.counters["objects_spilled"] > 0
    assert reads[0] > 100
    assert errors[:5] == []


def test_worker_reading_an_object_spilled_meanwhile_is_pinned_by_the_reply(ray_factory):
    # A worker's get is answered with a location; the node must keep the object
    # there until the worker has mapped it, even if the store needs room.
    ray = ray_factory(object_store_memory=24 * MiB, include_dashboard=False)
    items = (4 * MiB) // 8
    refs = [ray.put(np.full(items, i, dtype=np.int64)) for i in range(10)]

    @ray.remote
    def read_all(boxed):
        out = []
        for i, r in enumerate(boxed):
            v = miniray.get(r)
            out.append(int(v[0]) == i and int(v[-1]) == i)
        return out

    @ray.remote
    def churn(i):
        return np.full(items, -i, dtype=np.int64)

    for _ in range(3):
        pending = [churn.remote(i) for i in range(6)]
        assert all(ray.get(read_all.remote(refs)))
        del pending


def test_object_store_full_error_names_sizes_and_the_fix(ray_factory):
    ray = ray_factory(object_store_memory=16 * MiB, include_dashboard=False)
    keep = ray.get(ray.put(np.ones(10 * MiB, dtype=np.uint8)))  # a live view pins it
    with pytest.raises(exceptions.ObjectStoreFullError) as info:
        ray.put(np.ones(10 * MiB, dtype=np.uint8))
    message = str(info.value)
    assert "16.0 MiB" in message and "object_store_memory" in message
    del keep


def test_spill_directory_is_configurable_and_cleaned_up(ray_factory, tmp_path):
    spill_root = tmp_path / "spill"
    ray = ray_factory(object_store_memory=16 * MiB, include_dashboard=False,
                      _system_config={"object_spilling_config": json.dumps(
                          {"type": "filesystem", "params": {"directory_path": str(spill_root)}})})
    refs = [ray.put(np.full(MiB, i, dtype=np.int64)) for i in range(4)]  # 32 MiB
    runtime = ray.api._client().runtime
    files = [p for d in spill_root.iterdir() for p in d.iterdir()]
    assert files, "objects should have spilled into the configured directory"
    stats = runtime.rpc_stats(None)
    assert stats["spilled_bytes"] >= 8 * MiB
    from miniray._core.node import introspect
    from miniray.dashboard import prometheus

    store = introspect.summary(runtime)["object_store"]
    assert store["spilled_bytes"] == stats["spilled_bytes"]
    assert store["spill_dir"].startswith(str(spill_root))
    text = prometheus.node_metrics(runtime).text()
    assert f"miniray_object_store_spilled_bytes {stats['spilled_bytes']}" in text
    assert [int(ray.get(r)[5]) for r in refs] == [0, 1, 2, 3]
    miniray.shutdown()
    assert list(spill_root.iterdir()) == []


def test_bad_spill_config_is_a_clear_error():
    with pytest.raises(ValueError, match="object_spilling_config"):
        miniray.init(num_cpus=1, include_dashboard=False,
                     _system_config={"object_spilling_config": "{not json"})
    with pytest.raises(ValueError, match="not supported"):
        miniray.init(num_cpus=1, include_dashboard=False,
                     _system_config={"object_spilling_config": json.dumps(
                         {"type": "smart_open", "params": {"uri": "s3://x"}})})


def test_second_read_of_a_large_argument_takes_no_page_faults(ray_factory):
    ray = ray_factory(num_cpus=1, object_store_memory=512 * MiB, include_dashboard=False)
    ref = ray.put(np.ones(100 * MiB, dtype=np.uint8))

    @ray.remote
    def total(x):
        import resource

        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        s = int(x.sum(dtype=np.uint64))
        return s, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    first = ray.get(total.remote(ref))
    second = ray.get(total.remote(ref))
    assert first[0] == second[0] == 100 * MiB
    # 100 MiB is 25,600 pages: a process that maps them afresh each call faults
    # on every 16th at best; a kept mapping faults on none.
    assert second[1] < 200, (first, second)


DRIVER = textwrap.dedent("""
    import sys, time, numpy as np
    import miniray as ray
    ray.init(num_cpus=1, object_store_memory=16 << 20, include_dashboard=False,
             _system_config={"object_spilling_directory": sys.argv[1]})
    keep = [ray.put(np.full(1 << 20, i)) for i in range(4)]  # 32 MiB: half spills
    rt = ray.api._client().runtime
    print(rt.spill.dir, flush=True)
    time.sleep(60)
""")


def test_sigkilled_driver_leaves_no_segment_and_no_spill_file(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    spill_root = tmp_path / "spill"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, str(script), str(spill_root)],
                            stdout=subprocess.PIPE, env=env)
    try:
        spill_dir = proc.stdout.readline().decode().strip()
        assert os.listdir(spill_dir), "objects should have spilled"
        assert shm.list_segments(proc.pid, "/dev/shm")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
                os.path.exists(spill_dir) or shm.list_segments(proc.pid, "/dev/shm")
                or _children_of(proc.pid)):
            time.sleep(0.05)
        assert not os.path.exists(spill_dir)
        assert shm.list_segments(proc.pid, "/dev/shm") == []
        assert _children_of(proc.pid) == []
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_put_waits_for_pinned_objects_to_be_let_go(ray_factory):
    # A store full of objects pinned by views that are about to go (tasks that
    # just ended unpin a moment later) is not full yet: put waits, as Ray's does.
    ray = ray_factory(object_store_memory=4 * MiB, include_dashboard=False)
    held = [ray.get(ray.put(np.ones(3 * MiB // 8, dtype=np.int64)))]  # a pinning view

    def let_go():
        time.sleep(0.5)
        held.clear()

    releaser = threading.Thread(target=let_go)
    releaser.start()
    try:
        started = time.monotonic()
        ref = ray.put(np.zeros(3 * MiB // 8, dtype=np.int64))
        waited = time.monotonic() - started
    finally:
        releaser.join()
    assert int(ray.get(ref)[-1]) == 0
    assert waited >= 0.3  # it did wait for the view to go


def test_a_put_into_a_store_pinned_for_good_still_fails_clearly(ray_factory):
    from miniray.exceptions import ObjectStoreFullError

    ray = ray_factory(object_store_memory=4 * MiB, include_dashboard=False)
    view = ray.get(ray.put(np.ones(3 * MiB // 8, dtype=np.int64)))
    with pytest.raises(ObjectStoreFullError, match="pinned"):
        ray.put(np.zeros(3 * MiB // 8, dtype=np.int64))
    del view


def test_a_task_result_waits_for_pinned_objects_to_be_let_go(ray_factory):
    # The worker's side of the same grace: its reservation for a large result
    # waits for the view the driver is about to drop.
    ray = ray_factory(object_store_memory=4 * MiB, include_dashboard=False)
    held = [ray.get(ray.put(np.ones(3 * MiB // 8, dtype=np.int64)))]

    @ray.remote
    def make():
        return np.zeros(3 * MiB // 8, dtype=np.int64)

    ref = make.remote()
    time.sleep(0.5)
    held.clear()
    assert int(ray.get(ref, timeout=60)[-1]) == 0
