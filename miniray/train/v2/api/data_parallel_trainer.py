"""``ray.train.v2.api.data_parallel_trainer``."""

from ..._trainer import DataParallelTrainer

__all__ = ["DataParallelTrainer"]
