"""``miniray.util.collective``: Ray's collective calls between actors, on gloo,
with torch tensors and numpy arrays changed in place."""

from __future__ import annotations

import glob
import os
import tempfile
import time

import numpy as np
import pytest

pytest.importorskip("torch")


class Member:
    def __init__(self, rank):
        self.rank = rank

    def join(self, world_size, group):
        import miniray.util.collective as col

        col.init_collective_group(world_size, self.rank, backend="gloo", group_name=group)
        return col.get_rank(group), col.get_collective_group_size(group)

    def run(self, group):
        import torch

        import miniray.util.collective as col

        out = {}
        col.barrier(group_name=group)  # joins a group declared from the driver
        rank = out["rank"] = col.get_rank(group)
        a = np.full(3, rank + 1.0)
        col.allreduce(a, group_name=group)
        out["allreduce"] = a.tolist()
        m = torch.tensor([float(rank + 2)])
        col.allreduce(m, group_name=group, op=col.ReduceOp.MAX)
        out["max"] = m.item()
        b = np.array([rank * 10.0])
        col.broadcast(b, src_rank=1, group_name=group)
        out["broadcast"] = b.tolist()
        parts = [np.zeros(1) for _ in range(2)]
        col.allgather(parts, np.array([rank + 5.0]), group_name=group)
        out["allgather"] = [p.tolist() for p in parts]
        mine = np.zeros(1)
        col.reducescatter(mine, [np.array([1.0]), np.array([2.0])], group_name=group)
        out["reducescatter"] = mine.tolist()
        if rank == 0:
            col.send(torch.tensor([42.0]), dst_rank=1, group_name=group)
        else:
            got = torch.zeros(1)
            col.recv(got, src_rank=0, group_name=group)
            out["recv"] = got.item()
        col.barrier(group_name=group)
        col.destroy_collective_group(group)
        out["after"] = col.is_group_initialized(group)
        return out


def test_actors_reduce_broadcast_gather_and_exchange_tensors(ray):
    cls = ray.remote(num_cpus=0)(Member)
    members = [cls.remote(rank) for rank in range(2)]
    assert ray.get([m.join.remote(2, "g1") for m in members], timeout=90) == [(0, 2), (1, 2)]
    results = ray.get([m.run.remote("g1") for m in members], timeout=90)
    for rank, out in enumerate(results):
        assert out["allreduce"] == [3.0, 3.0, 3.0]
        assert out["max"] == 3.0
        assert out["broadcast"] == [10.0]
        assert out["allgather"] == [[5.0], [6.0]]
        assert out["reducescatter"] == [[2.0], [4.0]][rank]
        assert out["after"] is False
    assert results[1]["recv"] == 42.0
    node = ray.get_runtime_context().get_node_id()
    pattern = os.path.join(tempfile.gettempdir(), f"miniray_collective_{os.getuid()}_{node}_*")
    deadline = time.monotonic() + 10
    while glob.glob(pattern) and time.monotonic() < deadline:  # the last member removes it
        time.sleep(0.1)
    assert not glob.glob(pattern)


def test_a_group_declared_from_the_driver_is_joined_on_first_use(ray):
    from miniray.util import collective

    cls = ray.remote(num_cpus=0)(Member)
    members = [cls.remote(rank) for rank in range(2)]
    collective.create_collective_group(members, 2, ranks=[1, 0], group_name="declared")

    results = ray.get([m.run.remote("declared") for m in members], timeout=90)
    assert [r["rank"] for r in results] == [1, 0]  # as declared
    assert results[0]["recv"] == 42.0  # rank 1 receives
    assert results[0]["broadcast"] == results[1]["broadcast"] == [10.0]
    assert results[0]["reducescatter"] == [4.0] and results[1]["reducescatter"] == [2.0]
    with pytest.raises(ValueError, match="Failed to look up"):
        ray.get_actor("miniray_collective_info_declared")  # destroy dropped the declaration


def test_bad_collective_calls_say_what_to_do(ray):
    from miniray.util import collective

    with pytest.raises(ValueError, match="use backend='gloo'"):
        collective.init_collective_group(2, 0, backend="nccl", group_name="x")
    with pytest.raises(ValueError, match="rank must be in"):
        collective.init_collective_group(2, 5, group_name="x")
    with pytest.raises(RuntimeError, match="not initialized in this process"):
        collective.allreduce(np.zeros(1), group_name="nobody")
    assert collective.get_rank("nobody") == -1 and not collective.nccl_available()
