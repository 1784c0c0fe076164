"""The hub actor: one per session, a channel per run, stragglers of a closed run stopped."""

from __future__ import annotations

import asyncio

from miniray import tune
from miniray.tune import _runner
from miniray.tune import session as tune_session


async def test_hub_channels_are_separate_and_close_stops_their_trials():
    hub = _runner.Hub()
    first = asyncio.ensure_future(hub.report("a", "t1", {"x": 1}, None))
    other = asyncio.ensure_future(hub.report("b", "t1", {"x": 2}, None))
    assert await hub.poll("a") == [("t1", {"x": 1}, None)]
    assert await hub.poll("b") == [("t1", {"x": 2}, None)]
    hub.decide("a", [("t1", tune_session.CONTINUE)])
    assert await first == tune_session.CONTINUE
    assert not other.done()  # same trial id on another channel: not answered

    waiting_poll = asyncio.ensure_future(hub.poll("b"))
    await asyncio.sleep(0)
    hub.close("b")
    assert await other == tune_session.STOP
    assert await waiting_poll == []
    # A trial of a closed run that reports late is stopped at once, never left waiting.
    assert await hub.report("b", "t2", {"x": 3}, None) == tune_session.STOP
    assert await hub.poll("b") == []


def reporter(config):
    for step in range(3):
        tune.report({"score": config["x"] * step})


def test_experiments_of_a_session_share_one_hub(ray, tmp_path):
    from miniray import api

    grids, actors = [], []
    for name in ("one", "two", "three"):
        grids.append(tune.Tuner(reporter, param_space={"x": tune.grid_search([1, 2])},
                                tune_config=tune.TuneConfig(metric="score", mode="max"),
                                run_config=tune.RunConfig(storage_path=str(tmp_path),
                                                          name=name, verbose=0)).fit())
        actors.append(api._node_stats()["actors"])
    assert actors == [1, 1, 1]  # the hub, started by the first experiment and kept
    for grid in grids:
        assert not grid.errors
        assert sorted(r.metrics["score"] for r in grid) == [2, 4]
        assert all(r.metrics["training_iteration"] == 3 for r in grid)
