"""The driver side of a run: start the worker group, follow it, restart it on failure."""

from __future__ import annotations

import logging
import os
import re
import shutil
import time

from ._checkpoint import Checkpoint
from ._config import RunConfig, ScalingConfig, _default_storage_path
from ._callback import TrainRunContext
from ._result import ControllerError, Result, WorkerGroupError

logger = logging.getLogger("miniray.train")

# How long one poll of a worker waits for a report: short enough that a dead
# worker is noticed promptly, long enough that idle polling costs nothing.
_POLL_S = 0.5
_CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")
_remote_worker = None


def _worker_class():
    global _remote_worker
    if _remote_worker is None:
        import miniray

        from ._worker import TrainWorker

        _remote_worker = miniray.remote(TrainWorker)
    return _remote_worker


class _AttemptFailed(Exception):
    def __init__(self, message: str, cause: BaseException, remote_traceback: str | None = None,
                 rank: int = 0):
        super().__init__(message)
        self.cause = cause
        self.remote_traceback = remote_traceback
        self.rank = rank


class _ControllerFailed(Exception):
    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


class _RunState:
    """What survives a restart: the latest checkpoint, history and kept checkpoints."""

    def __init__(self, run_dir: str, latest: Checkpoint | None):
        self.run_dir = run_dir
        self.latest = latest
        self.history: list[dict] = []
        self.checkpoints: list[tuple[Checkpoint, dict]] = []
        self.preexisting = set(_checkpoint_dirs(run_dir))
        self.next_index = max((int(_CHECKPOINT_DIR.match(d).group(1))
                               for d in self.preexisting), default=-1) + 1


def _checkpoint_dirs(run_dir: str) -> list[str]:
    try:
        return [d for d in os.listdir(run_dir) if _CHECKPOINT_DIR.match(d)]
    except FileNotFoundError:
        return []


class DataParallelTrainer:
    """Runs ``train_loop_per_worker`` on ``num_workers`` worker processes.

    Each worker is a miniray actor with the resources of
    ``scaling_config.resources_per_worker``; the workers join one
    ``torch.distributed`` process group on 127.0.0.1 before the loop starts.
    Use :class:`miniray.train.torch.TorchTrainer`.
    """

    _default_backend = "gloo"

    def __init__(self, train_loop_per_worker, *, train_loop_config: dict | None = None,
                 scaling_config: ScalingConfig | None = None,
                 run_config: RunConfig | None = None, datasets: dict | None = None,
                 resume_from_checkpoint: Checkpoint | None = None,
                 metadata: dict | None = None, validation_config=None,
                 backend_config=None):
        if not callable(train_loop_per_worker):
            raise TypeError("train_loop_per_worker must be a function taking no argument "
                            "or a config dict")
        if train_loop_config is not None and not isinstance(train_loop_config, dict):
            raise TypeError("train_loop_config must be a dict")
        if resume_from_checkpoint is not None and not isinstance(resume_from_checkpoint,
                                                                 Checkpoint):
            raise TypeError("resume_from_checkpoint must be a miniray.train.Checkpoint")
        self.train_loop_per_worker = train_loop_per_worker
        self.train_loop_config = train_loop_config
        self.scaling_config = scaling_config or ScalingConfig()
        self.run_config = run_config or RunConfig()
        self.datasets = dict(datasets or {})
        self.resume_from_checkpoint = resume_from_checkpoint
        self.metadata = dict(metadata or {})
        from ._validation import ValidationConfig

        if validation_config is not None and not isinstance(validation_config,
                                                            ValidationConfig):
            raise TypeError("validation_config must be a miniray.train.ValidationConfig")
        self.validation_config = validation_config
        from ._backend import BackendConfig

        if backend_config is not None and not isinstance(backend_config, BackendConfig):
            raise TypeError("backend_config must be a miniray.train.BackendConfig")
        self.backend_config = backend_config
        if self.datasets:
            from ._data import validate_dataset

            for name, data in self.datasets.items():
                validate_dataset(name, data)
        # Called on the driver with (metrics, checkpoint) for each completed
        # report; the tune adapter uses it to forward reports to its trial.
        self._report_callback = None

    # -- backend hooks (TorchTrainer overrides) ---------------------------------
    def _backend(self) -> str:
        return "nccl" if self.scaling_config.use_gpu else self._default_backend

    def _custom_backend(self):
        """The Backend of a backend_config other than torch's, or None."""
        config = self.backend_config
        if config is None or getattr(config, "_sets_up_torch", False):
            return None
        return config.backend_cls()

    def _timeout_s(self) -> float:
        return 1800.0

    # -- fit --------------------------------------------------------------------
    def fit(self) -> Result:
        """Train; returns a :class:`Result` once every worker's loop has returned.

        Raises :class:`WorkerGroupError` (a :class:`TrainingFailedError`, with
        ``.result`` and ``.worker_failures``) when the workers failed more often than
        ``FailureConfig.max_failures``, and :class:`ControllerError` when the run
        failed on the driver (a ``RunConfig`` callback raised). Blocks:
        from asyncio code, run it in a thread (``await asyncio.to_thread(trainer.fit)``).
        """
        from ._validation import Validator

        self._validator = Validator(self.validation_config)
        run_config = self.run_config
        if run_config.logging_config is not None:
            logger.setLevel(run_config.logging_config.log_level)
        name = run_config.name or f"{type(self).__name__}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
        storage = run_config.storage_path or _default_storage_path()
        run_dir = os.path.abspath(os.path.join(storage, name))
        os.makedirs(run_dir, exist_ok=True)
        self._check_resources()
        import miniray

        dataset_refs = {k: miniray.put(v) for k, v in self.datasets.items()}
        state = _RunState(run_dir, self.resume_from_checkpoint)
        self._run_context = TrainRunContext(
            run_config=run_config, scaling_config=self.scaling_config,
            train_loop_config=self.train_loop_config, run_dir=run_dir,
            metadata=self.metadata)
        max_failures = run_config.failure_config.max_failures
        failures = 0
        error = controller_error = None
        while True:
            try:
                self._run_attempt(state, failures, name, dataset_refs)
                break
            except _ControllerFailed as failed:
                controller_error = failed.cause
                break
            except _AttemptFailed as failed:
                try:
                    self._callbacks("after_exception", {failed.rank: failed.cause})
                except _ControllerFailed as cb_failed:
                    controller_error = cb_failed.cause
                    break
                failures += 1
                if 0 <= max_failures < failures:
                    error = failed
                    break
                if run_config.verbose:
                    logger.warning("%s; restarting the worker group from %s (failure %d of %s)",
                               failed, state.latest or "the start", failures,
                               "unlimited" if max_failures < 0 else max_failures)
                self._drop_partial_checkpoints(state)
        del dataset_refs
        if self._validator.collect(logger):  # their metrics join the checkpoints'
            state.checkpoints = list(state.checkpoints)
        result = self._result(state)
        try:
            result._write_snapshot()  # also for a run that never reported
        except (OSError, TypeError, ValueError) as exc:
            controller_error = controller_error or exc
        if controller_error is not None:
            result.error = ControllerError(controller_error, result)
            raise result.error from controller_error
        if error is not None:
            result.error = error.cause
            detail = f"\n\nWorker traceback:\n{error.remote_traceback}" \
                if error.remote_traceback else ""
            raise WorkerGroupError(
                f"Training failed after {failures - 1} restart(s): {error}: "
                f"{type(error.cause).__name__}: {error.cause}{detail}",
                {error.rank: error.cause}, result) from error.cause
        return result

    def _result(self, state: _RunState) -> Result:
        result = Result(metrics=state.history[-1] if state.history else None,
                        checkpoint=state.latest, error=None, path=state.run_dir,
                        metrics_history=state.history, best_checkpoints=list(state.checkpoints))
        result._committed_index = getattr(state, "committed_index", -1)
        return result

    def _callbacks(self, hook: str, *args) -> None:
        for callback in self.run_config.callbacks or ():
            method = getattr(callback, hook, None)
            if method is None:
                continue
            try:
                method(self._run_context, *args)
            except Exception as exc:  # a driver-side failure, not a worker's
                raise _ControllerFailed(exc) from exc

    def _check_resources(self) -> None:
        import miniray

        total = miniray.cluster_resources()
        sc = self.scaling_config
        for key, need in sc.total_resources.items():
            have = total.get(key, 0.0)
            if need and have < need:
                if key == "GPU":
                    raise ValueError(
                        f"ScalingConfig(use_gpu=True) asks for {need:g} GPU(s) "
                        f"({sc.num_gpus_per_worker:g} per worker x {sc.num_workers}), but this "
                        f"node has {have:g}. On a machine without GPUs use "
                        "ScalingConfig(use_gpu=False) to train on the CPU.")
                raise ValueError(
                    f"ScalingConfig asks for {need:g} {key} ({sc.num_workers} workers), but "
                    f"this node has {have:g}. Lower num_workers or resources_per_worker, or "
                    f"start the node with more, e.g. miniray.init(num_cpus=...).")

    def _drop_partial_checkpoints(self, state: _RunState) -> None:
        # A failed attempt may have copied a checkpoint that not every worker
        # reported: it was never committed, so it must not be mistaken for one.
        kept = {os.path.basename(c.path) for c, _ in state.checkpoints}
        for d in _checkpoint_dirs(state.run_dir):
            state.next_index = max(state.next_index, int(_CHECKPOINT_DIR.match(d).group(1)) + 1)
            if d not in kept and d not in state.preexisting:
                shutil.rmtree(os.path.join(state.run_dir, d), ignore_errors=True)

    def _run_attempt(self, state: _RunState, attempt: int, name: str, dataset_refs) -> None:
        import miniray
        from miniray.exceptions import RayActorError, RayError

        sc = self.scaling_config
        n = sc.num_workers
        options = {"num_cpus": sc.num_cpus_per_worker, "num_gpus": sc.num_gpus_per_worker}
        if sc.additional_resources_per_worker:
            options["resources"] = sc.additional_resources_per_worker
        worker_cls = _worker_class()
        workers = [worker_cls.options(**options).remote() for _ in range(n)]
        custom = group = None

        def call_all(method, *per_rank_args):
            refs = [getattr(w, method).remote(*args) for w, args in zip(workers, per_rank_args)]
            out = []
            for rank, ref in enumerate(refs):
                try:
                    out.append(miniray.api._get_blocking(ref))
                except RayActorError as exc:
                    raise _AttemptFailed(f"training worker {rank} died during {method}",
                                         exc, rank=rank) from exc
                except RayError as exc:  # e.g. the port was taken between pick and bind
                    raise _AttemptFailed(f"training worker {rank} failed in {method}",
                                         exc, rank=rank) from exc
            return out

        try:
            infos = call_all("info", *[()] * n)
            port = call_all("free_port", ())[0] if n else 0
            backend = self._backend()
            cuda_visible, device_index = None, [None] * n
            if sc.num_gpus_per_worker > 0:
                ids = [[g for g in (info["gpu_ids"] or "").split(",") if g] for info in infos]
                union = list(dict.fromkeys(g for worker_ids in ids for g in worker_ids))
                cuda_visible = ",".join(union)
                device_index = [union.index(worker_ids[0]) if worker_ids else None
                                for worker_ids in ids]
            threads = max(1, int(sc.num_cpus_per_worker))
            custom = self._custom_backend()
            call_all("setup", *[(rank, n, port, None if custom else backend, self._timeout_s(),
                                 threads, cuda_visible, device_index[rank])
                                for rank in range(n)])
            if custom is not None:
                from ._backend import WorkerGroup

                group = WorkerGroup(workers)
                try:
                    custom.on_start(group, self.backend_config)
                    custom.on_training_start(group, self.backend_config)
                except Exception as exc:
                    raise _AttemptFailed("the backend's on_start failed", exc) from exc
            checkpoint_path = state.latest.path if state.latest is not None else None
            contexts = [dict(world_rank=rank, world_size=n, local_rank=rank, local_world_size=n,
                             node_rank=0, experiment_name=name, storage_path=state.run_dir,
                             attempt=attempt, metadata=self.metadata) for rank in range(n)]
            call_all("start", *[(self.train_loop_per_worker, self.train_loop_config,
                                 contexts[rank], checkpoint_path, dataset_refs, state.next_index)
                                for rank in range(n)])
            self._follow(workers, state)
        finally:
            if custom is not None and group is not None:
                try:
                    custom.on_shutdown(group, self.backend_config)
                except Exception as exc:  # the run's own outcome is what matters
                    logger.warning("the backend's on_shutdown failed: %r", exc)
            for w in workers:
                try:
                    miniray.kill(w)
                except Exception:  # already gone
                    pass

    def _follow(self, workers, state: _RunState) -> None:
        import miniray
        from miniray.exceptions import RayActorError

        n = len(workers)
        by_index: dict[int, dict] = {}
        finished: set[int] = set()
        while True:
            refs = [w.poll.remote(_POLL_S) for w in workers]
            failure = None
            for rank, ref in enumerate(refs):
                try:
                    reports, status, err = miniray.api._get_blocking(ref)
                except RayActorError as exc:
                    # A death is the root cause; a peer's collective error that it
                    # caused is not worth reporting instead.
                    if failure is None or not isinstance(failure.cause, RayActorError):
                        failure = _AttemptFailed(f"training worker {rank} died", exc,
                                                 rank=rank)
                    continue
                for index, metrics, path in reports:
                    by_index.setdefault(index, {})[rank] = (metrics, path)
                    state.next_index = max(state.next_index, index + 1)
                if status == "failed":
                    failure = failure or _AttemptFailed(
                        f"training worker {rank} raised", err[0], err[1], rank=rank)
                elif status == "finished":
                    finished.add(rank)
            # Commit what every worker has reported, even on the way to a restart.
            all_done = len(finished) == n
            for index in sorted(by_index):
                if len(by_index[index]) < n and not all_done:
                    break
                self._commit(state, by_index.pop(index), index)
            if failure is not None:
                raise failure
            if all_done:
                return

    def _commit(self, state: _RunState, reports: dict, index: int = -1) -> None:
        from ._validation import REQUEST_KEY

        state.committed_index = index
        validation = None
        for rank_metrics, _ in reports.values():
            validation = rank_metrics.pop(REQUEST_KEY, None) or validation
        metrics = (reports.get(0) or next(iter(reports.values())))[0]
        path = next((p for _, p in reports.values() if p), None)
        state.history.append(metrics)
        checkpoint = None
        if path is not None:
            checkpoint = Checkpoint(path)
            state.latest = checkpoint
            # Its own copy: a validation's metrics join the checkpoint's, not the history.
            checkpoint_metrics = dict(metrics) if validation is not None else metrics
            state.checkpoints.append((checkpoint, checkpoint_metrics))
            if validation is not None:
                try:
                    self._validator.submit(checkpoint, checkpoint_metrics, validation)
                except Exception as exc:
                    raise _ControllerFailed(exc) from exc
            self._prune(state)
        self._validator.collect_ready(logger)  # finished validations show in the snapshot
        try:
            self._result(state)._write_snapshot()
        except (OSError, TypeError, ValueError) as exc:
            raise _ControllerFailed(exc) from exc
        if self._report_callback is not None:
            self._report_callback(metrics, checkpoint)
        self._callbacks("after_report", [reports[r][0] for r in sorted(reports)], checkpoint)

    def _prune(self, state: _RunState) -> None:
        config = self.run_config.checkpoint_config
        keep = config.num_to_keep
        if keep is None or len(state.checkpoints) <= keep:
            return
        attribute = config.checkpoint_score_attribute
        candidates = [c for c in state.checkpoints if c[0] != state.latest]
        if attribute is None:
            worst = candidates[0]  # the oldest
        else:
            sign = 1 if config.checkpoint_score_order == "max" else -1

            def score(item):
                value = item[1].get(attribute)
                # A checkpoint without the metric ranks below every scored one.
                return (0, 0) if value is None else (1, sign * value)

            worst = min(candidates, key=score)
        state.checkpoints.remove(worst)
        shutil.rmtree(worst[0].path, ignore_errors=True)

    # -- tune -------------------------------------------------------------------
    def as_trainable(self):
        """This trainer as a function trainable for ``miniray.tune``.

        See :func:`miniray.train.as_trainable`.
        """
        from ._tune import as_trainable

        return as_trainable(self)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_workers={self.scaling_config.num_workers}, "
                f"use_gpu={self.scaling_config.use_gpu})")
