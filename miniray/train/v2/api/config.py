"""``ray.train.v2.api.config``."""

from ..._config import (CheckpointConfig, FailureConfig, LoggingConfig, RunConfig,
                        ScalingConfig)

__all__ = ["CheckpointConfig", "FailureConfig", "LoggingConfig", "RunConfig", "ScalingConfig"]
