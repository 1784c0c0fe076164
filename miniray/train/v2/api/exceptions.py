"""``ray.train.v2.api.exceptions``."""

from ..._result import ControllerError, TrainingFailedError, WorkerGroupError

__all__ = ["ControllerError", "TrainingFailedError", "WorkerGroupError"]
