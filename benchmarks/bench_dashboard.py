"""Task throughput with the dashboard on (and a WebSocket client reading its
event stream) against the dashboard off, in one run.

    python benchmarks/bench_dashboard.py [--seconds 3] [--rounds 3] [--batch 2000]

Rounds alternate off/on so drift (CPU frequency, other load) hits both
sides alike; each side's figure is the median of its rounds. The client is a
separate process, like a browser tab, subscribed to every kind of event and
the metrics samples. Prints tasks/s for each side and on/off as a ratio (the
target is >= 0.90). Compare ratios, not absolute numbers, across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import miniray  # noqa: E402

CLIENT = r"""
import asyncio, json, sys
import aiohttp

async def main(url):
    counts = {"messages": 0, "task_events": 0, "dropped": 0, "bytes": 0}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url) as ws:
            print("connected", flush=True)
            reader = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            while not reader.done():
                try:
                    message = await asyncio.wait_for(ws.receive(), 0.2)
                except asyncio.TimeoutError:
                    continue
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(message.data)
                counts["messages"] += 1
                counts["bytes"] += len(message.data)
                if data["type"] == "update":
                    counts["task_events"] += len(data["events"].get("task", ()))
                elif data["type"] == "dropped":
                    counts["dropped"] += data["messages"]
    print(json.dumps(counts), flush=True)

asyncio.run(main(sys.argv[1]))
"""


@miniray.remote
def noop(i):
    return i


def throughput(seconds: float, batch: int) -> float:
    done = 0
    started = time.perf_counter()
    while True:
        done += len(miniray.get([noop.remote(i) for i in range(batch)]))
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed


def on_loop(runtime, coroutine):
    return asyncio.run_coroutine_threadsafe(coroutine, runtime.loop).result(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per round")
    parser.add_argument("--rounds", type=int, default=3, help="per side")
    parser.add_argument("--batch", type=int, default=2000, help="tasks per ray.get")
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()

    from miniray.dashboard.server import Dashboard

    miniray.init(num_cpus=args.num_cpus, include_dashboard=False)
    from miniray import api

    runtime = api._runtime
    try:
        throughput(1.0, args.batch)  # warm up: workers started, code paths hot
        rates = {"off": [], "on": []}
        client_counts = []
        for _ in range(args.rounds):
            rates["off"].append(throughput(args.seconds, args.batch))
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            sock.setblocking(False)
            dashboard = Dashboard(runtime, sock)
            on_loop(runtime, dashboard.start())
            client = subprocess.Popen(
                [sys.executable, "-c", CLIENT, dashboard.url.replace("http", "ws") + "/ws/events"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                assert client.stdout.readline().strip() == "connected"
                rates["on"].append(throughput(args.seconds, args.batch))
            finally:
                out, _ = client.communicate("", timeout=30)
                on_loop(runtime, dashboard.stop())
            client_counts.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        miniray.shutdown()

    off = statistics.median(rates["off"])
    on = statistics.median(rates["on"])
    print(f"core: {'pure Python' if os.environ.get('MINIRAY_PUREPYTHON') else 'compiled'}, "
          f"{args.num_cpus} CPUs, batches of {args.batch}, {args.rounds} x {args.seconds:g} s "
          "per side")
    print(f"dashboard off            {off:10.0f} tasks/s   rounds: "
          + ", ".join(f"{r:.0f}" for r in rates["off"]))
    print(f"dashboard on + 1 client  {on:10.0f} tasks/s   rounds: "
          + ", ".join(f"{r:.0f}" for r in rates["on"]))
    messages = sum(c["messages"] for c in client_counts)
    print(f"client received {messages} messages, "
          f"{sum(c['task_events'] for c in client_counts)} task events, "
          f"{sum(c['bytes'] for c in client_counts) / 1e6:.1f} MB, "
          f"{sum(c['dropped'] for c in client_counts)} dropped")
    print(f"on/off ratio: {on / off:.3f}  (target >= 0.90)")


if __name__ == "__main__":
    main()
