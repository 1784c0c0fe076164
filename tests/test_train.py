"""miniray.train: real worker processes forming a real gloo process group.

Training functions are defined inside the tests so that cloudpickle ships them
by value (the workers need not import this module). Models are tiny: most of
a run's time is each worker importing torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import miniray.train as train
from miniray.train import (Checkpoint, CheckpointConfig, FailureConfig, RunConfig,
                           ScalingConfig, TrainingFailedError)
from miniray.train.torch import TorchConfig, TorchTrainer

torch = pytest.importorskip("torch")


def _run_config(tmp_path, name="run", **kwargs):
    return RunConfig(name=name, storage_path=str(tmp_path), **kwargs)


# -- no runtime needed -----------------------------------------------------------

def test_import_miniray_and_train_do_not_import_torch():
    code = ("import sys, miniray, miniray.train, miniray.train.torch; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_config_validation():
    with pytest.raises(ValueError, match="num_workers"):
        ScalingConfig(num_workers=0)
    with pytest.raises(ValueError, match="CPU"):
        ScalingConfig(resources_per_worker={"CPU": -1})
    with pytest.raises(ValueError, match="max_failures"):
        FailureConfig(max_failures=-2)
    with pytest.raises(ValueError, match="num_to_keep"):
        CheckpointConfig(num_to_keep=0)
    with pytest.raises(ValueError, match="backend"):
        TorchConfig(backend="mpi")
    with pytest.raises(TypeError, match="train_loop_per_worker"):
        TorchTrainer(42)
    sc = ScalingConfig(num_workers=3, use_gpu=True, resources_per_worker={"CPU": 2, "acc": 1})
    assert sc.total_resources == {"CPU": 6.0, "GPU": 3.0, "acc": 3}


def test_checkpoint_directory_round_trip(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.txt").write_text("weights")
    ckpt = Checkpoint.from_directory(src)
    ckpt.set_metadata({"epoch": 3})
    assert ckpt.get_metadata() == {"epoch": 3}
    out = ckpt.to_directory(tmp_path / "copy")
    assert (tmp_path / "copy" / "w.txt").read_text() == "weights"
    with ckpt.as_directory() as d:
        assert os.path.samefile(d, src)
    assert out == str(tmp_path / "copy")
    with pytest.raises(ValueError, match="not a directory"):
        Checkpoint.from_directory(tmp_path / "missing")


def test_calls_outside_a_training_function():
    with pytest.raises(RuntimeError, match="inside a training function"):
        train.report({"loss": 1.0})
    with pytest.raises(RuntimeError, match="inside a training function"):
        train.get_checkpoint()
    ctx = train.get_context()
    assert (ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank()) == (0, 1, 0)


def test_dataset_shard_rows_and_batches():
    data = {"x": np.arange(10), "y": np.arange(10) * 2}
    shards = [train.DatasetShard(data, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [4, 3, 3]
    assert sorted(int(v) for s in shards for v in s.materialize()["x"]) == list(range(10))
    assert shards[1][0] == {"x": 1, "y": 2}
    batches = list(shards[0].iter_batches(batch_size=3))
    assert [b["x"].tolist() for b in batches] == [[0, 3, 6], [9]]
    assert list(shards[0].iter_batches(batch_size=3, drop_last=True))[0]["y"].tolist() == [0, 6, 12]
    tb = next(shards[2].iter_torch_batches(batch_size=2, dtypes=torch.float32))
    assert tb["x"].dtype == torch.float32 and tb["x"].tolist() == [2.0, 5.0]
    assert list(train.DatasetShard([10, 11, 12], 1, 2)) == [11]


def test_result_metrics_dataframe_or_clear_error():
    result = train.Result(metrics={"a": 2}, checkpoint=None,
                          metrics_history=[{"a": 1}, {"a": 2}])
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="metrics_history"):
            result.metrics_dataframe
    else:
        assert result.metrics_dataframe["a"].tolist() == [1, 2]


# -- real worker groups -----------------------------------------------------------

def test_use_gpu_without_gpus_is_a_clear_error(ray_factory, tmp_path):
    ray_factory(num_cpus=2, num_gpus=0)
    trainer = TorchTrainer(lambda: None, scaling_config=ScalingConfig(num_workers=1, use_gpu=True),
                           run_config=_run_config(tmp_path))
    with pytest.raises(ValueError, match=r"use_gpu=True\) asks for 1 GPU.*has 0"):
        trainer.fit()
    too_many = TorchTrainer(lambda: None, scaling_config=ScalingConfig(num_workers=3),
                            run_config=_run_config(tmp_path))
    with pytest.raises(ValueError, match="asks for 3 CPU"):
        too_many.fit()


def test_ddp_two_workers_equal_full_batch_gradient_descent(ray, tmp_path):
    """2 workers, each on its half of the data, end with the parameters that
    full-batch gradient descent on all the data gives (DDP averages gradients)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3).astype(np.float32)[:, None]
    w0 = rng.normal(size=(1, 3)).astype(np.float32)
    lr, epochs = 0.1, 5

    def loop(config):
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        from miniray.train.torch import prepare_data_loader, prepare_model

        ctx = train.get_context()
        model = torch.nn.Linear(3, 1)
        with torch.no_grad():
            model.weight.copy_(torch.tensor(config["w0"]))
            model.bias.zero_()
        model = prepare_model(model)
        assert isinstance(model, torch.nn.parallel.DistributedDataParallel)
        data = TensorDataset(torch.tensor(config["x"]), torch.tensor(config["y"]))
        loader = prepare_data_loader(DataLoader(data, batch_size=4))
        opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
        seen = []
        for epoch in range(config["epochs"]):
            for xb, yb in loader:
                seen.extend(round(float(v), 5) for v in xb[:, 0])
                loss = torch.nn.functional.mse_loss(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
            train.report({"epoch": epoch, "loss": loss.item(),
                          "rank": ctx.get_world_rank()})
        shard = train.get_dataset_shard("ids")
        out = {"weight": model.module.weight.detach().flatten().tolist(),
               "bias": model.module.bias.item(), "seen": seen,
               "shard": [int(v) for v in shard.materialize()],
               "context": [ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank(),
                           ctx.get_node_rank(), ctx.get_experiment_name()],
               "env": [os.environ["MASTER_ADDR"], os.environ["RANK"],
                       os.environ["WORLD_SIZE"]], "threads": torch.get_num_threads()}
        path = os.path.join(ctx.get_storage_path(), f"rank{ctx.get_world_rank()}.json")
        with open(path, "w") as f:
            json.dump(out, f)

    trainer = TorchTrainer(
        loop, train_loop_config={"x": x, "y": y, "w0": w0, "lr": lr, "epochs": epochs},
        scaling_config=ScalingConfig(num_workers=2), run_config=_run_config(tmp_path, "ddp"),
        datasets={"ids": np.arange(7)})
    result = trainer.fit()

    # What the math says: plain gradient descent on all 8 rows.
    w, b = w0.astype(np.float64).copy(), 0.0
    for _ in range(epochs):
        err = x @ w.T + b - y
        w -= lr * 2 * (err * x).mean(axis=0, keepdims=True)
        b -= lr * 2 * err.mean()
    ranks = []
    for r in range(2):
        with open(tmp_path / "ddp" / f"rank{r}.json") as f:
            ranks.append(json.load(f))
    assert ranks[0]["weight"] == ranks[1]["weight"] and ranks[0]["bias"] == ranks[1]["bias"]
    np.testing.assert_allclose(ranks[0]["weight"], w.flatten(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ranks[0]["bias"], b, rtol=1e-4, atol=1e-5)
    # The DistributedSampler gave each rank half the rows, disjoint, every epoch.
    first = [round(float(v), 5) for v in x[:, 0]]
    assert sorted(ranks[0]["seen"][:4] + ranks[1]["seen"][:4]) == sorted(first)
    assert ranks[0]["shard"] == [0, 2, 4, 6] and ranks[1]["shard"] == [1, 3, 5]
    assert ranks[1]["context"] == [1, 2, 1, 0, "ddp"]
    assert ranks[1]["env"] == ["127.0.0.1", "1", "2"] and ranks[0]["threads"] == 1
    # Rank 0's metrics, one per report, in order.
    assert [m["epoch"] for m in result.metrics_history] == list(range(epochs))
    assert all(m["rank"] == 0 for m in result.metrics_history)
    assert result.metrics["epoch"] == epochs - 1 and result.checkpoint is None
    assert result.error is None and result.path == str(tmp_path / "ddp")


def _checkpointing_loop(config):
    """Counts epochs in a checkpoint; optionally dies once (marker file) at an epoch."""
    import torch.distributed as dist

    ctx = train.get_context()
    start = 0
    checkpoint = train.get_checkpoint()
    if checkpoint is not None:
        with open(os.path.join(checkpoint.path, "state.json")) as f:
            start = json.load(f)["epoch"] + 1
    for epoch in range(start, config["epochs"]):
        crash = config.get("crash")
        if (crash and epoch == crash["epoch"] and ctx.get_world_rank() == crash["rank"]
                and not os.path.exists(crash["marker"])):
            open(crash["marker"], "w").close()
            os._exit(3)  # a hard death: no exception, no cleanup
        if dist.is_initialized():
            import torch

            dist.all_reduce(torch.ones(1))  # the survivor blocks here when a peer dies
        with tempfile.TemporaryDirectory() as d:
            reported = None
            if ctx.get_world_rank() == 0:
                with open(os.path.join(d, "state.json"), "w") as f:
                    json.dump({"epoch": epoch}, f)
                reported = Checkpoint.from_directory(d)
            train.report({"epoch": epoch, "start": start, "attempt": ctx.get_attempt(),
                          "score": config.get("scores", {}).get(str(epoch), epoch)},
                         checkpoint=reported)


def test_checkpoints_persist_prune_and_resume(ray, tmp_path):
    loop = _checkpointing_loop
    result = TorchTrainer(
        loop, train_loop_config={"epochs": 4, "scores": {"0": 9, "1": 1, "2": 5, "3": 0}},
        scaling_config=ScalingConfig(num_workers=1),
        run_config=_run_config(tmp_path, "first", checkpoint_config=CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute="score"))).fit()
    # Kept: the best score (epoch 0) and the latest (epoch 3), on disk only those.
    # (checkpoint_manager_snapshot.json is there too, for Result.from_path.)
    kept = sorted(d for d in os.listdir(result.path) if d.startswith("checkpoint_0"))
    assert kept == ["checkpoint_000000", "checkpoint_000003"]
    assert [m["epoch"] for _, m in result.best_checkpoints] == [0, 3]
    assert result.checkpoint.path == os.path.join(result.path, "checkpoint_000003")
    with open(os.path.join(result.checkpoint.path, "state.json")) as f:
        assert json.load(f) == {"epoch": 3}

    resumed = TorchTrainer(loop, train_loop_config={"epochs": 6},
                           scaling_config=ScalingConfig(num_workers=1),
                           run_config=_run_config(tmp_path, "second"),
                           resume_from_checkpoint=result.checkpoint).fit()
    assert [(m["epoch"], m["start"]) for m in resumed.metrics_history] == [(4, 4), (5, 4)]
    assert resumed.checkpoint.path.startswith(str(tmp_path / "second"))


_checkpointing_loop.__module__ = "__main__"  # ship it by value, like the nested loops


def test_worker_death_restarts_group_from_latest_checkpoint(ray, tmp_path):
    marker = str(tmp_path / "crashed")
    result = TorchTrainer(
        _checkpointing_loop,
        train_loop_config={"epochs": 4, "crash": {"epoch": 2, "rank": 1, "marker": marker}},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=_run_config(tmp_path, "crash", failure_config=FailureConfig(max_failures=1)),
    ).fit()
    assert os.path.exists(marker)  # it did die once
    history = [(m["epoch"], m["start"], m["attempt"]) for m in result.metrics_history]
    # The group restarts from the latest checkpoint that the driver had from every
    # worker: epoch 1's if rank 1's report of it was polled before rank 1 died, else
    # epoch 0's. Either way no epoch is lost or counted twice.
    second = [h for h in history if h[2] == 1]
    resumed_from = second[0][1]
    assert resumed_from in (1, 2), history
    assert [h for h in history if h[2] == 0] == [(e, 0, 0) for e in range(resumed_from)]
    assert second == [(e, resumed_from, 1) for e in range(resumed_from, 4)]
    assert result.metrics["epoch"] == 3 and result.error is None
    # One checkpoint per epoch, in order. Their numbers may skip one: a checkpoint
    # only part of the group had reported when rank 1 died is dropped, number and all.
    kept = sorted(d for d in os.listdir(result.path) if d.startswith("checkpoint_0"))
    epochs = []
    for name in kept:
        with open(os.path.join(result.path, name, "state.json")) as f:
            epochs.append(json.load(f)["epoch"])
    assert epochs == [0, 1, 2, 3], kept


def test_failures_beyond_max_failures_raise_with_result(ray, tmp_path):
    class Boom(Exception):
        pass

    def loop():
        train.report({"step": 0})
        raise Boom("bad batch")

    trainer = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=1),
                           run_config=_run_config(tmp_path, "boom", verbose=0))
    with pytest.raises(TrainingFailedError, match="bad batch") as info:
        trainer.fit()
    assert isinstance(info.value.__cause__, Boom)
    assert "Worker traceback" in str(info.value) and "raise Boom" in str(info.value)
    assert info.value.result.metrics == {"step": 0}
    assert isinstance(info.value.result.error, Boom)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_workers_use_nccl_and_their_device(ray_factory, tmp_path):
    n = min(torch.cuda.device_count(), 2)
    ray_factory(num_cpus=2, num_gpus=n)

    def loop():
        import torch
        import torch.distributed as dist

        from miniray.train.torch import get_device, prepare_model

        model = prepare_model(torch.nn.Linear(2, 1))
        t = torch.ones(1, device=get_device())
        dist.all_reduce(t)
        train.report({"backend": dist.get_backend(), "sum": t.item(),
                      "device": str(next(model.parameters()).device)})

    result = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=n, use_gpu=True),
                          run_config=_run_config(tmp_path, "gpu")).fit()
    assert result.metrics["backend"] == "nccl" and result.metrics["sum"] == n
    assert result.metrics["device"].startswith("cuda")


def _tune_or_skip():
    try:
        from miniray import tune
    except ImportError as exc:  # built separately; the adapter needs nothing from it
        pytest.skip(f"miniray.tune is not importable: {exc}")
    for name in ("Tuner", "with_resources", "get_context", "report", "grid_search"):
        if not hasattr(tune, name):
            pytest.skip(f"miniray.tune has no {name} yet")
    return tune


def test_trainer_as_tune_trainable(ray, tmp_path):
    tune = _tune_or_skip()

    def loop(config):
        for step in range(3):
            train.report({"loss": (config["x"] - 2) ** 2 + 1.0 / (step + 1), "step": step})

    trainer = TorchTrainer(loop, train_loop_config={"x": 0},
                           scaling_config=ScalingConfig(num_workers=1),
                           run_config=_run_config(tmp_path, "inner"))
    trainable = tune.with_resources(trainer.as_trainable(), {"cpu": 0})
    results = tune.Tuner(
        trainable, param_space={"train_loop_config": {"x": tune.grid_search([1, 2])}},
        tune_config=tune.TuneConfig(metric="loss", mode="min"),
        run_config=tune.RunConfig(name="outer", storage_path=str(tmp_path / "tune")),
    ).fit()
    best = results.get_best_result()
    assert best.config["train_loop_config"]["x"] == 2
    assert best.metrics["step"] == 2 and best.metrics["loss"] == pytest.approx(1 / 3)


def _run_example(args, timeout=90):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_example_train_mnist_like_quick():
    pytest.importorskip("sklearn")
    proc = _run_example(["examples/train_mnist_like.py", "--quick"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(resumed)" in proc.stdout and "epoch 2:" in proc.stdout


def test_example_gan_digits_tiny(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "grid.png"
    proc = _run_example(["examples/gan_digits/main.py", "--workers", "2", "--epochs", "2",
                         "--sync-interval", "4", "--rows", "4", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 worker(s), K=4" in proc.stdout
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" in data
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == height == 4 * 33 + 1  # 4 cells of 8x8 pixels scaled 4x, plus 1px lines


# -- Ray 2.60's Train surface: exceptions, callbacks, Result.from_path, v2 paths ---------

def test_worker_group_error_controller_error_and_user_callbacks(ray, tmp_path):
    import pickle

    from miniray.train import ControllerError, UserCallback, WorkerGroupError

    class Boom(Exception):
        pass

    class Seen(UserCallback):
        def __init__(self):
            self.reports, self.failures = [], []

        def after_report(self, run_context, metrics, checkpoint):
            self.reports.append((run_context.get_run_config().name, metrics))

        def after_exception(self, run_context, worker_exceptions):
            self.failures.append(worker_exceptions)

    def loop():
        train.report({"step": 0, "rank": train.get_context().get_world_rank()})
        if train.get_context().get_world_rank() == 1:
            raise Boom("bad batch on rank 1")

    seen = Seen()
    trainer = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=2),
                           run_config=_run_config(tmp_path, "wg", verbose=0, callbacks=[seen]))
    with pytest.raises(WorkerGroupError, match="worker errors:\n.*bad batch") as info:
        trainer.fit()
    err = info.value
    assert isinstance(err, TrainingFailedError) and list(err.worker_failures) == [1]
    assert isinstance(err.worker_failures[1], Boom)
    assert seen.reports == [("wg", [{"step": 0, "rank": 0}, {"step": 0, "rank": 1}])]
    assert len(seen.failures) == 1 and isinstance(seen.failures[0][1], Boom)
    import cloudpickle

    copy = pickle.loads(cloudpickle.dumps(err))
    assert type(copy) is WorkerGroupError and str(copy) == str(err)

    class Broken(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            raise KeyError("the callback's own bug")

    def fine():
        train.report({"step": 1})

    with pytest.raises(ControllerError, match="controller error:\n.*own bug") as info:
        TorchTrainer(fine, run_config=_run_config(tmp_path, "ctl", callbacks=[Broken()])).fit()
    assert isinstance(info.value.controller_failure, KeyError)
    assert isinstance(info.value, TrainingFailedError)
    assert info.value.result.metrics == {"step": 1}


def test_result_from_path_restores_a_run(ray, tmp_path):
    def loop():
        for step in range(3):
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "w.json"), "w") as f:
                    json.dump({"step": step}, f)
                train.report({"step": step, "score": [5, 9, 1][step]},
                             checkpoint=Checkpoint.from_directory(d))

    result = TorchTrainer(loop, run_config=_run_config(
        tmp_path, "keep", checkpoint_config=CheckpointConfig(num_to_keep=2))).fit()
    restored = train.Result.from_path(result.path)
    assert restored.metrics == result.metrics == {"step": 2, "score": 1}
    assert restored.checkpoint.path == result.checkpoint.path
    assert restored.metrics_history == result.metrics_history
    assert [(c.path, m) for c, m in restored.best_checkpoints] == \
        [(c.path, m) for c, m in result.best_checkpoints]
    assert len(restored.best_checkpoints) == 2 and restored.error is None
    best = restored.get_best_checkpoint("score", "max")
    with best.as_directory() as d, open(os.path.join(d, "w.json")) as f:
        assert json.load(f) == {"step": 1}  # score 9; step 0 (score 5) was not kept
    assert train.Result.from_path(tmp_path / "keep" / "").path == result.path
    with pytest.raises(RuntimeError, match="doesn't exist"):
        train.Result.from_path(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="checkpoint_manager_snapshot.json"):
        train.Result.from_path(tmp_path / "empty")
    try:
        import pyarrow.fs
    except ImportError:
        with pytest.raises(ImportError, match="pip install pyarrow"):
            restored.filesystem
    else:
        assert isinstance(restored.filesystem, pyarrow.fs.LocalFileSystem)


def test_train_v2_api_paths_are_the_train_names():
    from miniray.train.v2.api import (callback, config, context, data_parallel_trainer,
                                      exceptions, result, train_fn_utils)

    assert exceptions.WorkerGroupError is train.WorkerGroupError
    assert exceptions.ControllerError is train.ControllerError
    assert exceptions.TrainingFailedError is train.TrainingFailedError
    assert issubclass(train.WorkerGroupError, train.TrainingFailedError)
    assert config.ScalingConfig is ScalingConfig and config.RunConfig is RunConfig
    assert result.Result is train.Result and callback.UserCallback is train.UserCallback
    assert context.TrainContext is train.TrainContext
    assert train_fn_utils.report is train.report
    assert data_parallel_trainer.DataParallelTrainer is train.DataParallelTrainer


def test_train_inside_tune_reports_through_tune_report_callback(ray, tmp_path):
    tune = _tune_or_skip()
    from miniray.tune.integration.ray_train import TuneReportCallback

    with pytest.raises(RuntimeError, match="Tune session"):
        TuneReportCallback()

    def driver(config):
        def loop(cfg):
            for step in range(2):
                with tempfile.TemporaryDirectory() as d:
                    train.report({"loss": cfg["x"] + step},
                                 checkpoint=Checkpoint.from_directory(d))

        trial = tune.get_context().get_trial_id()
        TorchTrainer(loop, train_loop_config=config,
                     run_config=RunConfig(name=f"train-{trial}", storage_path=str(tmp_path),
                                          callbacks=[TuneReportCallback()])).fit()

    grid = tune.Tuner(tune.with_resources(driver, {"cpu": 0}),
                      param_space={"x": tune.grid_search([1, 5])},
                      tune_config=tune.TuneConfig(metric="loss", mode="min"),
                      run_config=tune.RunConfig(name="outer", storage_path=str(tmp_path),
                                                verbose=0)).fit()
    assert grid.num_errors == 0
    best = grid.get_best_result()
    assert best.config == {"x": 1} and best.metrics["loss"] == 2
    assert best.metrics["training_iteration"] == 2
    assert best.metrics["checkpoint_path"].startswith(str(tmp_path / "train-"))
    assert os.path.isdir(best.metrics["checkpoint_path"])


def test_torch_checkpoint_and_the_amp_helpers_ray_deprecated(tmp_path):
    from miniray.train.torch import TorchCheckpoint, accelerate, backward, prepare_optimizer

    model = torch.nn.Linear(3, 2)
    ck = TorchCheckpoint.from_state_dict(model.state_dict())
    fresh = torch.nn.Linear(3, 2)
    loaded = ck.get_model(fresh)
    assert loaded is fresh and torch.equal(fresh.weight, model.weight)
    with pytest.raises(ValueError, match="state dict"):
        ck.get_model()
    whole_ck = TorchCheckpoint.from_model(model)
    whole = whole_ck.get_model()
    assert torch.equal(whole.bias, model.bias) and isinstance(ck, Checkpoint)
    import shutil

    shutil.rmtree(ck.path)
    shutil.rmtree(whole_ck.path)
    for fn, arg in ((accelerate, True), (prepare_optimizer, None), (backward, None)):
        with pytest.raises(DeprecationWarning, match="torch.autocast"):
            fn(arg)


def test_report_v2_options_and_get_all_reported_checkpoints(ray, tmp_path):
    from miniray.train import CheckpointUploadMode, ReportedCheckpointStatus

    out = tmp_path / "out"
    out.mkdir()
    keep_here = tmp_path / "kept_in_place"

    def loop():
        rank = train.get_context().get_world_rank()
        log = {}
        for step, mode in enumerate(["SYNC", "ASYNC", "NO_UPLOAD"]):
            if mode == "NO_UPLOAD":
                src = str(keep_here) if rank == 0 else None
                if src:
                    os.makedirs(src, exist_ok=True)
            else:
                src = tempfile.mkdtemp()
            checkpoint = None
            if src:
                with open(os.path.join(src, "step"), "w") as f:
                    f.write(str(step))
                checkpoint = Checkpoint.from_directory(src)
            train.report({"step": step}, checkpoint=checkpoint,
                         checkpoint_dir_name=f"epoch-{step}",
                         checkpoint_upload_mode=CheckpointUploadMode[mode])
            log[mode] = os.path.exists(src) if src else None
            seen = train.get_all_reported_checkpoints(timeout_s=60)
            log[f"after{step}"] = [(os.path.basename(c.checkpoint.path), c.metrics["step"],
                                    c.status.value) for c in seen]
        with open(os.path.join(str(out), f"rank{rank}.json"), "w") as f:
            json.dump(log, f)

    result = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=2),
                          run_config=_run_config(tmp_path, "v2")).fit()
    logs = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for log in logs:
        # After each report, every committed checkpoint so far, in order, by its name.
        assert log["after0"] == [["epoch-0", 0, "COMMITTED"]]
        assert [n for n, *_ in log["after1"]] == ["epoch-0", "epoch-1"]
        assert [n for n, *_ in log["after2"]][:2] == ["epoch-0", "epoch-1"]
        assert log["SYNC"] is True and log["ASYNC"] is False  # ASYNC deletes the source
    assert logs[0]["NO_UPLOAD"] is True
    assert logs[0]["after2"][2] == ["kept_in_place", 2, "COMMITTED"]
    assert result.checkpoint.path == str(keep_here)  # NO_UPLOAD: recorded where it is
    assert os.path.isdir(os.path.join(result.path, "epoch-1"))
    assert ReportedCheckpointStatus.COMMITTED.value == "COMMITTED"
    from miniray.train import WorkerGroupError

    def validating():  # as in Ray: a validation needs a checkpoint to validate
        train.report({"x": 1}, validation=True)

    with pytest.raises(WorkerGroupError, match="pass checkpoint="):
        TorchTrainer(validating, run_config=_run_config(tmp_path, "val", verbose=0)).fit()
