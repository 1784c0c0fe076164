"""ResourceChangingScheduler: a trial restarts from its checkpoint with new resources."""

from __future__ import annotations

import json
import os

from miniray import tune
from miniray.tune.schedulers import (ASHAScheduler, DistributeResources,
                                     ResourceChangingScheduler)


def counting(config):
    state = {"i": 0}
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with open(os.path.join(checkpoint.path, "s.json")) as f:
            state = json.load(f)
    while state["i"] < 4:
        state["i"] += 1
        d = os.path.join(tune.get_context().get_trial_dir(), "tmp_ckpt")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "s.json"), "w") as f:
            json.dump(state, f)
        tune.report({"i": state["i"],
                     "cpus": tune.get_context().get_trial_resources()["num_cpus"]},
                    checkpoint=tune.Checkpoint.from_directory(d))


def _history(path):
    with open(os.path.join(path, "result.json")) as f:
        return [json.loads(line) for line in f]


def test_a_lone_trial_gets_the_whole_node(ray, tmp_path):
    # 2 CPUs, one live trial: DistributeResources hands it both after its first result.
    sched = ResourceChangingScheduler()
    grid = tune.Tuner(counting, tune_config=tune.TuneConfig(scheduler=sched),
                      run_config=tune.RunConfig(storage_path=str(tmp_path), name="one",
                                                verbose=0)).fit()
    assert grid.num_errors == 0
    history = _history(grid[0].path)
    assert [h["cpus"] for h in history] == [1, 2, 2, 2]
    assert [h["i"] for h in history] == [1, 2, 3, 4]  # went on from its checkpoint


def test_custom_allocation_on_top_of_a_base_scheduler(ray, tmp_path):
    def allocate(controller, trial, result, scheduler):
        assert isinstance(scheduler, ResourceChangingScheduler)
        return {"CPU": 0.5} if result["i"] >= 2 else None

    sched = ResourceChangingScheduler(
        base_scheduler=ASHAScheduler(max_t=100, grace_period=10),
        resources_allocation_function=allocate)
    grid = tune.Tuner(counting, param_space={"x": tune.grid_search([1, 2])},
                      tune_config=tune.TuneConfig(metric="i", mode="max", scheduler=sched),
                      run_config=tune.RunConfig(storage_path=str(tmp_path), name="two",
                                                verbose=0)).fit()
    assert grid.num_errors == 0
    for result in grid:
        assert [h["cpus"] for h in _history(result.path)] == [1, 1, 0.5, 0.5]
    assert sched.metric == "i"


def test_distribute_resources_respects_reserve_and_steps(ray):
    class Ctl:
        def get_trials(self):
            return [T(), T()]

        def _resource_options(self, config):
            return {"num_cpus": 0.5, "num_gpus": 0}

    class T:
        status = "RUNNING"
        config = {}

    assert DistributeResources()(Ctl(), T(), {}, None) == {"CPU": 1}
    assert DistributeResources(reserve_resources={"CPU": 2})(Ctl(), T(), {}, None) == \
        {"CPU": 0.5}
    assert DistributeResources(increase_by={"CPU": 0.25}, increase_by_times=1)(
        Ctl(), T(), {}, None) == {"CPU": 0.75}
