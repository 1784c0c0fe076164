"""``miniray.dag.compiled_dag_node``: Ray's module path of ``CompiledDAG``
(``from ray.dag.compiled_dag_node import CompiledDAG``); see :mod:`miniray.dag.compiled`."""

from .compiled import CompiledDAG

__all__ = ["CompiledDAG"]
