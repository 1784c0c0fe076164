"""``ray.train.v2.api.context``."""

from ..._session import TrainContext

__all__ = ["TrainContext"]
