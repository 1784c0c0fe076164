"""``miniray.util.ray_debugpy.set_trace()`` in an actor: a Debug Adapter
Protocol client (what VS Code speaks) attaches, sees the stop at the caller's
line, reads a local variable and continues the call."""

from __future__ import annotations

import json
import os
import re
import socket
import time

import pytest

pytest.importorskip("debugpy")


class _Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""
        self.seq = 0

    def send(self, command, **arguments):
        self.seq += 1
        body = json.dumps({"seq": self.seq, "type": "request", "command": command,
                           "arguments": arguments}).encode()
        self.sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return self.seq

    def _message(self):
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(65536)
        header, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"Content-Length: (\d+)", header).group(1))
        while len(self.buffer) < length:
            self.buffer += self.sock.recv(65536)
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return json.loads(body)

    def wait(self, predicate, deadline):
        while time.monotonic() < deadline:
            message = self._message()
            if predicate(message):
                return message
        raise AssertionError("no such message")


def _port_from_log(pid):
    from miniray.util.state import get_log

    text = ""
    for chunk in get_log(pid=pid, suffix="err", tail=-1, follow=True, interval_s=0.1):
        text += chunk
        found = re.search(r"debugpy listening at 127\.0\.0\.1:(\d+)", text)
        if found:
            return int(found.group(1))
    raise AssertionError(text)


def test_a_dap_client_attaches_to_set_trace_in_an_actor(ray):
    @ray.remote
    class Debuggee:
        def pid(self):
            return os.getpid()

        def work(self, x):
            from miniray.util import ray_debugpy

            secret = x * 3
            ray_debugpy.set_trace()
            return secret

    actor = Debuggee.remote()
    pid = ray.get(actor.pid.remote(), timeout=60)
    ref = actor.work.remote(14)
    client = _Client(_port_from_log(pid))
    deadline = time.monotonic() + 60
    is_response = lambda seq: lambda m: m.get("type") == "response" and m["request_seq"] == seq  # noqa: E731
    client.wait(is_response(client.send("initialize", adapterID="miniray-test",
                                        clientID="test")), deadline)
    attach = client.send("attach", justMyCode=False)
    client.wait(lambda m: m.get("event") == "initialized", deadline)
    client.wait(is_response(client.send("configurationDone")), deadline)
    stopped = client.wait(lambda m: m.get("event") == "stopped", deadline)
    thread_id = stopped["body"]["threadId"]
    frames = client.wait(is_response(client.send("stackTrace", threadId=thread_id)), deadline)
    top = frames["body"]["stackFrames"][0]
    assert top["name"].endswith("work") or "work" in top["name"], top
    value = client.wait(is_response(client.send("evaluate", expression="secret",
                                                frameId=top["id"], context="repl")), deadline)
    assert value["body"]["result"] == "42"
    client.wait(is_response(client.send("continue", threadId=thread_id)), deadline)
    assert ray.get(ref, timeout=30) == 42
    del attach
    client.sock.close()
