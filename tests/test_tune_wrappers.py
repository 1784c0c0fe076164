"""``tune.with_parameters`` / ``tune.with_resources`` return what Ray returns: the trainable
itself (function or Trainable subclass) with its attributes set, not a wrapper object."""

from __future__ import annotations

import inspect
import os

import numpy as np
import pytest

from miniray import tune


def _cfg(tmp_path, name, **kw):
    return tune.RunConfig(storage_path=str(tmp_path), name=name, verbose=0, **kw)


def score(config, data=None):
    return {"total": float(data.sum()) * config["k"], "pid": os.getpid()}


class Counter(tune.Trainable):
    def setup(self, config, offset=0, scale=1):
        self.value = offset * scale

    def step(self):
        self.value += self.config["inc"]
        return {"value": self.value, "done": self.iteration >= 1}


def test_with_resources_returns_the_function_itself(ray, tmp_path):
    def fn(config):
        return {"cpus": float(os.environ.get("MINIRAY_TEST_UNUSED", "0")) + config["x"]}

    out = tune.with_resources(fn, {"cpu": 2})
    assert out is fn and fn._resources == {"cpu": 2}
    assert inspect.signature(out) == inspect.signature(fn)
    assert ray.get(ray.remote(out).remote({"x": 1})) == {"cpus": 1.0}
    # Tune reads the attribute: two 2-CPU trials on a 2-CPU node never overlap.
    grid = tune.Tuner(out, param_space={"x": tune.grid_search([1, 2])},
                      run_config=_cfg(tmp_path, "res")).fit()
    assert grid.num_errors == 0 and len(grid) == 2
    with pytest.raises(ValueError, match="more than the node has"):
        tune.Tuner(tune.with_resources(fn, {"cpu": 8}), param_space={"x": 1},
                   run_config=_cfg(tmp_path, "big")).fit()

    class Holder:
        def train(self, config):
            return {"x": config["x"]}

    method = tune.with_resources(Holder().train, lambda config: {"cpu": 1})
    assert inspect.isfunction(method) and method.__name__ == "train"
    assert method({"x": 3}) == {"x": 3} and callable(method._resources)


def test_with_resources_on_a_class_returns_a_subclass():
    cls = tune.with_resources(Counter, {"cpu": 2, "gpu": 0})
    assert issubclass(cls, Counter) and cls.__name__ == "Counter"
    assert cls.default_resource_request({}) == {"cpu": 2, "gpu": 0}
    dyn = tune.with_resources(Counter, lambda config: {"cpu": config["n"]})
    assert dyn.default_resource_request({"n": 3}) == {"cpu": 3}
    for bad in (42, dict):
        with pytest.raises(ValueError, match="only works with function trainables"):
            tune.with_resources(bad, {"cpu": 1})
    with pytest.raises(ValueError, match="Invalid resource type"):
        tune.with_resources(Counter, 3)
    with pytest.raises(ValueError, match="non-negative"):
        tune.with_resources(Counter, {"cpu": -1})


def test_with_parameters_returns_a_function_ray_remote_accepts(ray, tmp_path):
    data = np.arange(1_000_000, dtype=np.float64)  # 8 MB
    fn = tune.with_parameters(score, data=data)
    assert inspect.isfunction(fn) and fn.__name__ == "score"
    assert list(inspect.signature(fn).parameters) == ["config"]
    expected = float(data.sum())
    assert fn({"k": 2})["total"] == 2 * expected  # callable directly
    # miniray.remote takes it as any function; the array travels through the object store.
    assert ray.get(ray.remote(fn).remote({"k": 3}))["total"] == 3 * expected
    # with_resources keeps working on (and is kept by) the result.
    both = tune.with_parameters(tune.with_resources(score, {"cpu": 1}), data=data)
    assert both._resources == {"cpu": 1}
    grid = tune.Tuner(both, param_space={"k": tune.grid_search([1, 2])},
                      run_config=_cfg(tmp_path, "params")).fit()
    assert sorted(r.metrics["total"] for r in grid) == [expected, 2 * expected]
    with pytest.raises(ValueError, match="only works with function trainables"):
        tune.with_parameters("score", data=data)


def test_with_parameters_on_a_class_passes_setup_kwargs(ray, tmp_path):
    cls = tune.with_parameters(Counter, offset=100)
    assert issubclass(cls, Counter) and cls.__name__ == "Counter"
    assert cls({"inc": 1}).value == 100  # usable directly, as a subclass
    both = tune.with_resources(cls, {"cpu": 1})
    grid = tune.Tuner(both, param_space={"inc": tune.grid_search([1, 2])},
                      run_config=_cfg(tmp_path, "cls")).fit()
    assert grid.num_errors == 0
    assert sorted(r.metrics["value"] for r in grid) == [102, 104]


def test_placement_group_factory_reserves_the_sum_of_its_bundles(ray, tmp_path):
    pgf = tune.PlacementGroupFactory([{"CPU": 1}, {"CPU": 1}])
    assert pgf.required_resources == {"CPU": 2} and pgf.strategy == "PACK"

    def fn(config):
        return {"x": config["x"]}

    out = tune.with_resources(fn, pgf)
    assert out is fn and fn._resources is pgf
    grid = tune.Tuner(out, param_space={"x": tune.grid_search([1, 2])},
                      run_config=_cfg(tmp_path, "pgf")).fit()
    assert grid.num_errors == 0
    with pytest.raises(ValueError, match="more than the node has"):
        tune.Tuner(tune.with_resources(fn, tune.PlacementGroupFactory([{"CPU": 2}] * 2)),
                   param_space={"x": 1}, run_config=_cfg(tmp_path, "big")).fit()
    with pytest.raises(ValueError, match="non-empty list"):
        tune.PlacementGroupFactory([])


def test_create_scheduler_searcher_and_noop_stopper():
    from miniray.tune.schedulers import AsyncHyperBandScheduler, HyperBandScheduler
    from miniray.tune.search import BasicVariantGenerator
    from miniray.tune.stopper import NoopStopper

    asha = tune.create_scheduler("async_hyperband", metric="m", mode="max", max_t=5,
                                 not_an_asha_argument=1)
    assert isinstance(asha, AsyncHyperBandScheduler) and asha.metric == "m"
    assert isinstance(tune.create_scheduler("HyperBand", max_t=9), HyperBandScheduler)
    with pytest.raises(ValueError, match="HyperBandForBOHB"):
        tune.create_scheduler("hb_bohb")
    with pytest.raises(ValueError, match="must be one of"):
        tune.create_scheduler("nope")
    assert isinstance(tune.create_searcher("random", random_state=3), BasicVariantGenerator)
    with pytest.raises(ValueError, match="use 'optuna'"):
        tune.create_searcher("hyperopt")
    if pytest.importorskip("optuna"):
        from miniray.tune.search.optuna import OptunaSearch

        assert isinstance(tune.create_searcher("optuna", metric="m", mode="min"), OptunaSearch)
    stopper = NoopStopper()
    assert stopper("t", {"training_iteration": 10**6}) is False and stopper.stop_all() is False


def test_register_trainable_lets_tuner_and_run_take_a_name(ray, tmp_path):
    def double(config):
        return {"y": 2 * config["x"]}

    tune.register_trainable("double", double)
    grid = tune.Tuner("double", param_space={"x": tune.grid_search([1, 2])},
                      run_config=_cfg(tmp_path, "named")).fit()
    assert sorted(r.metrics["y"] for r in grid) == [2, 4]
    analysis = tune.run("double", config={"x": 5}, storage_path=str(tmp_path), verbose=0)
    assert analysis.trials[0].last_result["y"] == 10
    with pytest.raises(ValueError, match="register it first"):
        tune.Tuner("never_registered")
    with pytest.raises(TypeError, match="convertible to a Trainable"):
        tune.register_trainable("bad", 42)


def test_restoring_a_with_parameters_experiment_needs_the_trainable_again(ray, tmp_path):
    data = np.ones(10)
    tune.Tuner(tune.with_parameters(score, data=data), param_space={"k": 1},
               run_config=_cfg(tmp_path, "wp")).fit()
    with pytest.raises(ValueError, match="pass it again"):
        tune.Tuner.restore(str(tmp_path / "wp"))
    grid = tune.Tuner.restore(str(tmp_path / "wp"),
                              trainable=tune.with_parameters(score, data=data),
                              _resume_config=tune.ResumeConfig(finished="restart")).fit()
    assert grid[0].metrics["total"] == 10.0


def test_sync_config_is_accepted_and_shared_with_train(ray, tmp_path):
    import miniray.train as train

    def fn(config):
        return {"k": config["k"]}

    assert train.SyncConfig is tune.SyncConfig
    sync = tune.SyncConfig(sync_period=5, sync_artifacts=True)
    grid = tune.Tuner(fn, param_space={"k": 1},
                      run_config=_cfg(tmp_path, "sync", sync_config=sync)).fit()
    assert grid.num_errors == 0 and grid[0].metrics["k"] == 1


def test_run_experiments_with_experiment_objects_and_dict_specs(ray, tmp_path):
    def fn(config):
        return {"y": config["x"] * 10}

    trials = tune.run_experiments(
        [tune.Experiment("a", fn, config={"x": tune.grid_search([1, 2])},
                         storage_path=str(tmp_path)),
         tune.Experiment.from_json("b", {"run": fn, "config": {"x": 3},
                                         "storage_path": str(tmp_path)})], verbose=0)
    assert sorted(t.last_result["y"] for t in trials) == [10, 20, 30]
    assert (tmp_path / "a").is_dir() and (tmp_path / "b").is_dir()
    trials = tune.run_experiments({"c": {"run": fn, "config": {"x": 4},
                                         "storage_path": str(tmp_path)}}, verbose=0)
    assert [t.last_result["y"] for t in trials] == [40]
    with pytest.raises(ValueError, match="unknown keys"):
        tune.Experiment.from_json("d", {"run": fn, "confg": {}})
