"""What ``fit()`` returns, and the error it raises when training fails."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ._checkpoint import Checkpoint

# Written in the run folder after each report (Ray Train's file name), read by
# Result.from_path.
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"


def _local_filesystem():
    try:
        import pyarrow.fs
    except ImportError as exc:
        raise ImportError(
            "Result.filesystem is a pyarrow.fs.LocalFileSystem, and pyarrow is not "
            "installed: pip install pyarrow. Without it, read the files with the os/open "
            "functions: runs are always on the local file system (Result.path).") from exc
    return pyarrow.fs.LocalFileSystem()


@dataclass
class Result:
    """The outcome of ``trainer.fit()``.

    Attributes:
        metrics: the last metrics rank 0 reported (``None`` if none).
        checkpoint: the latest persisted checkpoint (``None`` if none).
        error: the exception that ended the run, or ``None``.
        path: the run's folder, ``storage_path/name``.
        metrics_history: every report's metrics (rank 0), oldest first.
        best_checkpoints: ``(checkpoint, metrics)`` for each checkpoint kept on disk.
    """

    metrics: dict | None
    checkpoint: Checkpoint | None
    error: BaseException | None = None
    path: str | None = None
    metrics_history: list = field(default_factory=list)
    best_checkpoints: list = field(default_factory=list)

    @property
    def metrics_dataframe(self):
        """``metrics_history`` as a pandas DataFrame, one row per report.

        Needs pandas; without it this raises ``ImportError`` (use
        ``metrics_history``, a list of dicts, instead).
        """
        try:
            import pandas
        except ImportError as exc:
            raise ImportError(
                "Result.metrics_dataframe needs pandas (pip install pandas); "
                "Result.metrics_history has the same data as a list of dicts.") from exc
        return pandas.DataFrame(self.metrics_history)

    @property
    def filesystem(self):
        """The file system ``path`` and the checkpoints are on: as in Ray, a
        ``pyarrow.fs.LocalFileSystem`` (runs are stored locally). Needs pyarrow
        (``ImportError`` naming it otherwise)."""
        return _local_filesystem()

    def get_best_checkpoint(self, metric: str, mode: str) -> Checkpoint | None:
        """The kept checkpoint whose metrics rank best by ``metric`` (``mode`` is
        ``"max"`` or ``"min"``); ``None`` if no kept checkpoint reported ``metric``."""
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        scored = [(m[metric], c) for c, m in self.best_checkpoints
                  if isinstance(m, dict) and m.get(metric) is not None]
        if not scored:
            return None
        pick = max if mode == "max" else min
        return pick(scored, key=lambda item: item[0])[1]

    @classmethod
    def from_path(cls, path: str | os.PathLike, storage_filesystem=None) -> "Result":
        """The Result of a finished (or interrupted) run, read from its folder
        (``storage_path/name``): metrics, history, latest and kept checkpoints.
        As in Ray, ``error`` is not restored.

        Raises ``RuntimeError`` if the folder does not exist or no run wrote it.
        """
        if storage_filesystem is not None and type(storage_filesystem).__name__ != \
                "LocalFileSystem":
            raise ValueError("Result.from_path reads local folders only; got "
                             f"{type(storage_filesystem).__name__}")
        path = os.path.abspath(os.fspath(path)).rstrip(os.sep)
        if not os.path.isdir(path):
            raise RuntimeError(f"Experiment folder {path} doesn't exist.")
        snapshot = os.path.join(path, SNAPSHOT_FILE)
        if not os.path.exists(snapshot):
            raise RuntimeError(
                f"Failed to restore the Result object: {SNAPSHOT_FILE} doesn't exist in "
                f"{path}. Make sure that this is an output directory created by a "
                "miniray.train run.")
        with open(snapshot) as f:
            data = json.load(f)

        def checkpoint(name):
            return Checkpoint(os.path.join(path, name)) if name else None

        return cls(metrics=data.get("metrics"), checkpoint=checkpoint(data.get("latest")),
                   error=None, path=path, metrics_history=data.get("history", []),
                   best_checkpoints=[(checkpoint(name), metrics)
                                     for name, metrics in data.get("checkpoints", [])])

    def _write_snapshot(self) -> None:
        # A checkpoint outside the run folder (resume_from_checkpoint) is kept by path.
        def name(c):
            if c is None:
                return None
            rel = os.path.relpath(c.path, self.path)
            return c.path if rel.startswith("..") else rel

        data = {"committed_index": getattr(self, "_committed_index", -1),
                "metrics": self.metrics, "latest": name(self.checkpoint),
                "history": self.metrics_history,
                "checkpoints": [(name(c), m) for c, m in self.best_checkpoints]}
        target = os.path.join(self.path, SNAPSHOT_FILE)
        with open(target + ".tmp", "w") as f:
            json.dump(data, f, default=repr)
        os.replace(target + ".tmp", target)

    def __repr__(self) -> str:
        return (f"Result(metrics={self.metrics!r}, checkpoint={self.checkpoint!r}, "
                f"error={self.error!r}, path={self.path!r})")


class TrainingFailedError(RuntimeError):
    """``fit()`` failed: either :class:`WorkerGroupError` (the training workers) or
    :class:`ControllerError` (the driver-side run itself), as in Ray Train.

    ``result`` holds what the run had reached (its ``error`` is set), including
    the latest checkpoint.
    """

    def __init__(self, message: str, result: Result | None = None):
        super().__init__(message)
        self.result = result

    def __reduce__(self):
        return (type(self), (self.args[0], self.result))


class WorkerGroupError(TrainingFailedError):
    """Training workers failed more often than ``FailureConfig.max_failures`` allows.

    Attributes:
        worker_failures: ``{world_rank: exception}`` of the failed workers (the
            exception a worker raised, or ``RayActorError`` if its process died);
            the first is also ``__cause__``.
    """

    def __init__(self, error_message: str, worker_failures: dict,
                 result: Result | None = None):
        super().__init__("Training failed due to worker errors:\n" + error_message, result)
        self._error_message = error_message
        self.worker_failures = worker_failures

    def __reduce__(self):
        return (type(self), (self._error_message, self.worker_failures, self.result))


class ControllerError(TrainingFailedError):
    """The run failed on the driver side, outside the workers: a ``RunConfig``
    callback raised, or the run's folder could not be written.

    Attributes:
        controller_failure: the exception (also ``__cause__``).
    """

    def __init__(self, controller_failure: BaseException, result: Result | None = None):
        super().__init__("Training failed due to controller error:\n" + str(controller_failure),
                         result)
        self.controller_failure = controller_failure
        self.with_traceback(controller_failure.__traceback__)

    def __reduce__(self):
        return (type(self), (self.controller_failure, self.result))
