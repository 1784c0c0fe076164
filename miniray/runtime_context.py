"""``miniray.runtime_context``: Ray's ``ray.runtime_context`` names."""

from ._core.context import RuntimeContext
from .api import get_runtime_context

__all__ = ["RuntimeContext", "get_runtime_context"]
