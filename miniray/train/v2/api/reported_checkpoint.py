"""``ray.train.v2.api.reported_checkpoint``."""

from ..._report_config import ReportedCheckpoint, ReportedCheckpointStatus

__all__ = ["ReportedCheckpoint", "ReportedCheckpointStatus"]
