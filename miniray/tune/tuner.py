"""``Tuner`` (``Tuner(...).fit()`` -> ResultGrid) and ``tune.run`` (-> ExperimentAnalysis)."""

from __future__ import annotations

import os
import time

from .. import api
from .config import CheckpointConfig, FailureConfig, ResumeConfig, RunConfig, TuneConfig
from .controller import STATE_FILE, TUNER_FILE, TuneController
from .progress import default_reporter
from .result import ExperimentAnalysis, ResultGrid
from .trainable import resolve_trainable, with_resources

__all__ = ["Tuner", "run"]

DEFAULT_STORAGE = os.path.join("~", "miniray_results")


def _experiment_dir(run_config, trainable) -> str:
    storage = os.path.expanduser(run_config.storage_path or DEFAULT_STORAGE)
    name = run_config.name
    if not name:
        base = getattr(trainable, "__name__", "trainable")
        name = f"{base}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    return os.path.abspath(os.path.join(storage, name))


class Tuner:
    """Tune hyperparameters of ``trainable`` over ``param_space``.

    Args:
        trainable: a function ``fn(config)`` (calling ``tune.report`` or returning a
            dict of metrics) or a :class:`~miniray.tune.Trainable` subclass, possibly
            wrapped by ``with_parameters`` / ``with_resources``.
        param_space: the config space: constants, ``tune.grid_search(...)`` axes and
            sampled domains (``tune.uniform(...)``...), nested dicts allowed.
        tune_config: metric, mode, searcher, scheduler, number of samples.
        run_config: name, storage, stop criteria, failures, checkpoints, verbosity.

    Example::

        tuner = tune.Tuner(train_fn, param_space={"lr": tune.loguniform(1e-4, 1e-1)},
                           tune_config=tune.TuneConfig(metric="loss", mode="min",
                                                       num_samples=20))
        best = tuner.fit().get_best_result()
    """

    def __init__(self, trainable=None, *, param_space: dict | None = None,
                 tune_config: TuneConfig | None = None, run_config: RunConfig | None = None,
                 _state=None, _experiment_dir=None):
        if trainable is None:
            raise TypeError("Tuner() needs a trainable (a function or a Trainable subclass)")
        trainable = resolve_trainable(trainable)
        if not callable(trainable):
            raise TypeError(f"trainable must be a function or a tune.Trainable subclass, got "
                            f"{type(trainable).__name__}")
        if tune_config is not None and not isinstance(tune_config, TuneConfig):
            raise TypeError("tune_config must be a tune.TuneConfig")
        if run_config is not None and not isinstance(run_config, RunConfig):
            raise TypeError("run_config must be a tune.RunConfig")
        self.trainable = trainable
        self.param_space = param_space if param_space is not None else {}
        self.tune_config = tune_config or TuneConfig()
        self.run_config = run_config or RunConfig()
        self._state = _state
        self._dir = _experiment_dir
        self._results = None

    def fit(self) -> ResultGrid:
        """Run the experiment; return a ResultGrid. A failing trial does not raise: its
        exception is in ``ResultGrid.errors``."""
        api._auto_init()
        experiment_dir = self._dir or _experiment_dir(self.run_config, self.trainable)
        verbose = 1 if self.run_config.verbose is None else self.run_config.verbose
        reporter = self.run_config.progress_reporter or (default_reporter() if verbose else None)
        controller = TuneController(self.trainable, self.param_space, self.tune_config,
                                    self.run_config, experiment_dir, restored=self._state,
                                    reporter=reporter)
        os.makedirs(experiment_dir, exist_ok=True)
        self._dir = experiment_dir
        if self._state is None:
            self._save_tuner(experiment_dir)
        trials = controller.run()
        self._results = ResultGrid(trials, self.tune_config.metric, self.tune_config.mode,
                                   experiment_dir)
        return self._results

    def get_results(self) -> ResultGrid:
        """The ResultGrid of the last ``fit()`` (or of the restored experiment)."""
        if self._results is None:
            if self._state is None:
                raise RuntimeError("fit() has not run yet")
            return ResultGrid(self._state["trials"], self.tune_config.metric,
                              self.tune_config.mode, self._dir)
        return self._results

    def _save_tuner(self, experiment_dir):
        import cloudpickle

        try:
            trainable = cloudpickle.dumps(self.trainable)
        except Exception:
            trainable = None  # restore() then needs the trainable passed in again
        data = {"trainable": trainable, "param_space": self.param_space,
                "tune_config": self.tune_config, "run_config": self.run_config}
        try:
            blob = cloudpickle.dumps(data)
        except Exception:
            data["tune_config"] = None  # e.g. a searcher holding a database connection
            blob = cloudpickle.dumps(data)
        path = os.path.join(experiment_dir, TUNER_FILE)
        with open(path + ".tmp", "wb") as f:
            f.write(blob)
        os.replace(path + ".tmp", path)

    @classmethod
    def can_restore(cls, path: str) -> bool:
        """True if ``path`` holds an experiment that :meth:`restore` can resume."""
        path = os.path.expanduser(path)
        return os.path.exists(os.path.join(path, STATE_FILE)) and \
            os.path.exists(os.path.join(path, TUNER_FILE))

    @classmethod
    def restore(cls, path: str, trainable=None, resume_unfinished: bool = True,
                resume_errored: bool = False, restart_errored: bool = False,
                param_space: dict | None = None, tune_config: TuneConfig | None = None,
                run_config: RunConfig | None = None,
                _resume_config: ResumeConfig | None = None) -> "Tuner":
        """Resume an interrupted experiment (e.g. its driver was killed) from ``path``.

        Finished trials are kept, not rerun; unfinished ones restart from their latest
        checkpoint (or from scratch); the searcher continues where it stopped.
        ``resume_errored`` retries errored trials from their checkpoint,
        ``restart_errored`` from scratch. ``_resume_config`` (a :class:`ResumeConfig`, as
        in Ray) chooses resume / restart / skip for finished, unfinished and errored
        trials, and overrides the three flags.
        """
        import cloudpickle

        path = os.path.abspath(os.path.expanduser(path))
        if not cls.can_restore(path):
            raise ValueError(f"{path!r} holds no experiment to restore (no {STATE_FILE} / "
                             f"{TUNER_FILE})")
        with open(os.path.join(path, TUNER_FILE), "rb") as f:
            saved = cloudpickle.load(f)
        with open(os.path.join(path, STATE_FILE), "rb") as f:
            state = cloudpickle.load(f)
        if trainable is None:
            if saved["trainable"] is None:
                raise ValueError("this experiment's trainable could not be saved; pass it: "
                                 "Tuner.restore(path, trainable=...)")
            trainable = cloudpickle.loads(saved["trainable"])
            params = getattr(trainable, "__tune_parameters__", None)
            if params is not None and params._values is None:
                # Its values lived in the object store of the session that saved it.
                raise ValueError("this experiment's trainable was wrapped with "
                                 "tune.with_parameters, whose values are not saved with the "
                                 "experiment: pass it again, Tuner.restore(path, "
                                 "trainable=tune.with_parameters(fn, ...))")
        if _resume_config is None:
            _resume_config = ResumeConfig(
                finished="skip", unfinished="resume" if resume_unfinished else "skip",
                errored="restart" if restart_errored else "resume" if resume_errored
                else "skip")
        elif not isinstance(_resume_config, ResumeConfig):
            raise TypeError("_resume_config must be a tune.ResumeConfig")
        state["resume"] = {"finished": _resume_config.finished,
                           "unfinished": _resume_config.unfinished,
                           "errored": _resume_config.errored}
        tune_config = tune_config or saved["tune_config"] or TuneConfig()
        tune_config.search_alg = state["searcher"]
        run_config = run_config or saved["run_config"]
        return cls(trainable, param_space=param_space or saved["param_space"],
                   tune_config=tune_config, run_config=run_config, _state=state,
                   _experiment_dir=path)


def run(run_or_experiment, config: dict | None = None, *, metric: str | None = None,
        mode: str | None = None, name: str | None = None, stop=None,
        time_budget_s: float | None = None, num_samples: int = 1,
        storage_path: str | None = None, local_dir: str | None = None, search_alg=None,
        scheduler=None, resources_per_trial=None, max_concurrent_trials: int | None = None,
        verbose: int = 3, progress_reporter=None, checkpoint_config=None,
        checkpoint_freq: int = 0, checkpoint_at_end: bool = False,
        keep_checkpoints_num: int | None = None, checkpoint_score_attr: str | None = None,
        max_failures: int = 0, fail_fast: bool = False, resume=False,
        raise_on_failed_trial: bool = True, callbacks=None, trial_name_creator=None,
        trial_dirname_creator=None, reuse_actors=None) -> ExperimentAnalysis:
    """Run an experiment with Ray Tune's classic ``tune.run`` arguments.

    Returns an :class:`ExperimentAnalysis` (``best_config``, ``best_result``,
    ``best_trial``, ``trials``, ``dataframe()``). With ``raise_on_failed_trial``
    (the default, as in Ray) a ``TuneError`` is raised after all trials ended if
    any failed.
    """
    from .errors import TuneError

    trainable = resolve_trainable(run_or_experiment)
    if resources_per_trial is not None:
        trainable = with_resources(trainable, resources_per_trial)
    if checkpoint_config is None:
        checkpoint_config = CheckpointConfig(
            num_to_keep=keep_checkpoints_num, checkpoint_score_attribute=checkpoint_score_attr,
            checkpoint_frequency=checkpoint_freq, checkpoint_at_end=checkpoint_at_end)
    run_config = RunConfig(name=name, storage_path=storage_path or local_dir, stop=stop,
                           failure_config=FailureConfig(max_failures, fail_fast),
                           checkpoint_config=checkpoint_config, verbose=verbose,
                           progress_reporter=progress_reporter, callbacks=callbacks)
    tune_config = TuneConfig(metric=metric, mode=mode, search_alg=search_alg,
                             scheduler=scheduler, num_samples=num_samples,
                             max_concurrent_trials=max_concurrent_trials,
                             time_budget_s=time_budget_s,
                             trial_dirname_creator=trial_dirname_creator,
                             trial_name_creator=trial_name_creator)
    tuner = None
    if resume and name:
        path = _experiment_dir(run_config, trainable)
        if Tuner.can_restore(path):
            tuner = Tuner.restore(path, trainable, resume_errored=resume == "ERRORED_ONLY",
                                  tune_config=tune_config, run_config=run_config)
    if tuner is None:
        tuner = Tuner(trainable, param_space=config or {}, tune_config=tune_config,
                      run_config=run_config)
    grid = tuner.fit()
    trials = grid._trials
    analysis = ExperimentAnalysis(trials, metric, mode, grid.experiment_path)
    failed = [t for t in trials if t.status == "ERROR"]
    if failed and raise_on_failed_trial:
        raise TuneError(f"Trials did not complete: {[t.trial_id for t in failed]}") \
            from failed[0].error
    return analysis
