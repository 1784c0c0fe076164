"""``miniray.util.pdb.set_trace()`` and ``breakpoint()`` in an actor or task: a
pdb session on a loopback port, driven here over a real socket as ``nc`` would."""

from __future__ import annotations

import os
import re
import socket
import time

import pytest

_OPEN = re.compile(r"RemotePdb session open at 127\.0\.0\.1:(\d+) \((.*?)\); "
                   r"connect with `nc 127\.0\.0\.1 \1`")


def _port_from_log(pid: int, skip: int = 0) -> int:
    from miniray.util.state import get_log

    text = ""
    for chunk in get_log(pid=pid, suffix="err", tail=-1, follow=True, interval_s=0.1):
        text += chunk
        found = _OPEN.findall(text)
        if len(found) > skip:
            return int(found[skip][0])
    raise AssertionError(text)


def _read_until(conn: socket.socket, marker: bytes, deadline: float) -> bytes:
    data = b""
    while marker not in data:
        assert time.monotonic() < deadline, data
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _session(port: int, commands: list[bytes]) -> bytes:
    deadline = time.monotonic() + 30
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        out += _read_until(conn, b"(miniray-pdb) ", deadline)
        for command in commands[:-1]:
            conn.sendall(command)
            out += _read_until(conn, b"(miniray-pdb) ", deadline)
        conn.sendall(commands[-1])
        out += _read_until(conn, b"\0never", deadline)  # until the worker closes it
    return out


def test_set_trace_in_an_actor_serves_pdb_on_a_loopback_port(ray):
    @ray.remote
    class Debuggee:
        def pid(self):
            return os.getpid()

        def work(self, x):
            import miniray.util.pdb

            secret = x * 2
            miniray.util.pdb.set_trace()
            return secret + 1

        def hooked(self, x):
            doubled = x * 2
            breakpoint()
            return doubled

    actor = Debuggee.remote()
    pid = ray.get(actor.pid.remote(), timeout=60)
    ref = actor.work.remote(20)
    out = _session(_port_from_log(pid), [b"p secret\r\n", b"where\r\n", b"c\r\n"])
    assert b"40" in out and b"work()" in out, out
    assert ray.get(ref, timeout=30) == 41  # continued: the call finished
    ref = actor.hooked.remote(5)
    out = _session(_port_from_log(pid, skip=1), [b"p doubled\r\n", b"q\r\n"])
    assert b"10" in out, out
    assert ray.get(ref, timeout=30) == 10  # q leaves the debugger, not the call


def test_post_mortem_in_an_actor_shows_the_failing_frame(ray):
    @ray.remote
    class Fails:
        def pid(self):
            return os.getpid()

        def fails(self):
            import miniray.util.pdb

            try:
                broken = {"key": 1}
                broken["missing"]
            except KeyError:
                miniray.util.pdb.post_mortem()
            return "went on"

    actor = Fails.remote()
    pid = ray.get(actor.pid.remote(), timeout=60)
    ref = actor.fails.remote()
    out = _session(_port_from_log(pid), [b"p broken\r\n", b"c\r\n"])
    assert b"{'key': 1}" in out, out
    assert ray.get(ref, timeout=30) == "went on"


def test_post_mortem_outside_an_exception_is_a_clear_error():
    import miniray.util.pdb

    with pytest.raises(ValueError, match="needs a traceback"):
        debugger = miniray.util.pdb.RemotePdb(quiet=True)
        try:
            debugger.post_mortem()
        finally:
            debugger._listener.close()
