"""miniray.cluster: per-task dispatch overhead against submitting to the same
Ray cluster directly (same run), and CPU-bound throughput over two clusters
against one.

    python benchmarks/bench_cluster.py [--tasks 300] [--cpu-tasks 16]

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
        mini = bench_miniray((x86, arm), args.tasks, args.cpu_tasks, args.cpu_seconds)
        serial, batch = bench_direct_ray(arm, args.tasks)
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


if __name__ == "__main__":
    main()
