"""An aiohttp web service whose handlers await miniray tasks.

    python examples/async_service.py [--host 127.0.0.1] [--port 8080]
    python examples/async_service.py --self-test

``GET /compute?n=N`` runs ``compute(N)`` as a miniray task and answers with its
result as JSON; the handler does ``result = await ray.get(compute.remote(n))``,
so the event loop keeps serving other requests while the task runs in a worker
process.

``ray.init()`` is called at application startup, in async code inside the running
event loop (an ``app.cleanup_ctx`` generator), so the miniray node runs on the
service's own loop: awaiting a task's result needs no thread hop.
``ray.shutdown()`` runs at application cleanup.

``--self-test`` starts the app on 127.0.0.1 on a free port, sends a few
concurrent requests with aiohttp's client, prints the answers, checks them and
exits with status 0.

Needs aiohttp (``pip install -e '.[dashboard]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time

from aiohttp import ClientSession, web

import miniray as ray

DEFAULT_NUM_CPUS = 2


@ray.remote
def compute(n: int) -> dict:
    """Some CPU work: the sum of the squares below ``n``, the slow way."""
    total = 0
    for i in range(n):
        total += i * i
    return {"n": n, "sum_of_squares": total, "worker_pid": os.getpid()}


# -- the application --------------------------------------------------------------

async def handle_compute(request: web.Request) -> web.Response:
    try:
        n = int(request.query.get("n", "1000"))
    except ValueError:
        raise web.HTTPBadRequest(text="n must be an integer") from None
    if not 0 <= n <= 10_000_000:
        raise web.HTTPBadRequest(text="n must be between 0 and 10,000,000")
    started = time.perf_counter()
    result = await ray.get(compute.remote(n))  # awaitable: this is async code
    result["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return web.json_response(result)


async def handle_health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "resources": ray.available_resources()})


def make_cleanup_ctx(num_cpus: int):
    async def miniray_node(app: web.Application):
        ray.init(num_cpus=num_cpus)  # the node runs on this (the service's) event loop
        try:
            yield
        finally:
            ray.shutdown()

    return miniray_node


def make_app(num_cpus: int = DEFAULT_NUM_CPUS) -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(make_cleanup_ctx(num_cpus))
    app.router.add_get("/compute", handle_compute)
    app.router.add_get("/health", handle_health)
    return app


# -- self-test --------------------------------------------------------------------

def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


async def self_test(num_cpus: int) -> int:
    host = "127.0.0.1"
    port = free_port(host)
    runner = web.AppRunner(make_app(num_cpus))
    await runner.setup()  # runs the startup half of cleanup_ctx: ray.init()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        base = f"http://{host}:{port}"
        print(f"serving on {base}")
        sizes = [10, 1_000, 100_000, 200_000, 300_000, 50_000]
        async with ClientSession() as session:
            async def fetch(n: int) -> dict:
                async with session.get(f"{base}/compute", params={"n": str(n)}) as resp:
                    resp.raise_for_status()
                    return await resp.json()

            started = time.perf_counter()
            results = await asyncio.gather(*(fetch(n) for n in sizes))
            elapsed = time.perf_counter() - started
            for r in results:
                print(f"  GET /compute?n={r['n']:<7} -> sum_of_squares={r['sum_of_squares']}"
                      f"  (worker pid {r['worker_pid']}, {r['elapsed_ms']} ms)")
            print(f"{len(sizes)} concurrent requests answered in {elapsed * 1000:.0f} ms")

            async with session.get(f"{base}/health") as resp:
                health = await resp.json()
            print(f"  GET /health -> {health}")
            async with session.get(f"{base}/compute", params={"n": "oops"}) as resp:
                bad_status = resp.status
            print(f"  GET /compute?n=oops -> HTTP {bad_status}")

        for n, r in zip(sizes, results):
            expected = (n - 1) * n * (2 * n - 1) // 6
            if r["n"] != n or r["sum_of_squares"] != expected:
                print(f"self-test FAILED: n={n}: got {r}, expected {expected}")
                return 1
        if not health.get("ok") or bad_status != 400:
            print(f"self-test FAILED: health={health}, bad request status={bad_status}")
            return 1
    finally:
        await runner.cleanup()  # runs the cleanup half: ray.shutdown()
    print("async_service self-test OK")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--num-cpus", type=int, default=DEFAULT_NUM_CPUS)
    parser.add_argument("--self-test", action="store_true",
                        help="serve on a free port, send a few requests, check them, exit")
    args = parser.parse_args(argv)
    if args.self_test:
        return asyncio.run(self_test(args.num_cpus))
    web.run_app(make_app(args.num_cpus), host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
