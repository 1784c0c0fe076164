"""Drivers connected to a head node (``miniray start``; ``init(address=...)``).

Owns ``drivers``, ``ended_drivers``, ``_driver_servers`` and
``_unauthenticated``. A connected driver
is a DriverConn: it makes the same requests as a worker and what it holds is
released when it disconnects, like a dead worker's.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import time

from .. import protocol as P
from .state import DriverConn
from .streams import Streams


class DriverServer(Streams):
    def _init_drivers(self) -> None:
        self.drivers: dict[int, DriverConn] = {}
        self.ended_drivers: collections.deque = collections.deque(maxlen=1000)  # list_jobs
        self._driver_servers: list = []

    def _disconnect_drivers(self) -> None:
        """Shutting down: stop listening and drop every connected driver."""
        for server in self._driver_servers:
            server.close()
        self._driver_servers = []
        for conn in list(self.drivers.values()):
            conn.transport.abort()

    # -- drivers connected to a head node ----------------------------------------------
    async def serve_drivers(self, token: str, unix_path: str | None = None,
                            host: str | None = None, port: int | None = None) -> list:
        """Accept drivers (``miniray.init(address=...)``) on a Unix socket and/or
        TCP; each must present ``token`` first. Returns the bound addresses."""
        import hmac

        runtime = self
        expected = token.encode()

        self._unauthenticated = 0  # connections that have not presented the token yet

        class Protocol(asyncio.Protocol):
            def __init__(self):
                self.unpacker = P.new_handshake_unpacker()
                self.conn = None
                self.transport = None
                self.timer = None
                self.counted = False

            def connection_made(self, transport):
                self.transport = transport
                if runtime._unauthenticated >= P.MAX_UNAUTHENTICATED:
                    runtime.counters["drivers_rejected"] += 1
                    transport.abort()
                    return
                runtime._unauthenticated += 1
                self.counted = True
                self.timer = runtime.loop.call_later(P.HANDSHAKE_DEADLINE_S, self._expire)

            def _expire(self):
                self.timer = None
                if self.conn is None:
                    runtime.counters["drivers_timed_out"] += 1
                    self.transport.abort()

            def _settle(self):
                if self.counted:
                    self.counted = False
                    runtime._unauthenticated -= 1
                if self.timer is not None:
                    self.timer.cancel()
                    self.timer = None

            def _refuse(self, why: str):
                runtime.counters["drivers_rejected"] += 1
                self._settle()
                self.transport.write(P.pack(["denied", why]))
                self.transport.close()

            def data_received(self, data):
                if self.conn is None:
                    if self.transport.is_closing():
                        return
                    try:
                        self.unpacker.feed(data)
                        message = next(self.unpacker, None)
                    except Exception:  # BufferFull, malformed msgpack
                        self._refuse("the handshake is malformed or larger than "
                                     f"{P.HANDSHAKE_MAX_BYTES} bytes")
                        return
                    if message is None:
                        return  # not all of the hello yet
                    if not self._handshake(message):
                        return
                    data = self.unpacker.read_bytes(P.HANDSHAKE_MAX_BYTES)
                    self.unpacker = P.new_unpacker()
                    if not data:
                        return
                self.unpacker.feed(data)
                try:
                    for message in self.unpacker:
                        try:
                            runtime._on_message(self.conn, message)
                        except Exception as exc:
                            # A malformed message from a driver: say so, keep serving.
                            print(f"miniray: a driver (pid {self.conn.pid}) sent a message "
                                  f"the node could not handle: {exc!r}", file=sys.stderr)
                except Exception as exc:  # not msgpack: the stream cannot be resynced
                    print(f"miniray: closing the connection of driver pid {self.conn.pid}: "
                          f"its stream is not valid msgpack ({exc!r})", file=sys.stderr)
                    self.transport.close()
                runtime._schedule()

            def _handshake(self, message) -> bool:
                ok = (isinstance(message, list) and len(message) >= 3
                      and message[0] == "hello" and isinstance(message[1], str)
                      and hmac.compare_digest(message[1].encode(), expected))
                if not ok:
                    self._refuse("wrong or missing token")
                    return False
                if type(message[2]) is not int or message[2] <= 0:
                    self._refuse("the hello must carry the driver's pid")
                    return False
                self._settle()
                conn = DriverConn(runtime._take_worker_id(), message[2], self.transport)
                self.conn = conn
                runtime.drivers[conn.worker_id] = conn
                runtime.workers_by_pid[conn.pid] = conn
                runtime.counters["drivers_connected"] += 1
                from .introspect import command_line, driver_job_id

                conn.entrypoint = command_line(conn.pid)
                self.transport.write(P.pack(["welcome", {**runtime.node_info(),
                                                         "job_id": driver_job_id(runtime, conn)}]))
                return True

            def connection_lost(self, exc):
                self._settle()
                if self.conn is not None:
                    runtime._on_driver_lost(self.conn)

        addresses = []
        if unix_path is not None:
            server = await self.loop.create_unix_server(Protocol, path=unix_path)
            os.chmod(unix_path, 0o600)
            self._driver_servers.append(server)
            addresses.append(unix_path)
        if port is not None:
            server = await self.loop.create_server(Protocol, host or "127.0.0.1", port)
            self._driver_servers.append(server)
            bound = server.sockets[0].getsockname()
            addresses.append(f"{bound[0]}:{bound[1]}")
        return addresses

    def node_info(self) -> dict:
        return {
            "node_pid": self.node_pid, "capacity": self.capacity,
            "arena_size": self.arena_size, "namespace": self.namespace,
            "store_dir": self.store_dir,
            "total": self.total, "session_dir": self.spill_dir,
            "dashboard_url": getattr(self.dashboard, "url", None),
        }

    def _on_driver_lost(self, conn: DriverConn) -> None:
        if conn.dead:
            return
        conn.dead = True
        conn.ended_at = time.time()
        self.ended_drivers.append(conn)
        self.drivers.pop(conn.worker_id, None)
        if self.workers_by_pid.get(conn.pid) is conn:
            del self.workers_by_pid[conn.pid]
        if self._closing:
            return
        self._release_pins(conn)
        self._drop_reservation(conn)
        # Its refs go, so its non-detached actors and unreachable objects go too.
        self._release_held(conn)
        self._schedule()
