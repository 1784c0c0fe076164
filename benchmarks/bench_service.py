"""An async web service offloading ~5 ms CPU-bound calls to a worker pool.

    python benchmarks/bench_service.py [--rounds 3] [--systems miniray,ray,pool]
                                       [--clients 16] [--task-ms 5] [--duration 5]

The service (an aiohttp app, its own process) answers each request by awaiting
one call of a pure-Python busy loop (a fixed number of iterations, calibrated
once to ~``--task-ms`` of CPU here and passed to every system) on:

* ``miniray``: ``await f.remote(n)`` (``miniray.init(num_cpus=2)``),
* ``ray``: ``await f.remote(n)`` (``ray.init(num_cpus=2)``),
* ``pool``: ``await loop.run_in_executor(ProcessPoolExecutor(2), f, n)``.

A load generator (another process) keeps ``--clients`` HTTP/1.1 keep-alive
connections busy, one request at a time each, warms up, then counts the
requests answered in ``--duration`` seconds. Each call returns its worker's
pid and the (CLOCK_MONOTONIC) times it started and ended, so the service
reports, over the same window, how busy the 2 workers were and the mean gap
on a worker between the end of one call and the start of the next: what a
scheduler that hands a worker its next task late costs.

Rounds: every round runs each system once, the order rotating, and the table
shows each system's median over rounds and the median of the per-round ratios
(their range in brackets). The machine's load drifts, so compare within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORKERS = 2  # --workers
SYSTEMS = ("miniray", "ray", "pool", "base")  # base: miniray from --base-path


def spin(n: int):
    """The CPU-bound call: a pure-Python loop of ``n`` iterations; returns the
    worker's pid and when the loop started and ended."""
    start = time.perf_counter()
    x = 0
    for i in range(n):
        x += i
    return os.getpid(), start, time.perf_counter()


def calibrate(task_ms: float) -> int:
    n = 20_000
    best = float("inf")
    for _ in range(5):
        _, t0, t1 = spin(n)
        best = min(best, t1 - t0)
    return max(1, int(n * task_ms / 1000.0 / best))


# -- the service -------------------------------------------------------------------
def serve(system: str, port: int, iterations: int, path: str) -> None:
    from aiohttp import web

    records = []  # (pid, start, end) of every call answered
    window = [time.perf_counter(), time.process_time(), {}]
    stop = None

    if system in ("miniray", "base"):
        sys.path.insert(0, path)
        import miniray as api
    elif system == "ray":
        import ray as api
    if system != "pool":
        kwargs = {"include_dashboard": False, "log_to_driver": False} if system == "ray" else {}
        api.init(num_cpus=WORKERS, **kwargs)
        remote_spin = api.remote(spin)
        # Both workers up and the function known to them before the clock runs.
        api.get([remote_spin.remote(iterations) for _ in range(4 * WORKERS)])

        async def call():
            return await remote_spin.remote(iterations)
    else:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(WORKERS)
        list(pool.map(spin, [iterations] * (4 * WORKERS)))

        async def call():
            return await asyncio.get_running_loop().run_in_executor(pool, spin, iterations)

    async def handle(request):
        records.append(await call())
        return web.Response(text="ok")

    async def reset(request):
        # The workers seen so far (the warm-up reached both) and their CPU.
        workers = {pid: _cpu_seconds(pid) for pid, _, _ in records}
        records.clear()
        window[:] = [time.perf_counter(), time.process_time(), workers]
        return web.Response(text="ok")

    async def stats(request):
        stats = _worker_stats(records, window[0], time.perf_counter())
        # CPU the service process (every thread: for miniray its node too) used
        # per call: on a 2-core machine, taken from the workers.
        calls = max(1, len(records))
        stats["service_cpu_ms"] = 1000 * (time.process_time() - window[1]) / calls
        # And the workers' (all their threads): the call itself plus what
        # taking and answering it costs there.
        stats["worker_cpu_ms"] = 1000 * sum(
            _cpu_seconds(pid) - cpu for pid, cpu in window[2].items()) / calls
        return web.json_response(stats)

    async def main():
        nonlocal stop
        stop = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
        app = web.Application()
        app.add_routes([web.get("/", handle), web.get("/reset", reset),
                        web.get("/stats", stats)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("READY", flush=True)
        await stop
        await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        if system == "pool":
            pool.shutdown()
        else:
            api.shutdown()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (every thread), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker_stats(records, t0: float, t1: float) -> dict:
    """Busy fraction of the workers over [t0, t1] and the gaps on each worker
    between one call's end and the next one's start."""
    by_pid = {}
    for pid, start, end in records:
        by_pid.setdefault(pid, []).append((start, end))
    busy = 0.0
    gaps = []
    for spans in by_pid.values():
        spans.sort()
        for start, end in spans:
            busy += max(0.0, min(end, t1) - max(start, t0))
        gaps.extend(b[0] - a[1] for a, b in zip(spans, spans[1:]))
    gaps.sort()
    return {
        "calls": len(records),
        "pids": len(by_pid),
        "busy": busy / (WORKERS * (t1 - t0)),
        "gap_mean_ms": 1000 * statistics.fmean(gaps) if gaps else None,
        "gap_p50_ms": 1000 * gaps[len(gaps) // 2] if gaps else None,
        "task_mean_ms": 1000 * statistics.fmean(e - s for _, s, e in records) if records else None,
    }


# -- the load generator --------------------------------------------------------------
async def _get(reader, writer, path: str) -> bytes:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return await reader.readexactly(length)


async def load(port: int, clients: int, warmup: float, duration: float) -> dict:
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(clients + 1)]
    control = conns.pop()
    counting = False
    done = 0
    running = True

    async def client(reader, writer):
        nonlocal done
        while running:
            await _get(reader, writer, "/")
            if counting:
                done += 1

    tasks = [asyncio.ensure_future(client(r, w)) for r, w in conns]
    await asyncio.sleep(warmup)
    await _get(*control, "/reset")
    counting = True
    t0 = time.perf_counter()
    await asyncio.sleep(duration)
    counting = False
    elapsed = time.perf_counter() - t0
    stats = json.loads(await _get(*control, "/stats"))
    running = False
    await asyncio.gather(*tasks)
    for _, writer in conns + [control]:
        writer.close()
    stats["req_s"] = done / elapsed
    return stats


# -- the parent ----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_one(system: str, args, iterations: int) -> dict:
    port = _free_port()
    path = args.base_path if system == "base" else args.miniray_path
    env = dict(os.environ)
    env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    service = subprocess.Popen(
        [sys.executable, __file__, "--serve", system, "--port", str(port),
         "--iterations", str(iterations), "--miniray-path", path,
         "--workers", str(args.workers)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if not args.verbose else None,
        text=True, start_new_session=True, env=env)
    try:
        line = service.stdout.readline()
        if line.strip() != "READY":
            return {"error": f"the {system} service did not start (exit {service.poll()})"}
        loader = subprocess.run(
            [sys.executable, __file__, "--load", "--port", str(port),
             "--clients", str(args.clients), "--warmup", str(args.warmup),
             "--duration", str(args.duration)],
            capture_output=True, text=True, timeout=args.duration + args.warmup + 60)
        if loader.returncode != 0:
            return {"error": loader.stderr.strip().splitlines()[-1:] or ["load failed"]}
        return json.loads(loader.stdout)
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def parent(args) -> int:
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown system(s) {sorted(unknown)}; pick from {SYSTEMS}")
    if "base" in systems and not args.base_path:
        raise SystemExit("the 'base' system is miniray from --base-path: give that path")
    iterations = args.iterations or calibrate(args.task_ms)
    print(f"# {args.workers} workers, {args.clients} clients, calls of {iterations} loop iterations "
          f"(~{args.task_ms} ms here), {args.duration} s per system per round, "
          f"{args.rounds} round(s); load {os.getloadavg()[0]:.2f}", flush=True)
    rounds = []
    for r in range(args.rounds):
        order = systems[r % len(systems):] + systems[:r % len(systems)]
        results = {}
        for system in order:
            results[system] = res = run_one(system, args, iterations)
            print(f"round {r + 1} {system:8s} " + (
                res["error"] if "error" in res else
                f"{res['req_s']:7.1f} req/s  busy {100 * res['busy']:5.1f} %  "
                f"gap mean {_fmt(res['gap_mean_ms'], '.3f')} ms  "
                f"p50 {_fmt(res['gap_p50_ms'], '.3f')} ms  "
                f"call {_fmt(res['task_mean_ms'], '.2f')} ms  "
                f"CPU/req service {res['service_cpu_ms']:.2f} ms "
                f"workers {res['worker_cpu_ms']:.2f} ms"), flush=True)
        rounds.append(results)

    def med(system, key):
        values = [r[system][key] for r in rounds
                  if "error" not in r[system] and r[system][key] is not None]
        return statistics.median(values) if values else None

    def ratio(a, b):
        values = sorted(r[a]["req_s"] / r[b]["req_s"] for r in rounds
                        if "error" not in r[a] and "error" not in r[b])
        if not values:
            return "-"
        return f"{statistics.median(values):.2f}x [{values[0]:.2f}-{values[-1]:.2f}]"

    print()
    print("| system | req/s | workers busy | mean gap (ms) | p50 gap (ms) | call (ms) "
          "| service CPU (ms/req) | worker CPU (ms/req) |")
    print("|---|---|---|---|---|---|---|---|")
    for system in systems:
        busy = med(system, "busy")
        print(f"| {system} | {_fmt(med(system, 'req_s'), '.1f')} | "
              f"{_fmt(busy and 100 * busy, '.1f')} % | {_fmt(med(system, 'gap_mean_ms'), '.3f')} | "
              f"{_fmt(med(system, 'gap_p50_ms'), '.3f')} | {_fmt(med(system, 'task_mean_ms'), '.2f')} "
              f"| {_fmt(med(system, 'service_cpu_ms'), '.2f')} "
              f"| {_fmt(med(system, 'worker_cpu_ms'), '.2f')} |")
    if "miniray" in systems:
        print()
        for other, target in (("pool", " (target >= 1.05x)"), ("ray", " (target >= 1.5x)"),
                              ("base", "")):
            if other in systems:
                print(f"miniray/{other} req/s: {ratio('miniray', other)}{target}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"iterations": iterations, "rounds": rounds}, fh, indent=1)
    return 0


def main(argv=None) -> int:
    global WORKERS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--workers", type=int, default=WORKERS,
                   help="pool size (num_cpus for miniray and Ray); default 2")
    p.add_argument("--task-ms", type=float, default=5.0)
    p.add_argument("--iterations", type=int, default=0,
                   help="loop iterations per call (default: calibrated to --task-ms)")
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--json", help="write every round's numbers here")
    p.add_argument("--miniray-path", default=REPO,
                   help="the checkout whose miniray is measured (default: this one)")
    p.add_argument("--base-path", help="the checkout whose miniray the 'base' system runs "
                   "(e.g. before a change), to compare in the same run")
    p.add_argument("--verbose", action="store_true", help="show the services' stderr")
    p.add_argument("--serve", choices=SYSTEMS, help=argparse.SUPPRESS)
    p.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    WORKERS = args.workers
    if args.serve:
        serve(args.serve, args.port, args.iterations, args.miniray_path)
        return 0
    if args.load:
        print(json.dumps(asyncio.run(load(args.port, args.clients, args.warmup,
                                          args.duration))))
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
