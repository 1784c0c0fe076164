"""Ray Train's backend API: a custom ``BackendConfig``'s ``Backend`` hooks run
around training and reach every worker through ``worker_group.execute``."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from miniray.train import Backend, BackendConfig, RunConfig, ScalingConfig, WorkerGroupError


def _set_env(value):
    os.environ["MY_FRAMEWORK"] = value
    return int(os.environ["RANK"])


def _write_marker(path):
    with open(path, "a") as f:
        f.write(f"shutdown rank {os.environ['RANK']}\n")


class _MyBackend(Backend):
    def on_start(self, worker_group, backend_config):
        ranks = worker_group.execute(_set_env, backend_config.value)
        assert ranks == list(range(len(worker_group)))
        assert worker_group.execute_single(1, os.getpid) != os.getpid()

    def on_shutdown(self, worker_group, backend_config):
        worker_group.execute(_write_marker, backend_config.marker)


@dataclass
class _MyConfig(BackendConfig):
    value: str = ""
    marker: str = ""

    @property
    def backend_cls(self):
        return _MyBackend


def _loop():
    import sys

    import miniray.train as train

    torch_group = ("torch.distributed" in sys.modules
                   and sys.modules["torch.distributed"].is_initialized())
    train.report({"framework": os.environ["MY_FRAMEWORK"], "torch_group": torch_group,
                  "world": os.environ["WORLD_SIZE"]})


for _fn in (_set_env, _write_marker, _loop):
    _fn.__module__ = "__main__"  # ship them by value
_MyBackend.__module__ = _MyConfig.__module__ = "__main__"


def test_a_custom_backend_sets_up_every_worker_without_torch(ray, tmp_path):
    from miniray.train import DataParallelTrainer

    marker = tmp_path / "shutdown.txt"
    result = DataParallelTrainer(
        _loop, backend_config=_MyConfig(value="jaxish", marker=str(marker)),
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="backend", storage_path=str(tmp_path)),
    ).fit()
    assert result.metrics == {"framework": "jaxish", "torch_group": False, "world": "2"}
    assert sorted(marker.read_text().splitlines()) == ["shutdown rank 0", "shutdown rank 1"]


class _FailingBackend(Backend):
    def on_start(self, worker_group, backend_config):
        raise RuntimeError("framework would not start")


@dataclass
class _FailingConfig(BackendConfig):
    @property
    def backend_cls(self):
        return _FailingBackend


_FailingBackend.__module__ = _FailingConfig.__module__ = "__main__"


def test_a_failing_backend_fails_the_run_naming_it(ray, tmp_path):
    from miniray.train import DataParallelTrainer

    with pytest.raises(WorkerGroupError, match="on_start failed.*framework would not start"):
        DataParallelTrainer(_loop, backend_config=_FailingConfig(),
                            scaling_config=ScalingConfig(num_workers=1),
                            run_config=RunConfig(name="bad", storage_path=str(tmp_path),
                                                 verbose=0)).fit()
    with pytest.raises(TypeError, match="BackendConfig"):
        DataParallelTrainer(_loop, backend_config={"not": "a config"})
