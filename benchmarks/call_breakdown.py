#!/usr/bin/env python
"""Where one sync call's time goes, per thread: CPU time of the caller's thread,
the node's loop thread and the worker process per call, from the kernel's
scheduler statistics (/proc/.../schedstat: nanoseconds on a CPU, and waiting
for one), over a run of ``get(f.remote())`` (or ``get(a.m.remote())``).

    python benchmarks/call_breakdown.py [--calls N] [--actor] [--routed]

``--routed`` turns direct calls off (MINIRAY_DIRECT=0): the path through the
node's loop thread. Wall time per call minus the three CPU times is time no
thread of the call was running: wake-ups (a thread made runnable, then put on
a CPU) and waiting for a CPU another process holds (this machine is shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


_TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")


def _schedstat(path: str):
    """(ns on a CPU, ns runnable waiting for one, ns in user mode, ns in the kernel)."""
    with open(path) as f:
        run, wait, _ = f.read().split()
    with open(path.replace("schedstat", "stat")) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(run), int(wait), int(fields[11]) * _TICK_NS, int(fields[12]) * _TICK_NS


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--actor", action="store_true")
    parser.add_argument("--routed", action="store_true")
    args = parser.parse_args()
    if args.routed:
        os.environ["MINIRAY_DIRECT"] = "0"
    import miniray as ray
    from miniray._core.refs import get_client

    ray.init(num_cpus=2, include_dashboard=False)

    @ray.remote
    def noop():
        return None

    @ray.remote
    class Actor:
        def m(self):
            return None

    if args.actor:
        actor = Actor.remote()
        call = actor.m.remote
    else:
        call = noop.remote
    for _ in range(2000):
        ray.get(call())
    runtime = get_client().runtime
    me = threading.get_native_id()
    node_tid = runtime.thread.native_id
    pids = [w.pid for w in runtime.workers.values()]
    paths = {"caller thread": [f"/proc/self/task/{me}/schedstat"],
             "node loop thread": [f"/proc/self/task/{node_tid}/schedstat"],
             "worker process(es)": [f"/proc/{pid}/schedstat" for pid in pids]}
    before = {k: [_schedstat(p) for p in v] for k, v in paths.items()}
    t0 = time.perf_counter_ns()
    for _ in range(args.calls):
        ray.get(call())
    wall = (time.perf_counter_ns() - t0) / args.calls
    after = {k: [_schedstat(p) for p in v] for k, v in paths.items()}
    # The caller's two halves: .remote() (build and hand over or send) and get()
    # (wait, read the reply, decode the value).
    perf = time.perf_counter_ns
    in_remote = in_get = 0
    for _ in range(args.calls // 4):
        t1 = perf()
        ref = call()
        t2 = perf()
        ray.get(ref)
        in_remote += t2 - t1
        in_get += perf() - t2
    in_remote /= args.calls // 4
    in_get /= args.calls // 4
    stats = getattr(get_client().direct, "stats", None) if get_client().direct else None
    ray.shutdown()
    kind = "actor call" if args.actor else "task"
    mode = "routed (MINIRAY_DIRECT=0)" if args.routed else "direct"
    print(f"{kind}, {mode}: {args.calls} sync calls, {wall / 1000:.1f} us per call "
          f"({1e9 / wall:,.0f}/s)")
    total = 0.0
    for key in paths:
        run, wait, user, system = (
            sum(a[i] - b[i] for a, b in zip(after[key], before[key])) / args.calls
            for i in range(4))
        total += run
        kernel = system / (user + system) if user + system else 0.0
        print(f"  {key:20s} on CPU {run / 1000:6.1f} us/call ({kernel:.0%} in the kernel), "
              f"runnable but waiting for a CPU {wait / 1000:6.1f} us/call")
    print(f"  {'no thread running':20s}        {max(wall - total, 0) / 1000:6.1f} us/call "
          "(wake-ups, and CPUs taken by other processes)")
    print(f"  caller's wall time: {in_remote / 1000:.1f} us in .remote(), "
          f"{in_get / 1000:.1f} us in get()")
    if stats:
        print(f"  direct stats: {stats}")


if __name__ == "__main__":
    main()
