"""``ray.train.v2.api.result``."""

from ..._result import Result

__all__ = ["Result"]
