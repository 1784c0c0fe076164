"""``miniray.experimental.tqdm_ray``: progress bars from many tasks and actors,
drawn once, by the driver (Ray's ``ray.experimental.tqdm_ray``).

::

    from miniray.experimental.tqdm_ray import tqdm

    @miniray.remote
    def work(n):
        for _ in tqdm(range(n), desc="work"):
            ...

In a worker a bar does not draw anything: it writes its state (a JSON line
with Ray's magic token) to its output at most every ``flush_interval_s``
seconds and when it closes. The node's log echo hands those lines to the
driver's bar manager (:func:`instance`) instead of printing them, and the
manager draws every bar: in a terminal, all bars together, redrawn in place;
otherwise (a file, a pipe, a notebook's captured output) one plain line per
update. A bar used in the driver itself goes to the manager directly.
"""

from __future__ import annotations

import builtins
import json
import os
import sys
import threading
import time
import uuid as _uuid

__all__ = ["RAY_TQDM_MAGIC", "instance", "safe_print", "tqdm"]

RAY_TQDM_MAGIC = "__ray_tqdm_magic_token__"

_print = builtins.print


def _in_worker() -> bool:
    from .._core import context

    return context._worker_client is not None


class tqdm:
    """A tqdm-like bar usable from any task or actor (``update``, ``close``,
    iteration, ``set_description``, ``total`` and ``n``)."""

    def __init__(self, iterable=None, desc: str | None = None, total: int | None = None,
                 unit: str | None = None, position: int | None = None,
                 flush_interval_s: float = 1.0):
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except (TypeError, AttributeError):
                total = None
        self._iterable = iterable
        self._desc = desc or ""
        self._total = total
        self._unit = unit or "it"
        self._pos = position or 0
        self._x = 0
        self._closed = False
        self._uuid = _uuid.uuid4().hex
        self._pid = os.getpid()
        self._flush_interval_s = flush_interval_s
        self._last_flush = 0.0
        self._dump_state(force=True)

    def set_description(self, desc: str) -> None:
        self._desc = desc
        self._dump_state()

    def update(self, n: int = 1) -> None:
        self._x += n
        self._dump_state()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._dump_state(force=True)

    def refresh(self) -> None:
        self._dump_state(force=True)

    @property
    def total(self):
        return self._total

    @total.setter
    def total(self, total) -> None:
        self._total = total

    @property
    def n(self) -> int:
        return self._x

    @n.setter
    def n(self, n: int) -> None:
        self._x = n

    def __iter__(self):
        if self._iterable is None:
            raise ValueError("this tqdm bar has no iterable; call update() instead")
        for item in self._iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _state(self) -> dict:
        return {"__magic_token__": RAY_TQDM_MAGIC, "x": self._x, "pos": self._pos,
                "desc": self._desc, "total": self._total, "unit": self._unit,
                "ip": "127.0.0.1", "pid": self._pid, "uuid": self._uuid,
                "closed": self._closed}

    def _dump_state(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < self._flush_interval_s:
            return
        self._last_flush = now
        if _in_worker():
            # One write of a whole line, so output of other threads cannot split it.
            sys.stdout.write(json.dumps(self._state()) + "\n")
            sys.stdout.flush()
        else:
            instance().process_state_update(self._state())


def _format(state: dict) -> str:
    x, total, unit = state["x"], state["total"], state["unit"]
    desc = f"{state['desc']}: " if state["desc"] else ""
    if total:
        fraction = min(1.0, x / total)
        filled = int(fraction * 20)
        bar = "#" * filled + "-" * (20 - filled)
        body = f"{fraction * 100:3.0f}%|{bar}| {x}/{total} {unit}"
    else:
        body = f"{x} {unit}"
    done = " (done)" if state["closed"] else ""
    return f"{desc}{body} [pid={state['pid']}]{done}"


class _BarManager:
    """The driver's bars, by (pid, uuid): drawn together in a terminal, one line
    per update elsewhere."""

    def __init__(self, stream=None):
        self.lock = threading.RLock()
        self.bars: dict[tuple, dict] = {}
        self.stream = stream
        self.drawn_lines = 0

    def _out(self):
        return self.stream if self.stream is not None else sys.stdout

    def _is_terminal(self) -> bool:
        try:
            return self._out().isatty()
        except (AttributeError, ValueError):
            return False

    def process_state_update(self, state: dict) -> None:
        with self.lock:
            key = (state.get("pid"), state.get("uuid"))
            self.bars[key] = state
            if self._is_terminal():
                self._redraw()
            else:
                self._write(_format(state) + "\n")
            if state.get("closed") and not self._is_terminal():
                del self.bars[key]

    def _write(self, text: str) -> None:
        out = self._out()
        try:
            out.write(text)
            out.flush()
        except (OSError, ValueError):  # the driver's output is closed
            pass

    def _redraw(self) -> None:
        up = f"\x1b[{self.drawn_lines}F" if self.drawn_lines else ""
        ordered = sorted(self.bars.values(), key=lambda s: (s["pos"], s["pid"], s["uuid"]))
        self._write(up + "".join("\x1b[2K" + _format(s) + "\n" for s in ordered))
        self.drawn_lines = len(ordered)
        # Closed bars stay drawn once, finished; then they leave the live set.
        for key in [k for k, s in self.bars.items() if s["closed"]]:
            del self.bars[key]
            self.drawn_lines -= 1

    def print(self, *args, **kwargs) -> None:
        """Print above the bars (they are redrawn below the text)."""
        with self.lock:
            if self._is_terminal() and self.drawn_lines:
                self._write(f"\x1b[{self.drawn_lines}F\x1b[J")
                self.drawn_lines = 0
            kwargs.setdefault("file", self._out())
            _print(*args, **kwargs)
            if self._is_terminal() and self.bars:
                self._redraw()


_manager: _BarManager | None = None
_manager_lock = threading.Lock()


def instance() -> _BarManager:
    """The driver's bar manager (created on first use)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = _BarManager()
        return _manager


def safe_print(*args, **kwargs) -> None:
    """``print`` that does not tear the bars: in the driver the text goes above
    them; in a worker it is a plain print."""
    if _in_worker():
        _print(*args, **kwargs)
    else:
        instance().print(*args, **kwargs)


def _take_line(line: bytes) -> bool:
    """A worker's output line: True if it was a bar's state (now drawn)."""
    try:
        state = json.loads(line)
    except ValueError:
        return False
    if not isinstance(state, dict) or state.get("__magic_token__") != RAY_TQDM_MAGIC:
        return False
    instance().process_state_update(state)
    return True
