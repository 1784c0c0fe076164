"""``ray.train.v2.api.report_config``."""

from ..._report_config import CheckpointConsistencyMode, CheckpointUploadMode

__all__ = ["CheckpointConsistencyMode", "CheckpointUploadMode"]
