"""``/ws/events``: batched state changes pushed to WebSocket clients.

One periodic tick on the node's loop reads the event bus once per distinct
client position and appends a ready-made JSON text to each client's queue;
a sender task per client drains that queue into its socket. The scheduler
never waits on a client: a client that reads slower than it is fed loses its
oldest queued messages (drop-oldest), and its next message says how many
and how many changes they carried.

Protocol (server to client, JSON text frames, each with a ``type``):

* ``hello``: ``{kinds, interval, cursors}`` on connect.
* ``update``: ``{time, summary, events: {kind: [items]}, changes, lost,
  cursors, metrics: [samples]}``; sent every ``interval`` seconds while
  anything changed, and at least once a second as a heartbeat.
* ``dropped``: ``{messages, changes: {kind: n}}``: queued messages this
  client lost because it read too slowly; sent before the next message.
* ``error``: ``{error}``: the client sent something not understood.

Client to server: ``{"subscribe": ["task", "worker", "metrics", ...]}``
(kinds: task, actor, worker, object, metrics; default all).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import socket
import time

from aiohttp import WSMsgType, web

from .._core.node import introspect
from .._core.node.events import KINDS

log = logging.getLogger("miniray.dashboard")

STREAM_KINDS = KINDS + ("metrics",)
HEARTBEAT_S = 1.0


def _dumps(data) -> str:
    return json.dumps(data, separators=(",", ":"))


class Client:
    __slots__ = ("ws", "kinds", "cursors", "metrics_after", "queue", "dropped_messages",
                 "dropped_changes", "wakeup", "last_queued", "sender", "sent_messages")

    def __init__(self, ws, cursors: dict, metrics_after: float):
        self.ws = ws
        self.kinds = set(STREAM_KINDS)
        self.cursors = dict(cursors)
        self.metrics_after = metrics_after
        self.queue: collections.deque = collections.deque()
        self.dropped_messages = 0
        self.dropped_changes = collections.Counter()
        self.wakeup = asyncio.Event()
        self.last_queued = 0.0
        self.sender = None
        self.sent_messages = 0


class EventStream:
    """The WebSocket hub of one dashboard."""

    def __init__(self, runtime, *, interval: float, queue_size: int, send_buffer: int,
                 event_limit: int = 200):
        self.runtime = runtime
        self.interval = interval
        self.queue_size = queue_size
        self.send_buffer = send_buffer
        self.event_limit = event_limit
        self.clients: set = set()
        self.dropped_total = 0
        self.messages_total = 0
        self._task = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        clients = list(self.clients)
        for client in clients:  # a sender stuck on a stalled peer must not hold us
            if client.sender is not None:
                client.sender.cancel()
        await asyncio.gather(*(self._close_one(c.ws) for c in clients))

    @staticmethod
    async def _close_one(ws) -> None:
        try:
            await asyncio.wait_for(ws.close(code=1001, message=b"dashboard stopping"), 2.0)
        except (asyncio.TimeoutError, ConnectionError):
            pass  # the runner's cleanup aborts the connection

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.clients:
                try:
                    self.tick()
                except Exception:  # a bug here must not end the stream for good
                    log.exception("dashboard event stream tick failed")

    # -- one connection --------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=64 * 1024, heartbeat=30.0,
                                   timeout=2.0)
        await ws.prepare(request)
        if self._closing:
            await ws.close(code=1001, message=b"dashboard stopping")
            return ws
        self._bound_send_buffer(request)
        events = self.runtime.events
        samples = events.metrics
        client = Client(ws, events.cursors(), samples[-1]["time"] if samples else 0.0)
        self.clients.add(client)
        client.sender = asyncio.get_running_loop().create_task(self._send_loop(client))
        self._enqueue(client, _dumps({
            "type": "hello", "kinds": sorted(client.kinds), "interval": self.interval,
            "cursors": client.cursors, "queue_size": self.queue_size}), None)
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._on_client_message(client, message.data)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            self.clients.discard(client)
            client.sender.cancel()
            try:
                await client.sender
            except asyncio.CancelledError:
                pass
        return ws

    def _bound_send_buffer(self, request) -> None:
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None and self.send_buffer:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
            except OSError:  # not fatal: the queue still bounds what we hold
                pass

    def _on_client_message(self, client: Client, text: str) -> None:
        try:
            message = json.loads(text)
            kinds = message["subscribe"]
            if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
                raise TypeError("subscribe takes a list of kind names")
            unknown = sorted(set(kinds) - set(STREAM_KINDS))
            if unknown:
                raise ValueError(f"unknown kinds {unknown}; known: {list(STREAM_KINDS)}")
        except (ValueError, KeyError, TypeError) as exc:
            detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            self._enqueue(client, _dumps({"type": "error", "error": detail}), None)
            return
        heads = self.runtime.events.cursors()
        for kind in set(kinds) - client.kinds:  # newly subscribed: from now on
            if kind in heads:
                client.cursors[kind] = heads[kind]
        client.kinds = set(kinds)
        self._enqueue(client, _dumps({"type": "subscribed", "kinds": sorted(client.kinds)}),
                      None)

    def _enqueue(self, client: Client, text: str, changes: dict | None) -> None:
        queue = client.queue
        if len(queue) >= self.queue_size:
            _, lost_changes = queue.popleft()
            client.dropped_messages += 1
            self.dropped_total += 1
            if lost_changes:
                client.dropped_changes.update(lost_changes)
        queue.append((text, changes))
        client.wakeup.set()

    async def _send_loop(self, client: Client) -> None:
        ws = client.ws
        queue = client.queue
        try:
            while True:
                while not queue:
                    client.wakeup.clear()
                    await client.wakeup.wait()
                if client.dropped_messages:
                    notice = _dumps({"type": "dropped", "messages": client.dropped_messages,
                                     "changes": dict(client.dropped_changes)})
                    client.dropped_messages = 0
                    client.dropped_changes.clear()
                    await ws.send_str(notice)
                    if not queue:
                        continue
                text, _ = queue.popleft()
                await ws.send_str(text)
                client.sent_messages += 1
                self.messages_total += 1
        except (ConnectionError, RuntimeError):
            # The peer went away mid-send (aiohttp raises ConnectionResetError,
            # or RuntimeError once the socket is closing): the reader ends too.
            pass

    # -- the periodic push -------------------------------------------------------------
    def tick(self) -> None:
        """Queue an update for every client that is due one."""
        runtime = self.runtime
        events = runtime.events
        heads = events.cursors()
        now = time.time()
        samples = events.metrics
        newest_sample = samples[-1]["time"] if samples else 0.0
        built: dict = {}
        summary = None
        for client in list(self.clients):
            if client.ws.closed:
                continue
            kinds = tuple(k for k in KINDS if k in client.kinds)
            changed = any(client.cursors.get(k, 0) != heads[k] for k in kinds)
            wants_metrics = "metrics" in client.kinds and newest_sample > client.metrics_after
            if not (changed or wants_metrics or now - client.last_queued >= HEARTBEAT_S):
                continue
            key = (kinds, tuple(client.cursors.get(k, 0) for k in kinds),
                   client.metrics_after if "metrics" in client.kinds else None)
            message = built.get(key)
            if message is None:
                if summary is None:
                    summary = introspect.summary(runtime, by_state=False)
                    summary["time"] = now
                message = built[key] = self._build(client, kinds, summary, samples)
            text, changes, cursors = message
            client.cursors.update(cursors)
            if "metrics" in client.kinds:
                client.metrics_after = newest_sample
            client.last_queued = now
            self._enqueue(client, text, changes)

    def _build(self, client: Client, kinds: tuple, summary: dict, samples) -> tuple:
        batch = self.runtime.events.events_since(client.cursors, kinds, self.event_limit)
        metrics = []
        if "metrics" in client.kinds:
            for sample in reversed(samples):
                if sample["time"] <= client.metrics_after:
                    break
                metrics.append(sample)
            metrics.reverse()
        changes = {k: n for k, n in batch["changes"].items() if n}
        text = _dumps({
            "type": "update", "time": summary["time"], "summary": summary,
            "events": batch["events"], "changes": batch["changes"], "lost": batch["lost"],
            "cursors": batch["cursors"], "metrics": metrics,
        })
        return text, changes, batch["cursors"]

    def statistics(self) -> dict:
        """Counters for ``/metrics`` and tests."""
        return {"clients": len(self.clients), "messages_total": self.messages_total,
                "dropped_total": self.dropped_total,
                "queued": sum(len(c.queue) for c in self.clients)}
