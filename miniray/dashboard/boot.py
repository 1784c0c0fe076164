"""Start the dashboard for a node without making ``init()`` wait for aiohttp.

The listening socket is bound here, synchronously, so the URL is known (and
printed) at once; aiohttp (about 0.4 s to import) loads in the background and
starts serving that socket. Connections made meanwhile wait in the backlog.
"""

from __future__ import annotations

import ipaddress
import socket
import sys

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8265


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int, fallback: bool) -> socket.socket:
    """A listening socket on host:port (or the next free port if ``fallback``)."""
    last = None
    for candidate in range(port, port + (50 if fallback else 1)):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
            sock.listen(128)
            sock.setblocking(False)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    if fallback:
        raise OSError(f"No free port for the dashboard on {host} from {port} to "
                      f"{port + 49} ({last}); pass dashboard_port=... or "
                      "include_dashboard=False.")
    raise OSError(f"Cannot listen on {host}:{port} for the dashboard ({last}). Choose "
                  "another dashboard_port, or leave it out to take the next free one.")


def _preload() -> None:
    import aiohttp.web  # noqa: F401

    from . import app, stream  # noqa: F401


def launch(runtime, host: str | None, port: int | None, token: str, quiet: bool = False):
    """Bind, create the Dashboard and start it on the node's loop; returns it."""
    from .server import Dashboard

    host = host or DEFAULT_HOST
    sock = bind(host, DEFAULT_PORT if port is None else int(port), fallback=port is None)
    dashboard = Dashboard(runtime, sock, token=token)
    runtime.dashboard = dashboard
    loop = runtime.loop

    def report(future):
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            print(f"miniray: the dashboard failed to start: {exc!r}", file=sys.stderr)
            if runtime.dashboard is dashboard:
                runtime.dashboard = None
            sock.close()

    async def start():
        import asyncio

        # A shutdown before the start is done cancels it: else the loop would
        # stop with this task pending ("Task was destroyed but it is pending!").
        runtime.dashboard_boot = asyncio.current_task()
        # aiohttp takes ~0.4 s to import: do it off the loop so tasks submitted
        # right after init() are not held up behind it.
        await loop.run_in_executor(None, _preload)
        if runtime.dashboard is dashboard:  # not shut down meanwhile
            await dashboard.start()

    if runtime.owns_loop:
        import asyncio

        asyncio.run_coroutine_threadsafe(start(), loop).add_done_callback(report)
    else:
        loop.create_task(start()).add_done_callback(report)
    if not quiet:
        # The token stays out of the log: the context init() returns has it.
        needs = "" if is_loopback(host) else \
            " (open /?token=<init().dashboard_token> once to sign in)"
        print(f"miniray: dashboard at {dashboard.url}{needs}", file=sys.stderr)
    return dashboard
