"""A table of hostile inputs: each gets a clear error, and the node still runs a task after.

Covers the public API (tasks, actors, put, get, wait), the head's socket (malformed msgpack,
oversized frames, wrong types, before and after the token handshake) and the dashboard's
HTTP API. Issue #19.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

import miniray
from miniray._core import protocol as P
from miniray._core.driver import session

from .test_head import head  # noqa: F401 - the fixture


def _still_runs(ray) -> None:
    assert ray.get(ray.remote(lambda: "alive").remote(), timeout=60) == "alive"


# -- the public API ------------------------------------------------------------------

def _api_cases(ray):
    @ray.remote
    def f(x=None):
        return x

    @ray.remote
    class Actor:
        def method(self):
            return 1

    actor = Actor.remote()
    ref = f.remote(1)
    return [
        # (what, call, exception, message pattern)
        ("num_cpus text", lambda: f.options(num_cpus="x").remote(), ValueError,
         r"num_cpus of remote function \S*f must be a non-negative number"),
        ("num_cpus negative", lambda: f.options(num_cpus=-1).remote(), ValueError,
         "non-negative"),
        ("num_cpus infinite", lambda: f.options(num_cpus=float("inf")).remote(), ValueError,
         "non-negative number, got inf"),
        ("resource NaN", lambda: f.options(resources={"x": float("nan")}).remote(),
         ValueError, "resource 'x' .* got nan"),
        ("resource name not a string", lambda: f.options(resources={1: 1}).remote(),
         TypeError, "resource names .* non-empty strings"),
        ("resources not a dict", lambda: f.options(resources=[1]).remote(), TypeError,
         "must be a dict"),
        ("CPU as a custom resource", lambda: f.options(resources={"CPU": 1}).remote(),
         ValueError, "num_cpus/num_gpus instead"),
        ("num_returns negative", lambda: f.options(num_returns=-1).remote(), ValueError,
         "num_returns .* non-negative int"),
        ("num_returns text", lambda: f.options(num_returns="many").remote(), ValueError,
         "'streaming' or 'dynamic'"),
        ("max_retries text", lambda: f.options(max_retries="x").remote(), ValueError,
         "max_retries .* int >= -1"),
        ("task name not a string", lambda: f.options(name=5).remote(), TypeError,
         r"name of remote function \S*f must be a string"),
        ("unknown task option", lambda: f.options(bogus=1).remote(), ValueError,
         r"Invalid option\(s\) \['bogus'\]"),
        ("unpicklable argument", lambda: f.remote(threading.Lock()), TypeError,
         r"Could not serialize argument 0 of \S*f "),
        ("remote function called directly", lambda: f(1), TypeError,
         "cannot be called directly"),
        ("remote() of a non-callable", lambda: ray.remote(5), TypeError,
         "takes a function or class"),
        ("unknown actor option", lambda: Actor.options(bogus=1).remote(), ValueError,
         r"Invalid option\(s\) \['bogus'\] for actor class Actor"),
        ("max_restarts text", lambda: Actor.options(max_restarts="x").remote(), ValueError,
         "max_restarts of actor Actor must be an int >= -1"),
        ("max_task_retries negative", lambda: Actor.options(max_task_retries=-5).remote(),
         ValueError, "max_task_retries"),
        ("namespace not a string", lambda: Actor.options(namespace=3).remote(), TypeError,
         "namespace of actor Actor must be a string"),
        ("max_concurrency 0", lambda: Actor.options(max_concurrency=0).remote(), ValueError,
         "max_concurrency .* >= 1"),
        ("actor name not a string", lambda: Actor.options(name=5).remote(), ValueError,
         "non-empty string"),
        ("no such actor method", lambda: actor.nope.remote(), AttributeError,
         "has no method 'nope'"),
        ("actor method called directly", lambda: actor.method(), TypeError,
         "cannot be called directly"),
        ("put of an ObjectRef", lambda: ray.put(ref), TypeError, "put\\(\\) on an ObjectRef"),
        ("put of an unpicklable value", lambda: ray.put(threading.Lock()), TypeError,
         "Could not serialize the value passed to put"),
        ("get of an int", lambda: ray.get(1), TypeError, "expects an ObjectRef"),
        ("get of a list of ints", lambda: ray.get([1]), TypeError, "item 0 is a int"),
        ("get of a dict", lambda: ray.get({"a": ref}), TypeError, "got dict"),
        ("get timeout negative", lambda: ray.get(ref, timeout=-1), ValueError,
         "timeout must be None or a non-negative number"),
        ("get timeout text", lambda: ray.get(ref, timeout="x"), ValueError, "timeout"),
        ("wait of a single ref", lambda: ray.wait(ref), TypeError, "wrap it in a list"),
        ("wait of ints", lambda: ray.wait([1]), TypeError, "item 0 is a int"),
        ("wait num_returns 0", lambda: ray.wait([ref], num_returns=0), ValueError,
         "positive int"),
        ("wait num_returns too many", lambda: ray.wait([ref], num_returns=5), ValueError,
         "cannot exceed"),
        ("wait timeout negative", lambda: ray.wait([ref], timeout=-1), ValueError,
         "timeout"),
        ("wait duplicates", lambda: ray.wait([ref, ref]), ValueError, "duplicate"),
        ("wait fetch_local not a bool", lambda: ray.wait([ref], fetch_local="x"), TypeError,
         "fetch_local must be True or False"),
        ("cancel of an int", lambda: ray.cancel(1), TypeError, "expects an ObjectRef"),
        ("kill of an int", lambda: ray.kill(1), TypeError, "expects an actor handle"),
        ("get_actor of an int", lambda: ray.get_actor(5), ValueError, "non-empty string"),
        ("get_actor of a missing name", lambda: ray.get_actor("nope"), ValueError,
         "no such named actor"),
    ]


def test_hostile_api_inputs_get_clear_errors(ray):
    failures = []
    for what, call, exception, pattern in _api_cases(ray):
        try:
            call()
        except exception as exc:
            import re

            if not re.search(pattern, str(exc)):
                failures.append(f"{what}: message {str(exc)[:200]!r} lacks {pattern!r}")
        except BaseException as exc:  # noqa: BLE001 - the table reports every case
            failures.append(f"{what}: {type(exc).__name__}: {exc}"[:300])
        else:
            failures.append(f"{what}: no error")
    assert not failures, "\n".join(failures)
    _still_runs(ray)


# -- the head's socket ----------------------------------------------------------------

def _raw(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=15)


def _reply(sock) -> bytes:
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data


PRE_HANDSHAKE = [
    ("not msgpack", b"\xc1\xc1\xc1\xc1"),
    ("an oversized hello", P.pack(["hello", "t" * 100_000, 1, 1])),
    ("a frame announcing 4 GiB", b"\xdb\xff\xff\xff\xff" + b"x" * 8192),
    ("a map instead of a list", P.pack({"hello": 1})),
    ("a token that is a number", P.pack(["hello", 12345, 1, 1])),
    ("a wrong token", P.pack(["hello", "not-the-token", 1, 1])),
    ("an empty list", P.pack([])),
    ("a nil", P.pack(None)),
]


@pytest.mark.parametrize("what,payload", PRE_HANDSHAKE, ids=[c[0] for c in PRE_HANDSHAKE])
def test_head_refuses_hostile_handshakes(head, what, payload):  # noqa: F811
    sock = _raw(head["address"])
    try:
        sock.sendall(payload)
    except OSError:
        pass  # cut off while sending: fine
    reply = _reply(sock)
    sock.close()
    if reply:
        message = P.new_unpacker()
        message.feed(reply)
        first = next(message)
        assert first[0] == "denied" and isinstance(first[1], str), first
    miniray.init(address="auto")
    try:
        _still_runs(miniray)
    finally:
        miniray.shutdown()


def test_head_survives_hostile_messages_from_an_authenticated_driver(head):  # noqa: F811
    token = session.read_token()
    sock = _raw(head["address"])
    sock.sendall(P.pack(["hello", token, os.getpid(), 1]))
    unpacker = P.new_unpacker()
    while True:
        unpacker.feed(sock.recv(65536))
        welcome = next(unpacker, None)
        if welcome is not None:
            break
    assert welcome[0] == "welcome"
    garbage = [
        5, "text", None, [], [999], [P.NOTIFY], [P.NOTIFY, "no_such_method", []],
        [P.NOTIFY, "add_ref", "not-a-list"], [P.NOTIFY, 12, []],
        [P.REQUEST, 1, "no_such_method", []], [P.REQUEST, 2, "get", "not-a-list"],
        [P.REQUEST, 3, "wait", [["x"], "one", None]], [P.DONE, b"nope", [[1, 2]]],
        [P.FAILED, b"nope", b"", False], [P.ACTOR_READY, b"nope", None, False],
    ]
    sock.sendall(b"".join(P.pack(m) for m in garbage))
    replies = {}
    deadline = time.monotonic() + 20
    sock.settimeout(1)
    while len(replies) < 3 and time.monotonic() < deadline:
        try:
            unpacker.feed(sock.recv(65536))
        except socket.timeout:
            continue
        for message in unpacker:
            if isinstance(message, list) and message and message[0] == P.REPLY:
                replies[message[1]] = message
    assert sorted(replies) == [1, 2, 3]
    assert all(reply[2] is False for reply in replies.values())  # each an error reply
    # Then bytes that are not msgpack: this connection is closed, the head serves on.
    sock.sendall(b"\xc1" * 16)
    assert _reply(sock) == b""
    sock.close()
    miniray.init(address="auto")
    try:
        _still_runs(miniray)
    finally:
        miniray.shutdown()


# -- the dashboard's HTTP API --------------------------------------------------------------

DASHBOARD_CASES = [
    ("GET", "/api/tasks?limit=-1", None, 400),
    ("GET", "/api/tasks?limit=abc", None, 400),
    ("GET", "/api/tasks?offset=1e999", None, 400),
    ("GET", "/api/tasks?state=BOGUS", None, 400),
    ("GET", "/api/tasks?name=" + "x" * 300, None, 400),
    ("GET", "/api/tasks/not-hex", None, 404),
    ("GET", "/api/logs/..%2F..%2Fetc%2Fpasswd", None, 404),
    ("GET", "/api/metrics?since=nan", None, 400),
    ("GET", "/api/no/such/route", None, 404),
    ("POST", "/api/clusters/x/drain", b"{}", 401),
    ("POST", "/api/summary", b"x" * (2 << 20), 405),
]


def test_dashboard_answers_hostile_requests_with_json_errors(ray):
    from miniray import api

    from .dashboard_util import local_url, running_dashboard

    failures = []
    with running_dashboard(api._runtime) as dashboard:
        base = local_url(dashboard)
        for method, path, body, status in DASHBOARD_CASES:
            request = urllib.request.Request(base + path, data=body, method=method)
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    failures.append(f"{method} {path[:60]}: {response.status}, not {status}")
                    continue
            except urllib.error.HTTPError as exc:
                got, text = exc.code, exc.read()
            if got // 100 != 4 or (status and got != status and got not in (400, 404, 405,
                                                                               413)):
                failures.append(f"{method} {path[:60]}: {got}, not {status}")
            try:
                error = json.loads(text)["error"]
                assert isinstance(error, str) and error
            except Exception:  # noqa: BLE001
                failures.append(f"{method} {path[:60]}: not a JSON error: {text[:100]!r}")
        with urllib.request.urlopen(base + "/api/summary", timeout=30) as response:
            assert response.status == 200
    assert not failures, "\n".join(failures)
    _still_runs(ray)
