"""``RunConfig(logging_config=train.LoggingConfig(log_level=...))`` sets the
level of Train's own logs (here: the restart after a worker failure)."""

from __future__ import annotations

import os

import pytest

from miniray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig

pytest.importorskip("torch")


def _crash_once(config):
    marker = config["marker"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)


_crash_once.__module__ = "__main__"  # ship it by value


@pytest.mark.parametrize("level, shown", [("INFO", True), ("error", False)])
def test_train_logging_config_sets_the_level_of_trains_logs(ray, tmp_path, caplog, level,
                                                             shown):
    from miniray.train.torch import TorchTrainer

    caplog.set_level("DEBUG")  # only Train's own level decides
    TorchTrainer(
        _crash_once, train_loop_config={"marker": str(tmp_path / "crashed")},
        scaling_config=ScalingConfig(num_workers=1),
        run_config=RunConfig(name="log", storage_path=str(tmp_path),
                             failure_config=FailureConfig(max_failures=1),
                             logging_config=LoggingConfig(log_level=level)),
    ).fit()
    assert os.path.exists(tmp_path / "crashed")
    restarts = [r for r in caplog.records
                if r.name == "miniray.train" and "restarting the worker group" in r.message]
    assert bool(restarts) is shown


def test_train_logging_config_rejects_unknown_levels():
    with pytest.raises(ValueError, match="Invalid log_level: 'LOUD'"):
        LoggingConfig(log_level="LOUD")
    assert RunConfig().logging_config == LoggingConfig("INFO")
