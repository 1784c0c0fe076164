"""What an experiment returns: ``Result`` per trial, ``ResultGrid`` (``Tuner.fit``) and
``ExperimentAnalysis`` (``tune.run``)."""

from __future__ import annotations

import math

from .checkpoint import Checkpoint
from .search.sample import flatten
from .search.searcher import _check_mode

__all__ = ["Result", "ResultGrid", "ExperimentAnalysis"]

# Ray Tune's result keys and file names (``ray.tune.result``), with Ray's exact values:
# code that reads ``result[TRAINING_ITERATION]`` or a trial's ``EXPR_PROGRESS_FILE`` ports
# unchanged.
TRAINING_ITERATION = "training_iteration"
TIME_THIS_ITER_S = "time_this_iter_s"
TIMESTAMP = "timestamp"
DONE = "done"
SHOULD_CHECKPOINT = "should_checkpoint"
HOSTNAME = "hostname"
TRIAL_ID = "trial_id"
EXPERIMENT_TAG = "experiment_tag"
NODE_IP = "node_ip"
PID = "pid"
DEFAULT_METRIC = "_metric"
EPISODE_REWARD_MEAN = "episode_reward_mean"
MEAN_LOSS = "mean_loss"
MEAN_ACCURACY = "mean_accuracy"
EPISODES_THIS_ITER = "episodes_this_iter"
EPISODES_TOTAL = "episodes_total"
TIMESTEPS_THIS_ITER = "timesteps_this_iter"
TIMESTEPS_TOTAL = "timesteps_total"
TIME_TOTAL_S = "time_total_s"
DEFAULT_EXPERIMENT_INFO_KEYS = ("trainable_name", EXPERIMENT_TAG, TRIAL_ID)
DEFAULT_RESULT_KEYS = (TRAINING_ITERATION, TIME_TOTAL_S, MEAN_ACCURACY, MEAN_LOSS)
DEBUG_METRICS = (TRIAL_ID, "experiment_id", "date", TIMESTAMP, PID, HOSTNAME, NODE_IP,
                 "config")
AUTO_RESULT_KEYS = (TRAINING_ITERATION, TIME_TOTAL_S, EPISODES_TOTAL, TIMESTEPS_TOTAL,
                    NODE_IP, HOSTNAME, PID, TIME_TOTAL_S, TIME_THIS_ITER_S, TIMESTAMP, "date",
                    "time_since_restore", "timesteps_since_restore",
                    "iterations_since_restore", "config", "checkpoint_dir_name")
RESULT_DUPLICATE = "__duplicate__"
TRIAL_INFO = "__trial_info__"
STDOUT_FILE = "__stdout_file__"
STDERR_FILE = "__stderr_file__"
DEFAULT_EXPERIMENT_NAME = "default"
JOB_META_FILE = "job_status.json"
EXPR_META_FILE = "trial_status.json"
CONFIG_PREFIX = "config"
EXPR_PARAM_FILE = "params.json"
EXPR_PARAM_PICKLE_FILE = "params.pkl"
EXPR_PROGRESS_FILE = "progress.csv"
EXPR_RESULT_FILE = "result.json"
EXPR_ERROR_PICKLE_FILE = "error.pkl"
EXPR_ERROR_FILE = "error.txt"


def _pandas():
    try:
        import pandas
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("DataFrames need pandas: pip install pandas") from exc
    return pandas


def _number(text):
    # progress.csv holds text: give numbers back their type.
    for kind in (int, float):
        try:
            return kind(text)
        except (TypeError, ValueError):
            pass
    return text


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _metric_keys(trials) -> list:
    keys: set = set()
    for trial in trials:
        for result in trial.results[-1:]:
            keys.update(k for k, v in result.items() if isinstance(v, (int, float)))
    return sorted(keys)


def _score(trial, metric, mode, scope, filter_nan_and_inf):
    values = [r[metric] for r in trial.results if metric in r]
    if filter_nan_and_inf:
        values = [v for v in values if _finite(v)]
    if not values:
        return None
    if scope == "last":
        value = values[-1]
    elif scope == "all":
        value = max(values) if mode == "max" else min(values)
    elif scope == "avg":
        value = sum(values) / len(values)
    elif scope.startswith("last-") and scope.endswith("-avg"):
        n = int(scope[5:-4])
        value = sum(values[-n:]) / len(values[-n:])
    else:
        raise ValueError(f"scope must be 'last', 'all', 'avg', 'last-5-avg' or "
                         f"'last-10-avg', got {scope!r}")
    return value


def best_trial(trials, metric, mode, scope="last", filter_nan_and_inf=True):
    """The trial with the best ``metric`` (``ValueError`` naming the known metrics if
    no trial reported it)."""
    if metric is None or mode is None:
        raise ValueError("No metric/mode given: pass metric= and mode= here or in "
                         "TuneConfig(metric=..., mode=...).")
    _check_mode(mode)
    if scope not in ("last", "all", "avg") and not (
            scope.startswith("last-") and scope.endswith("-avg")):
        raise ValueError(f"scope must be 'last', 'all', 'avg', 'last-5-avg' or "
                         f"'last-10-avg', got {scope!r}")
    best, best_value = None, None
    for trial in trials:
        value = _score(trial, metric, mode, scope, filter_nan_and_inf)
        if value is None:
            continue
        if best is None or (value > best_value if mode == "max" else value < best_value):
            best, best_value = trial, value
    if best is None:
        if any(metric in r for t in trials for r in t.results):
            return None  # only NaN/inf values
        raise ValueError(f"No trial reported the metric {metric!r}. Metrics reported: "
                         f"{_metric_keys(trials)}")
    return best


class Result:
    """The outcome of one trial.

    Attributes:
        metrics: the last reported result (``{}`` if none).
        config: the trial's config.
        path: the trial's directory.
        checkpoint: the latest checkpoint, or None.
        error: the exception that ended the trial, or None.
        best_checkpoints: ``[(Checkpoint, metrics)]`` of the kept checkpoints.
    """

    def __init__(self, trial):
        self._trial = trial
        self.metrics = dict(trial.last_result or {})
        self.metrics.pop("config", None)
        self.config = trial.config
        self.path = trial.path
        self.checkpoint = Checkpoint(trial.checkpoint) if trial.checkpoint else None
        self.error = trial.error
        self.best_checkpoints = [(Checkpoint(p), {k: v for k, v in r.items() if k != "config"})
                                 for p, r in trial.checkpoints]

    @property
    def metrics_dataframe(self):
        """Every result of the trial as a pandas DataFrame."""
        pandas = _pandas()
        return pandas.DataFrame([flatten({k: v for k, v in r.items() if k != "config"})
                                 for r in self._trial.results])

    @property
    def trial_id(self) -> str:
        """The trial's id."""
        return self._trial.trial_id

    @property
    def filesystem(self):
        """As in Ray, a ``pyarrow.fs.LocalFileSystem`` (trials are stored locally).
        Needs pyarrow (``ImportError`` naming it otherwise)."""
        from ..train._result import _local_filesystem

        return _local_filesystem()

    def get_best_checkpoint(self, metric: str, mode: str):
        """The kept checkpoint whose result ranks best by ``metric`` (``"max"`` or
        ``"min"``); checkpoints without the metric are left out; ``None`` if none."""
        _check_mode(mode)
        scored = [(m[metric], c) for c, m in self.best_checkpoints if m.get(metric) is not None]
        if not scored:
            return None
        return (max if mode == "max" else min)(scored, key=lambda item: item[0])[1]

    @classmethod
    def from_path(cls, path, storage_filesystem=None) -> "Result":
        """The Result of one trial, read from its directory: metrics from
        ``result.json`` (or ``progress.csv``), the config from ``params.json``, the
        ``checkpoint_*`` folders (matched to their results by iteration), and
        ``error.txt`` as a :class:`~miniray.tune.TuneError`.

        Raises ``RuntimeError`` if the folder does not exist or holds no results.
        """
        import csv
        import json
        import os
        import re

        from .controller import Trial
        from .errors import TuneError

        path = os.path.abspath(os.fspath(path)).rstrip(os.sep)
        if not os.path.isdir(path):
            raise RuntimeError(f"Trial folder {path} doesn't exist!")
        results = []
        result_file = os.path.join(path, EXPR_RESULT_FILE)
        progress_file = os.path.join(path, EXPR_PROGRESS_FILE)
        if os.path.exists(result_file):
            with open(result_file) as f:
                results = [json.loads(line) for line in f if line.strip()]
        elif os.path.exists(progress_file):
            with open(progress_file, newline="") as f:
                results = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
        else:
            raise RuntimeError(f"Failed to restore the Result object: Neither "
                               f"{EXPR_RESULT_FILE} nor {EXPR_PROGRESS_FILE} exists in the "
                               f"trial folder {path}")
        config = results[-1].get("config") if results else None
        params = os.path.join(path, EXPR_PARAM_FILE)
        if config is None and os.path.exists(params):
            with open(params) as f:
                config = json.load(f)
        last = results[-1] if results else {}
        trial = Trial(last.get(TRIAL_ID) or os.path.basename(path), config or {}, path,
                      os.path.basename(path).split("_")[0], 0)
        trial.results, trial.last_result = results, dict(last)
        by_iteration = {r.get(TRAINING_ITERATION): r for r in results}
        by_name = {r["checkpoint_dir_name"]: r for r in results if r.get("checkpoint_dir_name")}
        names = sorted(d for d in os.listdir(path) if d.startswith("checkpoint_")
                       and os.path.isdir(os.path.join(path, d)))
        for name in names:
            digits = re.search(r"(\d+)$", name)
            result = by_name.get(name) or (
                by_iteration.get(int(digits.group(1))) if digits else None) or {}
            trial.checkpoints.append((os.path.join(path, name), result))
        trial.checkpoint = trial.checkpoints[-1][0] if trial.checkpoints else None
        error_file = os.path.join(path, EXPR_ERROR_FILE)
        if os.path.exists(error_file):
            with open(error_file) as f:
                trial.error = TuneError(f.read().strip())
        trial.status = "ERROR" if trial.error else "TERMINATED"
        return cls(trial)

    def __repr__(self):
        shown = {k: v for k, v in self.metrics.items()
                 if k not in ("pid", "hostname", "node_ip", "date", "timestamp")}
        return f"Result(metrics={shown}, path={self.path!r}, error={self.error!r})"


class ResultGrid:
    """The results of ``Tuner.fit()``: one :class:`Result` per trial, in trial order.

    Index it, iterate over it, take ``len``; :meth:`get_best_result`,
    :meth:`get_dataframe`, :attr:`errors` and :meth:`plot`.
    """

    def __init__(self, trials, metric=None, mode=None, experiment_path=None):
        self._trials = list(trials)
        self._metric, self._mode = metric, mode
        self.experiment_path = experiment_path
        self._results = [Result(t) for t in self._trials]

    def __len__(self):
        return len(self._results)

    def __getitem__(self, i) -> Result:
        return self._results[i]

    def __iter__(self):
        return iter(self._results)

    @property
    def errors(self) -> list:
        """The exceptions of the failed trials."""
        return [r.error for r in self._results if r.error is not None]

    @property
    def num_errors(self) -> int:
        """How many trials failed."""
        return len(self.errors)

    @property
    def num_terminated(self) -> int:
        """How many trials finished without error."""
        return sum(t.status == "TERMINATED" for t in self._trials)

    def get_best_result(self, metric: str | None = None, mode: str | None = None,
                        scope: str = "last", filter_nan_and_inf: bool = True) -> Result:
        """The trial with the best ``metric``.

        ``scope``: ``"last"`` compares each trial's last result, ``"all"`` its best
        one, ``"avg"`` / ``"last-5-avg"`` / ``"last-10-avg"`` means.
        """
        metric = metric or self._metric
        mode = mode or self._mode
        if isinstance(metric, (list, tuple)):
            raise ValueError("several metrics were optimized: pass one metric= and mode=")
        trial = best_trial(self._trials, metric, mode, scope, filter_nan_and_inf)
        if trial is None:
            raise RuntimeError(f"Every value of {metric!r} is NaN or infinite")
        return self._results[self._trials.index(trial)]

    def get_dataframe(self, filter_metric: str | None = None,
                      filter_mode: str | None = None):
        """A pandas DataFrame: a row per trial (its last result, or its best one by
        ``filter_metric``/``filter_mode``), with ``config/...`` columns."""
        pandas = _pandas()
        if filter_mode is not None:
            _check_mode(filter_mode)
        rows = []
        for trial in self._trials:
            result = trial.last_result or {}
            if filter_metric is not None:
                candidates = [r for r in trial.results if _finite(r.get(filter_metric))]
                if candidates:
                    pick = max if (filter_mode or "max") == "max" else min
                    result = pick(candidates, key=lambda r: r[filter_metric])
            row = flatten({k: v for k, v in result.items() if k != "config"})
            row.update(flatten(trial.config, "config/"))
            row["trial_id"] = trial.trial_id
            row["logdir"] = trial.path
            row["status"] = trial.status
            rows.append(row)
        return pandas.DataFrame(rows)

    def plot(self, path: str, metric: str | None = None, mode: str | None = None) -> str:
        """Save a PNG: ``metric`` over ``training_iteration`` per trial, and the final
        ``metric`` against each searched parameter. Returns ``path``."""
        from .plot import plot_results

        return plot_results(self._trials, path, metric or self._metric)

    def __repr__(self):
        return (f"ResultGrid<{len(self)} trials, {self.num_terminated} terminated, "
                f"{self.num_errors} errors>")


class ExperimentAnalysis:
    """What ``tune.run`` returns: the trials and best-trial helpers (Ray's API)."""

    def __init__(self, trials, default_metric=None, default_mode=None, experiment_path=None):
        self.trials = list(trials)
        self.default_metric = default_metric
        self.default_mode = default_mode
        self.experiment_path = experiment_path
        self._grid = ResultGrid(self.trials, default_metric, default_mode, experiment_path)

    def _need_default(self):
        if self.default_metric is None or self.default_mode is None:
            raise ValueError("tune.run() was called without metric/mode: use "
                             "get_best_trial(metric, mode) instead.")

    def get_best_trial(self, metric=None, mode=None, scope="last",
                       filter_nan_and_inf=True):
        """The best trial by ``metric``."""
        return best_trial(self.trials, metric or self.default_metric,
                          mode or self.default_mode, scope, filter_nan_and_inf)

    def get_best_config(self, metric=None, mode=None, scope="last"):
        """The best trial's config."""
        trial = self.get_best_trial(metric, mode, scope)
        return trial.config if trial else None

    def get_best_checkpoint(self, trial, metric=None, mode=None):
        """The best kept checkpoint of ``trial`` (by ``metric``), or its latest."""
        metric = metric or self.default_metric
        mode = mode or self.default_mode
        scored = [(p, r) for p, r in trial.checkpoints if _finite(r.get(metric))]
        if not scored:
            return Checkpoint(trial.checkpoint) if trial.checkpoint else None
        pick = max if mode == "max" else min
        return Checkpoint(pick(scored, key=lambda pr: pr[1][metric])[0])

    @property
    def best_trial(self):
        """The best trial by the default metric and mode."""
        self._need_default()
        return self.get_best_trial()

    @property
    def best_config(self) -> dict:
        """The best trial's config."""
        self._need_default()
        return self.get_best_config()

    @property
    def best_result(self) -> dict:
        """The best trial's last result."""
        self._need_default()
        return self.best_trial.last_result

    @property
    def best_checkpoint(self):
        """The best trial's best checkpoint."""
        self._need_default()
        return self.get_best_checkpoint(self.best_trial)

    @property
    def best_logdir(self) -> str:
        """The best trial's directory."""
        self._need_default()
        return self.best_trial.path

    @property
    def best_result_df(self):
        """The best trial's results as a DataFrame."""
        self._need_default()
        return Result(self.best_trial).metrics_dataframe

    @property
    def results(self) -> dict:
        """``{trial_id: last result}``."""
        return {t.trial_id: t.last_result for t in self.trials}

    @property
    def results_df(self):
        """A DataFrame with a row per trial (last results)."""
        return self._grid.get_dataframe()

    def dataframe(self, metric=None, mode=None):
        """A DataFrame with a row per trial (its best result by ``metric``/``mode`` if given)."""
        return self._grid.get_dataframe(metric, mode)

    def get_all_configs(self) -> dict:
        """``{trial path: config}``."""
        return {t.path: t.config for t in self.trials}

    @property
    def errors(self) -> list:
        """The exceptions of the failed trials."""
        return self._grid.errors

    def plot(self, path: str, metric=None) -> str:
        """See :meth:`ResultGrid.plot`."""
        return self._grid.plot(path, metric or self.default_metric)

