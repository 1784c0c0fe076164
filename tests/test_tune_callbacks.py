"""Tune's callback hooks, logger callbacks and result constants (Ray's names and values)."""

from __future__ import annotations

import csv
import json
import os

import pytest

from miniray import tune
from miniray.tune import logger as tune_logger
from miniray.tune import result as tune_result


def _cfg(tmp_path, name, **kw):
    return tune.RunConfig(storage_path=str(tmp_path), name=name, verbose=0, **kw)


class Recorder(tune.Callback):
    def __init__(self):
        self.events = []

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        self.events.append(("setup", num_samples, total_num_samples))

    def on_step_begin(self, iteration, trials, **info):
        self.events.append(("step_begin", iteration))

    def on_step_end(self, iteration, trials, **info):
        self.events.append(("step_end", iteration))

    def on_trial_start(self, iteration, trials, trial, **info):
        # The trial directory exists when a callback hears of the trial.
        self.events.append(("start", trial.trial_id, os.path.isdir(trial.local_path)))

    def on_trial_restore(self, iteration, trials, trial, **info):
        self.events.append(("restore", trial.trial_id))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.events.append(("result", trial.trial_id, result[tune_result.TRAINING_ITERATION]))

    def on_trial_save(self, iteration, trials, trial, **info):
        self.events.append(("save", trial.trial_id))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self.events.append(("checkpoint", trial.trial_id, checkpoint.path))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.events.append(("complete", trial.trial_id, trial.status))

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.events.append(("recover", trial.trial_id))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.events.append(("error", trial.trial_id, isinstance(trial.error, ValueError)))

    def on_experiment_end(self, trials, **info):
        self.events.append(("end", len(trials)))


def flaky(config):
    ckpt = tune.get_checkpoint()
    start = 0
    if ckpt is not None:
        with open(os.path.join(ckpt.path, "step")) as f:
            start = int(f.read())
    for step in range(start, 2):
        import tempfile

        d = tempfile.mkdtemp()
        with open(os.path.join(d, "step"), "w") as f:
            f.write(str(step + 1))
        tune.report({"score": config["x"] * step}, checkpoint=tune.Checkpoint.from_directory(d))
        if config["x"] == 2 and ckpt is None:
            raise RuntimeError("first attempt fails after one checkpoint")
    if config["x"] == 3:
        raise ValueError("always fails")


def test_callback_hooks_fire_in_order_with_rays_arguments(ray, tmp_path):
    rec = Recorder()
    grid = tune.Tuner(flaky, param_space={"x": tune.grid_search([1, 2, 3])},
                      tune_config=tune.TuneConfig(max_concurrent_trials=1),
                      run_config=_cfg(tmp_path, "cb", callbacks=[rec],
                                      failure_config=tune.FailureConfig(max_failures=1))).fit()
    ids = [r.trial_id for r in sorted(grid, key=lambda r: r.config["x"])]
    ev = rec.events
    assert ev[0] == ("setup", 1, 3) and ev[-1] == ("end", 3)
    steps = [e for e in ev if e[0] in ("step_begin", "step_end")]
    assert steps and all(a[0] == "step_begin" and b == ("step_end", a[1])
                         for a, b in zip(steps[::2], steps[1::2]))
    by = {tid: [e[0] for e in ev if len(e) > 1 and e[1] == tid] for tid in ids}
    # x=1: two results, each with a checkpoint (save, then on_checkpoint), then complete.
    assert by[ids[0]] == ["start", "result", "save", "checkpoint", "result", "save",
                          "checkpoint", "complete"]
    assert ("start", ids[0], True) in ev and ("complete", ids[0], "TERMINATED") in ev
    # x=2 fails once, is recovered and restarts from its checkpoint (on_trial_restore).
    assert by[ids[1]][:4] == ["start", "result", "save", "checkpoint"]
    assert "recover" in by[ids[1]] and "restore" in by[ids[1]]
    assert by[ids[1]][-1] == "complete"
    # x=3 fails twice: on_trial_error once, after its retry.
    assert by[ids[2]].count("recover") == 1 and by[ids[2]][-1] == "error"
    assert ("error", ids[2], True) in ev  # trial.error is the trainable's exception
    results = [e for e in ev if e[0] == "result" and e[1] == ids[0]]
    assert [e[2] for e in results] == [1, 2]


def two_steps(config):
    for i in range(2):
        tune.report({"loss": config["x"] + i, "nested": {"a": i}})


def test_logger_callbacks_write_rays_files_once(ray, tmp_path):
    class Lines(tune_logger.LoggerCallback):
        def __init__(self):
            self.log = []

        def log_trial_start(self, trial):
            self.log.append("start")

        def log_trial_result(self, iteration, trial, result):
            self.log.append(result["loss"])

        def log_trial_end(self, trial, failed=False):
            self.log.append(("end", failed))

    lines = Lines()
    grid = tune.Tuner(two_steps, param_space={"x": tune.grid_search([10, 20])},
                      run_config=_cfg(tmp_path, "log", callbacks=[
                          tune_logger.CSVLoggerCallback(), tune_logger.JsonLoggerCallback(),
                          lines])).fit()
    assert sorted(lines.log, key=str).count("start") == 2
    assert lines.log.count(("end", False)) == 2 and {10, 11, 20, 21} <= set(lines.log)
    for r in grid:
        path = r.path
        with open(os.path.join(path, tune_result.EXPR_PROGRESS_FILE)) as f:
            rows = list(csv.DictReader(f))
        # Written once (by the callback, not also by the built-in writer).
        assert [float(row["loss"]) for row in rows] == [r.config["x"], r.config["x"] + 1]
        assert rows[1]["nested/a"] == "1" and "config" not in rows[0]
        with open(os.path.join(path, tune_result.EXPR_RESULT_FILE)) as f:
            results = [json.loads(line) for line in f]
        assert [x["training_iteration"] for x in results] == [1, 2]
        assert results[0]["config"] == {"x": r.config["x"]}
        with open(os.path.join(path, tune_result.EXPR_PARAM_FILE)) as f:
            assert json.load(f) == {"x": r.config["x"]}
        assert os.path.exists(os.path.join(path, tune_result.EXPR_PARAM_PICKLE_FILE))


def test_tbx_logger_writes_event_files_or_says_what_to_install(ray, tmp_path):
    try:
        tbx = tune_logger.TBXLoggerCallback()
    except ImportError as exc:
        assert "pip install tensorboardX" in str(exc)
        return
    tune.Tuner(two_steps, param_space={"x": tune.grid_search([1])},
               run_config=_cfg(tmp_path, "tbx", callbacks=[tbx])).fit()
    trial_dir = next(p for p in (tmp_path / "tbx").iterdir() if p.is_dir())
    events = [p for p in os.listdir(trial_dir) if p.startswith("events.out.tfevents")]
    assert events, os.listdir(trial_dir)
    pytest.importorskip("tensorboardX")  # read the scalars back with its protobufs
    import struct

    from tensorboardX.event_file_writer import event_pb2

    tags = set()
    for name in events:
        data = (trial_dir / name).read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            ev = event_pb2.Event()
            ev.ParseFromString(data[pos + 12:pos + 12 + length])
            tags.update(v.tag for v in ev.summary.value)
            pos += 12 + length + 4
    assert "ray/tune/loss" in tags and "ray/tune/nested/a" in tags


def test_tbx_logger_error_names_the_package(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("tensorboardX", "torch.utils.tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ImportError, match="pip install tensorboardX"):
        tune_logger.TBXLoggerCallback()


def test_result_constants_have_rays_values():
    # The values are Ray's (ray/tune/result.py and ray/air/constants.py, Ray 2.60).
    expected = {"TRAINING_ITERATION": "training_iteration", "DONE": "done",
                "TIME_TOTAL_S": "time_total_s", "TIME_THIS_ITER_S": "time_this_iter_s",
                "TRIAL_ID": "trial_id", "TIMESTAMP": "timestamp", "PID": "pid",
                "HOSTNAME": "hostname", "NODE_IP": "node_ip",
                "EXPERIMENT_TAG": "experiment_tag", "SHOULD_CHECKPOINT": "should_checkpoint",
                "TIMESTEPS_TOTAL": "timesteps_total", "MEAN_LOSS": "mean_loss",
                "MEAN_ACCURACY": "mean_accuracy", "DEFAULT_METRIC": "_metric",
                "EXPR_PROGRESS_FILE": "progress.csv", "EXPR_RESULT_FILE": "result.json",
                "EXPR_PARAM_FILE": "params.json", "EXPR_ERROR_FILE": "error.txt"}
    assert {k: getattr(tune_result, k) for k in expected} == expected


def test_reported_results_carry_the_auto_keys(ray, tmp_path):
    grid = tune.Tuner(two_steps, param_space={"x": 1},
                      run_config=_cfg(tmp_path, "keys")).fit()
    metrics = grid[0].metrics
    for key in (tune_result.TRAINING_ITERATION, tune_result.TIME_TOTAL_S,
                tune_result.TIME_THIS_ITER_S, tune_result.TRIAL_ID, tune_result.TIMESTAMP,
                tune_result.PID, tune_result.DONE):
        assert key in metrics, key
    assert metrics[tune_result.DONE] is True


class Counting(tune.Callback):
    def __init__(self):
        self.results = 0
        self.restored_from = None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results += 1

    def get_state(self):
        return {"results": self.results}

    def set_state(self, state):
        self.restored_from = state["results"]
        self.results = state["results"]


def test_callback_state_is_saved_with_the_experiment_and_restored(ray, tmp_path):
    counting = Counting()
    tune.Tuner(two_steps, param_space={"x": tune.grid_search([1, 2])},
               run_config=_cfg(tmp_path, "state", callbacks=[counting])).fit()
    assert counting.results == 4
    tuner = tune.Tuner.restore(str(tmp_path / "state"), trainable=two_steps)
    tuner.fit()
    restored = tuner.run_config.callbacks[0]
    assert restored is not counting and restored.restored_from == 4
