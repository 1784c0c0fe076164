"""What a running trial sees: ``tune.report``, ``tune.get_checkpoint``, ``tune.get_context``.

A trial runs as a miniray task. Each ``report`` sends the result to the
experiment's hub actor and waits for the controller's decision (continue,
stop, or restart with another config), the same synchronous hand-off as Ray
Tune's function trainables, so schedulers see every result before the trial
moves on.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time

from .checkpoint import Checkpoint

__all__ = ["report", "get_checkpoint", "get_context", "TuneContext"]

CONTINUE, STOP, RESTART, PAUSE = "CONTINUE", "STOP", "RESTART", "PAUSE"
_META = ".tune_metadata.json"

_session = None


class StopTrial(BaseException):
    """Raised inside ``report`` to end a trial the controller stopped.

    A BaseException, so a trainable's ``except Exception`` does not swallow it.
    """


class PauseTrial(StopTrial):
    """Raised inside ``report`` when a scheduler pauses the trial (synchronous HyperBand):
    it ends like a stop, and resumes later from its latest checkpoint."""


class RestartTrial(BaseException):
    """Raised inside ``report`` when the controller restarts the trial (PBT exploit)."""


class _Session:
    def __init__(self, spec, hub):
        self.spec = spec
        self.hub = hub
        self.trial_id = spec["trial_id"]
        self.iteration = spec.get("iteration", 0)
        self.time_offset = spec.get("time_total", 0.0)
        self.start = time.time()
        self.last = self.start
        self.since_restore = 0
        self.host = socket.gethostname()
        self.checkpoint = (Checkpoint(spec["checkpoint"]) if spec.get("checkpoint") else None)
        self.last_checkpoint = None
        self.monitor = None
        if (spec.get("config") or {}).get("log_sys_usage"):  # Ray's switch for UtilMonitor
            from .utils import UtilMonitor

            self.monitor = UtilMonitor(start=True)

    def make_result(self, metrics: dict) -> dict:
        if not isinstance(metrics, dict):
            raise TypeError(f"tune.report() takes a dict of metrics, got "
                            f"{type(metrics).__name__}")
        now = time.time()
        self.iteration += 1
        self.since_restore += 1
        result = dict(metrics)
        result.setdefault("done", False)
        result["training_iteration"] = self.iteration
        result["iterations_since_restore"] = self.since_restore
        result["time_this_iter_s"] = now - self.last
        result["time_total_s"] = self.time_offset + (now - self.start)
        result["time_since_restore"] = now - self.start
        result["timestamp"] = int(now)
        result["trial_id"] = self.trial_id
        result["pid"] = os.getpid()
        result["hostname"] = self.host
        result["node_ip"] = "127.0.0.1"
        if self.monitor is not None:
            result.update(self.monitor.get_data())
        self.last = now
        return result

    def persist(self, checkpoint, result) -> str:
        """Copy a reported checkpoint into the trial directory; return its path there."""
        if isinstance(checkpoint, (str, os.PathLike)):
            checkpoint = Checkpoint.from_directory(checkpoint)
        if not isinstance(checkpoint, Checkpoint):
            raise TypeError(f"checkpoint must be a tune.Checkpoint, got "
                            f"{type(checkpoint).__name__}")
        os.makedirs(self.spec["trial_dir"], exist_ok=True)
        target = os.path.join(self.spec["trial_dir"], f"checkpoint_{self.iteration:06d}")
        if os.path.abspath(checkpoint.path) != os.path.abspath(target):
            shutil.copytree(checkpoint.path, target, dirs_exist_ok=True)
        self.write_meta(target, result["time_total_s"])
        self.last_checkpoint = target
        return target

    def write_meta(self, path, time_total_s=None):
        """Record the iteration (and time) a checkpoint was taken at: a trial restored
        from it counts on from there."""
        if time_total_s is None:
            time_total_s = self.time_offset + (time.time() - self.start)
        with open(os.path.join(path, _META), "w") as f:
            json.dump({"training_iteration": self.iteration, "time_total_s": time_total_s}, f)

    def report(self, metrics, checkpoint=None):
        from .. import api

        result = self.make_result(metrics)
        path = self.persist(checkpoint, result) if checkpoint is not None else None
        decision = api._get_blocking(self.hub.report.remote(self.spec["channel"],
                                                            self.trial_id, result, path))
        if decision == STOP:
            raise StopTrial()
        if decision == PAUSE:
            raise PauseTrial()
        if decision == RESTART:
            raise RestartTrial()


def read_checkpoint_meta(path: str) -> dict:
    """Iteration and time saved with a trial checkpoint (``{}`` if none)."""
    try:
        with open(os.path.join(path, _META)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def report(metrics: dict, *, checkpoint: Checkpoint | None = None) -> None:
    """Report metrics (and optionally a checkpoint) from inside a trial.

    Tune adds ``training_iteration``, ``time_total_s`` and friends. The call
    returns once the controller has seen the result; if a stopper, scheduler
    or pruner ended the trial, the trial's function is unwound from here.
    """
    if _session is None:
        raise RuntimeError("tune.report() was called outside of a Tune trial; run the function "
                           "with tune.Tuner(...).fit() or tune.run(...).")
    _session.report(metrics, checkpoint)


def get_checkpoint() -> Checkpoint | None:
    """The checkpoint to resume from (after a failure, PBT exploit or ``Tuner.restore``),
    or None when the trial starts fresh."""
    return _session.checkpoint if _session is not None else None


class TuneContext:
    """Information about the running trial (``tune.get_context()``)."""

    def __init__(self, spec):
        self._spec = spec or {}

    def get_trial_id(self) -> str | None:
        """The trial's id."""
        return self._spec.get("trial_id")

    def get_trial_name(self) -> str | None:
        """The trial's name."""
        return self._spec.get("trial_name")

    def get_trial_dir(self) -> str | None:
        """The trial's directory (results and checkpoints); created on first use."""
        path = self._spec.get("trial_dir")
        if path is not None:
            # The controller creates it in the background; a trial may get here first.
            os.makedirs(path, exist_ok=True)
        return path

    def get_experiment_name(self) -> str | None:
        """The experiment's name."""
        return self._spec.get("experiment_name")

    def get_trial_resources(self) -> dict:
        """The trial's resource request."""
        return dict(self._spec.get("resources") or {})


def get_context() -> TuneContext:
    """The running trial's :class:`TuneContext` (empty outside a trial)."""
    return TuneContext(_session.spec if _session is not None else None)
