"""What ``fit()`` returns, and the error it raises when training fails."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._checkpoint import Checkpoint


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
        """Always ``None``: checkpoints live on the local file system."""
        return None

    def __repr__(self) -> str:
        return (f"Result(metrics={self.metrics!r}, checkpoint={self.checkpoint!r}, "
                f"error={self.error!r}, path={self.path!r})")


class TrainingFailedError(RuntimeError):
    """``fit()`` failed: a worker raised or died more often than ``max_failures`` allows.

    The worker's exception is ``__cause__``; ``result`` holds what the run
    had reached (its ``error`` is set), including the latest checkpoint.
    """

    def __init__(self, message: str, result: Result | None = None):
        super().__init__(message)
        self.result = result

    def __reduce__(self):
        return (type(self), (self.args[0], self.result))
