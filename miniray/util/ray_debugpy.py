"""Ray's debugpy debugger (``ray.util.ray_debugpy``): attach VS Code (or any
Debug Adapter Protocol client) to a task or actor.

:func:`set_trace` opens debugpy's port on 127.0.0.1 in the worker (once per
process), prints where it listens (echoed on the driver with the worker's
``(name pid=N)`` prefix, and kept in its log file)::

    miniray: debugpy listening at 127.0.0.1:PORT (pid N): attach with "Python Debugger: Remote Attach"

then waits for the client and stops at the caller's line. Needs
``debugpy>=1.8`` (``pip install debugpy``). Only loopback is listened on.
"""

from __future__ import annotations

import os
import sys
import threading

__all__ = ["set_trace"]

_lock = threading.Lock()
_port = None


def _debugpy():
    try:
        import debugpy
    except ImportError:
        raise ImportError("ray_debugpy needs debugpy>=1.8: pip install debugpy") from None
    return debugpy


def _ensure_port_open() -> int:
    global _port
    debugpy = _debugpy()
    with _lock:
        if _port is None:
            _, _port = debugpy.listen(("127.0.0.1", 0))
            print(f"miniray: debugpy listening at 127.0.0.1:{_port} (pid {os.getpid()}): "
                  'attach with "Python Debugger: Remote Attach"', file=sys.__stderr__,
                  flush=True)
    return _port


def set_trace(breakpoint_uuid=None) -> None:
    """Wait for a debugger to attach, then stop at the caller's line."""
    debugpy = _debugpy()
    _ensure_port_open()
    debugpy.wait_for_client()
    import pydevd

    pydevd.settrace(stop_at_frame=sys._getframe().f_back)
