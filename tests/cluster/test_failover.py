"""Killing a cluster mid-run: the breaker opens, queued and retried work goes
to the other cluster, nothing is lost; the cluster comes back through
half-open. Slow (it restarts a Ray cluster)."""

from __future__ import annotations

import signal
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


@miniray.remote
def slow_on_arm(seconds, i):
    """Sleeps only on the arm cluster (the one killed), so the time to a result
    elsewhere is the failover itself, not the task's run time."""
    import time as _time

    import ray

    arch = "arm64" if "arm64" in ray.cluster_resources() else "x86_64"
    if arch == "arm64":
        _time.sleep(seconds)
    return i, arch


@pytest.mark.slow
def test_dead_cluster_fails_over_at_once_and_a_hung_one_is_not_dead(node, ray_clusters):
    """Default settings (probe_timeout 5 s, breaker_failures 3): a cluster
    whose processes are stopped for a while is slow, not dead; once they are
    SIGKILLed, work in flight there moves to the other cluster as soon as the
    driver sees the head's port refuse connections, not after ~18 s of
    failed probes."""
    x86, arm = ray_clusters["x86"], ray_clusters["arm"]
    mc.connect([x86.config(), arm.config(prefer=True, max_inflight=2)], include_local=False)
    try:
        assert miniray.get(slow_on_arm.options(cluster="x86").remote(0, -1), timeout=60) \
            == (-1, "x86_64")
        # Hung (SIGSTOP) for 3 s: longer than Ray needs to answer, shorter than
        # the breaker's patience. Work stays there and finishes there.
        slow = [slow_on_arm.remote(1.0, i) for i in range(2)]
        _wait_for(lambda: mc.status()["clusters"][1]["inflight"] == 2, 30, "work on arm")
        arm.signal(signal.SIGSTOP)
        time.sleep(3.0)
        arm.signal(signal.SIGCONT)
        assert sorted(miniray.get(slow, timeout=60)) == [(0, "arm64"), (1, "arm64")]
        assert mc.status()["clusters"][1]["breaker"]["times_opened"] == 0
        # Dead (SIGKILL): the in-flight work finishes on x86 within seconds.
        refs = [slow_on_arm.remote(60, i) for i in range(2)]
        _wait_for(lambda: mc.status()["clusters"][1]["inflight"] == 2, 30, "work on arm")
        time.sleep(0.5)  # running in Ray's workers, not just sent
        killed = time.monotonic()
        arm.stop()
        ready, _ = miniray.wait(refs, num_returns=1, timeout=60)
        failover = time.monotonic() - killed
        assert ready and miniray.get(ready[0])[1] == "x86_64"
        assert sorted(miniray.get(refs, timeout=60)) == [(0, "x86_64"), (1, "x86_64")]
        arm_status = mc.status()["clusters"][1]
        assert "Ray processes died" in arm_status["breaker"]["last_error"], arm_status
        # ~18 s before (three 5 s probe timeouts); ~1 s now. The bound leaves
        # room for a loaded machine and still fails the probe-based path.
        assert failover < 10, f"failover took {failover:.1f}s"
    finally:
        mc.disconnect()
        if not arm.group_pids():
            arm.start()
            arm.wait_started()
