"""miniray.tune pieces that need no node: search spaces, variant generation, stoppers,
scheduler rules, config validation."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from miniray import tune
from miniray.tune.schedulers import AsyncHyperBandScheduler, PopulationBasedTraining
from miniray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Repeater, sample
from miniray.tune.stopper import (CombinedStopper, MaximumIterationStopper, TimeoutStopper,
                                  TrialPlateauStopper, make_stopper)


def test_import_miniray_tune_stays_light():
    code = ("import sys, miniray, miniray.tune, miniray.tune.search;"
            "print(sorted(m for m in ('optuna', 'matplotlib', 'pandas', 'sklearn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_domains_sample_within_their_ranges():
    rng = random.Random(0)
    for _ in range(300):
        assert 1 <= tune.uniform(1, 2).sample(rng) <= 2
        v = tune.quniform(0, 1, 0.25).sample(rng)
        assert v in (0, 0.25, 0.5, 0.75, 1.0)
        assert 1e-4 <= tune.loguniform(1e-4, 1e-1).sample(rng) <= 1e-1
        assert tune.randint(0, 3).sample(rng) in (0, 1, 2)  # upper excluded, as in Ray
        assert tune.qrandint(0, 10, 5).sample(rng) in (0, 5, 10)  # upper included
        assert tune.choice(["a", "b"]).sample(rng) in ("a", "b")
        assert 1 <= tune.lograndint(1, 100).sample(rng) < 100
        q = tune.qloguniform(1, 100, 0.5).sample(rng)
        assert q * 2 == int(q * 2) and 1 <= q <= 100
    draws = [tune.randn(5, 0.1).sample(rng) for _ in range(200)]
    assert 4.9 < sum(draws) / len(draws) < 5.1
    assert {tune.randint(0, 3).sample(rng) for _ in range(100)} == {0, 1, 2}


def test_domain_validation():
    with pytest.raises(ValueError, match="lower bound"):
        tune.uniform(2, 1)
    with pytest.raises(ValueError, match="positive lower"):
        tune.loguniform(0, 1)
    with pytest.raises(ValueError, match="at least one"):
        tune.choice([])
    with pytest.raises(ValueError, match="empty"):
        tune.grid_search([])
    with pytest.raises(TypeError):
        tune.grid_search(3)


def test_grid_times_num_samples_with_nested_dicts_and_sample_from():
    space = {"a": tune.grid_search([1, 2, 3]),
             "nested": {"b": tune.grid_search(["x", "y"]), "lr": tune.uniform(0, 1)},
             "c": tune.sample_from(lambda spec: spec.config.a * 10),
             "const": 7}
    gen = BasicVariantGenerator(random_state=1)
    gen.set_search_properties("m", "max", space, num_samples=2)
    configs = []
    while True:
        config = gen.suggest(f"t{len(configs)}")
        if config == gen.FINISHED:
            break
        configs.append(config)
    assert len(configs) == 3 * 2 * 2
    points = {(c["a"], c["nested"]["b"]) for c in configs}
    assert points == {(a, b) for a in (1, 2, 3) for b in ("x", "y")}
    assert all(c["c"] == c["a"] * 10 and c["const"] == 7 for c in configs)
    assert len({c["nested"]["lr"] for c in configs}) == 12  # fresh samples per variant
    # Reproducible by seed, and the param_space itself is untouched.
    gen2 = BasicVariantGenerator(random_state=1)
    gen2.set_search_properties("m", "max", space, num_samples=2)
    assert gen2.suggest("t0") == configs[0]
    assert sample.is_grid(space["a"])


def test_points_to_evaluate_come_first():
    gen = BasicVariantGenerator(points_to_evaluate=[{"x": 0.5}])
    gen.set_search_properties(None, None, {"x": tune.uniform(0, 1), "y": 1}, num_samples=3)
    assert gen.suggest("a") == {"x": 0.5, "y": 1}
    assert gen.suggest("b")["x"] != 0.5


def test_concurrency_limiter_and_repeater():
    gen = BasicVariantGenerator()
    gen.set_search_properties(None, None, {"x": tune.uniform(0, 1)}, num_samples=10)
    limited = ConcurrencyLimiter(gen, max_concurrent=2)
    assert isinstance(limited.suggest("1"), dict)
    assert isinstance(limited.suggest("2"), dict)
    assert limited.suggest("3") is None
    limited.on_trial_complete("1", {"m": 1})
    assert isinstance(limited.suggest("3"), dict)

    inner = BasicVariantGenerator(random_state=0)
    inner.set_search_properties("m", "max", {"x": tune.uniform(0, 1)}, num_samples=2)
    rep = Repeater(inner, repeat=3)
    configs = [rep.suggest(str(i)) for i in range(6)]
    assert [c["__trial_index__"] for c in configs] == [0, 1, 2, 0, 1, 2]
    assert configs[0]["x"] == configs[2]["x"] != configs[3]["x"]
    with pytest.raises(ValueError):
        Repeater(inner, repeat=0)


def test_bad_mode_and_config_values_fail_early():
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        tune.TuneConfig(metric="acc", mode="maximize")
    with pytest.raises(ValueError, match="num_samples"):
        tune.TuneConfig(num_samples=0)
    with pytest.raises(ValueError, match="max_failures"):
        tune.FailureConfig(max_failures=-2)
    with pytest.raises(ValueError, match="verbose"):
        tune.RunConfig(verbose=7)
    with pytest.raises(ValueError):
        AsyncHyperBandScheduler(metric="m", mode="best")


def test_stoppers():
    stop = MaximumIterationStopper(3)
    assert [stop("t", {}) for _ in range(3)] == [False, False, True]
    plateau = TrialPlateauStopper("loss", std=0.01, num_results=3, grace_period=3)
    assert [plateau("t", {"loss": v}) for v in (5, 1, 1, 1)] == [False, False, False, True]
    dict_stop = make_stopper({"training_iteration": 2})
    assert not dict_stop("t", {"training_iteration": 1})
    assert dict_stop("t", {"training_iteration": 2})
    fn_stop = make_stopper(lambda trial_id, result: result["x"] > 1)
    assert fn_stop("t", {"x": 2})
    both = CombinedStopper(MaximumIterationStopper(10), TimeoutStopper(1e-9))
    assert both.stop_all()
    with pytest.raises(TypeError):
        make_stopper(3)


class _FakeTrial:
    def __init__(self, trial_id, config=None, checkpoint=None):
        self.trial_id, self.config, self.checkpoint = trial_id, config or {}, checkpoint
        self.status = "RUNNING"


class _FakeController:
    def __init__(self, trials):
        self.trials = {t.trial_id: t for t in trials}

    def trial(self, trial_id):
        return self.trials[trial_id]


def test_asha_rule_stops_below_cutoff():
    asha = AsyncHyperBandScheduler(metric="acc", mode="max", max_t=9, grace_period=1,
                                   reduction_factor=3)
    trials = [_FakeTrial(str(i)) for i in range(4)]
    ctl = _FakeController(trials)
    for t in trials:
        asha.on_trial_add(ctl, t)
    decisions = [asha.on_trial_result(ctl, t, {"training_iteration": 1, "acc": acc})
                 for t, acc in zip(trials, [0.9, 0.8, 0.1, 0.95])]
    assert decisions == ["CONTINUE", "STOP", "STOP", "CONTINUE"]
    assert asha.on_trial_result(ctl, trials[0], {"training_iteration": 9, "acc": 1}) == "STOP"


def test_pbt_explore_perturbs_within_mutations():
    pbt = PopulationBasedTraining(metric="m", mode="max", perturbation_interval=1,
                                  hyperparam_mutations={"lr": tune.uniform(0, 1),
                                                        "bs": [16, 32, 64]},
                                  resample_probability=0.0, seed=0)
    new = pbt._explore({"lr": 0.5, "bs": 32, "fixed": 1})
    assert new["lr"] in (0.6, 0.4) and new["bs"] in (16, 64) and new["fixed"] == 1
    with pytest.raises(ValueError):
        PopulationBasedTraining(metric="m", mode="max")


def test_optuna_search_rejects_grid_axes():
    pytest.importorskip("optuna")
    from miniray.tune.search.optuna import OptunaSearch

    search = OptunaSearch(metric="m", mode="min")
    with pytest.raises(ValueError, match="grid_search"):
        search.set_search_properties("m", "min", {"x": tune.grid_search([1, 2])})
    with pytest.raises(ValueError, match="mode"):
        OptunaSearch(metric="m", mode="up")


def test_report_outside_a_trial_is_an_error():
    with pytest.raises(RuntimeError, match="outside of a Tune trial"):
        tune.report({"x": 1})
    assert tune.get_checkpoint() is None
    assert tune.get_context().get_trial_id() is None
