"""Event-loop creation: uvloop when it is installed, asyncio otherwise."""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def running_loop():
    """The loop running in this thread, or None."""
    # Not get_running_loop(): in sync code (every sync get) it raises and
    # catches a RuntimeError, which costs more than the rest of the check.
    return asyncio._get_running_loop()
