"""``miniray.dag.plot``: the DAG in Graphviz's DOT language, or rendered by
Graphviz's ``dot`` where it is installed (a clear ImportError where not)."""

from __future__ import annotations

import re
import shutil

import pytest

import miniray
from miniray.dag import InputNode, MultiOutputNode, plot


@miniray.remote
def preprocess(x):
    return x + 1


@miniray.remote
class Model:
    def predict(self, x):
        return x * 2


def _graph():
    with InputNode() as inp:
        a = preprocess.bind(inp[0])
        b = preprocess.bind(inp[1])
        model = Model.bind()
        dag = MultiOutputNode([model.predict.bind(a), model.predict.bind(b)])
    return dag


def _edges(text):
    return set(re.findall(r'"([^"]+)" -> "([^"]+)";', text))


def test_plot_to_a_dot_file_writes_the_graph_with_rays_node_names(tmp_path):
    path = tmp_path / "dag.dot"
    assert plot(_graph(), to_file=str(path)) is None
    text = path.read_text()
    assert text.startswith("digraph G {") and "rankdir=LR;" in text
    assert _edges(text) == {
        ("INPUT_NODE", "INPUT_ATTRIBUTE_NODE_0"), ("INPUT_NODE", "INPUT_ATTRIBUTE_NODE_1"),
        ("INPUT_ATTRIBUTE_NODE_0", "preprocess"), ("INPUT_ATTRIBUTE_NODE_1", "preprocess_1"),
        ("Model", "predict"), ("preprocess", "predict"),
        ("Model", "predict_1"), ("preprocess_1", "predict_1"),
        ("predict", "MultiOutputNode"), ("predict_1", "MultiOutputNode"),
    }
    single = tmp_path / "one.gv"
    plot(preprocess.bind(1), to_file=str(single))
    assert '"preprocess";' in single.read_text() and "->" not in single.read_text()


def test_plot_to_an_image_without_graphviz_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` here
    with pytest.raises(ImportError, match="Graphviz's `dot` program.*plot to a .dot file"):
        plot(_graph(), to_file=str(tmp_path / "dag.png"))
    with pytest.raises(ImportError, match="Graphviz"):
        plot(_graph())  # Ray's default: a temporary .png
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match="takes a DAG node"):
        plot(preprocess)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_plot_renders_with_graphviz(tmp_path):
    path = tmp_path / "dag.svg"
    plot(_graph(), to_file=str(path))
    assert "<svg" in path.read_text() and "MultiOutputNode" in path.read_text()
