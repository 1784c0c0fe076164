"""miniray.dag: Ray's DAG API (.bind(), InputNode, MultiOutputNode, execute)."""

from __future__ import annotations

import os
import time

import pytest

import miniray
from miniray.dag import ClassMethodNode, DAGNode, FunctionNode, InputNode, MultiOutputNode


def test_functions_chain_and_input_is_the_single_argument(ray):
    @ray.remote
    def add(x, y):
        return x + y

    @ray.remote
    def double(x):
        return 2 * x

    with InputNode() as inp:
        summed = add.bind(inp, 1)
        dag = double.bind(summed)
    assert isinstance(dag, FunctionNode) and isinstance(dag, DAGNode)
    assert dag.upstream() == [summed]
    ref = dag.execute(4)
    assert isinstance(ref, miniray.ObjectRef)
    assert ray.get(ref) == 10
    assert ray.get(dag.execute(0)) == 2  # a graph runs again with new input


def test_input_attributes_indexes_and_kwargs(ray):
    @ray.remote
    def combine(a, b, c):
        return (a, b, c)

    with InputNode() as inp:
        dag = combine.bind(inp[0], inp[1], inp.scale)
    assert ray.get(dag.execute(1, 2, scale=3)) == (1, 2, 3)

    with InputNode() as inp:  # one value: index into it, or read its attributes
        dag = combine.bind(inp["a"], inp["b"], inp["a"])
    assert ray.get(dag.execute({"a": 5, "b": 6})) == (5, 6, 5)

    with InputNode() as inp:
        dag = combine.bind(inp[0], inp[1], inp[2])
    with pytest.raises(ValueError, match="input 2"):
        dag.execute(1, 2)


def test_multi_output_and_shared_nodes_run_once(ray, tmp_path):
    counter = tmp_path / "runs"

    @ray.remote
    def source(x, path):
        with open(path, "a") as f:
            f.write("x")
        return x

    @ray.remote
    def inc(x):
        return x + 1

    @ray.remote
    def dec(x):
        return x - 1

    with InputNode() as inp:
        shared = source.bind(inp, str(counter))
        dag = MultiOutputNode([inc.bind(shared), dec.bind(shared)])
    refs = dag.execute(10)
    assert isinstance(refs, list) and ray.get(refs) == [11, 9]
    assert counter.read_text() == "x"  # the shared upstream node ran once


def test_actor_class_and_method_binds(ray):
    @ray.remote
    class Accumulator:
        def __init__(self, start):
            self.total = start

        def add(self, x):
            self.total += x
            return self.total

    with InputNode() as inp:
        actor = Accumulator.bind(100)
        dag = actor.add.bind(inp)
    assert isinstance(dag, ClassMethodNode)
    assert ray.get(dag.execute(1)) == 101
    assert ray.get(dag.execute(1)) == 101  # a ClassNode creates its actor per execute

    handle = Accumulator.remote(0)  # methods of a live actor keep its state
    with InputNode() as inp:
        first = handle.add.bind(inp)
        dag = handle.add.bind(first)
    assert ray.get(dag.execute(5)) == 10
    assert ray.get(dag.execute(1)) == 22  # 10 + 1, then + 11


def test_execute_submits_everything_at_once(ray, tmp_path):
    # The downstream task gets the upstream's ref as its argument: execute()
    # returns before the upstream finishes (no round trip through the driver).
    gate = tmp_path / "gate"

    @ray.remote
    def wait_for(path):
        while not os.path.exists(path):
            time.sleep(0.01)
        return "opened"

    @ray.remote
    def shout(text):
        return text.upper()

    with InputNode() as inp:
        dag = shout.bind(wait_for.bind(inp))
    started = time.monotonic()
    ref = dag.execute(str(gate))
    assert time.monotonic() - started < 5
    ready, _ = ray.wait([ref], timeout=0.2)
    assert ready == []
    gate.touch()
    assert ray.get(ref, timeout=20) == "OPENED"


def test_options_on_bound_nodes(ray):
    @ray.remote
    def pair():
        return 1, 2

    @ray.remote
    class Splitter:
        def split(self):
            return "a", "b"

    node = pair.options(num_returns=2).bind()
    assert ray.get(node.execute()) == [1, 2]
    actor = Splitter.remote()
    assert ray.get(actor.split.options(num_returns=2).bind().execute()) == ["a", "b"]


async def test_execute_async_on_a_running_loop(ray):
    @ray.remote
    def square(x):
        return x * x

    with InputNode() as inp:
        dag = square.bind(inp)
    ref = await dag.execute_async(7)
    assert await ref == 49


def test_nodes_cannot_be_passed_to_tasks(ray):
    @ray.remote
    def identity(x):
        return x

    node = identity.bind(1)
    with pytest.raises(TypeError, match="dag.execute"):
        identity.remote(node)
