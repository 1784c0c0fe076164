"""Stoppers: end trials (or the whole experiment) on a condition."""

from __future__ import annotations

import collections
import statistics
import time

__all__ = ["Stopper", "NoopStopper", "MaximumIterationStopper", "TrialPlateauStopper", "TimeoutStopper",
           "FunctionStopper", "CombinedStopper", "ExperimentPlateauStopper"]


class Stopper:
    """Base class: ``__call__(trial_id, result)`` returns True to stop that trial;
    ``stop_all()`` returns True to end the experiment."""

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        """True to stop every trial."""
        return False


class NoopStopper(Stopper):
    """Never stops anything (Ray's placeholder stopper)."""

    def __call__(self, trial_id, result):
        return False

    def stop_all(self):
        return False


class MaximumIterationStopper(Stopper):
    """Stop a trial after ``max_iter`` results."""

    def __init__(self, max_iter: int):
        if not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
        self._max_iter = max_iter
        self._iters: dict = collections.defaultdict(int)

    def __call__(self, trial_id, result):
        self._iters[trial_id] += 1
        return self._iters[trial_id] >= self._max_iter


class TrialPlateauStopper(Stopper):
    """Stop a trial once ``metric`` stopped changing: the standard deviation of its last
    ``num_results`` values is at most ``std`` (after ``grace_period`` results). With
    ``metric_threshold``, only once the metric is better than it (``mode``)."""

    def __init__(self, metric: str, std: float = 0.01, num_results: int = 4,
                 grace_period: int = 4, metric_threshold: float | None = None,
                 mode: str | None = None):
        if metric_threshold is not None and mode not in ("min", "max"):
            raise ValueError("metric_threshold needs mode='min' or 'max'")
        self._metric, self._std, self._n = metric, std, num_results
        self._grace, self._threshold, self._mode = grace_period, metric_threshold, mode
        self._values: dict = collections.defaultdict(lambda: collections.deque(
            maxlen=num_results))
        self._count: dict = collections.defaultdict(int)

    def __call__(self, trial_id, result):
        value = result.get(self._metric)
        if value is None:
            return False
        self._count[trial_id] += 1
        window = self._values[trial_id]
        window.append(value)
        if self._count[trial_id] < self._grace or len(window) < self._n:
            return False
        if self._threshold is not None:
            if self._mode == "min" and value > self._threshold:
                return False
            if self._mode == "max" and value < self._threshold:
                return False
        return statistics.pstdev(window) <= self._std


class TimeoutStopper(Stopper):
    """Stop the experiment ``timeout`` seconds (or a ``datetime.timedelta``) after it starts."""

    def __init__(self, timeout):
        if hasattr(timeout, "total_seconds"):
            timeout = timeout.total_seconds()
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
        self._timeout = float(timeout)
        self._start = None

    def __call__(self, trial_id, result):
        return self.stop_all()

    def stop_all(self):
        if self._start is None:
            self._start = time.monotonic()
        return time.monotonic() - self._start >= self._timeout


class FunctionStopper(Stopper):
    """Wrap ``fn(trial_id, result) -> bool``."""

    def __init__(self, function):
        if not callable(function):
            raise TypeError("FunctionStopper needs a callable")
        self._fn = function

    def __call__(self, trial_id, result):
        return bool(self._fn(trial_id, result))


class CombinedStopper(Stopper):
    """Stop when any of the given stoppers would."""

    def __init__(self, *stoppers: Stopper):
        self._stoppers = stoppers

    def __call__(self, trial_id, result):
        # Every stopper sees every result (they may keep state), so no short-circuit.
        return any([s(trial_id, result) for s in self._stoppers])

    def stop_all(self):
        return any([s.stop_all() for s in self._stoppers])


class ExperimentPlateauStopper(Stopper):
    """Stop the experiment when the best ``metric`` (top ``top`` trials) has a standard
    deviation at most ``std`` for ``patience`` results in a row."""

    def __init__(self, metric: str, std: float = 0.001, top: int = 10, mode: str = "min",
                 patience: int = 0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self._metric, self._std, self._top, self._mode = metric, std, top, mode
        self._patience, self._iter, self._values = patience, 0, []
        self._stop = False

    def __call__(self, trial_id, result):
        value = result.get(self._metric)
        if value is None:
            return self._stop
        self._values.append(value)
        top = sorted(self._values, reverse=self._mode == "max")[:self._top]
        if len(top) == self._top and statistics.pstdev(top) <= self._std:
            self._iter += 1
        else:
            self._iter = 0
        self._stop = self._iter > self._patience
        return self._stop

    def stop_all(self):
        return self._stop


class _DictStopper(Stopper):
    # RunConfig(stop={"training_iteration": 10, "acc": 0.9}): stop once any value reaches
    # its threshold (>=), as Ray does.
    def __init__(self, criteria: dict):
        for key, value in criteria.items():
            if not isinstance(value, (int, float)):
                raise ValueError(f"stop criterion {key!r} must be a number, got {value!r}")
        self._criteria = criteria

    def __call__(self, trial_id, result):
        return any(key in result and result[key] >= value
                   for key, value in self._criteria.items())


def make_stopper(stop) -> Stopper | None:
    """Turn RunConfig's ``stop`` (dict, function, Stopper or None) into a Stopper."""
    if stop is None:
        return None
    if isinstance(stop, Stopper):
        return stop
    if isinstance(stop, dict):
        return _DictStopper(stop) if stop else None
    if callable(stop):
        return FunctionStopper(stop)
    raise TypeError(f"stop must be a dict, a function or a Stopper, got {type(stop).__name__}")
