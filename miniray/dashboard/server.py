"""The dashboard server: aiohttp in the node process, on the node's loop.

:class:`Dashboard` serves the JSON API (:mod:`.api`), the WebSocket event
stream (:mod:`.stream`), Prometheus text (:mod:`.prometheus`), the web page
(``static/``) and every route registered in :mod:`.routes`. It runs on the
same event loop as the scheduler, so handlers read scheduler state directly;
they must stay short and never block.

This module does not import aiohttp (``import miniray`` stays light); it is
imported by :meth:`Dashboard.start`.

Security: on a loopback socket, read-only endpoints are open to local
clients (Host must be a loopback name, which defeats DNS rebinding); any
other bind requires the token on every request and on the WebSocket
handshake. Routes registered with ``mutating=True`` always require it.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import secrets
import socket

TOKEN_COOKIE = "miniray_dashboard_token"
# A connection that sends no complete request for this long is closed (the
# clock starts at connect and restarts after each response), headers are held
# to these sizes, and at most MAX_CONNECTIONS are open at once (WebSockets
# included): a local client costs the node a bounded amount, token or not.
IDLE_TIMEOUT_S = 5.0
MAX_HEADERS = 64
MAX_LINE_SIZE = 8190
MAX_CONNECTIONS = 128


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Dashboard:
    """The live dashboard of one node.

    Args:
        runtime: the node (:class:`miniray._core.node.runtime.NodeRuntime`).
        sock: a bound, listening TCP socket; the dashboard owns it from now on
            and closes it in :meth:`stop`.
        token: the secret that authorizes requests (``Authorization: Bearer``,
            ``?token=``, or the cookie set by opening ``/?token=...``). When
            ``None`` a random one is made; read it from :attr:`token`.
        ws_interval: seconds between WebSocket pushes while anything changes.
        client_queue: messages buffered per WebSocket client before the oldest
            are dropped (and counted to the client).
        require_token: require the token on every request; by default only
            when ``sock`` is bound beyond loopback.
        ws_send_buffer: kernel send buffer of each WebSocket connection, in
            bytes; bounds what a stalled client can hold before the
            drop-oldest queue takes over.
    """

    def __init__(self, runtime, sock: socket.socket, *, token: str | None = None,
                 ws_interval: float = 0.5, client_queue: int = 64,
                 require_token: bool | None = None, ws_send_buffer: int = 256 * 1024):
        if ws_interval <= 0:
            raise ValueError(f"ws_interval must be positive, got {ws_interval!r}")
        if client_queue < 1:
            raise ValueError(f"client_queue must be at least 1, got {client_queue!r}")
        if sock.type != socket.SOCK_STREAM:
            raise ValueError("the dashboard needs a TCP (SOCK_STREAM) socket")
        self.runtime = runtime
        self.sock = sock
        self.token = token or secrets.token_urlsafe(24)
        self.ws_interval = ws_interval
        self.client_queue = client_queue
        self.ws_send_buffer = ws_send_buffer
        host, port = sock.getsockname()[:2]
        self.host = host
        self.port = port
        self.loopback = _is_loopback(host)
        self.require_token = (not self.loopback) if require_token is None else require_token
        if host in ("0.0.0.0", "::"):
            shown = socket.gethostname()
        else:
            shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        self.stream = None  # the WebSocket hub, made in start()
        self._runner = None
        self._site = None
        self._lock = asyncio.Lock()
        self._stopped = False

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running" if self._runner else "new"
        return f"<Dashboard {self.url} {state}>"

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        """Serve on the socket. Runs on the node's loop."""
        async with self._lock:
            if self._stopped:
                raise RuntimeError("this dashboard was stopped; make a new one")
            if self._runner is not None:
                return
            from aiohttp import web

            from .app import build_app
            from .stream import EventStream

            self.stream = EventStream(self.runtime, interval=self.ws_interval,
                                      queue_size=self.client_queue,
                                      send_buffer=self.ws_send_buffer)
            app = build_app(self)
            runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                   shutdown_timeout=1.0, keepalive_timeout=IDLE_TIMEOUT_S,
                                   max_headers=MAX_HEADERS, max_line_size=MAX_LINE_SIZE,
                                   max_field_size=MAX_LINE_SIZE)
            await runner.setup()
            _cap_connections(runner.server, MAX_CONNECTIONS)
            try:
                site = web.SockSite(runner, self.sock)
                await site.start()
            except BaseException:
                await runner.cleanup()
                raise
            self._runner, self._site = runner, site
            self.stream.start()

    async def stop(self) -> None:
        """Close WebSockets, stop serving, close the socket. Safe to call twice."""
        async with self._lock:
            self._stopped = True
            runner, self._runner = self._runner, None
            if self.stream is not None:
                await self.stream.close()
            if runner is not None:
                await runner.cleanup()
            # cleanup() closed the listening socket if serving ever started;
            # closing again is harmless and covers the never-started case.
            self.sock.close()

    def close_now(self) -> None:
        """Stop listening at once, without awaiting (a node shut down from inside
        the loop it runs on, which may never run again). Open WebSockets are
        aborted; prefer :meth:`stop` when the loop can run."""
        self._stopped = True
        stream = self.stream
        if stream is not None:
            stream._closing = True
            if stream._task is not None:
                stream._task.cancel()
            for client in list(stream.clients):
                if client.sender is not None:
                    client.sender.cancel()
                transport = getattr(getattr(client.ws, "_req", None), "transport", None)
                if transport is not None:
                    transport.abort()
        site = self._site
        server = getattr(site, "_server", None) if site is not None else None
        if server is not None:
            server.close()
        self._runner = self._site = None
        self.sock.close()

    # -- authorization -------------------------------------------------------------
    def token_from(self, request) -> str | None:
        """The token a request presents (header, query or cookie), if any."""
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            return header[7:].strip()
        token = request.query.get("token")
        if token:
            return token
        return request.cookies.get(TOKEN_COOKIE)

    def is_authorized(self, request) -> bool:
        """Whether the request carries the right token."""
        presented = self.token_from(request)
        return presented is not None and hmac.compare_digest(
            presented.encode(), self.token.encode())


def _cap_connections(server, limit: int) -> None:
    """Abort each connection beyond ``limit`` open ones as it is made."""
    made = server.connection_made

    def connection_made(handler, transport):
        made(handler, transport)
        if len(server.connections) > limit:
            transport.abort()

    server.connection_made = connection_made
