"""``miniray.dag.context``: Ray's module path of ``DAGContext``; see :mod:`miniray.dag.compiled`."""

from .compiled import DAGContext

__all__ = ["DAGContext"]
