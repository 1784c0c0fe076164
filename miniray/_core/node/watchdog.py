"""Crash watchdog: reclaims a node's processes and segments if the driver dies.

Started by the node with a pipe on stdin. The node writes the pid of every
worker it spawns; when the pipe closes (the driver exited, cleanly or killed
with SIGKILL), the watchdog kills the workers that are still miniray workers
and unlinks every segment of the node (in ``/dev/shm`` or the store's file
directory) and its spill directories. It imports almost nothing
so it starts fast and stays small.
"""

from __future__ import annotations

import os
import signal
import sys


def _is_our_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"miniray._core.worker.worker_main" in f.read()
    except OSError:
        return False


def main() -> None:
    if os.environ.get("COVERAGE_PROCESS_START"):
        try:
            import coverage

            coverage.process_startup()
        except ImportError:  # pragma: no cover
            pass
    node_pid = int(sys.argv[1])
    spill_dir = sys.argv[2] if len(sys.argv) > 2 else ""
    store_dir = sys.argv[3] if len(sys.argv) > 3 else ""
    extra_spill_dir = sys.argv[4] if len(sys.argv) > 4 else ""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pids: set[int] = set()
    for line in sys.stdin:
        line = line.strip()
        if line.startswith("+"):
            pids.add(int(line[1:]))
        elif line.startswith("-"):
            pids.discard(int(line[1:]))
    for pid in pids:
        if _is_our_worker(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    from miniray._core.store import shm

    shm.sweep_node(node_pid, store_dir or None)
    import shutil

    for directory in (spill_dir, extra_spill_dir):
        if directory and os.path.isdir(directory):
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
