"""``ray.train.v2.api.callback``."""

from ..._callback import TrainRunContext, UserCallback

__all__ = ["TrainRunContext", "UserCallback"]
