"""Where a head node publishes itself, and how a driver finds and joins it.

A head writes ``head.json`` and a token file (mode 0600) into a per-user
directory (mode 0700): ``$MINIRAY_TMPDIR/miniray-<uid>/`` (``/tmp`` by
default). ``miniray.init(address="auto")`` reads them; an explicit
``"host:port"`` connects over TCP with the token from the same file, from
``MINIRAY_TOKEN``, or from ``init(_token=...)``.

Another local user must not be able to stand in for the head: the session
directory is used only if this user owns it and nobody else may enter it
(checked without following symlinks), and a driver sends its token only to a
socket whose listening process runs as this user (``SO_PEERCRED`` on a Unix
socket, the kernel's socket table for loopback TCP).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import tempfile

from .. import protocol as P

HANDSHAKE_TIMEOUT_S = 10.0
DEFAULT_PORT = 6380


def session_root() -> str:
    """This user's session directory, created 0700 if missing and refused if
    someone else owns it or may enter it."""
    base = os.environ.get("MINIRAY_TMPDIR") or tempfile.gettempdir()
    root = os.path.join(base, f"miniray-{os.getuid()}")
    try:
        os.mkdir(root, 0o700)  # atomic: whoever made it first, we check it below
    except FileExistsError:
        pass
    check_private_dir(root)
    return root


def check_private_dir(path: str) -> None:
    """Raise PermissionError unless ``path`` is a real directory (not a
    symlink) owned by this user with no access for group or others."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise PermissionError(f"Cannot use the miniray directory {path}: {exc}") from None
    uid = os.getuid()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise PermissionError(
            f"The miniray directory {path} is a symlink or not a directory; someone may "
            f"be trying to redirect your head node's files. Remove it (rm {path}) or set "
            "MINIRAY_TMPDIR to a directory only you can write.")
    if info.st_uid != uid:
        raise PermissionError(
            f"The miniray directory {path} belongs to uid {info.st_uid}, not to you (uid "
            f"{uid}): another user may have created it to intercept your head node and "
            "its token. Have it removed (by its owner or root), or set MINIRAY_TMPDIR to "
            "a directory only you can write.")
    if info.st_mode & 0o077:
        raise PermissionError(
            f"The miniray directory {path} is open to other users (mode "
            f"{stat.S_IMODE(info.st_mode):o}); they could replace your head node's socket. "
            f"Run `chmod 700 {path}`, or remove it and let miniray create it again.")


def check_own_file(path: str, what: str = "file") -> os.stat_result:
    """lstat ``path`` and raise PermissionError unless it is this user's and
    not a symlink."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise PermissionError(f"The miniray {what} {path} is a symlink; refusing to use it. "
                              "Remove it.")
    if info.st_uid != os.getuid():
        raise PermissionError(
            f"The miniray {what} {path} belongs to uid {info.st_uid}, not to you (uid "
            f"{os.getuid()}); refusing to use it. Remove it.")
    return info


def head_file() -> str:
    return os.path.join(session_root(), "head.json")


def token_file() -> str:
    return os.path.join(session_root(), "head.token")


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (an exited process not yet reaped does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's pid
        return True
    return not is_zombie(pid)


def read_head() -> dict | None:
    """The running head's description, or None (stale files are ignored)."""
    try:
        fd = os.open(head_file(), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as f:
            if os.fstat(f.fileno()).st_uid != os.getuid():
                return None
            info = json.load(f)
        pid = int(info.get("pid", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    if pid <= 0 or not pid_alive(pid):
        return None
    return info


def write_private(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600) atomically, never through a
    symlink or a file someone else left at the temporary name."""
    tmp = path + ".tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def is_head_process(pid: int) -> bool:
    """Whether ``pid`` is a miniray head run by this user (checked in /proc:
    owner and command line), so that ``miniray stop`` never signals a process
    named by a file someone else planted, or a pid reused since."""
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.getuid():
            return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    if b"miniray._core.driver.head" in argv:
        return True
    # `miniray start --head --block` runs the head in the CLI process itself.
    return (b"start" in argv and b"--head" in argv and b"--block" in argv
            and any(a == b"miniray" or a.endswith(b"/miniray") for a in argv))


def is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def read_token() -> str | None:
    token = os.environ.get("MINIRAY_TOKEN")
    if token:
        return token
    try:
        fd = os.open(token_file(), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _check_unix_peer(sock: socket.socket, path: str) -> None:
    """Refuse a Unix socket file, or a listening process, of another user."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise ConnectionError(f"No miniray head socket at {path} ({exc}).") from None
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(
            f"Refusing to send your token to {path}: it is not a socket owned by you (uid "
            f"{os.getuid()}; its owner is uid {info.st_uid}). Another user may be "
            "impersonating your head node; remove the file and restart the head.")
    if hasattr(socket, "SO_PEERCRED"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _ = struct.unpack("3i", creds)
        if uid != os.getuid():
            raise PermissionError(
                f"Refusing to send your token to {path}: the process listening on it (pid "
                f"{pid}) runs as uid {uid}, not as you (uid {os.getuid()}). Another user "
                "may be impersonating your head node.")


def _loopback_listener_uid(host: str, port: int) -> int | None:
    """The uid owning the socket listening on loopback ``host:port`` (from the
    kernel's socket table), or None where that cannot be told."""
    try:
        packed = socket.inet_pton(socket.AF_INET, host)
        tables = [("/proc/net/tcp", packed[::-1].hex().upper())]
    except OSError:
        try:
            packed = socket.inet_pton(socket.AF_INET6, host)
        except OSError:
            return None
        # /proc/net/tcp6 prints each 32-bit word in host (little-endian) order.
        words = [packed[i:i + 4][::-1].hex().upper() for i in range(0, 16, 4)]
        tables = [("/proc/net/tcp6", "".join(words))]
    path, address = tables[0]
    # The listener may be bound to that address or to the wildcard one.
    wanted = {f"{address}:{port:04X}", f"{'0' * len(address)}:{port:04X}"}
    try:
        with open(path) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[1] in wanted and fields[3] == "0A":  # st 0A: LISTEN
                    return int(fields[7])
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return None


def _check_tcp_peer(host: str, port: int) -> None:
    try:
        loopback = host == "localhost" or ip_is_loopback(host)
    except ValueError:
        return
    if not loopback:
        return  # another machine: the token is all we have
    uid = _loopback_listener_uid("127.0.0.1" if host == "localhost" else host, port)
    if uid is not None and uid != os.getuid():
        raise PermissionError(
            f"Refusing to send your token to {host}:{port}: that port is held by uid {uid}, "
            f"not by you (uid {os.getuid()}). Another user may be impersonating your head "
            "node; check the address (miniray status) or restart the head.")


def ip_is_loopback(host: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(host).is_loopback


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
        if kind == "unix":
            _check_unix_peer(sock, where)
        else:
            _check_tcp_peer(*where)
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
        if isinstance(exc, PermissionError) or (
                isinstance(exc, ConnectionError) and "handshake" in str(exc)):
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
                        from ..store.serialization import deserialize_inline

                        raise deserialize_inline(message[3])
                    return message[3]
    finally:
        sock.close()
