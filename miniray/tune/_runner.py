"""The worker side of a trial (a miniray task) and the hub actor results stream through."""

from __future__ import annotations

import asyncio
import os

from . import session as _s
from .trainable import _IN_TRIAL, is_class_trainable

# Deserialized trainables, by run channel: a worker runs many trials of one
# experiment, so the trainable is unpickled once per worker, not once per trial.
# Keyed by channel (one per ``run()``), not by experiment token: a restored
# experiment keeps its token but may bring another trainable.
_TRAINABLES: dict = {}


def _load_trainable(channel, blob):
    loaded = _TRAINABLES.get(channel)
    if loaded is None:
        import cloudpickle

        if len(_TRAINABLES) > 8:
            _TRAINABLES.clear()
        trainable_blob, hub = cloudpickle.loads(blob)
        loaded = _TRAINABLES[channel] = (cloudpickle.loads(trainable_blob), hub)
    return loaded


def run_trial(spec: dict, blob: bytes, *param_values):
    """Run one trial to its end; return an outcome dict for the controller.

    Exceptions of the trainable propagate (the task fails with the original
    exception and its remote traceback); stop and restart requests from the
    controller end the trial through :class:`~miniray.tune.session.StopTrial`.
    """
    trainable, hub = _load_trainable(spec["channel"], blob)
    params = dict(zip(spec.get("param_names", ()), param_values))
    holder = getattr(trainable, "__tune_parameters__", None)
    if holder is not None:  # with_parameters: its wrapper reads the values from here
        _IN_TRIAL.clear()
        _IN_TRIAL[holder.key] = params
        params = {}
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
        _IN_TRIAL.clear()
        if session.monitor is not None:
            session.monitor.stop()
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
            except _s.PauseTrial:  # resumed later from this checkpoint
                if path is None:
                    path = instance._save(os.path.join(
                        spec["trial_dir"], f"checkpoint_{instance._iteration:06d}"))
                    session.write_meta(path)
                return "stopped", path
            except _s.StopTrial:
                if at_end and not save:
                    path = instance._save(os.path.join(
                        spec["trial_dir"], f"checkpoint_{instance._iteration:06d}"))
                    session.write_meta(path)
                    return "stopped", path
                return "stopped", None
            except _s.RestartTrial:
                return "restart", None
            if done:
                return "done", None
    finally:
        instance.cleanup()


class Hub:
    """Async actor between trials and controllers, shared by the experiments of a session.

    Each ``TuneController.run`` talks on its own *channel* (a fresh id per run):
    ``report`` (called by trials) queues a result on the trial's channel and
    waits for the decision; ``poll(channel)`` (called by the controller) returns
    every queued result of that channel at once, waiting until there is one;
    ``decide`` answers waiting trials in a batch; ``close(channel)`` ends a run:
    its waiting trials, and any that report later, are told to stop.

    One hub serves a whole session, so only the first experiment pays for
    starting its process (~0.2 s of CPU on a busy 2-core node).
    """

    def __init__(self):
        self._events: dict = {}   # channel -> [(trial_id, result, checkpoint)]
        self._polls: dict = {}    # channel -> future of the pending poll
        self._waiting: dict = {}  # (channel, trial_id) -> future of the decision
        self._closed: set = set()

    async def report(self, channel, trial_id, result, checkpoint):
        if channel in self._closed:
            return _s.STOP
        future = asyncio.get_running_loop().create_future()
        self._waiting[(channel, trial_id)] = future
        self._events.setdefault(channel, []).append((trial_id, result, checkpoint))
        poll = self._polls.get(channel)
        if poll is not None and not poll.done():
            poll.set_result(None)
        return await future

    async def poll(self, channel):
        if not self._events.get(channel) and channel not in self._closed:
            poll = self._polls[channel] = asyncio.get_running_loop().create_future()
            await poll
        self._polls.pop(channel, None)
        return self._events.pop(channel, [])

    def decide(self, channel, decisions):
        for trial_id, decision in decisions:
            future = self._waiting.pop((channel, trial_id), None)
            if future is not None and not future.done():
                future.set_result(decision)

    def close(self, channel):
        self._closed.add(channel)
        self._events.pop(channel, None)
        poll = self._polls.pop(channel, None)
        if poll is not None and not poll.done():
            poll.set_result(None)
        for key in [k for k in self._waiting if k[0] == channel]:
            future = self._waiting.pop(key)
            if not future.done():
                future.set_result(_s.STOP)


_HUB = None  # (client, handle): the session's hub


def session_hub(api):
    """The hub actor of the current session, started on first use."""
    global _HUB
    from .._core.refs import get_client

    client = get_client()
    if _HUB is None or _HUB[0] is not client:
        handle = api.remote(Hub).options(num_cpus=0, max_concurrency=100000).remote()
        _HUB = (client, handle)
    return _HUB[1]


def forget_hub(handle):
    """Drop the cached hub (it failed); the next experiment starts a new one."""
    global _HUB
    if _HUB is not None and _HUB[1] is handle:
        _HUB = None
