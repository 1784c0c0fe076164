"""``ray.util.collective.types``: reduce operations and backend names."""

from __future__ import annotations

from enum import Enum

__all__ = ["Backend", "ReduceOp"]


class Backend:
    """Backend names; ``Backend("torch_gloo")`` is ``GLOO``, as in Ray."""

    NCCL = "NCCL"
    GLOO = "GLOO"
    UNRECOGNIZED = "unrecognized"

    def __new__(cls, name: str):
        upper = str(name).upper()
        if upper == "TORCH_GLOO":
            return Backend.GLOO
        backend = getattr(Backend, upper, Backend.UNRECOGNIZED)
        if backend == Backend.UNRECOGNIZED:
            raise ValueError(f"Unrecognized backend: {name!r}; miniray supports 'gloo'")
        return backend


class ReduceOp(Enum):
    SUM = 0
    PRODUCT = 1
    MIN = 2
    MAX = 3
