"""Ray's state API (ray.util.state), ray.timeline(), ray.get_gpu_ids() and the
submodules reachable as attributes after ``import miniray``."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest


def test_list_tasks_actors_workers_with_filters_and_attribute_access(ray):
    from miniray.util.state import (list_actors, list_nodes, list_objects, list_tasks,
                                    list_workers, summarize_tasks)

    @ray.remote
    def f(x):
        return x

    @ray.remote
    def boom():
        raise ValueError("no")

    @ray.remote
    class Counter:
        def inc(self):
            return 1

    counter = Counter.remote()
    ray.get([f.remote(i) for i in range(4)] + [counter.inc.remote()])
    with pytest.raises(ValueError):
        ray.get(boom.remote())
    kept = ray.put(b"x" * 200_000)

    tasks = list_tasks()
    assert tasks[0].name.endswith("boom") and tasks[0]["state"] == "FAILED"  # newest first
    assert "ValueError" in tasks[0].error
    f_name = tasks[-1].name  # the first submitted
    assert f_name.endswith("f")
    assert [t.name for t in list_tasks(filters=[("name", "=", f_name)])] == [f_name] * 4
    assert {t.state for t in list_tasks(filters=[("state", "!=", "FAILED")])} == {"FINISHED"}
    assert len(list_tasks(limit=2)) == 2
    assert summarize_tasks() == {f_name: {"FINISHED": 4}, "Counter.inc": {"FINISHED": 1},
                                 tasks[0].name: {"FAILED": 1}}
    (actor,) = list_actors()
    assert (actor.class_name, actor.state) == ("Counter", "ALIVE")
    assert any(o.object_id == kept.hex() and o.size >= 200_000 for o in list_objects())
    workers = list_workers(filters=[("state", "=", "IDLE")])
    assert workers and all(w.pid > 0 for w in workers)
    assert list_nodes()[0].resources_total["CPU"] == 2
    with pytest.raises(AttributeError, match="a state record has"):
        tasks[0].nope
    with pytest.raises(ValueError, match="predicate"):
        list_tasks(filters=[("state", "~", "x")])
    with pytest.raises(ValueError, match="key, predicate, value"):
        list_tasks(filters=["state=RUNNING"])
    with pytest.raises(TypeError, match="unexpected keyword"):
        list_tasks(detial=True)


def test_timeline_is_a_chrome_trace_of_the_tasks_that_ran(ray, tmp_path):
    @ray.remote
    def nap(s):
        time.sleep(s)
        return s

    ray.get([nap.remote(0.05) for _ in range(3)])
    events = ray.timeline()
    assert len(events) == 3
    assert all(e["ph"] == "X" and e["name"].endswith("nap") for e in events)
    assert all(e["dur"] >= 0.04e6 for e in events)
    assert len({e["tid"] for e in events}) <= 2  # one row per worker
    path = tmp_path / "trace.json"
    assert ray.timeline(str(path)) is None
    assert json.loads(path.read_text()) == json.loads(json.dumps(events))


def test_get_gpu_ids_in_driver_and_in_work_without_gpus(ray):
    @ray.remote
    def ids():
        return ray.get_gpu_ids()

    assert ray.get_gpu_ids() == []
    assert ray.get(ids.remote()) == []


def test_submodules_are_attributes_after_import_and_import_stays_light():
    code = (
        "import sys, miniray as ray\n"
        "heavy = {'aiohttp', 'optuna', 'torch', 'ray'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "assert 'miniray.util' not in sys.modules\n"
        "assert ray.util.ActorPool and ray.util.state.list_tasks and ray.actor.exit_actor\n"
        "try:\n"
        "    ray.nonexistent\n"
        "except AttributeError as e:\n"
        "    assert 'nonexistent' in str(e)\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
