"""The node's event bus, metrics sampler and worker log capture, on a real node."""

from __future__ import annotations

import os
import time

import pytest

import miniray
from miniray._core.node import introspect
from miniray._core.node.events import EventBus
from miniray._core.node.state import Task


def _on_loop(fn):
    from miniray.api import _runtime

    return _runtime.call_threadsafe_wait(fn)


def _runtime():
    from miniray.api import _runtime

    return _runtime


def test_task_lifecycle_states_errors_and_dag(ray):
    @ray.remote
    def inc(x):
        return x + 1

    @ray.remote
    def add(a, b):
        return a + b

    @ray.remote(max_retries=0)
    def fail():
        raise ValueError("bad value 7")

    a, b = inc.remote(1), inc.remote(2)
    total = add.remote(a, b)
    assert ray.get(total) == 5
    with pytest.raises(ValueError):
        ray.get(fail.remote())
    rt = _runtime()
    n, page = _on_loop(lambda: rt.events.list_tasks(limit=10))
    assert n == 4
    by_name = {t["name"].rsplit(".", 1)[-1]: t for t in page}
    assert by_name["add"]["state"] == "FINISHED"
    assert by_name["add"]["duration_s"] is not None and by_name["add"]["worker_id"]
    assert by_name["fail"]["state"] == "FAILED"
    assert "ValueError" in by_name["fail"]["error"] and "bad value 7" in by_name["fail"]["error"]
    failed = _on_loop(lambda: rt.events.list_tasks(state="FAILED"))
    assert failed[0] == 1 and failed[1][0]["name"].endswith("fail")
    assert _on_loop(lambda: rt.events.list_tasks(name=".inc"))[0] == 2
    detail = _on_loop(lambda: rt.events.get_task(bytes.fromhex(by_name["fail"]["task_id"])))
    assert "bad value 7" in detail["traceback"] and detail["returns"]
    dag = _on_loop(lambda: rt.events.dag())
    edges = {(e["source"], e["target"]) for e in dag["edges"]}
    add_id = by_name["add"]["task_id"]
    inc_ids = [t["task_id"] for t in page if t["name"].endswith(".inc")]
    assert {(i, add_id) for i in inc_ids} <= edges
    counts = _on_loop(lambda: rt.events.task_counts())
    assert counts["FINISHED"] == 3 and counts["FAILED"] == 1


def test_event_rings_coalesce_and_count_losses():
    bus = EventBus({"events": 5, "tasks": 3})

    def T(i):  # a runtime Task with the fields the bus reads
        task = Task()
        task.task_id = bytes([i]) * 16
        task.name = f"t{i}"
        task.held = ()
        task.return_ids = [task.task_id]
        task.started_at = task.ended_at = task.worker_id = task.error = None
        task.attempt = 0
        return task

    tasks = [T(i) for i in range(4)]
    for t in tasks:
        bus.task_submitted(t)
    assert len(bus.tasks) == 3 and bus.evicted_tasks == 1  # capped, oldest first
    batch = bus.events_since({}, kinds=["task"])
    assert batch["cursors"]["task"] == 4 and batch["lost"]["task"] == 0
    bus.task_dispatched(tasks[3], 1, False)
    bus.task_ended(tasks[3], None)
    again = bus.events_since(batch["cursors"], kinds=["task"])
    # Two changes to one task arrive as its latest state.
    assert again["changes"]["task"] == 2
    assert [e["state"] for e in again["events"]["task"]] == ["FINISHED"]
    for _ in range(10):
        bus.task_retried(tasks[3])
    late = bus.events_since(again["cursors"], kinds=["task"])
    assert late["lost"]["task"] == 5 and late["changes"]["task"] == 5
    assert late["cursors"]["task"] == 16


def test_metrics_sampler_and_summary(ray):
    @ray.remote
    def spin(t):
        end = time.time() + t
        while time.time() < end:
            pass
        return 1

    refs = [spin.remote(0.3) for _ in range(4)]
    ray.get(refs)
    rt = _runtime()
    sample = _on_loop(lambda: rt.sampler.sample())
    assert sample["tasks_finished_total"] >= 4
    assert sample["workers"] >= 2 and sample["memory_bytes"] > 10 << 20
    assert str(rt.node_pid) in {str(p["pid"]) for p in sample["processes"].values()}
    time.sleep(1.1)
    assert len(rt.events.metrics) >= 2
    info = _on_loop(lambda: introspect.summary(rt))
    assert info["resources_total"]["CPU"] == 2.0
    assert info["tasks"]["finished_total"] >= 4
    workers = _on_loop(lambda: introspect.list_workers(rt))
    assert all(w["state"] in ("IDLE", "BUSY", "STARTING", "BLOCKED") for w in workers
               if "ended_at" not in w)
    total, objects = _on_loop(lambda: introspect.list_objects(rt))
    assert total == len(objects) >= 0


def test_worker_output_goes_to_files_and_driver(ray, capsys):
    @ray.remote
    def chatty(i):
        print(f"line from task {i}")
        import sys
        print(f"oops {i}", file=sys.stderr)
        return i

    assert ray.get(chatty.remote(7)) == 7
    rt = _runtime()
    deadline = time.time() + 5
    out = ""
    while time.time() < deadline:
        out += capsys.readouterr().out
        if "line from task 7" in out:
            break
        time.sleep(0.05)
    assert "(chatty pid=" in out and "line from task 7" in out
    logs = _on_loop(lambda: introspect.list_logs(rt))
    texts = {}
    for item in logs:
        texts[item["name"]] = _on_loop(lambda: introspect.tail_log(rt, item["name"]))["text"]
    assert any("line from task 7" in t for n, t in texts.items() if n.endswith(".out"))
    assert any("oops 7" in t for n, t in texts.items() if n.endswith(".err"))
    with pytest.raises(ValueError, match="no such log"):
        introspect.tail_log(rt, "../etc/passwd")
    name = next(n for n, t in texts.items() if "line from task 7" in t)
    follow = _on_loop(lambda: introspect.tail_log(rt, name, offset=0))
    assert "line from task 7" in follow["text"] and follow["offset"] > 0


def test_log_to_driver_false_keeps_files_only(ray_factory, capsys):
    ray = ray_factory(log_to_driver=False)

    @ray.remote
    def quiet():
        print("only in the file")
        return 1

    assert ray.get(quiet.remote()) == 1
    rt = _runtime()
    time.sleep(0.3)
    out, _ = capsys.readouterr()
    assert "only in the file" not in out
    names = [i["name"] for i in _on_loop(lambda: introspect.list_logs(rt))]
    def read(name):
        with open(os.path.join(rt.log_dir, name)) as f:
            return f.read()

    assert any("only in the file" in read(n) for n in names)
