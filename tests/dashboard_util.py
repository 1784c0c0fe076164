"""Helpers for the dashboard tests: start a Dashboard on a real node, and a
raw WebSocket client that can stop reading (a stalled browser tab)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct

from miniray.dashboard.server import Dashboard


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET)
    sock.bind((host, 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def on_loop(runtime, coroutine, timeout: float = 15):
    return asyncio.run_coroutine_threadsafe(coroutine, runtime.loop).result(timeout)


@contextlib.contextmanager
def running_dashboard(runtime, host: str = "127.0.0.1", **options):
    dashboard = Dashboard(runtime, listening_socket(host), **options)
    try:
        on_loop(runtime, dashboard.start())
        yield dashboard
    finally:
        on_loop(runtime, dashboard.stop())


def local_url(dashboard) -> str:
    """The URL to reach a dashboard from this machine, whatever it bound."""
    return f"http://127.0.0.1:{dashboard.port}"


class RawWebSocket:
    """A minimal blocking WebSocket client over a plain socket, so a test can
    shrink its receive buffer and simply not read."""

    def __init__(self, port: int, path: str = "/ws/events", recv_buffer: int | None = None,
                 headers: dict | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if recv_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ", 2)[1])

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def receive(self):
        """The next text message as JSON (server frames are never masked)."""
        while True:
            first, second = self._read(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._read(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._read(8))
            payload = self._read(length)
            if opcode == 0x1:
                return json.loads(payload)
            if opcode == 0x8:
                raise ConnectionError("server closed the WebSocket")

    def close(self) -> None:
        self.sock.close()
