"""Another local user must not take over, impersonate or exhaust a head node (issue #19).

The tests that need a second user run one as ``nobody`` with ``setpriv`` (as root); they
are skipped, saying so, where that is not possible.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time

import pytest

import miniray
from miniray._core import protocol as P
from miniray._core.driver import session

from .test_head import _cli, head  # noqa: F401 - the fixture

NOBODY = 65534


def _can_switch_user() -> bool:
    if os.getuid() != 0 or shutil.which("setpriv") is None:
        return False
    probe = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                            "--clear-groups", "true"], capture_output=True)
    return probe.returncode == 0


needs_second_user = pytest.mark.skipif(
    not _can_switch_user(),
    reason="needs root and setpriv to run a second user (nobody); not available here")


def _as_nobody(code: str) -> subprocess.Popen:
    """Run ``code`` as user nobody; it prints one line when it is ready."""
    env = {"PATH": os.environ.get("PATH", ""),
           "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(miniray.__file__)))}
    return subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture
def open_dir():
    """A directory user nobody can write in (pytest's tmp_path is under a 0700 one)."""
    import tempfile

    path = tempfile.mkdtemp(prefix="miniray-test-shared-")
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- the session directory ------------------------------------------------------------

def test_session_root_is_created_private(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIRAY_TMPDIR", str(tmp_path))
    root = session.session_root()
    info = os.lstat(root)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.getuid()


def test_session_root_open_to_others_or_a_symlink_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIRAY_TMPDIR", str(tmp_path))
    root = tmp_path / f"miniray-{os.getuid()}"
    root.mkdir(mode=0o700)
    os.chmod(root, 0o777)
    with pytest.raises(PermissionError, match=rf"(?s){root}.*open to other users.*chmod 700"):
        session.session_root()
    os.rmdir(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    os.symlink(elsewhere, root)
    with pytest.raises(PermissionError, match="symlink"):
        session.session_root()


@pytest.mark.skipif(os.getuid() != 0, reason="only root can make a directory owned by "
                                              "another user for this test")
def test_session_root_of_another_user_is_refused_and_no_head_starts_in_it(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("MINIRAY_TMPDIR", str(tmp_path))
    root = tmp_path / f"miniray-{os.getuid()}"
    root.mkdir()
    os.chown(root, NOBODY, NOBODY)
    os.chmod(root, 0o700)
    with pytest.raises(PermissionError, match=rf"(?s){root} belongs to uid {NOBODY}.*"
                                              "MINIRAY_TMPDIR"):
        session.session_root()
    env = dict(os.environ, MINIRAY_TMPDIR=str(tmp_path))
    start = _cli(env, "start", "--head", "--port", "0", "--include-dashboard", "false",
                 check=False)
    assert start.returncode != 0 and f"belongs to uid {NOBODY}" in start.stderr
    assert os.listdir(root) == []
    with pytest.raises(PermissionError, match="belongs to uid"):
        miniray.init(address="auto")


# -- the driver checks who listens before sending its token ----------------------------

_UNIX_LISTENER = """
    import os, socket, sys
    path = sys.argv[1] if len(sys.argv) > 1 else {path!r}
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen(4)
    print("ready", flush=True)
    server.settimeout(20)
    try:
        conn, _ = server.accept()
        conn.settimeout(3)
        got = conn.recv(65536)
    except OSError:
        got = b""
    print("received", len(got), flush=True)
"""


@needs_second_user
@pytest.mark.parametrize("chown_to_me", [False, True])
def test_driver_refuses_a_unix_socket_of_another_user(open_dir, chown_to_me):
    path = os.path.join(open_dir, "head.sock")
    listener = _as_nobody(_UNIX_LISTENER.format(path=path))
    try:
        assert listener.stdout.readline().strip() == "ready", listener.stderr.read()
        if chown_to_me:  # the file looks like ours: the peer's credentials still tell
            os.chown(path, os.getuid(), os.getgid())
        with pytest.raises(PermissionError, match="Refusing to send your token"):
            session.connect(f"unix:{path}", token="the-secret-token")
        out, _ = listener.communicate(timeout=30)
    finally:
        listener.kill()
        listener.wait()
    assert "received 0" in out  # the token never left


@needs_second_user
def test_driver_refuses_a_loopback_port_of_another_user():
    listener = _as_nobody("""
        import socket
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        print(server.getsockname()[1], flush=True)
        server.settimeout(20)
        try:
            conn, _ = server.accept()
            conn.settimeout(3)
            got = conn.recv(65536)
        except OSError:
            got = b""
        print("received", len(got), flush=True)
    """)
    try:
        port = int(listener.stdout.readline())
        with pytest.raises(PermissionError, match=f"held by uid {NOBODY}"):
            session.connect(f"127.0.0.1:{port}", token="the-secret-token")
        out, _ = listener.communicate(timeout=30)
    finally:
        listener.kill()
        listener.wait()
    assert "received 0" in out


# -- miniray stop signals only this user's head ----------------------------------------

def _plant_head_json(tmp_path, pid):
    root = tmp_path / f"miniray-{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    (root / "head.json").write_text(json.dumps({"pid": pid, "node_pid": pid,
                                                "address": "127.0.0.1:1"}))
    return root


def test_stop_does_not_signal_a_process_named_by_a_planted_head_json(tmp_path):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        root = _plant_head_json(tmp_path, bystander.pid)
        env = dict(os.environ, MINIRAY_TMPDIR=str(tmp_path))
        stop = _cli(env, "stop", "--timeout", "2", check=False, timeout=60)
        time.sleep(0.3)
        assert bystander.poll() is None, "miniray stop signalled an unrelated process"
        assert stop.returncode == 1 and "not a miniray head" in stop.stderr
        assert not (root / "head.json").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_stop_does_not_hang_on_a_zombie(tmp_path):
    zombie = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{zombie.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.02)
    try:
        _plant_head_json(tmp_path, zombie.pid)
        env = dict(os.environ, MINIRAY_TMPDIR=str(tmp_path))
        started = time.monotonic()
        stop = _cli(env, "stop", "--timeout", "1", check=False, timeout=40)
        assert time.monotonic() - started < 30
        assert stop.returncode == 0, stop.stderr
    finally:
        zombie.wait()


def test_stop_removes_head_log_and_status_prints_memory_in_units(head):  # noqa: F811
    status = _cli(head["env"], "status").stdout
    memory_line = [line for line in status.splitlines() if line.strip().startswith("memory")]
    assert memory_line and ("GiB" in memory_line[0] or "MiB" in memory_line[0]), status
    root = os.path.join(head["tmp"], f"miniray-{os.getuid()}")
    assert os.path.exists(os.path.join(root, "head.log"))
    _cli(head["env"], "stop")
    assert not os.path.exists(os.path.join(root, "head.log"))


# -- nothing is held for a peer that has not presented the token -------------------------

def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the peer closes the connection before the socket's timeout (whatever
    it sent first, e.g. a refusal, is read and dropped)."""
    try:
        while sock.recv(4096):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_idle_unauthenticated_clients_are_cut_off(head):  # noqa: F811
    host, _, port = head["address"].rpartition(":")
    idle = []
    for _ in range(100):
        sock = socket.create_connection((host, int(port)), timeout=10)
        idle.append(sock)
    # The cap closes those beyond it at once; the deadline the rest.
    deadline = time.monotonic() + 15  # the handshake deadline is a few seconds
    for sock in idle:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        assert _closed_by_peer(sock), "an idle unauthenticated connection stayed open"
        sock.close()
    miniray.init(address="auto")
    assert miniray.get(miniray.remote(lambda: 41).remote(), timeout=60) == 41
    miniray.shutdown()


def test_a_flood_before_the_handshake_is_not_buffered(head):  # noqa: F811
    host, _, port = head["address"].rpartition(":")
    before = _rss_kib(head["pid"])
    sent = 0
    chunk = b"\xdb" + b"\xff" * (1 << 20)  # a str32 header announcing 4 GiB, then filler
    sock = socket.create_connection((host, int(port)), timeout=10)
    try:
        while sent < 64 << 20:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass  # cut off: what we want
    finally:
        sock.close()
    grew = _rss_kib(head["pid"]) - before
    print(f"head RSS grew by {grew} KiB while {sent >> 20} MiB were sent before a handshake")
    assert grew < 16 * 1024, f"the head's RSS grew by {grew} KiB for {sent} bytes sent"
    # Malformed and oversized hellos get a clear refusal.
    for payload in (b"\xc1" * 10, P.pack(["hello", "x" * 10_000, 1, 1]),
                    P.pack(["hello", 12, "pid", 1]), P.pack({"not": "a list"})):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(payload)
        reply = sock.recv(4096)
        sock.close()
        assert reply == b"" or b"denied" in reply
    # The node still serves a real driver.
    miniray.init(address="auto")
    assert miniray.get(miniray.remote(lambda: 42).remote(), timeout=60) == 42
    miniray.shutdown()


def test_dashboard_cuts_off_idle_flooding_and_excess_connections(ray):
    import urllib.request

    from miniray import api
    from miniray.dashboard import server as dashboard_server

    from .dashboard_util import local_url, running_dashboard

    with running_dashboard(api._runtime) as dashboard:
        address = (dashboard.host, dashboard.port)
        idle = [socket.create_connection(address, timeout=10)
                for _ in range(getattr(dashboard_server, "MAX_CONNECTIONS", 128) + 20)]
        deadline = time.monotonic() + 15  # the idle timeout is a few seconds
        for sock in idle:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            assert _closed_by_peer(sock), "an idle dashboard connection stayed open"
            sock.close()
        # A request line or header far beyond the limits is refused, not buffered.
        sock = socket.create_connection(address, timeout=10)
        try:
            sock.sendall(b"GET /api/summary?" + b"a" * (1 << 20))
        except OSError:
            pass
        reply = b""
        try:
            reply = sock.recv(4096)
        except OSError:
            pass
        sock.close()
        assert reply == b"" or b" 400 " in reply.split(b"\r\n")[0]
        with urllib.request.urlopen(local_url(dashboard) + "/api/summary", timeout=30) as r:
            assert r.status == 200
    assert ray.get(ray.remote(lambda: 5).remote(), timeout=60) == 5
