"""Experiment configuration: ``TuneConfig``, ``RunConfig``, ``FailureConfig``,
``CheckpointConfig`` (Ray Tune's dataclasses)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

__all__ = ["TuneConfig", "RunConfig", "FailureConfig", "CheckpointConfig", "ResumeConfig",
           "SyncConfig"]


@dataclasses.dataclass
class SyncConfig:
    """How often experiment files are uploaded to remote storage (Ray's ``SyncConfig``,
    deprecated there). miniray stores experiments on the local file system, where, as in
    Ray with a local ``storage_path``, there is nothing to upload: the settings are kept
    on ``RunConfig.sync_config`` and have no effect."""

    sync_period: int = 300
    sync_timeout: int = 1800
    sync_artifacts: bool = False
    sync_artifacts_on_checkpoint: bool = True


@dataclasses.dataclass
class ResumeConfig:
    """How ``Tuner.restore(path, _resume_config=...)`` treats the trials it finds, by
    state (Ray's experimental ``ResumeConfig``): ``ResumeType.RESUME`` (from the latest
    checkpoint), ``RESTART`` (from scratch) or ``SKIP`` (kept as they are).

    Defaults: finished trials are skipped, unfinished ones resumed, errored ones skipped.
    """

    class ResumeType:
        RESUME = "resume"
        RESTART = "restart"
        SKIP = "skip"

    finished: str = ResumeType.SKIP
    unfinished: str = ResumeType.RESUME
    errored: str = ResumeType.SKIP

    def __post_init__(self):
        for name in ("finished", "unfinished", "errored"):
            value = getattr(self, name)
            value = getattr(value, "value", value)  # an Enum member works too
            if value not in ("resume", "restart", "skip"):
                raise ValueError(f"ResumeConfig.{name} must be ResumeType.RESUME, RESTART or "
                                 f"SKIP, got {value!r}")
            setattr(self, name, value)


def _check_metric_mode(metric, mode):
    from .search.searcher import _check_mode

    if mode is not None:
        _check_mode(mode)
    if metric is not None and not isinstance(metric, (str, list, tuple)):
        raise TypeError(f"metric must be a metric name, got {type(metric).__name__}")


@dataclasses.dataclass
class TuneConfig:
    """How to search: metric and mode, search algorithm, scheduler, number of trials.

    Args:
        metric: the metric to optimize (a key of the trials' results).
        mode: ``"min"`` or ``"max"``.
        search_alg: a Searcher (default: grid + random variant generation).
        scheduler: a TrialScheduler (default: FIFO, no early stopping).
        num_samples: how often the param_space is sampled (each sample repeats the whole
            grid); ``-1``: until a stop condition or ``time_budget_s``.
        max_concurrent_trials: at most this many trials at once (default: as many as
            the node's resources allow).
        time_budget_s: stop the experiment after this many seconds.
        reuse_actors: accepted for Ray compatibility; trials always run in reused
            worker processes.
        trial_name_creator: ``fn(trial) -> str`` (accepted for Ray compatibility).
        trial_dirname_creator: ``fn(trial) -> str``, the trial's directory name.
    """

    metric: str | None = None
    mode: str | None = None
    search_alg: Any = None
    scheduler: Any = None
    num_samples: int = 1
    max_concurrent_trials: int | None = None
    time_budget_s: float | None = None
    reuse_actors: bool | None = None
    trial_name_creator: Callable | None = None
    trial_dirname_creator: Callable | None = None

    def __post_init__(self):
        _check_metric_mode(self.metric, self.mode)
        if not isinstance(self.num_samples, int) or self.num_samples == 0 or \
                self.num_samples < -1:
            raise ValueError(f"num_samples must be a positive int (or -1), got "
                             f"{self.num_samples!r}")
        if self.max_concurrent_trials is not None and (
                not isinstance(self.max_concurrent_trials, int)
                or self.max_concurrent_trials < 0):
            raise ValueError("max_concurrent_trials must be a non-negative int")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"time_budget_s must be positive, got {self.time_budget_s!r}")


@dataclasses.dataclass
class FailureConfig:
    """What to do when a trial fails.

    Args:
        max_failures: retry a failed trial this many times, from its latest
            checkpoint if it has one (``-1``: forever; ``0``: never).
        fail_fast: stop the whole experiment at the first trial error.
    """

    max_failures: int = 0
    fail_fast: bool = False

    def __post_init__(self):
        if not isinstance(self.max_failures, int) or self.max_failures < -1:
            raise ValueError(f"max_failures must be an int >= -1, got {self.max_failures!r}")


@dataclasses.dataclass
class CheckpointConfig:
    """Which checkpoints to keep and when class trainables save them.

    Args:
        num_to_keep: keep at most this many checkpoints per trial (the best ones by
            ``checkpoint_score_attribute``, else the latest); None keeps all.
        checkpoint_score_attribute: metric ranking the checkpoints.
        checkpoint_score_order: ``"max"`` or ``"min"``.
        checkpoint_frequency: class trainables save every N iterations (0: never).
        checkpoint_at_end: class trainables save when the trial ends.
    """

    num_to_keep: int | None = None
    checkpoint_score_attribute: str | None = None
    checkpoint_score_order: str = "max"
    checkpoint_frequency: int = 0
    checkpoint_at_end: bool | None = None

    def __post_init__(self):
        if self.num_to_keep is not None and (not isinstance(self.num_to_keep, int)
                                             or self.num_to_keep < 1):
            raise ValueError(f"num_to_keep must be a positive int or None, got "
                             f"{self.num_to_keep!r}")
        if self.checkpoint_score_order not in ("min", "max"):
            raise ValueError("checkpoint_score_order must be 'min' or 'max'")
        if not isinstance(self.checkpoint_frequency, int) or self.checkpoint_frequency < 0:
            raise ValueError("checkpoint_frequency must be a non-negative int")


@dataclasses.dataclass
class RunConfig:
    """Where results go and when to stop.

    Args:
        name: the experiment's directory name (default: trainable name and time).
        storage_path: parent directory (default ``~/miniray_results``).
        stop: a dict of ``{metric: threshold}`` (a trial stops once
            ``result[metric] >= threshold``), a ``fn(trial_id, result) -> bool``, or a
            Stopper.
        failure_config: a :class:`FailureConfig`.
        checkpoint_config: a :class:`CheckpointConfig`.
        verbose: 0 silent, 1 status table, 2 plus a line per finished trial, 3 plus a
            line per result.
        progress_reporter: a ``CLIReporter`` to customize the table.
        callbacks: :class:`~miniray.tune.Callback` objects (any object with some of
            its hook methods works too), e.g. the loggers of :mod:`miniray.tune.logger`.
    """

    name: str | None = None
    storage_path: str | None = None
    stop: Any = None
    failure_config: FailureConfig | None = None
    checkpoint_config: CheckpointConfig | None = None
    verbose: int | None = None
    progress_reporter: Any = None
    callbacks: list | None = None
    log_to_file: bool = False
    sync_config: Any = None

    def __post_init__(self):
        if self.verbose is not None and self.verbose not in (0, 1, 2, 3):
            raise ValueError(f"verbose must be 0, 1, 2 or 3, got {self.verbose!r}")
