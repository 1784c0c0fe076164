"""miniray.cluster: per-task dispatch overhead against submitting to the same
Ray cluster directly (same run), and CPU-bound throughput over two clusters
against one.

    python benchmarks/bench_cluster.py [--tasks 300] [--cpu-tasks 16] [--only-failover]

Starts two one-CPU Ray clusters on 127.0.0.1 (token auth on), stops them by
PID at the end. Prints ratios; absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.cluster.conftest import RayCluster, _free_base  # noqa: E402  (the test fixture's helper)


def busy(seconds):
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def noop(x):
    return x


def slow_on(arch, seconds, i):
    """Sleeps only on the cluster offering ``arch`` (the one killed), so the
    time to a result elsewhere is the failover, not the task's run time."""
    import ray

    here = "arm64" if "arm64" in ray.cluster_resources() else "x86_64"
    if here == arch:
        time.sleep(seconds)
    return i, here


def bench_failover(clusters):
    """Default settings: SIGKILL every process of the cluster running two
    tasks -> the first of them finished on the other cluster (seconds)."""
    import miniray
    import miniray.cluster as mc

    x86, arm = clusters
    miniray.init(num_cpus=1)
    try:
        mc.connect([x86.config(), arm.config(prefer=True, max_inflight=2)], include_local=False)
        f = miniray.remote(slow_on)
        miniray.get(f.options(cluster="x86").remote("arm64", 0, -1), timeout=120)  # warm
        refs = [f.remote("arm64", 120, i) for i in range(2)]
        deadline = time.monotonic() + 60
        while mc.status()["clusters"][1]["inflight"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # running in Ray's workers
        killed = time.monotonic()
        arm.signal(9)
        ready, _ = miniray.wait(refs, num_returns=1, timeout=120)
        failover = time.monotonic() - killed
        assert ready and miniray.get(ready[0])[1] == "x86_64", "no failover"
        miniray.get(refs, timeout=120)
    finally:
        miniray.shutdown()
        arm.stop()
    return failover


def bench_direct_ray(cluster, tasks):
    """Submit to the cluster with Ray itself from this process."""
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=cluster.token,
                      RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    import ray

    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    f = ray.remote(noop)
    ray.get(f.remote(0))
    started = time.perf_counter()
    for i in range(50):
        ray.get(f.remote(i))
    serial = (time.perf_counter() - started) / 50
    started = time.perf_counter()
    ray.get([f.remote(i) for i in range(tasks)])
    batch = (time.perf_counter() - started) / tasks
    ray.shutdown()
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        os.environ.pop(key, None)
    return serial, batch


def bench_miniray(clusters, tasks, cpu_tasks, cpu_seconds):
    import miniray
    import miniray.cluster as mc

    miniray.init(num_cpus=1)
    results = {}
    try:
        x86, arm = clusters
        mc.connect([arm.config(max_inflight=64)], include_local=False)
        f = miniray.remote(noop)
        miniray.get(f.remote(0))
        started = time.perf_counter()
        for i in range(50):
            miniray.get(f.remote(i))
        results["serial"] = (time.perf_counter() - started) / 50
        started = time.perf_counter()
        miniray.get([f.remote(i) for i in range(tasks)])
        results["batch"] = (time.perf_counter() - started) / tasks
        b = miniray.remote(busy)
        miniray.get(b.remote(0.01))
        started = time.perf_counter()
        miniray.get([b.remote(cpu_seconds) for _ in range(cpu_tasks)])
        results["one_cluster"] = time.perf_counter() - started
        mc.disconnect()
        mc.connect([x86.config(), arm.config()], include_local=False)
        miniray.get([b.remote(0.01) for _ in range(4)])
        started = time.perf_counter()
        miniray.get([b.remote(cpu_seconds) for _ in range(cpu_tasks)])
        results["two_clusters"] = time.perf_counter() - started
    finally:
        miniray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--cpu-tasks", type=int, default=16)
    parser.add_argument("--cpu-seconds", type=float, default=0.25)
    parser.add_argument("--no-failover", action="store_true",
                        help="skip the failover measurement (it kills a cluster)")
    parser.add_argument("--only-failover", action="store_true")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench_cluster_")
    first = _free_base(44000)
    x86 = RayCluster("x86", "x86_64", first, f"{root}/x86", secrets.token_hex(32))
    arm = RayCluster("arm", "arm64", _free_base(first + 500), f"{root}/arm",
                     secrets.token_hex(32))
    try:
        for c in (x86, arm):
            c.start()
        for c in (x86, arm):
            c.wait_started()
        if args.only_failover:
            print(f"failover (SIGKILL of a cluster -> first in-flight task finished "
                  f"elsewhere, default settings): {bench_failover((x86, arm)):.2f}s")
            return
        mini = bench_miniray((x86, arm), args.tasks, args.cpu_tasks, args.cpu_seconds)
        serial, batch = bench_direct_ray(arm, args.tasks)
        failover = bench_failover((x86, arm)) if not args.no_failover else None
    finally:
        for c in (x86, arm):
            c.stop()
    print(f"{'':34}{'direct Ray':>12}{'miniray.cluster':>17}{'ratio':>8}")
    print(f"{'one task, get each (ms/task)':34}{serial * 1e3:12.2f}{mini['serial'] * 1e3:17.2f}"
          f"{mini['serial'] / serial:8.2f}")
    print(f"{f'{args.tasks} tasks, one get (ms/task)':34}{batch * 1e3:12.2f}"
          f"{mini['batch'] * 1e3:17.2f}{mini['batch'] / batch:8.2f}")
    print(f"dispatch overhead per task: {(mini['serial'] - serial) * 1e3:.2f} ms (round trip), "
          f"{(mini['batch'] - batch) * 1e3:.2f} ms (pipelined)")
    print(f"{args.cpu_tasks} CPU-bound tasks of {args.cpu_seconds}s: one cluster "
          f"{mini['one_cluster']:.2f}s, two clusters {mini['two_clusters']:.2f}s, speed-up "
          f"{mini['one_cluster'] / mini['two_clusters']:.2f}x")
    if failover is not None:
        print(f"failover (SIGKILL of a cluster -> first in-flight task finished elsewhere, "
              f"default settings): {failover:.2f}s")


if __name__ == "__main__":
    main()
