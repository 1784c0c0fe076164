"""The DAG's nodes: a plain graph of what to call with what.

A node holds what it calls (a remote function, an actor class, an actor
method), its bound arguments (values, or other nodes: the edges) and its
options. Nothing runs when a graph is built. :meth:`DAGNode.execute` walks it
once, upstream first, and submits each node as a task (or actor call, or actor
creation) whose arguments are the ObjectRefs of the nodes it depends on, so the
whole graph is submitted at once and runs as a pipeline: each task starts when
its inputs are ready, with no round trip through the driver in between.

Invariants: a node is immutable once bound (options make a new node); each node
runs at most once per ``execute`` (a node two others depend on is shared, as in
Ray); the graph is acyclic by construction (a node can only name nodes that
existed before it). A later compiler can read the same structure:
:meth:`DAGNode.upstream` gives the edges, :meth:`DAGNode.topological_order`
an order to run them in.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any, Callable

_ids = itertools.count()


class DAGNode:
    """Base of all nodes: bound ``args``, ``kwargs`` and ``options``."""

    def __init__(self, args: tuple = (), kwargs: dict | None = None,
                 options: dict | None = None, other_args_to_resolve: dict | None = None):
        self._bound_args = tuple(args)
        self._bound_kwargs = dict(kwargs or {})
        self._bound_options = dict(options or {})
        self._bound_other_args_to_resolve = dict(other_args_to_resolve or {})
        self._stable_uuid = uuid.uuid4().hex
        self._order = next(_ids)

    # -- the graph ----------------------------------------------------------------
    def get_args(self) -> tuple:
        return self._bound_args

    def get_kwargs(self) -> dict:
        return dict(self._bound_kwargs)

    def get_options(self) -> dict:
        return dict(self._bound_options)

    def get_other_args_to_resolve(self) -> dict:
        return dict(self._bound_other_args_to_resolve)

    def get_stable_uuid(self) -> str:
        return self._stable_uuid

    def upstream(self) -> list["DAGNode"]:
        """The nodes this one takes as input (in its arguments, at any depth)."""
        found: list = []
        for value in (self._bound_args, self._bound_kwargs,
                      self._bound_other_args_to_resolve):
            _collect_nodes(value, found)
        unique = {id(node): node for node in found}
        return list(unique.values())

    def topological_order(self) -> list["DAGNode"]:
        """Every node this one depends on, then this one; each once."""
        order: list = []
        seen: set = set()
        stack: list = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for parent in reversed(node.upstream()):
                if id(parent) not in seen:
                    stack.append((parent, False))
        return order

    def apply_recursive(self, fn: Callable[["DAGNode"], Any]) -> Any:
        """``fn`` applied to each node, upstream first, each once; returns
        ``fn(self)``. Ray's hook for walking a graph."""
        results: dict = {}
        for node in self.topological_order():
            results[id(node)] = fn(node)
        return results[id(self)]

    def traverse_and_apply(self, fn: Callable[["DAGNode"], Any]) -> None:
        for node in self.topological_order():
            fn(node)

    # -- running -----------------------------------------------------------------------
    def execute(self, *args, **kwargs):
        """Submit the whole graph; returns the output's ObjectRef (a list of refs for
        a :class:`MultiOutputNode`). ``args``/``kwargs`` are what the graph's
        :class:`InputNode` stands for."""
        return _Execution(args, kwargs).run(self)

    async def execute_async(self, *args, **kwargs):
        """:meth:`execute` from async code: ``ref = await dag.execute_async(x)``,
        then ``await ref`` for the value. Submitting never blocks the loop."""
        return self.execute(*args, **kwargs)

    def experimental_compile(self, _submit_timeout: float | None = None,
                             _buffer_size_bytes: int | None = None,
                             enable_asyncio: bool = False,
                             _max_inflight_executions: int | None = None,
                             _max_buffered_results: int | None = None,
                             _overlap_gpu_communication: bool | None = None,
                             _default_communicator=None):
        """Compile this graph of actor methods into a
        :class:`~miniray.dag.compiled.CompiledDAG` that runs over shared-memory
        channels, without the scheduler (Ray's Compiled Graphs): see
        ``docs/compiled-dags.md``. ``enable_asyncio=True`` for ``execute_async``.
        The GPU options are accepted for compatibility and unused."""
        from .compiled import CompiledDAG

        if getattr(self, "_compiled", False):
            raise ValueError(
                "It is not allowed to call `experimental_compile` on the same DAG "
                "object multiple times no matter whether `teardown` is called or not. "
                "Please reuse the existing compiled DAG or create a new one.")
        compiled = CompiledDAG(self, submit_timeout=_submit_timeout,
                               buffer_size_bytes=_buffer_size_bytes,
                               enable_asyncio=enable_asyncio,
                               max_inflight_executions=_max_inflight_executions,
                               max_buffered_results=_max_buffered_results)
        self._compiled = True
        return compiled

    def _with_options(self, options: dict) -> "DAGNode":
        """This node with ``options`` (what ``f.options(...).bind()`` builds)."""
        return self.options(**options) if options else self

    def _execute_impl(self, execution: "_Execution", args: tuple, kwargs: dict,
                      other: dict):
        raise NotImplementedError

    def __reduce__(self):
        raise TypeError(
            f"A {type(self).__name__} cannot be passed to a task or stored: a DAG is "
            "built and run in the driver. Call dag.execute(...) and pass its result "
            "(an ObjectRef) instead.")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()}, id={self._stable_uuid[:8]})"

    def _describe(self) -> str:
        return ""


def _collect_nodes(value, found: list) -> None:
    if isinstance(value, DAGNode):
        found.append(value)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _collect_nodes(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_nodes(item, found)


class _Execution:
    """One ``execute``: each node's result, computed once."""

    def __init__(self, args: tuple, kwargs: dict):
        self.input_args = args
        self.input_kwargs = kwargs
        self.results: dict[int, Any] = {}

    def run(self, root: DAGNode):
        results = self.results
        for node in root.topological_order():
            results[id(node)] = node._execute_impl(
                self,
                self.resolve(node._bound_args),
                self.resolve(node._bound_kwargs),
                self.resolve(node._bound_other_args_to_resolve))
        return results[id(root)]

    def resolve(self, value):
        """``value`` with each node replaced by its result (at any depth; a ref
        nested in a container reaches the task as a ref, as in Ray)."""
        if isinstance(value, DAGNode):
            return self.results[id(value)]
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.resolve(v) for v in value)
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, (set, frozenset)):
            return type(value)(self.resolve(v) for v in value)
        return value


class _RemoteNode(DAGNode):
    """A node that calls ``.remote()`` on a remote function or actor class."""

    def __init__(self, body, args, kwargs, options):
        self._body = body
        super().__init__(args, kwargs, options)

    def _execute_impl(self, execution, args, kwargs, other):
        target = self._body.options(**self._bound_options) if self._bound_options \
            else self._body
        return target.remote(*args, **kwargs)

    def options(self, **options):
        return type(self)(self._body, self._bound_args, self._bound_kwargs,
                          {**self._bound_options, **options})


class FunctionNode(_RemoteNode):
    """``remote_function.bind(*args)``: a task."""

    def _describe(self) -> str:
        return getattr(self._body, "_name", repr(self._body))


class ClassNode(_RemoteNode):
    """``ActorClass.bind(*args)``: creating an actor. ``node.method.bind(...)``
    calls a method of it. Each ``execute`` creates the actor anew (Ray's
    interpreted DAGs do the same); bind methods of an existing handle
    (``actor.method.bind(...)``) to reuse one actor across executions."""

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._body._meta:
            raise AttributeError(f"Actor class {self._body.__name__} has no method {name!r}")
        return _UnboundClassMethod(self, name, {})

    def _describe(self) -> str:
        return self._body.__name__


class _UnboundClassMethod:
    """``class_node.method``: ``.bind(...)`` makes a :class:`ClassMethodNode`."""

    def __init__(self, parent, method_name: str, options: dict):
        self._parent = parent
        self._method_name = method_name
        self._options = options

    def options(self, **options) -> "_UnboundClassMethod":
        return _UnboundClassMethod(self._parent, self._method_name,
                                   {**self._options, **options})

    def bind(self, *args, **kwargs) -> "ClassMethodNode":
        return ClassMethodNode(self._parent, self._method_name, args, kwargs, self._options)


class ClassMethodNode(DAGNode):
    """A call of an actor method: of a :class:`ClassNode`'s actor, or of a live
    actor handle (``handle.method.bind(...)``)."""

    def __init__(self, parent, method_name: str, args, kwargs, options):
        self._method_name = method_name
        # The parent (a ClassNode, or an ActorHandle) is resolved like an argument.
        super().__init__(args, kwargs, options, {"parent": parent})

    def _execute_impl(self, execution, args, kwargs, other):
        method = getattr(other["parent"], self._method_name)
        if self._bound_options:
            method = method.options(**self._bound_options)
        return method.remote(*args, **kwargs)

    def options(self, **options) -> "ClassMethodNode":
        return ClassMethodNode(self._bound_other_args_to_resolve["parent"], self._method_name,
                               self._bound_args, self._bound_kwargs,
                               {**self._bound_options, **options})

    def _describe(self) -> str:
        return self._method_name


class DAGInputData:
    """What an :class:`InputNode` stands for when ``execute`` got several
    arguments or keyword arguments: ``inp[0]``, ``inp["key"]``, ``inp.key``."""

    def __init__(self, *args, **kwargs):
        self._args = list(args)
        self._kwargs = kwargs

    def __getitem__(self, key):
        if isinstance(key, int):
            return self._args[key]
        return self._kwargs[key]


class _PartsOfInput(DAGNode):
    """``node[key]`` and ``node.name`` make a node for that part of the input."""

    def __getitem__(self, key) -> "InputAttributeNode":
        return InputAttributeNode(self, key, "__getitem__")

    def __getattr__(self, name: str) -> "InputAttributeNode":
        if name.startswith("_"):
            raise AttributeError(name)
        return InputAttributeNode(self, name, "__getattr__")


class InputNode(_PartsOfInput):
    """The graph's input: what ``dag.execute(...)`` is called with.

    ``with InputNode() as inp:`` builds a graph over it. With one positional
    argument, ``inp`` is that value; with several (or keyword arguments) take
    them with ``inp[0]``, ``inp[1]``, ``inp["name"]`` or ``inp.name``. The same
    indexing also reaches into a single value (``inp["key"]`` of a dict,
    ``inp.attr`` of an object).
    """

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise ValueError("InputNode() takes no arguments; pass the inputs to "
                             "dag.execute(...)")
        super().__init__()

    def __enter__(self) -> "InputNode":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def _execute_impl(self, execution, args, kwargs, other):
        given_args, given_kwargs = execution.input_args, execution.input_kwargs
        if len(given_args) == 1 and not given_kwargs:
            return given_args[0]
        return DAGInputData(*given_args, **given_kwargs)


class InputAttributeNode(_PartsOfInput):
    """``inp[key]`` or ``inp.name``: one part of the input."""

    def __init__(self, input_node, key, accessor: str):
        self._key = key
        self._accessor = accessor
        super().__init__(other_args_to_resolve={"input": input_node})

    def _execute_impl(self, execution, args, kwargs, other):
        value = other["input"]
        if isinstance(value, DAGInputData):
            try:
                return value[self._key]
            except (IndexError, KeyError):
                raise ValueError(
                    f"the DAG reads input {self._key!r}, but execute() was called with "
                    f"{len(value._args)} positional and keyword arguments "
                    f"{sorted(value._kwargs)}") from None
        if self._accessor == "__getattr__":
            return getattr(value, self._key)
        return value[self._key]

    def _describe(self) -> str:
        return repr(self._key)


class MultiOutputNode(DAGNode):
    """Several outputs: ``execute`` returns a list of ObjectRefs, one per node."""

    def __init__(self, outputs, options: dict | None = None):
        outputs = list(outputs)
        if not outputs or not all(isinstance(node, DAGNode) for node in outputs):
            raise TypeError("MultiOutputNode takes a non-empty list of DAG nodes")
        super().__init__((outputs,), options=options)

    def _execute_impl(self, execution, args, kwargs, other):
        return list(args[0])


def bind_function(remote_function, args, kwargs, options=None) -> FunctionNode:
    return FunctionNode(remote_function, args, kwargs, options or {})


def bind_class(actor_class, args, kwargs, options=None) -> ClassNode:
    return ClassNode(actor_class, args, kwargs, options or {})


def bind_method(handle, method_name: str, args, kwargs, options=None) -> ClassMethodNode:
    return ClassMethodNode(handle, method_name, args, kwargs, options or {})
