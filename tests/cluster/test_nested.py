"""The same program all the way down: miniray calls inside tasks and actors
that run on a Ray cluster go to that cluster (through Ray), give the results
the local node gives, and never start a miniray node inside a Ray worker."""

from __future__ import annotations

import os
import tempfile

import pytest

import miniray
import miniray.cluster as mc
from miniray._core.store import shm

from .conftest import FAST


@miniray.remote
def leaf(x):
    return x * 2, os.getpid()


@miniray.remote
def total(d):
    # Refs nested in a dict and in a list reach the task as refs.
    values = miniray.get(d["refs"])
    return sum(v for v, _ in values) + miniray.get(d["boxed"][0])


@miniray.remote
class Acc:
    def __init__(self, start):
        self.total = start

    def add(self, x):
        self.total += x
        return self.total

    def pid(self):
        return os.getpid()


@miniray.remote
def program(n):
    if not miniray.is_initialized():  # a common guard: true in any worker, Ray's included
        miniray.init()
    refs = [leaf.remote(i) for i in range(n)]
    ready, rest = miniray.wait(refs, num_returns=n, timeout=120)
    nested = total.remote({"refs": refs, "boxed": [miniray.put(100)]})
    acc = Acc.remote(1)
    for value, _ in miniray.get(refs):
        acc.add.remote(value)
    result = (miniray.get(nested), miniray.get(acc.add.remote(0)), len(ready), len(rest))
    pids = {os.getpid(), miniray.get(acc.pid.remote())} | {pid for _, pid in miniray.get(refs)}
    return result, sorted(pids)


@miniray.remote
def sum_nested(items, scale=None):
    """Refs the driver made, nested in a dict, a list and a keyword argument."""
    return (sum(miniray.get(items["refs"])) + miniray.get(items["one"][0])) \
        * miniray.get(scale["by"])


@miniray.remote
def init_inside():
    """An explicit init() inside a task starts no node on Ray."""
    info = miniray.init()
    return dict(info), os.getpid()


@miniray.remote
def fan_out(n):
    """Returns refs it made, nested in a dict and a list."""
    return {"refs": [leaf.remote(i) for i in range(n)], "boxed": [miniray.put("seven")]}


def assert_no_miniray_node_in(pids) -> None:
    segments = [n for n in shm.list_segments() if shm.parse_name(n)[0] in pids]
    assert not segments, f"miniray segments of Ray worker processes: {segments}"
    spills = [e for e in os.listdir(tempfile.gettempdir())
              if any(e.startswith(f"miniray_spill_{pid}_") for pid in pids)]
    assert not spills, f"miniray spill directories of Ray worker processes: {spills}"


def test_nested_program_through_clusters_matches_local(node, ray_clusters):
    mc.connect([ray_clusters["arm"].config()], settings=FAST)
    expected, _ = miniray.get(program.options(cluster="local").remote(4), timeout=120)
    assert expected == (112, 13, 4, 0)
    result, pids = miniray.get(program.options(cluster="arm").remote(4), timeout=240)
    assert result == expected
    assert os.getpid() not in pids and len(pids) >= 2
    info, pid = miniray.get(init_inside.options(cluster="arm").remote(), timeout=120)
    assert info == {"backend": "ray", "in_ray_worker": True}
    assert_no_miniray_node_in(pids + [pid])


def test_driver_refs_nested_in_arguments_reach_ray_as_refs(node, ray_clusters):
    mc.connect([ray_clusters["arm"].config()], settings=FAST)
    items = {"refs": [miniray.put(i) for i in range(3)] + [leaf.options(cluster="local")
                                                           .remote(5)],
             "one": [miniray.put(10)]}
    items["refs"][-1] = miniray.put(miniray.get(items["refs"][-1])[0])
    scale = {"by": miniray.put(2)}
    expected = miniray.get(sum_nested.options(cluster="local").remote(items, scale=scale),
                           timeout=60)
    assert expected == (0 + 1 + 2 + 10 + 10) * 2
    assert miniray.get(sum_nested.options(cluster="arm").remote(items, scale=scale),
                       timeout=120) == expected
    counter = Acc.options(cluster="arm").remote(1)
    assert miniray.get(counter.add.remote(3), timeout=120) == 4


def test_refs_nested_in_results_from_ray_can_be_got(node, ray_clusters):
    mc.connect([ray_clusters["arm"].config()], settings=FAST)
    results = {}
    for cluster in ("local", "arm"):
        out = miniray.get(fan_out.options(cluster=cluster).remote(3), timeout=120)
        assert all(isinstance(r, miniray.ObjectRef) for r in out["refs"] + out["boxed"])
        results[cluster] = ([v for v, _ in miniray.get(out["refs"], timeout=60)],
                            miniray.get(out["boxed"][0], timeout=60))
    assert results["arm"] == results["local"] == ([0, 2, 4], "seven")


def test_nested_program_with_backend_ray(ray_clusters, monkeypatch):
    arm = ray_clusters["arm"]
    monkeypatch.setenv("RAY_AUTH_TOKEN", arm.token)
    miniray.init(num_cpus=1, backend="ray", address=arm.address)
    try:
        result, pids = miniray.get(program.remote(3), timeout=240)
        assert result == (106, 7, 3, 0)
        assert_no_miniray_node_in(pids)
    finally:
        miniray.shutdown()
