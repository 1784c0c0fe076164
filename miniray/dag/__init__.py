"""``miniray.dag``: Ray's DAG API (``ray.dag``).

Build a graph with ``.bind()`` instead of ``.remote()``, then run it with
``dag.execute(...)``::

    from miniray.dag import InputNode, MultiOutputNode

    with InputNode() as inp:
        a = preprocess.bind(inp)
        b = model.predict.bind(a)        # model: an actor handle
        dag = MultiOutputNode([a, b])
    refs = dag.execute(data)             # every task submitted at once, refs as args
    ref = await dag.execute_async(data)  # the same, from async code

    compiled = dag.experimental_compile()  # actor methods over shared-memory channels
    value = miniray.get(compiled.execute(data))

See :mod:`miniray.dag.compiled` for compiled DAGs.

See :mod:`miniray.dag.nodes` for the graph's structure.
"""

from .nodes import (
    ClassMethodNode,
    ClassNode,
    DAGInputData,
    DAGNode,
    FunctionNode,
    InputAttributeNode,
    InputNode,
    MultiOutputNode,
)

from .vis import plot

__all__ = ["ClassMethodNode", "ClassNode", "CompiledDAG", "DAGContext", "DAGInputData",
           "DAGNode", "DAGOperationFuture", "FunctionNode", "InputAttributeNode",
           "InputNode", "MultiOutputNode", "plot"]


# Compiled DAGs load on first use (ctypes, channels): `import miniray.dag` stays light.
_COMPILED = ("CompiledDAG", "DAGContext", "DAGOperationFuture")


def __getattr__(name):
    if name in _COMPILED:
        from . import compiled

        return getattr(compiled, name)
    from .._surface import missing

    raise missing(__name__, name)
