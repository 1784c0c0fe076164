"""``miniray.tune.utils`` (Ray's ``ray.tune.utils``), ``Trainable.train/save/restore`` and
``tune.Result.from_path``."""

from __future__ import annotations

import os
import threading

import pytest

from miniray import tune
from miniray.tune import utils


class Acc(tune.Trainable):
    def setup(self, config):
        self.total = config.get("start", 0)

    def step(self):
        self.total += 1
        return {"total": self.total}

    def save_checkpoint(self, checkpoint_dir):
        return {"total": self.total}

    def load_checkpoint(self, checkpoint):
        self.total = checkpoint["total"]


def test_validate_save_restore_and_trainable_driver_methods(ray, tmp_path):
    assert utils.validate_save_restore(Acc, config={"start": 10}) is True
    t = Acc({"start": 1})
    assert [t.train()["total"] for _ in range(2)] == [2, 3]
    checkpoint = t.save(str(tmp_path / "ck"))
    other = Acc()
    other.restore(checkpoint)
    result = other.train()
    assert result["total"] == 4 and result["training_iteration"] == 3
    assert {"done", "time_this_iter_s", "time_total_s", "timestamp"} <= set(result)
    with pytest.raises(TypeError, match="Trainable subclass"):
        utils.validate_save_restore(lambda config: None)


def test_diagnose_serialization_names_the_culprit(capsys):
    lock = threading.Lock()

    def fine(config):
        return {"x": 1}

    def bad(config):
        with lock:
            return {"x": 1}

    assert utils.diagnose_serialization(fine) is True
    assert utils.diagnose_serialization(bad) == {"lock"}
    out = capsys.readouterr().out
    assert "[name='lock']... FAILED" in out and "non-serializable" in out
    assert utils.diagnose_serialization(tune.with_parameters(bad, data=1)) == {"lock"}


def test_wait_for_gpu_without_a_gpu_says_why(ray):
    with pytest.raises(RuntimeError, match="No GPU ids found"):
        utils.wait_for_gpu()

    @ray.remote(num_gpus=0)
    def in_task():
        try:
            utils.wait_for_gpu(retry=1, delay_s=0)
        except RuntimeError as exc:
            return str(exc)

    assert "tune.with_resources" in ray.get(in_task.remote())


def test_dict_helpers_behave_as_rays():
    nested = {"a": {"b": 1, "c": {"d": 2}}, "e": [1, {"f": 3}]}
    assert utils.flatten_dict(nested) == {"a/b": 1, "a/c/d": 2, "e": [1, {"f": 3}]}
    assert utils.flatten_dict(nested, flatten_list=True) == {"a/b": 1, "a/c/d": 2, "e/0": 1,
                                                             "e/1/f": 3}
    assert nested["a"]["c"] == {"d": 2}  # the input is unchanged
    with pytest.raises(ValueError, match="delimiter"):
        utils.flatten_dict({"a/b": {"c": 1}}, prevent_delimiter=True)
    assert utils.unflattened_lookup("e/1/f", nested) == 3
    assert utils.unflattened_lookup("a/x", nested, default=None) is None
    with pytest.raises(KeyError):
        utils.unflattened_lookup("a/x", nested)
    merged = utils.merge_dicts({"a": {"b": 1}}, {"a": {"c": 2}, "z": 0})
    assert merged == {"a": {"b": 1, "c": 2}, "z": 0}
    with pytest.raises(Exception, match="Unknown config parameter `z`"):
        utils.deep_update({"a": 1}, {"z": 2})
    assert utils.deep_update({"m": {"type": "x", "k": 1}}, {"m": {"type": "y"}},
                             override_all_if_type_changes=["m"]) == {"m": {"type": "y"}}
    assert len(utils.date_str()) == 19
    with utils.warn_if_slow("quick", threshold=60) as w:
        pass
    assert not w.too_slow


def steps_with_checkpoints(config):
    for i in range(3):
        d = os.path.join(tune.get_context().get_trial_dir(), "scratch")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "i"), "w") as f:
            f.write(str(i))
        tune.report({"score": [3, 7, 5][i]}, checkpoint=tune.Checkpoint.from_directory(d))
    if config["fail"]:
        raise ValueError("the end")


def test_result_from_path_reads_a_trial_directory(ray, tmp_path):
    grid = tune.Tuner(steps_with_checkpoints, param_space={"fail": tune.grid_search([0, 1])},
                      run_config=tune.RunConfig(storage_path=str(tmp_path), name="fp",
                                                verbose=0)).fit()
    ok = next(r for r in grid if not r.config["fail"])
    restored = tune.Result.from_path(ok.path)
    assert restored.config == {"fail": 0} and restored.path == ok.path
    assert restored.metrics["score"] == 5 and restored.metrics["training_iteration"] == 3
    assert restored.checkpoint.path == ok.checkpoint.path
    assert [m["score"] for _, m in restored.best_checkpoints] == [3, 7, 5]
    best = restored.get_best_checkpoint("score", "max")
    assert best.path.endswith("checkpoint_000002") and restored.error is None
    assert len(restored.metrics_dataframe) == 3
    failed = tune.Result.from_path(next(r for r in grid if r.config["fail"]).path)
    assert isinstance(failed.error, tune.TuneError) and "the end" in str(failed.error)
    with pytest.raises(RuntimeError, match="doesn't exist"):
        tune.Result.from_path(tmp_path / "missing")
    (tmp_path / "blank").mkdir()
    with pytest.raises(RuntimeError, match="result.json nor progress.csv"):
        tune.Result.from_path(tmp_path / "blank")


def test_util_monitor_samples_cpu_and_ram_and_log_sys_usage(ray, tmp_path):
    import time

    pytest.importorskip("psutil")
    monitor = utils.UtilMonitor(start=True, delay=0.02)
    time.sleep(0.2)
    perf = monitor.get_data()["perf"]
    assert 0 <= perf["cpu_util_percent"] <= 100 and 0 < perf["ram_util_percent"] <= 100
    monitor.stop()
    monitor.join(timeout=5)
    assert not monitor.is_alive() and monitor.get_data() == {}

    def busy(config):
        for _ in range(2):
            time.sleep(0.3)  # the monitor's first sample is taken when the trial starts
            tune.report({"k": 1})

    grid = tune.Tuner(busy, param_space={"log_sys_usage": True},
                      run_config=tune.RunConfig(storage_path=str(tmp_path), name="perf",
                                                verbose=0)).fit()
    import json

    with open(os.path.join(grid[0].path, "result.json")) as f:
        results = [json.loads(line) for line in f]
    # Means of the samples since the previous result (none yet: {}, as in Ray).
    assert all("perf" in r for r in results)
    assert "cpu_util_percent" in results[0]["perf"]
