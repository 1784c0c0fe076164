"""Where a head node publishes itself, and how a driver finds and joins it.

A head writes ``head.json`` and a token file (mode 0600) into a per-user
directory (mode 0700): ``$MINIRAY_TMPDIR/miniray-<uid>/`` (``/tmp`` by
default). ``miniray.init(address="auto")`` reads them; an explicit
``"host:port"`` connects over TCP with the token from the same file, from
``MINIRAY_TOKEN``, or from ``init(_token=...)``.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile

from . import protocol as P

HANDSHAKE_TIMEOUT_S = 10.0
DEFAULT_PORT = 6380


def session_root() -> str:
    base = os.environ.get("MINIRAY_TMPDIR") or tempfile.gettempdir()
    root = os.path.join(base, f"miniray-{os.getuid()}")
    os.makedirs(root, mode=0o700, exist_ok=True)
    return root


def head_file() -> str:
    return os.path.join(session_root(), "head.json")


def token_file() -> str:
    return os.path.join(session_root(), "head.token")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's pid
        return True
    return True


def read_head() -> dict | None:
    """The running head's description, or None (stale files are ignored)."""
    try:
        with open(head_file()) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    if not pid_alive(int(info.get("pid", 0))):
        return None
    return info


def write_private(path: str, text: str) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_token() -> str | None:
    token = os.environ.get("MINIRAY_TOKEN")
    if token:
        return token
    try:
        with open(token_file()) as f:
            return f.read().strip() or None
    except OSError:
        return None


def resolve_address(address: str) -> tuple[str, object]:
    """("unix", path) or ("tcp", (host, port)) for an ``init(address=...)``."""
    if address == "auto":
        info = read_head()
        if info is None:
            raise ConnectionError(
                "address='auto' but no running miniray head was found in "
                f"{session_root()}. Start one with `miniray start --head`, or call "
                "miniray.init() without an address for an embedded node.")
        if info.get("unix_socket") and os.path.exists(info["unix_socket"]):
            return "unix", info["unix_socket"]
        host, _, port = info["address"].rpartition(":")
        return "tcp", (host, int(port))
    text = address
    for prefix in ("miniray://", "tcp://"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if text.startswith("unix:"):
        return "unix", text[5:]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(
            f"address={address!r} is not understood: use 'auto', 'host:port' of a head "
            "started with `miniray start --head`, 'ray://host:port' for a Ray cluster, or "
            "leave it out for an embedded node.")
    return "tcp", (host or "127.0.0.1", int(port))


def connect(address: str, token: str | None = None) -> tuple[socket.socket, dict]:
    """Open a connection to a head and do the token handshake.

    Returns the connected (blocking) socket and the node's description.
    """
    kind, where = resolve_address(address)
    token = token or read_token()
    if not token:
        raise PermissionError(
            f"No token to connect to the head at {address!r}: the head writes it to "
            f"{token_file()} (readable by its user only); on another account set "
            "MINIRAY_TOKEN or pass miniray.init(address=..., _token=...).")
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(HANDSHAKE_TIMEOUT_S)
    try:
        sock.connect(where)
        sock.sendall(P.pack(["hello", token, os.getpid(), 1]))
        unpacker = P.new_unpacker()
        reply = None
        while reply is None:
            data = sock.recv(1 << 16)
            if not data:
                raise ConnectionError(f"The head at {address!r} closed the connection "
                                      "during the handshake.")
            unpacker.feed(data)
            for message in unpacker:
                reply = message
                break
    except OSError as exc:
        sock.close()
        if isinstance(exc, ConnectionError) and "handshake" in str(exc):
            raise
        raise ConnectionError(
            f"Could not connect to the miniray head at {address!r} ({exc}). Is it running? "
            "Check with `miniray status`; start one with `miniray start --head`.") from None
    if reply[0] != "welcome":
        sock.close()
        raise PermissionError(f"The head at {address!r} refused the connection: {reply[1]}. "
                              f"Use the token in {token_file()} (or MINIRAY_TOKEN).")
    # The rest of the stream (if any arrived with the welcome) must not be lost.
    leftover = b""
    try:
        leftover = unpacker.read_bytes(1 << 30)
    except Exception:  # pragma: no cover - older msgpack
        leftover = b""
    reply[1]["_leftover"] = leftover
    sock.settimeout(None)
    return sock, reply[1]


def request_once(address: str, method: str, *args, token: str | None = None):
    """Connect, make one request, disconnect (``miniray status``)."""
    sock, _ = connect(address, token)
    try:
        sock.sendall(P.pack([P.REQUEST, 1, method, list(args)]))
        unpacker = P.new_unpacker()
        while True:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("The head closed the connection.")
            unpacker.feed(data)
            for message in unpacker:
                if message[0] == P.REPLY and message[1] == 1:
                    if not message[2]:
                        from .serialization import deserialize_inline

                        raise deserialize_inline(message[3])
                    return message[3]
    finally:
        sock.close()
