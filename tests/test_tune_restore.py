"""``Tuner.restore``: resume an experiment whose driver was killed, without rerunning the
trials that had finished."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from miniray import tune

DRIVER = textwrap.dedent("""
    import os, sys, time
    import miniray
    from miniray import tune

    log = sys.argv[2]

    def trainable(config):
        with open(log, "a") as f:
            f.write(f"{config['i']}\\n")
        time.sleep(0.3 if config["i"] < 2 else 30)  # the later ones never finish here
        return {"score": config["i"]}

    miniray.init(num_cpus=2)
    tune.Tuner(trainable, param_space={"i": tune.grid_search(list(range(5)))},
               tune_config=tune.TuneConfig(metric="score", mode="max"),
               run_config=tune.RunConfig(storage_path=sys.argv[1], name="exp",
                                         verbose=0)).fit()
""")


def _terminated(state_file):
    try:
        with open(state_file, "rb") as f:
            state = pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError):
        return 0
    return sum(t.status == "TERMINATED" for t in state["trials"])


def test_restore_after_the_driver_was_killed(ray, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    log = tmp_path / "starts.log"
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH",
                                                                               ""))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(log)], env=env)
    state_file = tmp_path / "exp" / "experiment_state.pkl"
    try:
        deadline = time.monotonic() + 60
        while _terminated(state_file) < 2:
            assert proc.poll() is None, "the driver exited early"
            assert time.monotonic() < deadline, "trials never finished"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)  # the driver dies without any cleanup
        proc.wait()
    started_before = log.read_text().split()
    assert sorted(started_before[:2]) == ["0", "1"]
    assert tune.Tuner.can_restore(str(tmp_path / "exp"))

    # Resume with a trainable that finishes fast; the saved one would sleep 30 s.
    def trainable(config):
        with open(log, "a") as f:
            f.write(f"{config['i']}\n")
        return {"score": config["i"]}

    grid = tune.Tuner.restore(str(tmp_path / "exp"), trainable=trainable).fit()
    assert len(grid) == 5 and grid.num_errors == 0
    assert sorted(r.metrics["score"] for r in grid) == [0, 1, 2, 3, 4]
    starts = log.read_text().split()
    assert starts.count("0") == 1 and starts.count("1") == 1  # finished: not rerun
    assert all(starts.count(str(i)) >= 1 for i in range(2, 5))
    assert grid.get_best_result().config == {"i": 4}


OPTUNA_DRIVER = textwrap.dedent("""
    import os, sys, time
    import optuna
    import miniray
    from miniray import tune
    from miniray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    log = sys.argv[2]

    def trainable(config):
        with open(log, "a") as f:
            f.write(f"{config['x']}\\n")
        with open(log) as f:
            started = len(f.read().splitlines())
        for step in range(3):
            tune.report({"a": config["x"] + step, "b": -config["x"]})
            if started > 2:
                time.sleep(30)  # the third and later trials never finish here

    miniray.init(num_cpus=2)
    # Multi-objective: Optuna's default sampler is NSGA-II, whose thread lock made
    # saving experiment_state.pkl fail under Optuna 5.
    search = OptunaSearch(metric=["a", "b"], mode=["min", "max"], seed=0,
                          points_to_evaluate=[{"x": 1.0}, {"x": 2.0}, {"x": 3.0}])
    tune.Tuner(trainable, param_space={"x": tune.uniform(0, 10)},
               tune_config=tune.TuneConfig(search_alg=search, num_samples=6,
                                           max_concurrent_trials=2),
               run_config=tune.RunConfig(storage_path=sys.argv[1], name="exp",
                                         verbose=0)).fit()
""")


def test_multi_objective_optuna_experiment_restores_and_continues(ray, tmp_path):
    optuna = pytest.importorskip("optuna")
    script = tmp_path / "driver.py"
    script.write_text(OPTUNA_DRIVER)
    log = tmp_path / "starts.log"
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH",
                                                                               ""))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(log)], env=env,
                            stderr=subprocess.PIPE)
    state_file = tmp_path / "exp" / "experiment_state.pkl"
    try:
        deadline = time.monotonic() + 90
        while _terminated(state_file) < 2 or _running(state_file) < 1:
            if proc.poll() is not None:
                raise AssertionError(f"the driver exited early: {proc.stderr.read()[-3000:]}")
            assert time.monotonic() < deadline, "trials never finished"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    started_before = log.read_text().splitlines()

    def quick_two_objectives(config):
        with open(log, "a") as f:
            f.write(f"{config['x']}\n")
        for step in range(3):
            tune.report({"a": config["x"] + step, "b": -config["x"]})

    tuner = tune.Tuner.restore(str(tmp_path / "exp"), trainable=quick_two_objectives)
    grid = tuner.fit()
    assert len(grid) == 6 and grid.num_errors == 0
    assert all(r.metrics["training_iteration"] == 3 for r in grid)
    assert sorted(r.config["x"] for r in grid)[:3] == [1.0, 2.0, 3.0]
    # The two finished trials were not run again: only the unfinished and new ones ran.
    starts = [float(x) for x in log.read_text().splitlines()[len(started_before):]]
    done_before = {float(x) for x in started_before[:2]}
    assert not done_before & set(starts) and len(starts) == 6 - 2
    # The restored searcher's study holds the whole history, told with both objectives.
    study = tuner.tune_config.search_alg.study
    assert len(study.directions) == 2
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 6, states
    assert sorted(t.params["x"] for t in study.trials) == \
        sorted(r.config["x"] for r in grid)


def _running(state_file):
    try:
        with open(state_file, "rb") as f:
            state = pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError):
        return 0
    return sum(t.status == "RUNNING" for t in state["trials"])


def test_an_unloadable_optuna_sampler_is_restored_fresh_with_a_warning():
    optuna = pytest.importorskip("optuna")
    from miniray.tune.search.optuna import _Portable

    saved = _Portable(optuna.samplers.NSGAIISampler(seed=3))
    assert saved.blob is not None  # its thread lock is recreated, not pickled
    assert isinstance(_Portable.unwrap(saved, "sampler"), optuna.samplers.NSGAIISampler)
    saved.blob = b"not a pickle"  # e.g. written by an Optuna version that differs
    with pytest.warns(RuntimeWarning, match="NSGAIISampler is restored with its default"):
        fresh = _Portable.unwrap(saved, "sampler")
    assert isinstance(fresh, optuna.samplers.NSGAIISampler)


def test_resume_config_chooses_per_trial_state(ray, tmp_path):
    log = tmp_path / "starts.log"

    def make(fail_on):
        def trainable(config):
            checkpoint = tune.get_checkpoint()
            with open(log, "a") as f:
                f.write(f"{config['x']} {'resume' if checkpoint else 'fresh'}\n")
            d = tmp_path / f"ck{config['x']}"
            d.mkdir(exist_ok=True)
            tune.report({"x": config["x"]}, checkpoint=tune.Checkpoint.from_directory(d))
            if config["x"] == fail_on:
                raise ValueError("fails after its checkpoint")
        return trainable

    grid = tune.Tuner(make(fail_on=2), param_space={"x": tune.grid_search([1, 2])},
                      run_config=tune.RunConfig(storage_path=str(tmp_path), name="rc",
                                                verbose=0)).fit()
    assert grid.num_errors == 1
    log.write_text("")
    with pytest.raises(ValueError, match="ResumeConfig.errored"):
        tune.ResumeConfig(errored="again")
    rc = tune.ResumeConfig(finished=tune.ResumeConfig.ResumeType.RESTART,
                           errored=tune.ResumeConfig.ResumeType.RESUME)
    grid = tune.Tuner.restore(str(tmp_path / "rc"), trainable=make(fail_on=None),
                              _resume_config=rc).fit()
    assert grid.num_errors == 0 and len(grid) == 2
    # The finished trial ran again from scratch, the errored one from its checkpoint.
    assert sorted(log.read_text().splitlines()) == ["1 fresh", "2 resume"]
    log.write_text("")
    grid = tune.Tuner.restore(str(tmp_path / "rc"), trainable=make(fail_on=None)).fit()
    assert log.read_text() == "" and grid.num_errors == 0  # defaults: skip finished
