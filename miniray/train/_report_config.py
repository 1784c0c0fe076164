"""Ray Train v2's report options and reported-checkpoint records."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = ["CheckpointConsistencyMode", "CheckpointUploadMode", "ReportedCheckpoint",
           "ReportedCheckpointStatus"]


class CheckpointUploadMode(Enum):
    """How ``report`` persists a checkpoint.

    ``SYNC``: copied into the run folder before ``report`` returns. ``ASYNC``: the same
    here (a local copy is quick), then the source folder is deleted unless
    ``delete_local_checkpoint_after_upload=False``. ``NO_UPLOAD``: the folder is
    recorded where it is (it must already be where it should stay).
    """

    ASYNC = "ASYNC"
    SYNC = "SYNC"
    NO_UPLOAD = "NO_UPLOAD"

    def default_delete_local_checkpoint_after_upload(self) -> bool:
        return self == CheckpointUploadMode.ASYNC


class CheckpointConsistencyMode(Enum):
    """What ``get_all_reported_checkpoints`` waits for: ``COMMITTED`` (every worker
    reported the latest step) or ``VALIDATED`` (the same here: miniray runs no
    validation tasks)."""

    COMMITTED = "COMMITTED"
    VALIDATED = "VALIDATED"


class ReportedCheckpointStatus(Enum):
    """Status of a reported checkpoint (miniray runs no validations: ``COMMITTED``)."""

    COMMITTED = "COMMITTED"
    PENDING_VALIDATION = "PENDING_VALIDATION"
    VALIDATED = "VALIDATED"
    VALIDATION_TIMEOUT = "VALIDATION_TIMEOUT"
    VALIDATION_FAILED = "VALIDATION_FAILED"


@dataclass
class ReportedCheckpoint:
    """A checkpoint the run committed, with the metrics reported with it."""

    checkpoint: object
    metrics: dict = field(default_factory=dict)
    status: ReportedCheckpointStatus = ReportedCheckpointStatus.COMMITTED
