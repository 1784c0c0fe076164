"""Shared fixtures: a real node per test, and checks that nothing leaked."""

from __future__ import annotations

import gc
import os
import time

import pytest

import miniray
from miniray._core.store import shm


def iter_processes():
    """(pid, command line with spaces, /proc stat fields after the name) of live processes."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield int(entry), cmd, stat


def _children_of(pid: int) -> list[int]:
    """Worker processes of the node whose pid is ``pid`` (their argv names it)."""
    marker = f" {pid} ".encode()
    return [p for p, cmd, _ in iter_processes()
            if b"miniray._core.worker.worker_main" in cmd and marker in cmd]


def assert_nothing_leaked(node_pid: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        segments = shm.list_segments(node_pid)
        workers = _children_of(node_pid)
        if not segments and not workers:
            return
        time.sleep(0.05)
    assert not segments, f"leaked shared-memory segments: {segments}"
    assert not workers, f"leaked worker processes: {workers}"


@pytest.fixture
def ray():
    """A fresh node with 2 CPUs; checks for leaks after the test."""
    miniray.init(num_cpus=2, object_store_memory=256 << 20)
    node_pid = os.getpid()
    try:
        yield miniray
    finally:
        gc.collect()
        miniray.shutdown()
        assert_nothing_leaked(node_pid)


@pytest.fixture
def ray_factory():
    """Start a node with custom arguments; shut down and leak-check after."""
    started = []

    def start(**kwargs):
        kwargs.setdefault("num_cpus", 2)
        miniray.init(**kwargs)
        started.append(os.getpid())
        return miniray

    yield start
    gc.collect()
    miniray.shutdown()
    for pid in started:
        assert_nothing_leaked(pid)
