"""``miniray.experimental.compiled_dag_ref``: where Ray keeps the result types of
compiled DAGs (``from ray.experimental.compiled_dag_ref import CompiledDAGRef``).
They live in :mod:`miniray.dag.compiled`."""

from ..dag.compiled import CompiledDAGFuture, CompiledDAGRef

__all__ = ["CompiledDAGFuture", "CompiledDAGRef"]
