"""Train v2's checkpoint validation: ``report(..., validation=...)`` runs the
trainer's ``ValidationConfig.fn`` on the checkpoint as a task; its metrics are
merged into that checkpoint's reported metrics."""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from miniray.train import (Checkpoint, ControllerError, RunConfig, ScalingConfig,
                           ValidationConfig, ValidationTaskConfig)

pytest.importorskip("torch")


def _loop(config):
    import miniray.train as train

    for step in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "state.json"), "w") as f:
                json.dump({"step": step}, f)
            validation = {0: False, 1: True,
                          2: train.ValidationTaskConfig(fn_kwargs={"scale": 100})}[step]
            train.report({"step": step}, checkpoint=Checkpoint.from_directory(tmp),
                         validation=validation)


def _validate(checkpoint, scale=1):
    with open(os.path.join(checkpoint.path, "state.json")) as f:
        step = json.load(f)["step"]
    return {"val_score": step * scale, "val_pid": os.getpid()}


_loop.__module__ = "__main__"  # ship them by value
_validate.__module__ = "__main__"


def test_validation_metrics_join_the_validated_checkpoints(ray, tmp_path):
    from miniray.train.torch import TorchTrainer

    result = TorchTrainer(
        _loop, scaling_config=ScalingConfig(num_workers=1),
        run_config=RunConfig(name="val", storage_path=str(tmp_path)),
        validation_config=ValidationConfig(
            _validate, task_config=ValidationTaskConfig(fn_kwargs={"scale": 10})),
    ).fit()
    metrics = [m for _, m in result.best_checkpoints]
    assert [m["step"] for m in metrics] == [0, 1, 2]
    assert "val_score" not in metrics[0]  # reported without validation
    assert metrics[1]["val_score"] == 10  # the config's default fn_kwargs
    assert metrics[2]["val_score"] == 200  # report's fn_kwargs override them
    assert metrics[1]["val_pid"] != os.getpid()  # ran as a task, in a worker
    assert all("val_score" not in m and "_miniray_validation" not in m
               for m in result.metrics_history)  # the history is what was reported
    from miniray.train import Result

    restored = [m for _, m in Result.from_path(result.path).best_checkpoints]
    assert [m.get("val_score") for m in restored] == [None, 10, 200]  # persisted
    assert not any("_miniray_validation" in m for m in restored)


def test_validation_without_a_validation_config_is_a_controller_error(ray, tmp_path):
    from miniray.train.torch import TorchTrainer

    with pytest.raises(ControllerError, match="validation_config=ValidationConfig"):
        TorchTrainer(_loop, scaling_config=ScalingConfig(num_workers=1),
                     run_config=RunConfig(name="noval", storage_path=str(tmp_path))).fit()


def test_validation_configs_check_their_values():
    with pytest.raises(ValueError, match="timeout_s"):
        ValidationTaskConfig(timeout_s=0)
    with pytest.raises(TypeError, match="takes a function"):
        ValidationConfig(fn=3)
    from miniray.train._validation import request

    with pytest.raises(ValueError, match="pass checkpoint="):
        request(True, None)


def _loop_reading_back(config):
    import time

    import miniray.train as train

    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump({"step": 3}, f)
        train.report({"step": 0}, checkpoint=Checkpoint.from_directory(tmp), validation=True)
    # A later report's commit merges the validations finished by then.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        train.report({"step": 1})
        seen = train.get_all_reported_checkpoints()
        if seen and "val_score" in seen[0].metrics:
            train.report({"seen": seen[0].metrics["val_score"]})
            return
        time.sleep(0.2)


_loop_reading_back.__module__ = "__main__"


def test_validation_results_show_while_training_goes_on(ray, tmp_path):
    from miniray.train.torch import TorchTrainer

    result = TorchTrainer(
        _loop_reading_back, scaling_config=ScalingConfig(num_workers=1),
        run_config=RunConfig(name="live", storage_path=str(tmp_path)),
        validation_config=ValidationConfig(_validate),
    ).fit()
    assert result.metrics == {"seen": 3}
