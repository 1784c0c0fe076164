"""Parent side of a Ray cluster's driver process (see ``_ray_driver``).

All methods run on the control loop. Each request gets an id; its future is
resolved by the reader task when the driver replies, or failed with
:class:`ClusterConnectionLost` when the driver goes away.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

from . import _wire
from .errors import ClusterConnectionLost


class RemoteError(Exception):
    """A failure reported by a cluster's driver: ``kind`` is ``"app"`` (the
    user's code raised), ``"actor"`` (the actor died) or ``"system"`` (Ray)."""

    def __init__(self, kind: str, type_name: str, cause, traceback_str: str):
        super().__init__(f"{type_name}: {traceback_str}")
        self.kind = kind
        self.type_name = type_name
        self.cause = cause
        self.traceback_str = traceback_str


def driver_env(config) -> dict:
    """The environment of a cluster's driver: Ray token authentication per
    cluster (Ray reads it from the process environment)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    address = config.address or ""
    if not address.startswith("ray://") and address.rsplit(":", 1)[0] in (
            "127.0.0.1", "localhost"):
        # Ray swaps 127.0.0.1 for the machine's routable address unless it is
        # told the cluster is this one machine; a loopback-only cluster is.
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if config.auth_token:
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN"] = config.auth_token
    elif config.auth_token_path:
        if not os.path.isfile(config.auth_token_path):
            from .errors import ClusterConfigError

            raise ClusterConfigError(
                f"cluster {config.name!r}: auth_token_path {config.auth_token_path!r} "
                "does not exist")
        env.pop("RAY_AUTH_TOKEN", None)
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN_PATH"] = config.auth_token_path
    elif "RAY_AUTH_MODE" not in env and (
            env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH")
            or os.path.isfile(os.path.expanduser("~/.ray/auth_token"))):
        # Ray enables tokens by default on clusters it starts locally, but a
        # driver joining an existing cluster only sends one in token mode.
        env["RAY_AUTH_MODE"] = "token"
    return env


_TRANSIENT_CLIENT_ERRORS = ("Starting Ray client server failed",)


class RayClusterBackend:
    """Runs work on one Ray cluster through its own driver process."""

    kind = "ray"

    def __init__(self, config, settings, namespace: str | None = None):
        self.config = config
        self.name = config.name
        self.settings = settings
        self.namespace = namespace
        self.process: subprocess.Popen | None = None
        self.info: dict = {}
        self._writer = None
        self._reader_task = None
        self._pending: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._sent_functions: set = set()
        self._connecting: asyncio.Future | None = None
        self.on_lost = None  # on_lost(backend, reason) when the driver dies by itself
        # Turns the value of a Ray ref nested in a result into a local ref
        # (the control plane sets miniray's put); identity: the value itself.
        self.put_local = lambda value: value
        self.generation = 0  # bumps on every new driver process (actors do not survive it)

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def connect(self) -> dict:
        """Start the driver process (once; concurrent callers share it)."""
        if self.connected:
            return self.info
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        self._connecting = asyncio.get_running_loop().create_future()
        try:
            try:
                info = await self._start()
            except ClusterConnectionLost as exc:
                # Ray's client proxy sometimes fails to spawn the server for a new
                # client (it exits at once on a loaded machine, seen in CI); a
                # second connection gets a fresh one.
                if not any(text in str(exc) for text in _TRANSIENT_CLIENT_ERRORS):
                    raise
                await asyncio.sleep(0.5)
                info = await self._start()
        except BaseException as exc:
            self._connecting.set_exception(exc)
            self._connecting.exception()  # retrieved: the raise below reports it
            raise
        else:
            self._connecting.set_result(info)
            return info
        finally:
            self._connecting = None

    async def _start(self) -> dict:
        parent_sock, child_sock = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "miniray.cluster._ray_driver", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),), env=driver_env(self.config),
                stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            child_sock.close()
        try:
            reader, writer = await asyncio.open_unix_connection(sock=parent_sock)
        except BaseException:
            parent_sock.close()
            self._kill()
            raise
        try:
            return await self._handshake(reader, writer)
        except BaseException:
            # Cancelled (a probe timed out) or failed: never leave a driver behind.
            writer.close()
            self._kill()
            raise

    async def _handshake(self, reader, writer) -> dict:
        spec = {"name": self.name, "address": self.config.address,
                "dashboard": self.config.dashboard, "runtime_env": self.config.runtime_env,
                "namespace": self.namespace}
        writer.write(_wire.pack(spec))
        try:
            hello = await asyncio.wait_for(_wire.read_message(reader),
                                           self.settings.connect_timeout)
        except asyncio.TimeoutError:
            hello = ("hello_failed", f"no answer in {self.settings.connect_timeout:g}s")
        if not hello or hello[0] != "hello":
            reason = hello[1] if hello else "the driver process exited"
            raise ClusterConnectionLost(self.name, f"cannot connect to {self.config.address}: "
                                        f"{reason}")
        self.info = hello[1]
        self.generation += 1
        self._sent_functions = set()
        self._writer = writer
        self._reader_task = asyncio.create_task(self._read(reader, writer))
        return self.info

    async def _read(self, reader, writer) -> None:
        while True:
            message = await _wire.read_message(reader)
            if message is None:
                break
            if message[0] == "lost":
                # The driver saw its cluster's head die: fail over now rather
                # than after Ray's own reconnect attempts or the health probes.
                if self._writer is writer:
                    self.disconnect(message[1])
                    if self.on_lost is not None:
                        self.on_lost(self, message[1])
                return
            future = self._pending.pop(message[1], None)
            if future is None or future.done():
                continue
            if message[0] == "okp":
                try:
                    value = _wire.load_nested(message[2], message[3], self.put_local)
                except Exception as exc:
                    future.set_exception(RemoteError("app", type(exc).__name__, exc,
                                                     f"reading the result: {exc!r}"))
                else:
                    future.set_result(value)
            else:
                _, _, kind, type_name, blob, tb = message
                try:
                    cause = _wire.unpack(blob) if blob is not None else None
                except Exception:
                    cause = None
                future.set_exception(RemoteError(kind, type_name, cause, tb))
        if self._writer is writer:
            self.disconnect("the driver process exited")
            if self.on_lost is not None:
                self.on_lost(self, "the driver process exited")

    def disconnect(self, reason: str = "connection lost") -> None:
        """Drop the driver (killing it) and fail everything in flight there
        with :class:`ClusterConnectionLost`."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        self._kill()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ClusterConnectionLost(self.name, reason))
                future.exception()  # a caller may have gone; never "never retrieved"

    def _kill(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
        if process is not None:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass

    async def close(self) -> None:
        writer = self._writer
        if writer is not None:
            try:
                writer.write(_wire.pack(("exit",)))
                await writer.drain()
            except (ConnectionError, RuntimeError):
                pass
        process = self.process
        if process is not None:
            loop = asyncio.get_running_loop()
            try:
                await asyncio.wait_for(loop.run_in_executor(None, process.wait), 10)
            except asyncio.TimeoutError:
                pass
        self.disconnect("the control plane shut down")

    # -- requests --------------------------------------------------------------------
    def _request(self, *message) -> asyncio.Future:
        if self._writer is None:
            raise ClusterConnectionLost(self.name, "not connected")
        self._next_id += 1
        rid = self._next_id
        future = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        self._writer.write(_wire.pack((message[0], rid) + message[1:]))
        return future

    def _send(self, *message) -> None:
        if self._writer is None:
            raise ClusterConnectionLost(self.name, "not connected")
        self._writer.write(_wire.pack(message))

    def _ship(self, fn_id: bytes, blob_getter) -> None:
        if fn_id not in self._sent_functions:
            self._send("fn", fn_id, blob_getter())
            self._sent_functions.add(fn_id)

    async def probe(self) -> dict:
        started = time.perf_counter()
        if not self.connected:
            await self.connect()
        result = await self._request("probe")
        result["latency_s"] = time.perf_counter() - started
        return result

    async def run_task(self, fn_id, blob_getter, payload: bytes, options: dict,
                       num_returns: int):
        self._ship(fn_id, blob_getter)
        return await self._request("task", fn_id, payload, options, num_returns)

    async def create_actor(self, key, fn_id, blob_getter, payload: bytes, options: dict):
        self._ship(fn_id, blob_getter)
        return await self._request("actor_new", key, fn_id, payload, options)

    async def attach_actor(self, key, name: str, namespace: str | None) -> str:
        """Find the named actor on the cluster and hold it under ``key``;
        returns its class name (fails if there is no such actor)."""
        return await self._request("actor_get", key, name, namespace)

    def call_actor(self, key, method: str, payload: bytes, num_returns: int) -> asyncio.Future:
        return self._request("actor_call", key, method, payload, num_returns)

    def kill_actor(self, key, no_restart: bool = True) -> None:
        if self.connected:
            self._send("actor_kill", key, no_restart)

    async def job(self, op: str, *args):
        if not self.connected:
            await self.connect()
        return await self._request("job_" + op, *args)
