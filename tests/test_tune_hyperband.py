"""Synchronous HyperBand: trials pause at their bracket's milestone, the best third
resume from their checkpoints, the others stop."""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from miniray import tune
from miniray.tune.schedulers import HyperBandScheduler


def climb(config):
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with open(os.path.join(checkpoint.path, "state.json")) as f:
            start = json.load(f)["step"]
    for step in range(start + 1, 100):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as f:
                json.dump({"step": step}, f)
            tune.report({"score": config["x"], "step": step},
                        checkpoint=tune.Checkpoint.from_directory(d))


class Climber(tune.Trainable):
    def setup(self, config):
        self.steps = 0

    def step(self):
        self.steps += 1
        return {"score": self.config["x"], "own_steps": self.steps}

    def save_checkpoint(self, checkpoint_dir):
        return {"steps": self.steps}

    def load_checkpoint(self, checkpoint):
        self.steps = checkpoint["steps"]


def _run(tmp_path, name, trainable, n):
    hb = HyperBandScheduler(metric="score", mode="max", max_t=9, reduction_factor=3)
    grid = tune.Tuner(trainable, param_space={"x": tune.grid_search(list(range(n)))},
                      tune_config=tune.TuneConfig(scheduler=hb),
                      run_config=tune.RunConfig(storage_path=str(tmp_path), name=name,
                                                verbose=0)).fit()
    assert grid.num_errors == 0 and len(grid) == n
    return {r.config["x"]: r.metrics for r in grid}


def test_hyperband_halves_a_full_bracket_and_resumes_from_checkpoints(ray, tmp_path):
    # max_t=9, eta=3: the first bracket takes 9 trials to 1 iteration, keeps 3 to 3
    # iterations and 1 to 9.
    by_x = _run(tmp_path, "hb", climb, 9)
    iterations = {x: m["training_iteration"] for x, m in by_x.items()}
    assert iterations == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 3, 7: 3, 8: 9}
    # Resumed trials continued from their checkpoints: steps count on, not restart.
    assert by_x[8]["step"] == 9 and by_x[7]["step"] == 3
    assert all(m["done"] for m in by_x.values())


def test_hyperband_class_trainable_is_checkpointed_when_paused(ray, tmp_path):
    # 4 trials: the bracket is not full, but no more trials come, so it is halved anyway.
    by_x = _run(tmp_path, "hbc", Climber, 4)
    assert {x: m["training_iteration"] for x, m in by_x.items()} == {0: 1, 1: 3, 2: 3, 3: 9}
    assert by_x[3]["own_steps"] == 9  # restored from the checkpoint taken at each pause


def test_hyperband_needs_metric_and_sane_arguments():
    with pytest.raises(ValueError, match="reduction_factor"):
        HyperBandScheduler(metric="m", mode="max", reduction_factor=1)
    with pytest.raises(ValueError, match="max_t"):
        HyperBandScheduler(metric="m", mode="max", max_t=0)
