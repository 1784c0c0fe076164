"""Killing a cluster mid-run: the breaker opens, queued and retried work goes
to the other cluster, nothing is lost; the cluster comes back through
half-open. Slow (it restarts a Ray cluster)."""

from __future__ import annotations

import time

import pytest

import miniray
import miniray.cluster as mc

from .conftest import FAST


@miniray.remote
def work(seconds, i):
    import time as _time

    import ray

    _time.sleep(seconds)
    return i, "arm64" if "arm64" in ray.cluster_resources() else "x86_64"


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {mc.status()['clusters']}")


@pytest.mark.slow
def test_kill_cluster_mid_run_then_recover(node, ray_clusters):
    x86, arm = ray_clusters["x86"], ray_clusters["arm"]
    mc.connect([x86.config(max_inflight=4), arm.config(max_inflight=4, prefer=True)],
               settings=FAST, include_local=False)
    refs = [work.remote(0.3, i) for i in range(24)]
    _wait_for(lambda: mc.status()["clusters"][1]["inflight"] > 0, 30, "work on arm")
    arm.stop()                                    # the whole cluster dies, hard
    results = miniray.get(refs, timeout=120)      # every submission returns
    assert sorted(i for i, _ in results) == list(range(24))
    status = {c["name"]: c for c in mc.status()["clusters"]}
    assert status["arm"]["breaker"]["times_opened"] >= 1
    assert status["arm"]["breaker"]["state"] in ("open", "half_open")
    assert status["x86"]["counters"]["succeeded"] >= 1
    assert sum(1 for _, c in results if c == "x86_64") >= 1
    # Work pinned to the dead cluster waits (it does not fail), and runs once
    # the cluster is back and its breaker closed through a half-open probe.
    pinned = work.options(cluster="arm").remote(0, 99)
    ready, _ = miniray.wait([pinned], timeout=1.0)
    assert not ready
    arm.start()
    arm.wait_started()
    _wait_for(lambda: mc.status()["clusters"][1]["breaker"]["state"] == "closed", 90,
              "the breaker to close")
    assert miniray.get(pinned, timeout=60) == (99, "arm64")
    assert miniray.get(work.options(tags=["arm64"]).remote(0, 5), timeout=60) == (5, "arm64")


def test_unreachable_cluster_at_connect_is_retried(node, ray_clusters):
    dead = mc.ClusterConfig("ghost", "127.0.0.1:9", tags=["arm64"], auth_token="x")
    settings = mc.Settings(**{**vars(FAST), "connect_timeout": 15.0})
    with pytest.warns(RuntimeWarning, match="ghost"):
        mc.connect([ray_clusters["x86"].config(), dead], settings=settings,
                   include_local=False)
    status = {c["name"]: c for c in mc.status()["clusters"]}
    assert status["ghost"]["breaker"]["state"] in ("open", "half_open")
    # Work that only the dead cluster could take waits; the rest runs.
    assert miniray.get(work.remote(0, 1), timeout=60) == (1, "x86_64")
    stuck = work.options(cluster="ghost").remote(0, 2)
    assert not miniray.wait([stuck], timeout=0.5)[0]
