"""Ray's memory monitor: before the machine runs out of memory, kill the worker
running the newest task, which then fails with ``OutOfMemoryError`` (or is
retried if it has retries left), rather than letting the kernel's OOM killer
pick a process (perhaps the driver).

Every ``memory_monitor_refresh_ms`` (250; 0 turns it off) the node reads the
memory in use (the cgroup's limit and usage where one is set, else
``/proc/meminfo``'s total minus available); above ``memory_usage_threshold``
(0.95) of the total it kills one worker, preferring tasks that can be retried,
then the newest, and actors last; it waits for that worker to exit before it
kills another. Both settings are Ray's: ``init(_system_config={...})`` or the
``RAY_memory_usage_threshold`` / ``RAY_memory_monitor_refresh_ms`` variables.
"""

from __future__ import annotations

import os
import signal

DEFAULT_THRESHOLD = 0.95
DEFAULT_REFRESH_MS = 250


def memory_usage() -> tuple[int, int]:
    """(bytes in use, bytes in total) for this machine or its cgroup."""
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                return int(f.read()), int(limit)
    except (OSError, ValueError):
        pass
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024
    total = info["MemTotal"]
    return total - info.get("MemAvailable", info.get("MemFree", 0)), total


def settings(system_config: dict | None) -> tuple[float, int]:
    config = system_config or {}
    threshold = float(config.get("memory_usage_threshold",
                                 os.environ.get("RAY_memory_usage_threshold",
                                                DEFAULT_THRESHOLD)))
    refresh_ms = int(config.get("memory_monitor_refresh_ms",
                                os.environ.get("RAY_memory_monitor_refresh_ms",
                                               DEFAULT_REFRESH_MS)))
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"memory_usage_threshold must be in (0, 1], got {threshold!r}")
    if refresh_ms < 0:
        raise ValueError(f"memory_monitor_refresh_ms must be >= 0 (0: off), got {refresh_ms}")
    return threshold, refresh_ms


class MemoryMonitor:
    def __init__(self, runtime, threshold: float, refresh_ms: int):
        self.runtime = runtime
        self.threshold = threshold
        self.period = refresh_ms / 1000.0
        self.victim = None

    def start(self) -> None:
        if self.period > 0:
            self.runtime.loop.call_soon_threadsafe(self._tick)

    def _tick(self) -> None:
        runtime = self.runtime
        if getattr(runtime, "_closing", False):
            return
        try:
            self._check()
        finally:
            runtime.loop.call_later(self.period, self._tick)

    def _check(self) -> None:
        if self.victim is not None and not self.victim.dead:
            return  # one at a time: its memory is not back yet
        self.victim = None
        used, total = memory_usage()
        if used <= self.threshold * total:
            return
        worker = self._pick()
        if worker is None:
            return
        names = ", ".join(t.name for t in worker.assigned.values()) or \
            (worker.actor.class_name if worker.actor is not None else "idle")
        worker.oom_killed = (
            f"the memory monitor killed it: the machine used {used / 2**30:.2f} of "
            f"{total / 2**30:.2f} GiB, above memory_usage_threshold {self.threshold:g}, and "
            f"it ran the newest work ({names}). Use less memory per task, run fewer at once "
            "(num_cpus or memory= per task), or raise the threshold "
            "(_system_config={'memory_usage_threshold': ...})")
        self.victim = worker
        worker.killed = True
        try:
            os.kill(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _pick(self):
        def newest(worker):
            return max((t.dispatched_at or 0.0 for t in worker.assigned.values()), default=0.0)

        busy = [w for w in list(self.runtime.workers.values())
                if not w.dead and w.assigned and getattr(w, "pid", None)]
        if not busy:
            return None
        # As Ray: retriable tasks first, then the newest; actors last.
        return max(busy, key=lambda w: (
            w.actor is None,
            any(t.retries_left > 0 for t in w.assigned.values()),
            newest(w)))


def start(runtime, system_config: dict | None) -> MemoryMonitor:
    threshold, refresh_ms = settings(system_config)
    monitor = MemoryMonitor(runtime, threshold, refresh_ms)
    monitor.start()
    return monitor
