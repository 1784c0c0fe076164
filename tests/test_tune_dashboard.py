"""``GET /api/tune``: served from the dashboard's route registry while experiments run."""

from __future__ import annotations

import asyncio
import collections
import json
import math
import os
import subprocess
import sys

import pytest

from miniray import tune
from miniray.tune import dashboard as tune_dashboard

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402


def gated(config):
    """Reports once, then waits for the test to open the gate file, then reports again."""
    import time

    tune.report({"score": config["x"], "note": float("nan")})
    while not os.path.exists(config["gate"]):
        time.sleep(0.02)
    tune.report({"score": config["x"] + 1, "note": 0.0})


def _app():
    from miniray.dashboard import routes

    app = web.Application()
    for route in routes.routes():
        app.router.add_route(route.method, route.path, route.handler)
    return app


async def _get(client):
    response = await client.get("/api/tune")
    text = await response.text()
    assert response.status == 200, text
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))


async def test_api_tune_while_an_experiment_runs(ray, tmp_path, monkeypatch):
    monkeypatch.setattr(tune_dashboard, "_experiments", collections.deque(maxlen=20))
    gate = str(tmp_path / "gate")
    tuner = tune.Tuner(gated, param_space={"x": tune.grid_search([1, 2]), "gate": gate,
                                           "obj": object()},
                       tune_config=tune.TuneConfig(metric="score", mode="max"),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="gated",
                                                 verbose=0))
    fit = asyncio.get_running_loop().run_in_executor(None, tuner.fit)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not tune_dashboard._experiments:  # the route is registered as the run starts
        assert loop.time() < deadline
        await asyncio.sleep(0.02)
    async with TestClient(TestServer(_app())) as client:
        # While both trials wait at the gate, the experiment is RUNNING with one result each.
        while True:
            data = await _get(client)
            experiments = data["experiments"]
            if experiments and experiments[0]["counts"].get("RUNNING") == 2 and all(
                    t["iteration"] == 1 for t in experiments[0]["trials"]):
                break
            assert loop.time() < deadline, data
            await asyncio.sleep(0.05)
        running = experiments[0]
        assert running["name"] == "gated"
        assert (running["status"], running["metric"], running["mode"]) == (
            "RUNNING", "score", "max")
        assert running["num_trials"] == 2 and running["trials_truncated"] == 0
        assert running["best_trial_id"] == running["trials"][1]["trial_id"]
        assert running["best_result"]["score"] == 2
        trial = running["trials"][0]
        assert trial["status"] == "RUNNING" and trial["error"] is None
        assert trial["config"]["x"] == 1 and trial["config"]["obj"].startswith("<object")
        assert trial["last_result"]["note"] is None  # NaN is not JSON
        assert "config" not in trial["last_result"]

        open(gate, "w").close()
        await fit
        done = (await _get(client))["experiments"][0]
        assert done["status"] == "TERMINATED"
        assert done["counts"] == {"TERMINATED": 2}
        assert done["best_result"]["score"] == 3
        assert [t["iteration"] for t in done["trials"]] == [2, 2]


def trivial(config):
    return {"score": config["x"]}


def failing(config):
    raise ValueError("broken trial")


def test_api_tune_bounds_experiments_and_trials(ray, tmp_path, monkeypatch):
    monkeypatch.setattr(tune_dashboard, "_experiments", collections.deque(maxlen=2))
    monkeypatch.setattr(tune_dashboard, "MAX_TRIALS", 3)
    for name, n in (("first", 1), ("second", 5), ("third", 2)):
        tune.Tuner(trivial, param_space={"x": tune.grid_search(list(range(n)))},
                   tune_config=tune.TuneConfig(metric="score", mode="min"),
                   run_config=tune.RunConfig(storage_path=str(tmp_path), name=name,
                                             verbose=0)).fit()
    tune.Tuner(failing, param_space={"x": 1},
               run_config=tune.RunConfig(storage_path=str(tmp_path), name="failing",
                                         verbose=0)).fit()
    data = tune_dashboard.snapshot()
    json.dumps(data, allow_nan=False)
    assert [e["name"] for e in data["experiments"]] == ["failing", "third"]
    third = data["experiments"][1]
    assert third["best_trial_id"] == third["trials"][0]["trial_id"]
    assert third["best_result"]["score"] == 0
    failed = data["experiments"][0]
    assert failed["status"] == "TERMINATED"  # the experiment ended; its trial failed
    assert failed["counts"] == {"ERROR": 1} and failed["best_result"] is None
    assert "broken trial" in failed["trials"][0]["error"]

    monkeypatch.setattr(tune_dashboard, "_experiments", collections.deque(maxlen=2))
    tune.Tuner(trivial, param_space={"x": tune.grid_search(list(range(5)))},
               run_config=tune.RunConfig(storage_path=str(tmp_path), name="many",
                                         verbose=0)).fit()
    many = tune_dashboard.snapshot()["experiments"][0]
    assert many["num_trials"] == 5 and many["trials_truncated"] == 2
    assert [t["config"]["x"] for t in many["trials"]] == [2, 3, 4]  # the most recent
    assert many["best_trial_id"] is None  # no metric given


def test_json_safe():
    np = pytest.importorskip("numpy")
    value = {"a": (1, np.float32(0.5), np.int64(3)), "b": [math.inf, None, True],
             1: {"deep": np.array([1, 2])}}
    safe = tune_dashboard.json_safe(value)
    assert safe == {"a": [1, 0.5, 3], "b": [None, None, True],
                    "1": {"deep": repr(np.array([1, 2]))}}
    json.dumps(safe, allow_nan=False)


def test_route_registered_without_importing_aiohttp(tmp_path):
    code = f"""
import sys
import miniray
from miniray import tune
miniray.init(num_cpus=1, include_dashboard=False)
tune.Tuner(lambda config: {{"score": 1}}, param_space={{}},
           run_config=tune.RunConfig(storage_path={str(tmp_path)!r}, verbose=0)).fit()
from miniray.dashboard import routes
assert [r.summary for r in routes.routes() if r.path == "/api/tune"], routes.routes()
assert "aiohttp" not in sys.modules
miniray.shutdown()
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip().endswith("ok"), out.stderr
