"""The driver side of an experiment: create trials from the searcher, run them as
miniray tasks, route their streamed results to stoppers, searchers and schedulers,
write result files and experiment state."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import queue
import sys
import threading
import time
import traceback
import uuid

from .. import api
from ..exceptions import TaskCancelledError
from . import dashboard
from . import session as _s
from ._runner import forget_hub, run_trial, session_hub
from .errors import TuneError
from .schedulers import FIFOScheduler, TrialScheduler
from .search import sample
from .search.searcher import BasicVariantGenerator, Searcher
from .stopper import make_stopper
from .trainable import is_class_trainable, normalize_resources, unwrap

STATE_FILE = "experiment_state.pkl"
TUNER_FILE = "tuner.pkl"


class Trial:
    """One trial: its config, status and results.

    Attributes:
        trial_id, config, status (PENDING, RUNNING, TERMINATED, ERROR), last_result,
        results (every result), checkpoint (latest checkpoint path), path (directory),
        error (the exception that ended it), num_failures.
    """

    def __init__(self, trial_id, config, path, trainable_name, index):
        self.trial_id = trial_id
        self.config = config
        self.path = path
        self.trainable_name = trainable_name
        self.index = index
        self.status = "PENDING"
        self.last_result: dict = {}
        self.results: list = []
        self.checkpoint = None
        self.checkpoints: list = []  # [(path, result)] kept on disk
        self.error = None
        self.num_failures = 0
        self.pruned = False
        self._ref = None
        self._exploit = None
        self._stop_error = None
        self._csv_fields = None
        self._csv_exists = False  # set for trials restored from an earlier run

    @property
    def local_path(self):
        """The trial's directory (Ray's name)."""
        return self.path

    logdir = local_path

    @property
    def error_file(self):
        """``error.txt`` in the trial directory, if the trial failed."""
        path = os.path.join(self.path, "error.txt")
        return path if os.path.exists(path) else None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_ref"] = None
        state["_exploit"] = None
        if state["error"] is not None:
            try:
                import cloudpickle

                cloudpickle.dumps(state["error"])
            except Exception:
                state["error"] = TuneError(str(state["error"]))
        return state

    def __repr__(self):
        return f"Trial({self.trial_id}, {self.status})"


class _FileWriter:
    """Writes result files on a background thread, in order.

    Opening a file costs ~0.5 ms and a mkdir up to ~0.5 ms on some file systems:
    done inline, the files of 1,000 short trials would be most of the experiment's
    overhead. Each ``put`` is one batch (a trial's directory and params, or a
    result's two lines), so the thread wakes, and takes the GIL from the controller,
    once per batch instead of once per file; files are written with bare
    ``os.open``/``os.write`` (3 system calls, where ``open()`` makes 5-6).
    """

    def __init__(self):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="miniray-tune-files",
                                        daemon=True)
        self._thread.start()
        self.error = None

    def _run(self):
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            for path, mode, text in batch:
                try:
                    if mode == "mkdir":
                        _mkdir(path)
                    else:
                        _write(path, text, mode == "a")
                except OSError as exc:  # reported once at the end; results stay in memory
                    self.error = self.error or exc

    def put(self, *items):
        """Queue ``(path, mode, text)`` items: mode ``"mkdir"``, ``"w"`` or ``"a"``."""
        self._queue.put(items)

    def close(self):
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            print(f"miniray.tune: could not write result files: {self.error}",
                  file=sys.stderr)


_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND
_TRUNCATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def _write(path, text, append):
    data = text.encode("utf-8")
    fd = os.open(path, _APPEND if append else _TRUNCATE, 0o644)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def _mkdir(path):
    try:
        os.mkdir(path)  # the experiment directory exists: one call, no stat first
    except FileExistsError:
        pass
    except FileNotFoundError:  # a trial_dirname_creator made nested directories
        os.makedirs(path, exist_ok=True)


def _check_serializable(space):
    import cloudpickle

    try:
        cloudpickle.dumps(space)
        return
    except Exception as exc:
        first = exc
    for key, value in sample.flatten(space).items():
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            raise TypeError(f"param_space value {key!r} ({type(value).__name__}) cannot be "
                            f"serialized to send to trials: {exc}") from None
    raise TypeError(f"param_space cannot be serialized: {first}")


class TuneController:
    """Runs one experiment to the end. Used by ``Tuner.fit`` and ``tune.run``."""

    def __init__(self, trainable, param_space, tune_config, run_config, experiment_dir,
                 restored=None, reporter=None):
        import cloudpickle

        self.tune_config = tune_config
        self.run_config = run_config
        self.experiment_dir = experiment_dir
        self.metric, self.mode = tune_config.metric, tune_config.mode
        self.param_space = param_space
        inner, self._param_names, self._param_refs, resources = unwrap(trainable)
        if not callable(inner):
            raise TypeError(f"trainable must be a function or a tune.Trainable subclass, got "
                            f"{type(inner).__name__}")
        self._class = is_class_trainable(inner)
        self._resources = resources
        if resources is None and self._class:
            self._resources = inner.default_resource_request
        self.trainable_name = getattr(inner, "__name__", "trainable")
        try:
            self._blob = cloudpickle.dumps(inner)
        except Exception as exc:
            raise TypeError(f"the trainable cannot be serialized to send to workers: "
                            f"{exc}") from exc
        if not isinstance(param_space, dict):
            raise TypeError(f"param_space must be a dict, got {type(param_space).__name__}")
        sample.parse_space(param_space)  # empty grids raise here, before any trial
        _check_serializable(param_space)
        failure = run_config.failure_config
        self.max_failures = failure.max_failures if failure else 0
        self.fail_fast = failure.fail_fast if failure else False
        ckpt = run_config.checkpoint_config
        self.ckpt_config = ckpt
        self.stopper = make_stopper(run_config.stop)
        self.callbacks = list(run_config.callbacks or [])
        from .logger import CSVLoggerCallback, JsonLoggerCallback

        # A logger callback the user passed writes its files; the built-in writer skips them.
        self._write_json = not any(isinstance(c, JsonLoggerCallback) for c in self.callbacks)
        self._write_csv = not any(isinstance(c, CSVLoggerCallback) for c in self.callbacks)
        self._iteration = 0
        self.verbose = 1 if run_config.verbose is None else run_config.verbose
        self.reporter = reporter
        if self.reporter is not None and hasattr(self.reporter, "set_search_properties"):
            self.reporter.set_search_properties(self.metric, self.mode)
        self.trials: list = []
        self._by_id: dict = {}
        self._pending: list = []  # trials waiting to (re)start, before new ones
        self._created = 0
        self._elapsed_before = 0.0
        self._token = uuid.uuid4().hex[:5]
        self.scheduler = tune_config.scheduler or FIFOScheduler()
        self.searcher = tune_config.search_alg or BasicVariantGenerator()
        if not isinstance(self.searcher, Searcher):
            raise TypeError(f"search_alg must be a Searcher, got {type(self.searcher).__name__}")
        if not isinstance(self.scheduler, TrialScheduler):
            raise TypeError(f"scheduler must be a TrialScheduler, got "
                            f"{type(self.scheduler).__name__}")
        if restored is not None:
            self._load_state(restored)
        else:
            self.searcher.set_search_properties(self.metric, self.mode, param_space,
                                                num_samples=tune_config.num_samples)
        self.scheduler.set_search_properties(self.metric, self.mode)
        if not isinstance(self.scheduler, FIFOScheduler):
            self.scheduler._needs_metric()
        self._total = self.searcher._total(tune_config.num_samples)
        self._stop_all = self._stopped = False
        self._finished_searcher = False
        self._last_state = 0.0

    # -- state ---------------------------------------------------------------------------

    def _load_state(self, state):
        self.searcher = state["searcher"]
        self._created = state["created"]
        self._token = state["token"]
        self._elapsed_before = state.get("elapsed", 0.0)
        saved = state.get("callbacks") or []
        if len(saved) == len(self.callbacks):  # the same callbacks as when it was saved
            for cb, cb_state in zip(self.callbacks, saved):
                if cb_state is not None and hasattr(cb, "set_state"):
                    cb.set_state(cb_state)
        resume = state.get("resume") or {"finished": "skip", "unfinished": "resume",
                                         "errored": "skip"}
        for trial in state["trials"]:
            trial._csv_exists = True
            trial._csv_fields = None
            self.trials.append(trial)
            self._by_id[trial.trial_id] = trial
            kind = ("unfinished" if trial.status in ("RUNNING", "PENDING", "PAUSED") else
                    "errored" if trial.status == "ERROR" else "finished")
            action = resume[kind]
            if action == "skip":
                if kind == "unfinished":
                    trial.status = "TERMINATED"
                continue
            trial.status, trial.error, trial.num_failures = "PENDING", None, 0
            if action == "restart":
                trial.checkpoint = None
            self._pending.append(trial)

    def save_state(self, force=False):
        """Write experiment_state.pkl (atomically), at most twice a second unless forced."""
        now = time.monotonic()
        if not force and now - self._last_state < 0.5:
            return
        import cloudpickle

        self._last_state = now
        state = {"trials": self.trials, "searcher": self.searcher, "created": self._created,
                 "token": self._token, "elapsed": self._elapsed_before + (
                     time.monotonic() - self._start),
                 "callbacks": [cb.get_state() if hasattr(cb, "get_state") else None
                               for cb in self.callbacks]}
        path = os.path.join(self.experiment_dir, STATE_FILE)
        with open(path + ".tmp", "wb") as f:
            cloudpickle.dump(state, f)
        os.replace(path + ".tmp", path)

    def _callback(self, hook, **kwargs):
        # Ray's hooks take keyword arguments; each callback runs on the driver, in order.
        if not self.callbacks:
            return
        for cb in self.callbacks:
            method = getattr(cb, hook, None)
            if method is not None:
                if hook != "on_experiment_end" and hook != "setup":
                    kwargs.setdefault("iteration", self._iteration)
                    kwargs.setdefault("trials", self.trials)
                method(**kwargs)

    # -- helpers used by schedulers ------------------------------------------------------

    def trial(self, trial_id) -> Trial:
        """The trial with this id."""
        return self._by_id[trial_id]

    def get_trials(self) -> list:
        """Every trial so far."""
        return list(self.trials)

    # -- main loop -----------------------------------------------------------------------

    def _slots(self):
        total = api.cluster_resources()
        request = self._resource_options(None)
        limit = math.inf
        cpus = request.get("num_cpus", 1)
        gpus = request.get("num_gpus", 0)
        if cpus:
            limit = min(limit, total.get("CPU", 1) // cpus)
        if gpus:
            limit = min(limit, total.get("GPU", 0) // gpus)
        for key, value in (request.get("resources") or {}).items():
            if value:
                limit = min(limit, total.get(key, 0) // value)
        by_resources = True
        if limit == math.inf:
            limit = max(int(total.get("CPU", 1)), 1)
        if self.tune_config.max_concurrent_trials:
            if self.tune_config.max_concurrent_trials < limit:
                by_resources = False
            limit = min(limit, self.tune_config.max_concurrent_trials)
        if limit < 1:
            raise ValueError(f"a trial asks for {request}, more than the node has "
                             f"({total}); lower the trial's resources")
        return int(limit), by_resources

    def trial_resources(self, trial) -> dict:
        """The task options (``num_cpus``...) a trial runs with: a scheduler's change
        (``trial._resources_override``) or the trainable's request."""
        override = getattr(trial, "_resources_override", None)
        if override is not None:
            return normalize_resources(override)
        return self._resource_options(trial.config)

    def _resource_options(self, config):
        resources = self._resources
        if callable(resources):
            resources = resources(config if config is not None else {})
        return normalize_resources(resources)

    def run(self) -> list:
        """Run until every trial finished (or a stop condition); return the trials."""
        self._start = time.monotonic()
        os.makedirs(self.experiment_dir, exist_ok=True)
        budget = self.tune_config.time_budget_s
        self._deadline = (self._start + budget - self._elapsed_before) if budget else None
        slots, by_resources = self._slots()
        # Model-free searchers under FIFO may queue trials on the node ahead of free
        # slots, so workers never wait for the driver between two short trials.
        queue_ahead = 2 * slots if (by_resources and self.searcher._queue_ahead()
                                and isinstance(self.scheduler, FIFOScheduler)) else 0
        import cloudpickle

        self._task = api.remote(max_retries=0)(run_trial)
        self._bound: dict = {}
        self._files = _FileWriter()
        self._hub = session_hub(api)
        self._channel = uuid.uuid4().hex[:12]
        # The hub's handle rides with the trainable: stored once, unpickled once per worker.
        self._blob_ref = api.put(cloudpickle.dumps((self._blob, self._hub)))
        poll_ref = self._hub.poll.remote(self._channel)
        running: dict = {}
        ended_cleanly = False
        tracked = dashboard.track(self)
        self._callback("setup", stop=self.stopper, num_samples=self.tune_config.num_samples,
                       total_num_samples=self._total)
        try:
            while True:
                self._iteration += 1
                self._callback("on_step_begin")
                if not self._stop_all:
                    while len(running) < slots + queue_ahead:
                        trial = self._next_trial(running)
                        if trial is None:
                            break
                        self._launch(trial)
                        running[trial._ref] = trial
                if not running:
                    if self._settle_paused():
                        continue
                    break
                timeout = 1.0 if self.verbose else 5.0
                if self._deadline is not None:
                    timeout = max(0.0, min(timeout, self._deadline - time.monotonic()))
                refs = [poll_ref, *running]
                ready, _ = api._wait_blocking(refs, num_returns=1, timeout=timeout)
                if ready:
                    ready, _ = api._wait_blocking(refs, num_returns=len(refs), timeout=0)
                ready = set(ready)
                if poll_ref in ready:
                    decisions = [(tid, self._on_result(self._by_id[tid], result, ckpt))
                                 for tid, result, ckpt in api._get_blocking(poll_ref)]
                    self._hub.decide.remote(self._channel, decisions)
                    poll_ref = self._hub.poll.remote(self._channel)
                for ref in [r for r in running if r in ready]:
                    self._on_done(running.pop(ref), ref)
                if self._stop_all and not self._stopped:
                    self._stop_everything(running)  # fail_fast
                if not self._stop_all and (
                        (self._deadline is not None and time.monotonic() >= self._deadline)
                        or (self.stopper is not None and self.stopper.stop_all())):
                    self._stop_everything(running)
                self._progress(False)
                self._callback("on_step_end")
                self.save_state()
            ended_cleanly = True
        finally:
            for ref in running:
                api.cancel(ref)
            tracked.finish("TERMINATED" if ended_cleanly else "ERROR")
            if not ended_cleanly:  # maybe the hub itself broke: the next run starts a new one
                forget_hub(self._hub)
                api.kill(self._hub)
            else:
                self._hub.close.remote(self._channel)
            self._files.close()
            self._elapsed_before += time.monotonic() - self._start
            self._start = time.monotonic()
            self.save_state(force=True)
        self._callback("on_experiment_end", trials=self.trials)
        self._progress(True)
        if self.fail_fast == "raise":
            errors = [t for t in self.trials if t.status == "ERROR"]
            if errors:
                tracked.finish("ERROR")
                raise TuneError(f"trial {errors[0].trial_id} failed") from errors[0].error
        return self.trials

    # -- paused trials (synchronous HyperBand) ------------------------------------------

    def resume_trial(self, trial):
        """Start a PAUSED trial again, from its latest checkpoint (called by schedulers)."""
        if trial.status == "PAUSED":
            trial.status = "PENDING"
            self._pending.append(trial)

    def stop_paused_trial(self, trial):
        """End a PAUSED trial for good, as TERMINATED (called by schedulers)."""
        if trial.status != "PAUSED":
            return
        if trial.last_result:
            trial.last_result["done"] = True
        trial.status = "TERMINATED"
        self.searcher.on_trial_complete(trial.trial_id, trial.last_result or None)
        self._callback("on_trial_complete", trial=trial)

    def more_trials_coming(self) -> bool:
        """Whether the searcher may still create trials."""
        return not self._stop_all and not self._finished_searcher and (
            self._total < 0 or self._created < self._total)

    def _settle_paused(self) -> bool:
        # Nothing runs: let the scheduler decide about paused trials; any it leaves
        # paused would wait forever, so they end. True if some were resumed.
        paused = [t for t in self.trials if t.status == "PAUSED"]
        if not paused:
            return False
        if not self._stop_all:
            self.scheduler.on_no_running_trials(self)
        if self._pending:
            return True
        for trial in paused:
            self.stop_paused_trial(trial)
        return False

    def _stop_everything(self, running):
        self._stop_all = self._stopped = True
        for trial in running.values():
            trial._stopping = True
        self._hub.decide.remote(self._channel, [(t.trial_id, _s.STOP) for t in running.values()])
        for ref in running:
            api.cancel(ref)

    def _next_trial(self, running):
        if self._pending:
            return self._pending.pop(0)
        if self._finished_searcher or (0 <= self._total <= self._created):
            return None
        trial_id = f"{self._token}_{self._created:05d}"
        config = self.searcher.suggest(trial_id)
        if config is None:
            return None
        if config == Searcher.FINISHED:
            self._finished_searcher = True
            return None
        index = self._created
        self._created += 1
        trial = Trial(trial_id, config, None, self.trainable_name, index)
        creator = self.tune_config.trial_dirname_creator
        dirname = creator(trial) if creator else f"{self.trainable_name}_{trial_id}"
        trial.path = os.path.join(self.experiment_dir, dirname)
        self.trials.append(trial)
        self._by_id[trial_id] = trial
        self.scheduler.on_trial_add(self, trial)
        return trial

    def _launch(self, trial):
        if self._write_json:
            self._files.put((trial.path, "mkdir", None),
                            (os.path.join(trial.path, "params.json"), "w",
                             json.dumps(trial.config, default=repr, indent=2)))
        else:
            self._files.put((trial.path, "mkdir", None))
        meta = _s.read_checkpoint_meta(trial.checkpoint) if trial.checkpoint else {}
        ckpt = self.ckpt_config
        options = self.trial_resources(trial)
        spec = {"channel": self._channel, "trial_id": trial.trial_id,
                "trial_name": f"{self.trainable_name}_{trial.trial_id}",
                "trial_dir": trial.path, "experiment_name": os.path.basename(
                    self.experiment_dir), "config": trial.config,
                "checkpoint": trial.checkpoint, "iteration": meta.get("training_iteration", 0),
                "time_total": meta.get("time_total_s", 0.0), "param_names": self._param_names,
                "checkpoint_frequency": ckpt.checkpoint_frequency if ckpt else 0,
                "checkpoint_at_end": bool(ckpt and ckpt.checkpoint_at_end),
                "resources": options}
        key = repr(sorted(options.items()))
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bound[key] = self._task.options(**options)
        trial._stopping = trial._pausing = False
        try:
            trial._ref = bound.remote(spec, self._blob_ref, *self._param_refs)
        except TypeError as exc:
            raise TypeError(f"trial {trial.trial_id}: its config cannot be sent to a "
                            f"worker: {exc}") from exc
        trial.status = "RUNNING"
        if self.callbacks:
            _mkdir(trial.path)  # the directory exists before a callback writes in it
            self._callback("on_trial_restore" if trial.checkpoint else "on_trial_start",
                           trial=trial)

    # -- results -------------------------------------------------------------------------

    def _record(self, trial, result, checkpoint):
        result["config"] = trial.config
        result["experiment_tag"] = str(trial.index)
        result["date"] = time.strftime("%Y-%m-%d_%H-%M-%S")
        trial.last_result = result
        trial.results.append(result)
        items = []
        if self._write_csv:
            flat = sample.flatten({k: v for k, v in result.items() if k != "config"})
            new = trial._csv_fields is None
            if new:
                trial._csv_fields = list(flat)
            buf = io.StringIO()
            writer = csv.DictWriter(buf, trial._csv_fields, extrasaction="ignore")
            if new and not trial._csv_exists:
                writer.writeheader()
            writer.writerow(flat)
            items.append((os.path.join(trial.path, "progress.csv"), "a", buf.getvalue()))
        if self._write_json:
            items.append((os.path.join(trial.path, "result.json"), "a",
                          json.dumps(result, default=repr) + "\n"))
        if items:
            self._files.put(*items)
        self._callback("on_trial_result", trial=trial, result=result)
        if checkpoint:
            self._add_checkpoint(trial, checkpoint, result)
        if self.verbose >= 3:
            shown = {k: v for k, v in result.items() if k not in (
                "config", "pid", "hostname", "node_ip", "date", "timestamp", "trial_id",
                "experiment_tag", "time_since_restore", "iterations_since_restore")}
            print(f"Trial {trial.trial_id} reported {shown}", flush=True)

    def _add_checkpoint(self, trial, path, result):
        trial.checkpoint = path
        trial.checkpoints = [(p, r) for p, r in trial.checkpoints if p != path]
        trial.checkpoints.append((path, result))
        if self.callbacks:
            from .checkpoint import Checkpoint

            self._callback("on_trial_save", trial=trial)
            self._callback("on_checkpoint", trial=trial, checkpoint=Checkpoint(path))
        ckpt = self.ckpt_config
        if ckpt and ckpt.num_to_keep and len(trial.checkpoints) > ckpt.num_to_keep:
            attr = ckpt.checkpoint_score_attribute
            if attr:
                sign = 1 if ckpt.checkpoint_score_order == "max" else -1
                ranked = sorted(trial.checkpoints[:-1],
                                key=lambda pr: sign * pr[1].get(attr, -math.inf * sign))
                drop = ranked[0]
            else:
                drop = trial.checkpoints[0]
            # The latest checkpoint is always kept: a restart resumes from it.
            trial.checkpoints.remove(drop)
            shutil.rmtree(drop[0], ignore_errors=True)

    def _on_result(self, trial, result, checkpoint):
        if trial.status != "RUNNING" or getattr(trial, "_stopping", False):
            return _s.STOP
        self._record(trial, result, checkpoint)
        if self.metric is not None and not isinstance(self.metric, (list, tuple)) \
                and self.metric not in result:
            trial._stop_error = TuneError(
                f"Trial {trial.trial_id} reported a result without the metric "
                f"{self.metric!r}. It reported: {sorted(k for k in result if k != 'config')}. "
                "Report the metric in every tune.report() call, or fix TuneConfig(metric=).")
            return _s.STOP
        decision = _s.CONTINUE
        if self.stopper is not None and self.stopper(trial.trial_id, result):
            decision = _s.STOP
        if self.searcher.on_trial_result(trial.trial_id, result) == "STOP":
            trial.pruned = True
            decision = _s.STOP
        action = self.scheduler.on_trial_result(self, trial, result)
        if decision == _s.STOP or action == TrialScheduler.STOP:
            trial._exploit = None  # stopping wins over a PBT exploit decided for this result
            return _s.STOP
        if action == TrialScheduler.PAUSE:
            if trial._exploit is not None:
                return _s.RESTART
            trial._pausing = True  # ends now; the scheduler resumes or stops it later
            return _s.PAUSE
        return _s.CONTINUE

    def _on_done(self, trial, ref):
        try:
            outcome = api._get_blocking(ref)
        except TaskCancelledError as exc:
            if getattr(trial, "_stopping", False):
                outcome = {"status": "stopped", "result": None}
            else:
                return self._on_error(trial, exc)
        except Exception as exc:  # the trainable raised, or its worker died
            return self._on_error(trial, exc)
        finally:
            trial._ref = None
        if outcome.get("checkpoint") and outcome["checkpoint"] != trial.checkpoint:
            self._add_checkpoint(trial, outcome["checkpoint"], trial.last_result or {})
        if outcome["result"] is not None:
            self._record(trial, outcome["result"], None)
            if self.metric is not None and not isinstance(self.metric, (list, tuple)) \
                    and self.metric not in outcome["result"]:
                trial._stop_error = TuneError(
                    f"Trial {trial.trial_id} returned a result without the metric "
                    f"{self.metric!r}. It returned: "
                    f"{sorted(k for k in outcome['result'] if k != 'config')}.")
            else:
                self.searcher.on_trial_result(trial.trial_id, outcome["result"])
        if outcome["status"] == "restart" and trial._exploit is not None:
            return self._exploit(trial)
        if trial._stop_error is not None:
            return self._fail(trial, trial._stop_error)
        if getattr(trial, "_pausing", False):
            trial._pausing = False
            if not self._stop_all:
                trial.status = "PAUSED"
                self.scheduler.on_trial_paused(self, trial)
                return
        if self.metric is not None and not trial.results and not trial.pruned:
            return self._fail(trial, TuneError(
                f"Trial {trial.trial_id} finished without reporting any result, so the metric "
                f"{self.metric!r} was never reported. Call tune.report({{{self.metric!r}: ...}})"
                " or return a dict of metrics from the trainable."))
        if trial.last_result:
            trial.last_result["done"] = True
        trial.status = "TERMINATED"
        self.searcher.on_trial_complete(trial.trial_id, trial.last_result or None)
        self.scheduler.on_trial_complete(self, trial, trial.last_result)
        self._callback("on_trial_complete", trial=trial)
        if self.verbose >= 2:
            m = trial.last_result.get(self.metric) if self.metric and trial.last_result else None
            extra = f" with {self.metric}={m}" if m is not None else ""
            print(f"Trial {trial.trial_id} completed{extra}.", flush=True)
        self.save_state(force=False)

    def _exploit(self, trial):
        config, donor_checkpoint, donor = trial._exploit
        trial._exploit = None
        target = os.path.join(trial.path, f"checkpoint_exploit_{len(trial.results):06d}")
        shutil.copytree(donor_checkpoint, target, dirs_exist_ok=True)
        trial.config = config
        trial.checkpoint = target
        trial.status = "PENDING"
        self._pending.insert(0, trial)

    def _on_error(self, trial, exc):
        if self._stop_all and getattr(trial, "_stopping", False):
            trial.status = "TERMINATED"
            self.searcher.on_trial_complete(trial.trial_id, trial.last_result or None)
            return
        trial.num_failures += 1
        if self.max_failures == -1 or trial.num_failures <= self.max_failures:
            trial.status = "PENDING"
            self._pending.append(trial)  # resumes from trial.checkpoint if it has one
            self._callback("on_trial_recover", trial=trial)
            return
        self._fail(trial, exc)

    def _fail(self, trial, exc):
        trial.status = "ERROR"
        trial.error = exc
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self._files.put((os.path.join(trial.path, "error.txt"), "a", text))
        self.searcher.on_trial_complete(trial.trial_id, trial.last_result or None, error=True)
        self.scheduler.on_trial_error(self, trial)
        self._callback("on_trial_error", trial=trial)
        if self.verbose >= 1:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"Trial {trial.trial_id} errored: {first[:200]} (see {trial.path}/error.txt)",
                  file=sys.stderr, flush=True)
        if self.fail_fast:
            self._stop_all = True
        self.save_state(force=False)

    def _progress(self, done):
        if self.verbose < 1 or self.reporter is None:
            return
        if self.reporter.should_report(self.trials, done):
            self.reporter.report(self.trials, done)
