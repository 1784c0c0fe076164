"""miniray.tune end to end: real trials on a 2-CPU node (the ``ray`` fixture)."""

from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pytest

from miniray import tune
from miniray.tune.schedulers import ASHAScheduler, MedianStoppingRule, PopulationBasedTraining
from miniray.tune.search import ConcurrencyLimiter, Repeater


def _read(*parts):
    with open(os.path.join(*parts)) as f:
        return f.read()


def _cfg(tmp_path, name, **kw):
    return tune.RunConfig(storage_path=str(tmp_path), name=name, verbose=0, **kw)


def quadratic(config):
    for step in range(3):
        tune.report({"loss": (config["x"] - 3) ** 2 + 1.0 / (step + 1), "step": step})


def test_grid_times_samples_result_files_and_result_grid(ray, tmp_path):
    tuner = tune.Tuner(
        quadratic,
        param_space={"x": tune.grid_search([1, 3, 5]), "noise": tune.uniform(0, 1),
                     "nested": {"k": 2}},
        tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=2),
        run_config=_cfg(tmp_path, "grid"))
    grid = tuner.fit()
    assert len(grid) == 6 and grid.num_errors == 0 and grid.errors == []
    assert sorted(r.config["x"] for r in grid) == [1, 1, 3, 3, 5, 5]
    best = grid.get_best_result()
    assert best.config["x"] == 3 and best.metrics["training_iteration"] == 3
    assert best.metrics["loss"] == pytest.approx(1 / 3)
    assert grid.get_best_result("loss", "max").config["x"] in (1, 5)
    assert grid.get_best_result(scope="all").config["x"] == 3
    # Result files, as Ray writes them.
    trial_dir = best.path
    assert json.loads(_read(trial_dir, "params.json"))["x"] == 3
    lines = _read(trial_dir, "result.json").splitlines()
    assert [json.loads(line)["training_iteration"] for line in lines] == [1, 2, 3]
    csv_lines = _read(trial_dir, "progress.csv").splitlines()
    assert "loss" in csv_lines[0] and len(csv_lines) == 4
    assert os.path.exists(os.path.join(str(tmp_path), "grid", "experiment_state.pkl"))
    with pytest.raises(ValueError, match="No trial reported the metric 'acc'.*loss"):
        grid.get_best_result("acc", "max")
    with pytest.raises(ValueError, match="mode"):
        grid.get_best_result("loss", "lowest")
    pandas = pytest.importorskip("pandas")
    df = grid.get_dataframe()
    assert isinstance(df, pandas.DataFrame) and len(df) == 6
    assert {"loss", "config/x", "config/nested/k", "trial_id"} <= set(df.columns)
    assert len(best.metrics_dataframe) == 3
    # ResultGrid.plot writes a PNG.
    png = grid.plot(str(tmp_path / "plot.png"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_tune_run_returns_an_analysis_and_raises_on_failed_trials(ray, tmp_path):
    def fn(config):
        if config["x"] == 2:
            raise ValueError("bad x")
        return {"score": config["x"]}

    analysis = tune.run(fn, config={"x": tune.grid_search([1, 3])}, metric="score",
                        mode="max", storage_path=str(tmp_path), name="run", verbose=0)
    assert analysis.best_config == {"x": 3}
    assert analysis.best_result["score"] == 3
    assert analysis.best_trial.status == "TERMINATED"
    assert len(analysis.trials) == 2 and set(analysis.results) == {
        t.trial_id for t in analysis.trials}
    with pytest.raises(tune.TuneError, match="did not complete") as info:
        tune.run(fn, config={"x": tune.grid_search([1, 2, 3])}, metric="score", mode="max",
                 storage_path=str(tmp_path), name="run2", verbose=0)
    assert isinstance(info.value.__cause__, ValueError)


def test_failing_trial_lands_in_errors_and_bad_inputs_fail_clearly(ray, tmp_path):
    def fn(config):
        if config["x"] == 2:
            raise ValueError("x=2 is broken")
        if config["x"] == 3:
            tune.report({"accuracy": 1})  # typo'd / unknown metric
            return None
        if config["x"] == 4:
            return None  # never reports anything
        return {"acc": config["x"]}

    grid = tune.Tuner(fn, param_space={"x": tune.grid_search([1, 2, 3, 4, 5])},
                      tune_config=tune.TuneConfig(metric="acc", mode="max"),
                      run_config=_cfg(tmp_path, "errors")).fit()
    assert grid.num_errors == 3 and grid.num_terminated == 2
    by_x = {r.config["x"]: r for r in grid}
    assert isinstance(by_x[2].error, ValueError) and "x=2 is broken" in str(by_x[2].error)
    assert "without the metric 'acc'" in str(by_x[3].error)
    assert "accuracy" in str(by_x[3].error)
    assert "never reported" in str(by_x[4].error)
    assert "x=2 is broken" in _read(by_x[2].path, "error.txt")
    assert grid.get_best_result().config["x"] == 5

    # Before any trial starts: non-serializable config, empty grid, wrong types.
    import threading

    with pytest.raises(TypeError, match="'lock'.*cannot be serialized"):
        tune.Tuner(fn, param_space={"lock": threading.Lock()},
                   run_config=_cfg(tmp_path, "unser")).fit()
    assert not os.path.exists(tmp_path / "unser")
    with pytest.raises(ValueError, match="empty"):
        tune.Tuner(fn, param_space={"x": {"grid_search": []}},
                   run_config=_cfg(tmp_path, "empty")).fit()
    with pytest.raises(TypeError, match="param_space must be a dict"):
        tune.Tuner(fn, param_space=[1], run_config=_cfg(tmp_path, "list")).fit()
    with pytest.raises(ValueError, match="needs a metric and a mode"):
        tune.Tuner(fn, tune_config=tune.TuneConfig(scheduler=ASHAScheduler()),
                   run_config=_cfg(tmp_path, "nometric")).fit()
    with pytest.raises(ValueError, match="asks for 4 CPU|more than the node"):
        tune.Tuner(tune.with_resources(fn, {"cpu": 4}),
                   run_config=_cfg(tmp_path, "toobig")).fit()


def curve(config):
    # Trials with a larger "rate" are better at every step: easy to rank early.
    for step in range(1, 17):
        tune.report({"acc": config["rate"] * step})


def test_asha_and_median_stopping_stop_bad_trials_early(ray, tmp_path):
    # Best first: asynchronous rules can only cut trials that come after better ones.
    space = {"rate": tune.grid_search([0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])}
    asha = ASHAScheduler(max_t=16, grace_period=1, reduction_factor=2)
    grid = tune.Tuner(curve, param_space=space,
                      tune_config=tune.TuneConfig(metric="acc", mode="max", scheduler=asha),
                      run_config=_cfg(tmp_path, "asha")).fit()
    iters = {r.config["rate"]: r.metrics["training_iteration"] for r in grid}
    assert iters[0.8] == 16  # the best trial runs to max_t
    assert sum(i < 16 for i in iters.values()) >= 4  # most others were cut at a rung
    assert grid.num_errors == 0

    median = MedianStoppingRule(time_attr="training_iteration", grace_period=2,
                                min_samples_required=2)
    grid = tune.Tuner(curve, param_space=space,
                      tune_config=tune.TuneConfig(metric="acc", mode="max", scheduler=median,
                                                  max_concurrent_trials=2),
                      run_config=_cfg(tmp_path, "median")).fit()
    iters = {r.config["rate"]: r.metrics["training_iteration"] for r in grid}
    assert iters[0.8] == 16 and iters[0.7] == 16  # the first two have nothing to compare to
    assert sum(i < 16 for i in iters.values()) >= 3


def pbt_trainable(config):
    state = {"w": 0.0}
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        state = json.loads(_read(checkpoint.path, "w.json"))
    while True:
        time.sleep(0.05)  # long enough for trials to overlap, so they can be compared
        state["w"] += config["lr"]
        ckpt_dir = os.path.join(tune.get_context().get_trial_dir(), "tmp_ckpt")
        os.makedirs(ckpt_dir, exist_ok=True)
        with open(os.path.join(ckpt_dir, "w.json"), "w") as f:
            json.dump(state, f)
        tune.report({"w": state["w"], "lr": config["lr"]},
                    checkpoint=tune.Checkpoint.from_directory(ckpt_dir))


def test_pbt_exploits_by_checkpoint_and_explores(ray, tmp_path):
    pbt = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=2,
                                  hyperparam_mutations={"lr": [0.01, 0.1, 1.0, 2.0]},
                                  quantile_fraction=0.5, seed=1)
    grid = tune.Tuner(pbt_trainable,
                      param_space={"lr": tune.grid_search([0.01, 0.1, 1.0, 2.0])},
                      tune_config=tune.TuneConfig(metric="w", mode="max", scheduler=pbt),
                      run_config=_cfg(tmp_path, "pbt", stop={"training_iteration": 8},
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2))
                      ).fit()
    assert grid.num_errors == 0 and pbt.num_perturbations >= 1
    assert all(config["lr"] in (0.01, 0.1, 1.0, 2.0) for *_, config in pbt.exploits)
    exploited = [r for r in grid if any(name.startswith("checkpoint_exploit")
                                        for name in os.listdir(r.path))]
    assert exploited
    last_exploit = {trial_id: config for _, trial_id, _, config in pbt.exploits}
    for result in exploited:
        # The trial went on from the donor's checkpoint with an explored config (which
        # may resample to its old value, or come after its last report: not asserted).
        history = [json.loads(line) for line in _read(result.path, "result.json").splitlines()]
        assert history[-1]["trial_id"] in last_exploit
        assert {h["lr"] for h in history} <= {0.01, 0.1, 1.0, 2.0}
        assert result.metrics["training_iteration"] >= 8
    assert all(len([d for d in os.listdir(r.path) if d.startswith("checkpoint_0")]) <= 2
               for r in grid)


def steps(config):
    for step in range(1, 6):
        tune.report({"loss": config["x"] ** 2 * (1 + 1 / step)})


def test_optuna_search_tpe_and_pruner(ray, tmp_path):
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from miniray.tune.search.optuna import OptunaSearch

    search = OptunaSearch(seed=0, points_to_evaluate=[{"x": 0.1}],
                          pruner=optuna.pruners.MedianPruner(n_startup_trials=2,
                                                             n_warmup_steps=1))
    grid = tune.Tuner(steps, param_space={"x": tune.uniform(-10, 10)},
                      tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=10,
                                                  search_alg=search,
                                                  max_concurrent_trials=1),
                      run_config=_cfg(tmp_path, "optuna")).fit()
    assert len(grid) == 10 and grid.num_errors == 0
    assert grid[0].config["x"] == 0.1
    states = [t.state for t in search.study.trials]
    pruned = states.count(optuna.trial.TrialState.PRUNED)
    assert pruned >= 1 and states.count(optuna.trial.TrialState.COMPLETE) + pruned == 10
    assert sum(r.metrics["training_iteration"] < 5 for r in grid) == pruned
    assert abs(grid.get_best_result().config["x"]) <= 0.1 + 1e-9

    # Define-by-run space with a constant, and a multi-objective study.
    def space(trial):
        trial.suggest_int("n", 1, 4)
        return {"fixed": "yes"}

    def two(config):
        return {"a": config["n"], "b": -config["n"]}

    multi = OptunaSearch(space=space, metric=["a", "b"], mode=["min", "min"], seed=0)
    grid = tune.Tuner(two, tune_config=tune.TuneConfig(search_alg=multi, num_samples=4),
                      run_config=_cfg(tmp_path, "multi")).fit()
    assert len(grid) == 4 and all(r.config["fixed"] == "yes" for r in grid)
    assert len(multi.study.trials) == 4 and len(multi.study.directions) == 2


def meet(config):
    # Wait up to config["wait"] s for another trial to be running at the same time.
    mine = os.path.join(config["dir"], tune.get_context().get_trial_id())
    open(mine, "w").close()
    try:
        deadline = time.time() + config["wait"]
        while time.time() < deadline:
            if len(os.listdir(config["dir"])) >= 2:
                time.sleep(0.3)  # stay long enough for the other trial to see this one
                return {"met": True, "i": config.get("__trial_index__", -1)}
            time.sleep(0.02)
        return {"met": False, "i": config.get("__trial_index__", -1)}
    finally:
        os.remove(mine)


def test_concurrency_limiter_repeater_and_with_resources(ray, tmp_path):
    from miniray.tune.search import BasicVariantGenerator

    def space(name, wait):
        os.makedirs(tmp_path / f"meet_{name}")
        return {"dir": str(tmp_path / f"meet_{name}"), "wait": wait, "x": tune.uniform(0, 1)}

    grid = tune.Tuner(meet, param_space=space("free", 20),
                      tune_config=tune.TuneConfig(num_samples=2),
                      run_config=_cfg(tmp_path, "res1")).fit()
    assert all(r.metrics["met"] for r in grid)  # 1 CPU per trial: two at once on 2 CPUs

    limited = ConcurrencyLimiter(BasicVariantGenerator(), max_concurrent=1)
    grid = tune.Tuner(meet, param_space=space("limited", 0.3),
                      tune_config=tune.TuneConfig(num_samples=2, search_alg=limited),
                      run_config=_cfg(tmp_path, "limited")).fit()
    assert len(grid) == 2 and not any(r.metrics["met"] for r in grid)

    grid = tune.Tuner(tune.with_resources(meet, {"cpu": 2}), param_space=space("res2", 0.3),
                      tune_config=tune.TuneConfig(num_samples=2),
                      run_config=_cfg(tmp_path, "res2")).fit()
    assert len(grid) == 2 and not any(r.metrics["met"] for r in grid)

    rep = Repeater(BasicVariantGenerator(), repeat=2)
    grid = tune.Tuner(meet, param_space=space("repeat", 0),
                      tune_config=tune.TuneConfig(num_samples=4, search_alg=rep),
                      run_config=_cfg(tmp_path, "repeat")).fit()
    assert sorted(r.metrics["i"] for r in grid) == [0, 0, 1, 1]
    assert len({r.config["x"] for r in grid}) == 2


def test_with_parameters_passes_data_once_through_the_object_store(ray, tmp_path):
    import cloudpickle

    data = np.arange(2_000_000, dtype=np.float64)  # 16 MB

    def fn(config, data):
        return {"total": float(data.sum()) * config["k"], "pid": os.getpid()}

    wrapped = tune.with_parameters(fn, data=data)
    grid = tune.Tuner(wrapped, param_space={"k": tune.grid_search([1, 2, 3])},
                      run_config=_cfg(tmp_path, "params")).fit()
    expected = float(data.sum())
    assert sorted(r.metrics["total"] for r in grid) == [expected, 2 * expected, 3 * expected]
    # What travels with each trial is small: the array itself went to the object store.
    assert len(cloudpickle.dumps(wrapped)) < 100_000
    assert wrapped({"k": 1})["total"] == expected  # still callable directly


class Counter(tune.Trainable):
    def setup(self, config, offset=0):
        self.value = offset

    def step(self):
        self.value += self.config["inc"]
        return {"value": self.value}

    def save_checkpoint(self, checkpoint_dir):
        return {"value": self.value}

    def load_checkpoint(self, checkpoint):
        self.value = checkpoint["value"]


def test_class_trainable_stoppers_and_checkpoints(ray, tmp_path):
    grid = tune.Tuner(
        Counter, param_space={"inc": tune.grid_search([1, 2])},
        tune_config=tune.TuneConfig(metric="value", mode="max"),
        run_config=_cfg(tmp_path, "class", stop={"training_iteration": 5},
                        checkpoint_config=tune.CheckpointConfig(
                            checkpoint_frequency=2, checkpoint_at_end=True, num_to_keep=2))
    ).fit()
    assert sorted(r.metrics["value"] for r in grid) == [5, 10]
    best = grid.get_best_result()
    names = sorted(d for d in os.listdir(best.path) if d.startswith("checkpoint_"))
    assert names == ["checkpoint_000004", "checkpoint_000005"]  # num_to_keep=2
    assert best.checkpoint.to_dict() == {"value": 10}

    # A function stopper and a time budget end trials that would never end by themselves.
    grid = tune.Tuner(Counter, param_space={"inc": 1},
                      run_config=_cfg(tmp_path, "fnstop",
                                      stop=lambda trial_id, result: result["value"] >= 3)).fit()
    assert grid[0].metrics["value"] == 3
    started = time.monotonic()
    grid = tune.Tuner(Counter, param_space={"inc": 1},
                      tune_config=tune.TuneConfig(time_budget_s=1.0),
                      run_config=_cfg(tmp_path, "budget")).fit()
    assert time.monotonic() - started < 10 and grid[0].metrics["value"] >= 1
    assert grid.num_errors == 0


def flaky(config):
    checkpoint = tune.get_checkpoint()
    start = 0
    if checkpoint:
        start = json.loads(_read(checkpoint.path, "state.json"))["step"]
    for step in range(start + 1, 5):
        d = os.path.join(tune.get_context().get_trial_dir(), "scratch")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "state.json"), "w") as f:
            json.dump({"step": step}, f)
        tune.report({"step": step, "resumed_from": start},
                    checkpoint=tune.Checkpoint.from_directory(d))
        marker = os.path.join(tune.get_context().get_trial_dir(), f"failed_{step}")
        if step == 2 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the worker dies mid-trial


def test_failure_config_retries_from_the_latest_checkpoint(ray, tmp_path):
    grid = tune.Tuner(flaky, run_config=_cfg(
        tmp_path, "flaky", failure_config=tune.FailureConfig(max_failures=1))).fit()
    assert grid.num_errors == 0
    assert grid[0].metrics["step"] == 4 and grid[0].metrics["resumed_from"] == 2
    grid = tune.Tuner(flaky, run_config=_cfg(tmp_path, "flaky0")).fit()
    assert grid.num_errors == 1  # max_failures=0: the crash is the trial's error


def test_progress_table_redraws_in_place_on_a_tty_and_prints_lines_otherwise(ray, tmp_path):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    for stream, expect_escape in ((Tty(), True), (io.StringIO(), False)):
        reporter = tune.CLIReporter(stream=stream, max_report_frequency=0)
        grid = tune.Tuner(quadratic, param_space={"x": tune.grid_search([1, 2])},
                          tune_config=tune.TuneConfig(metric="loss", mode="min"),
                          run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=1,
                                                    progress_reporter=reporter)).fit()
        text = stream.getvalue()
        assert "Trials: 2 TERMINATED" in text and "Best so far" in text
        assert ("\x1b[" in text) == expect_escape
    assert len(grid) == 2


def test_optuna_integration_spreads_a_study_over_workers(ray):
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from miniray.tune.integration.optuna import optimize

    def objective(trial):
        x = trial.suggest_float("x", -5, 5)
        trial.set_user_attr("pid", os.getpid())
        return (x - 1) ** 2

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=2)
    optimize(study, objective, n_trials=10, n_workers=2)
    assert len(study.trials) == 12
    pids = {t.user_attrs["pid"] for t in study.trials[2:]}
    assert os.getpid() not in pids and len(pids) >= 1
    assert [t.number for t in study.trials] == list(range(12))

    def broken(trial):
        trial.suggest_float("x", 0, 1)
        raise KeyError("broken objective")

    with pytest.raises(KeyError, match="broken objective"):
        optimize(study, broken, n_trials=4, n_workers=2)
    with pytest.raises(ValueError, match="n_trials or timeout"):
        optimize(study, objective)
