"""PBT's policy files and ``PopulationBasedTrainingReplay`` (Ray Tune's names and formats)."""

from __future__ import annotations

import json
import os
import time

import pytest

from miniray import tune
from miniray.tune.schedulers import PopulationBasedTraining, PopulationBasedTrainingReplay


def stepper(config):
    state = {"i": 0}
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with open(os.path.join(checkpoint.path, "s.json")) as f:
            state = json.load(f)
    while True:
        time.sleep(config.get("sleep", 0))  # PBT: long enough for the trials to overlap
        state["i"] += 1
        d = os.path.join(tune.get_context().get_trial_dir(), "tmp_ckpt")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "s.json"), "w") as f:
            json.dump(state, f)
        tune.report({"lr": config["lr"], "w": state["i"] * config["lr"]},
                    checkpoint=tune.Checkpoint.from_directory(d))


def _history(path):
    with open(os.path.join(path, "result.json")) as f:
        return [json.loads(line) for line in f]


def test_replay_follows_the_lineage_of_a_policy_file(ray, tmp_path):
    policy = tmp_path / "pbt_policy_c.txt"
    # Ray's row: [trial, cloned trial, trial's step, clone's step, clone config, new config]
    rows = [["x", "y", 1, 1, {"lr": 9}, {"lr": 9}],  # another lineage: not replayed
            ["b", "a", 4, 2, {"lr": 1}, {"lr": 2}],
            ["c", "b", 6, 5, {"lr": 2}, {"lr": 3}]]
    policy.write_text("".join(json.dumps(r) + "\n" for r in rows))
    replay = PopulationBasedTrainingReplay(str(policy))
    assert replay.config == {"lr": 1}
    grid = tune.Tuner(stepper, tune_config=tune.TuneConfig(scheduler=replay),
                      run_config=tune.RunConfig(storage_path=str(tmp_path), name="replay",
                                                stop={"training_iteration": 7},
                                                verbose=0)).fit()
    assert grid.num_errors == 0 and len(grid) == 1
    history = _history(grid[0].path)
    assert [h["lr"] for h in history] == [1, 1, 2, 2, 2, 3, 3]
    # Each restart went on from the trial's own checkpoint: the step counter kept going.
    assert [h["training_iteration"] for h in history] == list(range(1, 8))
    assert grid[0].metrics["w"] == 7 * 3
    with pytest.raises(ValueError, match="not found"):
        PopulationBasedTrainingReplay(str(tmp_path / "nope.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match="Could not read PBT policy file"):
        PopulationBasedTrainingReplay(str(bad))


def test_pbt_writes_rays_policy_files(ray, tmp_path):
    pbt = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=2,
                                  hyperparam_mutations={"lr": [1, 2, 3, 4]},
                                  quantile_fraction=0.5, seed=0)
    tune.Tuner(stepper, param_space={"lr": tune.grid_search([1, 4]), "sleep": 0.05},
               tune_config=tune.TuneConfig(metric="w", mode="max", scheduler=pbt),
               run_config=tune.RunConfig(storage_path=str(tmp_path), name="pbt",
                                         stop={"training_iteration": 6}, verbose=0)).fit()
    exp = tmp_path / "pbt"
    assert pbt.exploits
    rows = [json.loads(line) for line in (exp / "pbt_global.txt").read_text().splitlines()]
    assert len(rows) == len(pbt.exploits)
    for (t, trial_id, donor_id, config), row in zip(pbt.exploits, rows):
        assert row[0] == trial_id and row[1] == donor_id and row[2] == t and row[5] == config
    trial_id = pbt.exploits[-1][1]
    replay = PopulationBasedTrainingReplay(str(exp / f"pbt_policy_{trial_id}.txt"))
    assert replay.config["lr"] in (1, 2, 3, 4)
