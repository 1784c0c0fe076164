"""Drawing a DAG: Ray's ``ray.dag.plot``.

The graph is written in Graphviz's DOT language by miniray itself (Ray needs
pydot for that); only rendering to an image (``.png``, ``.svg``, ``.pdf``...)
runs Graphviz's ``dot`` program. A ``.dot``/``.gv`` file needs nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from .nodes import (ClassMethodNode, ClassNode, DAGNode, FunctionNode, InputAttributeNode,
                    InputNode, MultiOutputNode)

__all__ = ["plot", "to_dot"]

_TEXT_FORMATS = {"dot", "gv"}


def _names(nodes: list) -> dict:
    """Ray's node names: INPUT_NODE, INPUT_ATTRIBUTE_NODE_<key>, MultiOutputNode,
    else the function, class or method name (or options' ``name``), with a
    ``_1``, ``_2``... suffix on repeats."""
    seen: dict = {}
    names = {}
    for node in nodes:
        if isinstance(node, InputNode):
            name = "INPUT_NODE"
        elif isinstance(node, MultiOutputNode):
            name = "MultiOutputNode"
        elif isinstance(node, InputAttributeNode):
            name = f"INPUT_ATTRIBUTE_NODE_{node._key}"
        else:
            if isinstance(node, ClassMethodNode):
                base = node.get_options().get("name") or node._method_name
            elif isinstance(node, (ClassNode, FunctionNode)):
                base = (node.get_options().get("name")
                        or getattr(node._body, "__name__", None) or node._describe())
            else:
                base = type(node).__name__
            if base in seen:
                seen[base] += 1
                name = f"{base}_{seen[base]}"
            else:
                seen[base] = 0
                name = base
        names[id(node)] = name
    return names


def _quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(dag: DAGNode) -> str:
    """The graph in Graphviz's DOT language: a node per DAG node, an edge from
    each node to the nodes that take it as input (left to right, as Ray)."""
    if not isinstance(dag, DAGNode):
        raise TypeError(f"plot() takes a DAG node (the result of .bind()), got {dag!r}")
    nodes = dag.topological_order()
    names = _names(nodes)
    lines = ["digraph G {", "rankdir=LR;"]
    edges = [(upstream, node) for node in nodes for upstream in node.upstream()]
    for node in nodes:
        if len(nodes) == 1 or not any(node is a or node is b for a, b in edges):
            lines.append(f"{_quote(names[id(node)])};")
    for upstream, node in edges:
        lines.append(f"{_quote(names[id(upstream)])} -> {_quote(names[id(node)])};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def plot(dag: DAGNode, to_file: str | None = None):
    """Draw ``dag`` into ``to_file`` (format from its extension; ``.png`` by
    default). In IPython/Jupyter, returns the image to display (as Ray).

    ``.dot`` or ``.gv`` writes the DOT text and needs nothing else; an image
    format runs Graphviz's ``dot`` program, with an ImportError saying how to
    install it when it is missing.
    """
    text = to_dot(dag)
    temporary = None
    if to_file is None:
        temporary = tempfile.NamedTemporaryFile(suffix=".png", delete=False)
        temporary.close()
        to_file, extension = temporary.name, "png"
    else:
        to_file = os.fspath(to_file)
        extension = os.path.splitext(to_file)[1][1:].lower() or "png"
    try:
        if extension in _TEXT_FORMATS:
            with open(to_file, "w") as f:
                f.write(text)
            return None
        dot = shutil.which("dot")
        if dot is None:
            raise ImportError(
                f"Rendering a DAG to .{extension} needs Graphviz's `dot` program, which is "
                "not on PATH: install Graphviz (https://graphviz.org/download/, e.g. "
                "`apt install graphviz`), or plot to a .dot file, which needs nothing.")
        done = subprocess.run([dot, f"-T{extension}", "-o", to_file], input=text,
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ValueError(f"Graphviz could not render the DAG as .{extension}: "
                             f"{done.stderr.strip()}")
        try:
            from IPython import display
        except ImportError:
            return None
        return display.Image(filename=to_file)
    finally:
        if temporary is not None:
            try:
                os.unlink(temporary.name)
            except OSError:
                pass
