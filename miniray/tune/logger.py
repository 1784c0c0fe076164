"""Logger callbacks (Ray Tune's ``ray.tune.logger``): experiment events written to files.

Every trial directory gets Ray's files without any callback: ``params.json``,
``result.json`` (one JSON line per result) and ``progress.csv``, written by the
controller on a background thread. Passing :class:`JsonLoggerCallback` or
:class:`CSVLoggerCallback` in ``RunConfig(callbacks=...)`` hands those files to the
callback instead (written once, not twice), as in Ray. :class:`TBXLoggerCallback`
writes TensorBoard event files and needs ``tensorboardX`` (or torch's
``torch.utils.tensorboard`` writer, which needs the ``tensorboard`` package).
"""

from __future__ import annotations

import csv
import json
import math
import numbers
import os

from .callback import Callback
from .result import (EXPR_PARAM_FILE, EXPR_PARAM_PICKLE_FILE, EXPR_PROGRESS_FILE,
                     EXPR_RESULT_FILE, TIME_TOTAL_S, TIMESTEPS_TOTAL, TRAINING_ITERATION)
from .search.sample import flatten

__all__ = ["CSVLoggerCallback", "JsonLoggerCallback", "LoggerCallback", "TBXLoggerCallback",
           "pretty_print"]


class LoggerCallback(Callback):
    """Base class of logger callbacks: override the ``log_trial_*`` methods.

    ``log_trial_end`` is called once per trial (``failed=True`` if it errored): close
    the trial's files there.
    """

    def log_trial_start(self, trial):
        """A trial started."""

    def log_trial_restore(self, trial):
        """A trial restarted from its checkpoint."""

    def log_trial_save(self, trial):
        """A trial saved a checkpoint."""

    def log_trial_result(self, iteration: int, trial, result: dict):
        """A trial reported ``result``."""

    def log_trial_end(self, trial, failed: bool = False):
        """A trial ended."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.log_trial_result(iteration, trial, result)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.log_trial_start(trial)

    def on_trial_restore(self, iteration, trials, trial, **info):
        self.log_trial_restore(trial)

    def on_trial_save(self, iteration, trials, trial, **info):
        self.log_trial_save(trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.log_trial_end(trial, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.log_trial_end(trial, failed=True)


class JsonLoggerCallback(LoggerCallback):
    """Writes ``params.json``, ``params.pkl`` and ``result.json`` (one JSON object per
    line) in each trial directory."""

    def __init__(self):
        self._files: dict = {}

    def log_trial_start(self, trial):
        import cloudpickle

        if trial in self._files:
            self._files.pop(trial).close()
        os.makedirs(trial.local_path, exist_ok=True)
        with open(os.path.join(trial.local_path, EXPR_PARAM_FILE), "w") as f:
            json.dump(trial.config, f, indent=2, sort_keys=True, default=repr)
        try:
            with open(os.path.join(trial.local_path, EXPR_PARAM_PICKLE_FILE), "wb") as f:
                cloudpickle.dump(trial.config, f)
        except Exception:  # a config value that cannot be pickled: params.json has it
            pass
        self._files[trial] = open(os.path.join(trial.local_path, EXPR_RESULT_FILE), "a")

    def log_trial_result(self, iteration, trial, result):
        if trial not in self._files:
            self.log_trial_start(trial)
        f = self._files[trial]
        f.write(json.dumps(result, default=repr) + "\n")
        f.flush()

    def log_trial_end(self, trial, failed=False):
        f = self._files.pop(trial, None)
        if f is not None:
            f.close()

    def on_experiment_end(self, trials, **info):
        for f in self._files.values():
            f.close()
        self._files.clear()


class CSVLoggerCallback(LoggerCallback):
    """Writes ``progress.csv`` (one row per result, nested keys as ``a/b``, without
    ``config``) in each trial directory."""

    def __init__(self):
        self._files: dict = {}  # trial -> (file, csv.DictWriter)

    def _open(self, trial):
        os.makedirs(trial.local_path, exist_ok=True)
        path = os.path.join(trial.local_path, EXPR_PROGRESS_FILE)
        # A restarted trial appends to its file: the header is already there.
        return open(path, "a", newline=""), os.path.exists(path) and os.path.getsize(path) > 0

    def log_trial_result(self, iteration, trial, result):
        flat = flatten({k: v for k, v in result.items() if k != "config"})
        entry = self._files.get(trial)
        if entry is None:
            f, has_header = self._open(trial)
            writer = csv.DictWriter(f, list(flat), extrasaction="ignore")
            if not has_header:
                writer.writeheader()
            entry = self._files[trial] = (f, writer)
        f, writer = entry
        writer.writerow(flat)
        f.flush()

    def log_trial_end(self, trial, failed=False):
        entry = self._files.pop(trial, None)
        if entry is not None:
            entry[0].close()

    def on_experiment_end(self, trials, **info):
        for f, _ in self._files.values():
            f.close()
        self._files.clear()


def _summary_writer_class():
    try:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    except ImportError:
        pass
    try:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter
    except ImportError:
        pass
    raise ImportError("TBXLoggerCallback writes TensorBoard files with tensorboardX or "
                      "torch.utils.tensorboard, and neither is installed: "
                      "pip install tensorboardX (or: pip install tensorboard). Without "
                      "them, progress.csv and result.json hold the same results.")


class TBXLoggerCallback(LoggerCallback):
    """Writes each trial's numeric results as TensorBoard scalars
    (``ray/tune/<metric>``, step = ``timesteps_total`` or ``training_iteration``), and its
    hyperparameters with the last result when it ends. Point ``tensorboard --logdir`` at
    the experiment directory.

    Raises ``ImportError`` (naming the package to install) when neither tensorboardX nor
    torch's TensorBoard writer is importable.
    """

    VALID_HPARAMS = (str, bool, int, float, list, type(None))

    def __init__(self):
        self._writer_class = _summary_writer_class()
        self._writers: dict = {}
        self._last: dict = {}

    def log_trial_start(self, trial):
        if trial in self._writers:
            self._writers.pop(trial).close()
        self._writers[trial] = self._writer_class(trial.local_path, flush_secs=30)
        self._last[trial] = {}

    def log_trial_result(self, iteration, trial, result):
        if trial not in self._writers:
            self.log_trial_start(trial)
        step = result.get(TIMESTEPS_TOTAL) or result[TRAINING_ITERATION]
        skip = ("config", "pid", "timestamp", TIME_TOTAL_S, TRAINING_ITERATION)
        flat = flatten({k: v for k, v in result.items() if k not in skip})
        writer = self._writers[trial]
        logged = {}
        for key, value in flat.items():
            if isinstance(value, numbers.Number) and not isinstance(value, bool) and \
                    math.isfinite(float(value)):
                tag = f"ray/tune/{key}"
                writer.add_scalar(tag, value, global_step=step)
                logged[tag] = value
        self._last[trial] = logged
        writer.flush()

    def log_trial_end(self, trial, failed=False):
        writer = self._writers.pop(trial, None)
        if writer is None:
            return
        params = {k: v for k, v in flatten(trial.config).items()
                  if isinstance(v, self.VALID_HPARAMS)}
        params = {k: (str(v) if isinstance(v, list) else v) for k, v in params.items()}
        metrics = self._last.pop(trial, {})
        if params and metrics and hasattr(writer, "add_hparams"):
            try:
                writer.add_hparams(params, metrics)
            except Exception:  # e.g. a hparam type this writer version rejects
                pass
        writer.close()

    def on_experiment_end(self, trials, **info):
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def pretty_print(result: dict, exclude=None) -> str:
    """A result as readable YAML-like text (``config`` and ``hist_stats`` left out)."""
    out = {k: v for k, v in result.items()
           if v is not None and k not in ("config", "hist_stats")
           and (exclude is None or k not in exclude)}
    cleaned = json.loads(json.dumps(out, default=repr))
    try:
        import yaml

        return yaml.safe_dump(cleaned, default_flow_style=False)
    except ImportError:
        return json.dumps(cleaned, indent=2, sort_keys=True) + "\n"
