"""The worker side of a trial (a miniray task) and the hub actor results stream through."""

from __future__ import annotations

import asyncio
import os

from . import session as _s
from .trainable import is_class_trainable

# Deserialized trainables, by experiment token: a worker runs many trials of one
# experiment, so the trainable is unpickled once per worker, not once per trial.
_TRAINABLES: dict = {}


def _load_trainable(token, blob):
    loaded = _TRAINABLES.get(token)
    if loaded is None:
        import cloudpickle

        if len(_TRAINABLES) > 8:
            _TRAINABLES.clear()
        trainable_blob, hub = cloudpickle.loads(blob)
        loaded = _TRAINABLES[token] = (cloudpickle.loads(trainable_blob), hub)
    return loaded


def run_trial(spec: dict, blob: bytes, *param_values):
    """Run one trial to its end; return an outcome dict for the controller.

    Exceptions of the trainable propagate (the task fails with the original
    exception and its remote traceback); stop and restart requests from the
    controller end the trial through :class:`~miniray.tune.session.StopTrial`.
    """
    trainable, hub = _load_trainable(spec["token"], blob)
    params = dict(zip(spec.get("param_names", ()), param_values))
    session = _s._session = _s._Session(spec, hub)
    status, final, checkpoint = "done", None, None
    try:
        if is_class_trainable(trainable):
            status, checkpoint = _run_class(trainable, spec, params, session)
        else:
            try:
                value = trainable(dict(spec["config"]), **params)
            except _s.StopTrial:
                status = "stopped"
            except _s.RestartTrial:
                status = "restart"
            else:
                if isinstance(value, dict):
                    # A returned dict is the final result; it rides back with the task's
                    # return value instead of a round trip through the hub.
                    final = session.make_result(value)
                    final["done"] = True
                elif value is not None:
                    raise TypeError(
                        f"the trainable returned a {type(value).__name__}; return a dict of "
                        "metrics (or None) or call tune.report(metrics)")
    finally:
        _s._session = None
    return {"status": status, "result": final, "iteration": session.iteration,
            "checkpoint": checkpoint or session.last_checkpoint}


def _run_class(cls, spec, params, session):
    os.makedirs(spec["trial_dir"], exist_ok=True)
    info = {"trial_id": spec["trial_id"], "trial_name": spec["trial_name"],
            "trial_dir": spec["trial_dir"]}
    instance = cls(dict(spec["config"]), _trial_info=info, **params)
    freq = spec.get("checkpoint_frequency") or 0
    at_end = spec.get("checkpoint_at_end", False)
    try:
        if spec.get("checkpoint"):
            instance._restore(spec["checkpoint"])
        instance._iteration = session.iteration
        while True:
            metrics = instance.step()
            if not isinstance(metrics, dict):
                raise TypeError(f"{cls.__name__}.step() must return a dict of metrics, got "
                                f"{type(metrics).__name__}")
            instance._iteration += 1
            done = bool(metrics.get("done"))
            save = (freq and instance._iteration % freq == 0) or (done and at_end)
            path = None
            if save:
                path = instance._save(os.path.join(spec["trial_dir"],
                                                   f"checkpoint_{instance._iteration:06d}"))
            try:
                session.report(metrics, checkpoint=path)
            except _s.StopTrial:
                if at_end and not save:
                    return "stopped", instance._save(os.path.join(
                        spec["trial_dir"], f"checkpoint_{instance._iteration:06d}"))
                return "stopped", None
            except _s.RestartTrial:
                return "restart", None
            if done:
                return "done", None
    finally:
        instance.cleanup()


class Hub:
    """Async actor between trials and the controller.

    ``report`` (called by trials) queues a result and waits for the decision;
    ``poll`` (called by the controller) returns every queued result at once,
    waiting until there is one; ``decide`` answers waiting trials in a batch.
    """

    def __init__(self):
        self._events = []
        self._poll = None
        self._waiting = {}

    async def report(self, trial_id, result, checkpoint):
        future = asyncio.get_running_loop().create_future()
        self._waiting[trial_id] = future
        self._events.append((trial_id, result, checkpoint))
        if self._poll is not None and not self._poll.done():
            self._poll.set_result(None)
        return await future

    async def poll(self):
        if not self._events:
            self._poll = asyncio.get_running_loop().create_future()
            await self._poll
        events, self._events = self._events, []
        return events

    def decide(self, decisions):
        for trial_id, decision in decisions:
            future = self._waiting.pop(trial_id, None)
            if future is not None and not future.done():
                future.set_result(decision)
