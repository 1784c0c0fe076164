"""``GET /api/tune``: the experiments of this driver, for the dashboard's tune view.

The first experiment registers the route with :mod:`miniray.dashboard.routes`
(which imports nothing heavy; aiohttp loads only when a handler runs). The
answer keeps a stable shape, which the dashboard page renders as is::

    {"experiments": [{"name", "metric", "mode", "status", "started_at", "num_trials",
                      "counts": {status: n}, "best_trial_id", "best_result",
                      "trials": [{"trial_id", "status", "config", "iteration",
                                  "last_result", "error"}],
                      "trials_truncated": n}]}

Most recent experiment first; the last :data:`MAX_EXPERIMENTS` experiments are
kept, and each lists its :data:`MAX_TRIALS` most recent trials
(``trials_truncated`` says how many were left out). Values that JSON cannot
hold (NaN, numpy scalars, objects) are made JSON-safe.
"""

from __future__ import annotations

import collections
import math
import threading
import time

__all__ = ["MAX_EXPERIMENTS", "MAX_TRIALS", "ROUTE", "snapshot", "track"]

ROUTE = "/api/tune"
MAX_EXPERIMENTS = 20
MAX_TRIALS = 500

_lock = threading.Lock()
_experiments: collections.deque = collections.deque(maxlen=MAX_EXPERIMENTS)


class _Tracked:
    """One experiment as the dashboard sees it.

    It holds the controller's trial list (the same list object, so new trials show
    up), never the controller: a finished experiment must not keep its object-store
    data (``with_parameters`` values) alive.
    """

    def __init__(self, controller):
        self.trials = controller.trials
        self.metric, self.mode = controller.metric, controller.mode
        self.name = _experiment_name(controller.experiment_dir)
        self.started_at = time.time()
        self.status = "RUNNING"

    def finish(self, status: str) -> None:
        self.status = status


def _experiment_name(path) -> str:
    import os

    return os.path.basename(os.path.normpath(path)) if path else ""


def track(controller) -> _Tracked:
    """Start showing ``controller``'s experiment at ``/api/tune``; returns its entry,
    whose ``finish(status)`` marks the end (``"TERMINATED"`` or ``"ERROR"``)."""
    entry = _Tracked(controller)
    with _lock:
        _experiments.append(entry)
    _register_route()
    return entry


def _register_route() -> None:
    try:
        from ..dashboard import routes
    except ImportError:  # pragma: no cover - a build without the dashboard package
        return
    if not any(r.method == "GET" and r.path == ROUTE and r.handler is handle_tune
               for r in routes.routes()):
        routes.add_route("GET", ROUTE, handle_tune,
                         summary="Tune experiments of this driver: status, best trial, trials")


async def handle_tune(request):
    """The aiohttp handler: builds the snapshot off the loop (it walks every trial)."""
    import asyncio

    from ..dashboard import routes

    data = await asyncio.get_running_loop().run_in_executor(None, snapshot)
    return routes.json_response(data)


def snapshot() -> dict:
    """The JSON-safe state of the tracked experiments, most recent first."""
    with _lock:
        entries = list(_experiments)
    return {"experiments": [_describe(entry) for entry in reversed(entries)]}


def _describe(entry: _Tracked) -> dict:
    trials = list(entry.trials)  # the driver appends while we read: take a copy
    counts: dict = {}
    for trial in trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    metric, mode = entry.metric, entry.mode
    best = _best(trials, metric, mode)
    shown = trials[-MAX_TRIALS:]
    return {
        "name": entry.name,
        "metric": json_safe(metric),
        "mode": json_safe(mode),
        "status": entry.status,
        "started_at": entry.started_at,
        "num_trials": len(trials),
        "counts": counts,
        "best_trial_id": best.trial_id if best is not None else None,
        "best_result": _result(best.last_result) if best is not None else None,
        "trials": [_trial(t) for t in shown],
        "trials_truncated": len(trials) - len(shown),
    }


def _best(trials, metric, mode):
    if not isinstance(metric, str) or mode not in ("min", "max"):
        return None
    best, best_value = None, None
    for trial in trials:
        value = (trial.last_result or {}).get(metric)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or \
                not math.isfinite(value):
            continue
        if best is None or (value > best_value if mode == "max" else value < best_value):
            best, best_value = trial, value
    return best


def _result(result) -> dict:
    # The config is listed once per trial, not again inside each result.
    return json_safe({k: v for k, v in dict(result or {}).items() if k != "config"})


def _trial(trial) -> dict:
    last = trial.last_result or {}
    iteration = last.get("training_iteration")
    if not isinstance(iteration, int):
        iteration = len(trial.results)
    error = trial.error
    return {
        "trial_id": trial.trial_id,
        "status": trial.status,
        "config": json_safe(trial.config),
        "iteration": iteration,
        "last_result": _result(last),
        "error": (str(error) or type(error).__name__) if error is not None else None,
    }


def json_safe(value, depth: int = 0):
    """``value`` with only JSON types: NaN/inf become None, numpy scalars plain numbers,
    tuples lists, other objects their ``repr``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth > 8:
        return repr(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in list(value.items())}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "shape", None) == ():
        try:
            return json_safe(item(), depth + 1)
        except Exception:
            pass
    return repr(value)
