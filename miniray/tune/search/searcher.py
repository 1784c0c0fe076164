"""Searchers: where trial configs come from (Ray Tune's ``Searcher`` interface)."""

from __future__ import annotations

import random

from . import sample

__all__ = ["Searcher", "BasicVariantGenerator", "ConcurrencyLimiter", "Repeater"]


class MetricModeMixin:
    """``metric`` and ``mode`` (checked to be ``"min"`` or ``"max"``), shared by
    searchers and schedulers."""

    def __init__(self, metric: str | None = None, mode: str | None = None):
        if mode is not None:
            _check_mode(mode)
        self._metric = metric
        self._mode = mode

    @property
    def metric(self):
        """The metric that is optimized."""
        return self._metric

    @property
    def mode(self):
        """``"min"`` or ``"max"``."""
        return self._mode


class Searcher(MetricModeMixin):
    """Base class of search algorithms, with Ray Tune's interface.

    The controller calls :meth:`suggest` for each new trial, then
    :meth:`on_trial_result` for every intermediate result and
    :meth:`on_trial_complete` once per trial. ``suggest`` returns a config
    dict, ``None`` (nothing to suggest right now, ask again later) or
    ``Searcher.FINISHED``.

    miniray extension: ``on_trial_result`` may return ``"STOP"`` to end the
    trial early (``OptunaSearch`` uses it to apply Optuna pruners).
    """

    FINISHED = "FINISHED"

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        """Receive the experiment's metric, mode and param_space; return False if the
        searcher already has a conflicting search space."""
        if self._metric is None and metric is not None:
            self._metric = metric
        if self._mode is None and mode is not None:
            self._mode = mode
        return True

    def suggest(self, trial_id: str):
        """Return the next config, ``None`` to wait, or ``Searcher.FINISHED``."""
        raise NotImplementedError

    def on_trial_result(self, trial_id: str, result: dict):
        """An intermediate result of a trial (optional)."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False):
        """The trial finished (``error=True`` if it failed)."""

    def add_evaluated_point(self, parameters: dict, value: float, error: bool = False,
                            pruned: bool = False, intermediate_values=None):
        """Feed in an already evaluated point (warm start); not every searcher supports it."""
        raise NotImplementedError(f"{type(self).__name__} does not support add_evaluated_point")

    def _total(self, num_samples: int) -> int:
        # How many trials the experiment creates at most (-1: unbounded).
        return num_samples

    def _queue_ahead(self) -> bool:
        # True if trials may be queued on the node before earlier ones finish
        # (model-free searchers: no information is lost by suggesting early).
        return False


def _check_mode(mode):
    if isinstance(mode, (list, tuple)):
        for m in mode:
            _check_mode(m)
        return
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")


class BasicVariantGenerator(Searcher):
    """Grid search and random sampling (Ray Tune's default search algorithm).

    Every grid point is combined with fresh samples of the random domains;
    the whole grid is repeated ``num_samples`` times. Configs are generated
    lazily, by index, so 100,000 grid points cost nothing up front.

    Args:
        points_to_evaluate: configs (or partial configs) to try first.
        max_concurrent: at most this many trials of this searcher running (0: no limit).
        random_state: a seed, for reproducible samples.
        constant_grid_search: sample the random domains once and reuse them for
            every grid point.
    """

    def __init__(self, points_to_evaluate: list | None = None, max_concurrent: int = 0,
                 random_state=None, constant_grid_search: bool = False):
        super().__init__()
        self._points = list(points_to_evaluate or [])
        self.max_concurrent = max_concurrent
        self._seed = random_state if random_state is not None else random.randrange(2**31)
        self._constant = constant_grid_search
        self._space = None
        self._num_samples = 1
        self._index = 0
        self._live: set = set()

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        """Receive the param_space (and ``num_samples``)."""
        super().set_search_properties(metric, mode, config)
        self._space = config if config is not None else {}
        self._num_samples = spec.get("num_samples", 1)
        self._grid = sample.grid_size(self._space)
        return True

    def _total(self, num_samples):
        if num_samples < 0:
            return -1
        return max(num_samples, len(self._points)) * sample.grid_size(self._space or {})

    def suggest(self, trial_id):
        """Return config number ``index`` of the grid x samples sequence."""
        total = self._total(self._num_samples)
        if total >= 0 and self._index >= total:
            return Searcher.FINISHED
        if self.max_concurrent and len(self._live) >= self.max_concurrent:
            return None
        index = self._index
        self._index += 1
        grid_index, sample_index = index % self._grid, index // self._grid
        # Seeded per index: reproducible, and restoring an experiment needs only the counter.
        seed_index = sample_index if self._constant else index
        rng = random.Random(f"{self._seed}-{seed_index}")
        overrides = self._points[sample_index] if sample_index < len(self._points) else None
        self._live.add(trial_id)
        return sample.resolve(self._space, grid_index, rng, overrides)

    def on_trial_complete(self, trial_id, result=None, error=False):
        """Free the trial's concurrency slot."""
        self._live.discard(trial_id)

    def _queue_ahead(self):
        return not self.max_concurrent


class _WrappingSearcher(Searcher):
    """A searcher that wraps another: metric, mode and search properties are its."""

    def __init__(self, searcher: Searcher, what: str):
        if not isinstance(searcher, Searcher):
            raise TypeError(f"{what} wraps a Searcher, got {type(searcher).__name__}")
        super().__init__()
        self.searcher = searcher

    @property
    def metric(self):
        return self.searcher.metric

    @property
    def mode(self):
        return self.searcher.mode

    def set_search_properties(self, metric, mode, config, **spec):
        """Pass the properties to the wrapped searcher."""
        return self.searcher.set_search_properties(metric, mode, config, **spec)


class ConcurrencyLimiter(_WrappingSearcher):
    """Let at most ``max_concurrent`` trials of ``searcher`` run at once.

    With ``batch=True`` it waits until the whole batch finished before
    suggesting the next ``max_concurrent`` configs.
    """

    def __init__(self, searcher: Searcher, max_concurrent: int, batch: bool = False):
        super().__init__(searcher, "ConcurrencyLimiter")
        if not isinstance(max_concurrent, int) or max_concurrent < 1:
            raise ValueError(f"max_concurrent must be a positive int, got {max_concurrent!r}")
        self.max_concurrent = max_concurrent
        self.batch = batch
        self._live: set = set()
        self._batch_open = True


    def suggest(self, trial_id):
        """Ask the wrapped searcher, unless ``max_concurrent`` trials are running."""
        if len(self._live) >= self.max_concurrent:
            self._batch_open = False
            return None
        if self.batch and not self._batch_open:
            if self._live:
                return None
            self._batch_open = True
        config = self.searcher.suggest(trial_id)
        if isinstance(config, dict):
            self._live.add(trial_id)
        return config

    def on_trial_result(self, trial_id, result):
        """Pass it on."""
        return self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id, result=None, error=False):
        """Pass it on and free the slot."""
        self._live.discard(trial_id)
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def _total(self, num_samples):
        return self.searcher._total(num_samples)


class Repeater(_WrappingSearcher):
    """Evaluate every config of ``searcher`` ``repeat`` times (e.g. with different seeds)
    and report the mean of the metric to it once all repeats finished.

    With ``set_index=True`` each trial's config gets ``__trial_index__`` (0..repeat-1).
    """

    def __init__(self, searcher: Searcher, repeat: int = 1, set_index: bool = True):
        super().__init__(searcher, "Repeater")
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"repeat must be a positive int, got {repeat!r}")
        self.repeat = repeat
        self.set_index = set_index
        self._current = None  # (group id, config, repeats handed out)
        self._groups: dict = {}  # group id -> {"pending": set, "scores": list}
        self._trial_group: dict = {}


    def suggest(self, trial_id):
        """Hand out the current config again, or a new one from the wrapped searcher."""
        if self._current is None or self._current[2] >= self.repeat:
            config = self.searcher.suggest(trial_id)
            if not isinstance(config, dict):
                return config
            self._current = [trial_id, config, 0]
            self._groups[trial_id] = {"pending": set(), "scores": []}
        group, config, n = self._current
        self._current[2] += 1
        self._groups[group]["pending"].add(trial_id)
        self._trial_group[trial_id] = group
        out = dict(config)
        if self.set_index:
            out["__trial_index__"] = n
        return out

    def on_trial_complete(self, trial_id, result=None, error=False):
        """Collect the score; when the group is complete, tell the wrapped searcher the mean."""
        group = self._trial_group.pop(trial_id, None)
        if group is None:
            return
        state = self._groups[group]
        state["pending"].discard(trial_id)
        metric = self.searcher.metric
        if result and metric in result and not error:
            state["scores"].append(result[metric])
        if not state["pending"] and (self._current is None or self._current[0] != group
                                     or self._current[2] >= self.repeat):
            del self._groups[group]
            scores = state["scores"]
            if scores:
                mean = dict(result or {})
                mean[metric] = sum(scores) / len(scores)
                self.searcher.on_trial_complete(group, result=mean, error=False)
            else:
                self.searcher.on_trial_complete(group, result=None, error=True)

    def _total(self, num_samples):
        return self.searcher._total(num_samples)
