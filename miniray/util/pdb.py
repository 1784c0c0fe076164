"""Ray's remote debugger (``ray.util.pdb``): ``set_trace()`` in a task or actor.

A worker has no terminal, so in a worker :func:`set_trace` opens a pdb session
on a loopback TCP port and waits for one client; the line saying where (also
echoed on the driver with the worker's ``(name pid=N)`` prefix, and kept in
the worker's log file) reads::

    miniray: RemotePdb session open at 127.0.0.1:PORT (task f, pid N); connect with `nc 127.0.0.1 PORT` (or telnet)

``breakpoint()`` in a task does the same (workers set ``sys.breakpointhook``,
unless ``PYTHONBREAKPOINT`` is set). ``c`` (continue) or ``q`` ends the
session and the task goes on. In the driver, :func:`set_trace` is plain pdb
on the terminal. Only loopback is listened on: the session runs code in the
worker, so it must not be reachable from other machines.
"""

from __future__ import annotations

import os
import pdb as _pdb
import re
import socket
import sys

__all__ = ["RemotePdb", "post_mortem", "set_trace"]

_HOST = "127.0.0.1"


class _SocketFile:
    """The client's end as pdb's stdin/stdout, with telnet's CRLF line ends."""

    def __init__(self, connection: socket.socket):
        self.connection = connection
        self.stream = connection.makefile("rw", encoding="utf-8", errors="replace",
                                          newline="")

    @property
    def encoding(self):
        return "utf-8"

    def readline(self):
        line = self.stream.readline()
        return line.replace("\r\n", "\n")

    def write(self, data):
        self.stream.write(re.sub("\r?\n", "\r\n", data))
        self.stream.flush()

    def flush(self):
        try:
            self.stream.flush()
        except OSError:
            pass

    def close(self):
        for closing in (self.stream.close, self.connection.close):
            try:
                closing()
            except OSError:
                pass


class RemotePdb(_pdb.Pdb):
    """pdb served to one client on ``host:port`` (port ``0`` picks a free one).
    :meth:`listen` blocks until the client connects."""

    def __init__(self, host: str = _HOST, port: int = 0, quiet: bool = False):
        self._quiet = quiet
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(1)
        self.host, self.port = self._listener.getsockname()[:2]
        self._handle = None

    def listen(self) -> None:
        from .. import get_runtime_context

        where = f"pid {os.getpid()}"
        try:
            context = get_runtime_context()
            task = context.get_task_id()
            if task is not None:
                where = f"task {task}, {where}"
        except Exception:  # outside a node: just the pid
            pass
        if not self._quiet:
            print(f"miniray: RemotePdb session open at {self.host}:{self.port} ({where}); "
                  f"connect with `nc {self.host} {self.port}` (or telnet)",
                  file=sys.__stderr__, flush=True)
        connection, _ = self._listener.accept()
        self._listener.close()
        self._handle = _SocketFile(connection)
        _pdb.Pdb.__init__(self, completekey="tab", stdin=self._handle, stdout=self._handle,
                          nosigint=True)
        self.use_rawinput = False
        self.prompt = "(miniray-pdb) "

    def _end(self) -> None:
        if self._handle is not None:
            self._handle.close()

    def do_continue(self, arg):
        self._end()
        self.set_continue()
        return 1

    do_c = do_cont = do_continue

    def do_quit(self, arg):
        # As Ray's: quitting leaves the debugger, not the task.
        self._end()
        self.set_continue()
        return 1

    do_q = do_exit = do_EOF = do_quit

    def set_trace(self, frame=None):
        if frame is None:
            frame = sys._getframe().f_back
        try:
            _pdb.Pdb.set_trace(self, frame)
        except OSError:  # the client went away
            self._end()

    def post_mortem(self, traceback=None):
        if traceback is None:
            traceback = sys.exc_info()[2]
        if traceback is None:
            raise ValueError("post_mortem() needs a traceback: call it in an except block")
        try:
            self.reset()
            self.interaction(None, traceback)
        except OSError:
            pass
        finally:
            self._end()


def _in_worker() -> bool:
    from .._core import context

    return context._worker_client is not None


def set_trace(breakpoint_uuid=None):
    """Stop here in a debugger: in a task or actor, a remote pdb on a loopback
    port (the line giving it is printed; connect with ``nc``); in the driver,
    pdb on the terminal. ``breakpoint_uuid`` is accepted for Ray's signature."""
    frame = sys._getframe().f_back
    if not _in_worker():
        _pdb.Pdb().set_trace(frame)
        return
    debugger = RemotePdb()
    debugger.listen()
    debugger.set_trace(frame)


def post_mortem(traceback=None):
    """Debug the exception being handled (or ``traceback``) after the fact,
    remotely in a worker, on the terminal in the driver."""
    if not _in_worker():
        _pdb.post_mortem(traceback)
        return
    debugger = RemotePdb()
    debugger.listen()
    debugger.post_mortem(traceback)


def _breakpointhook(frame) -> None:
    """What ``breakpoint()`` runs in a worker process (``frame``: its caller's)."""
    debugger = RemotePdb()
    debugger.listen()
    debugger.set_trace(frame)
