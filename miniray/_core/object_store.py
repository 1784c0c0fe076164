"""The per-process half of the shared-memory object store.

Every process (the driver and each worker) writes the large objects it
creates into arenas it owns: big ``/dev/shm`` segments carved up by the slot
allocator, so a ``put`` or a large task result needs no round trip to
allocate. Objects bigger than half an arena get a dedicated segment. Freeing
is a message to the owner (or a direct call in the owning process).

Readers map just the object's pages read-only; the mapping pins the object:
while any view of it (a numpy array, a memoryview) is alive, the node keeps the
slot, and a ``weakref.finalize`` on the mapping releases the pin.

Locations are ``(segment_name, offset, size)`` lists so they travel in msgpack.
"""

from __future__ import annotations

import os
import threading
import weakref

from .._speedups import SlotAllocator
from ..exceptions import ObjectLostError, ObjectStoreFullError
from . import shm
from .serialization import SerializedValue, deserialize_view

DEFAULT_ARENA_SIZE = 256 * 1024 * 1024
MIN_BLOCK = 4096


class _Arena:
    __slots__ = ("name", "fd", "mapping", "view", "allocator", "touched")

    def __init__(self, name: str, size: int):
        self.name = name
        self.fd = shm.create(name, size)
        self.mapping, _ = shm.map_region(self.fd, 0, size, writable=True)
        self.view = memoryview(self.mapping)
        self.allocator = SlotAllocator(size, MIN_BLOCK)
        # High-water mark of the bytes ever written: pages below it are backed
        # (tmpfs keeps them while the segment lives), pages above it fault on
        # first write, which in a VM can cost 5-8x the copy itself.
        self.touched = 0


class LocalStore:
    """Arenas owned by this process, and read access to everybody's segments."""

    def __init__(self, node_pid: int, capacity: int, arena_size: int = DEFAULT_ARENA_SIZE):
        self.node_pid = node_pid
        self.capacity = capacity
        self.arena_size = max(MIN_BLOCK * 16, min(arena_size, capacity))
        self.arena_size -= self.arena_size % MIN_BLOCK
        self._arenas: dict[str, _Arena] = {}
        self._dedicated: dict[str, int] = {}  # name -> size, segments we own whole
        self._read_fds: dict[str, int] = {}  # other arenas we read from
        self._lock = threading.Lock()
        self.closed = False
        # Set by the driver's node: runs the frees still queued for the node
        # thread, so a put right after a ``del`` reuses the warm pages just freed.
        self.reclaim = None

    # -- writing --------------------------------------------------------------
    def write(self, value: SerializedValue) -> list:
        """Store a serialized value; returns its location."""
        size = value.shm_size()
        if size > self.capacity:
            raise ObjectStoreFullError(
                f"An object of {_fmt(size)} does not fit in the object store of "
                f"{_fmt(self.capacity)}. Raise the limit with "
                "miniray.init(object_store_memory=...), or pass smaller pieces."
            )
        if size > self.arena_size // 2:
            name = shm.segment_name(self.node_pid, kind="d")
            fd = shm.create(name, size)
            try:
                region, skew = shm.map_region(fd, 0, size, writable=True)
            finally:
                os.close(fd)
            with region:
                shm.populate(region, 0, size)
                value.write_into(memoryview(region))
                # ``with region`` closes the writable mapping; views are gone by now.
            with self._lock:
                self._dedicated[name] = size
            return [name, 0, size]
        arena, offset, touched = self._allocate(size)
        if offset + size > touched and self.reclaim is not None and self.reclaim():
            with self._lock:
                arena.allocator.free(offset)
            arena, offset, touched = self._allocate(size)
        end = offset + size
        if end > touched:
            cold = max(offset, touched)
            shm.populate(arena.mapping, cold, end - cold)
            with self._lock:
                arena.touched = max(arena.touched, end)
        value.write_into(arena.view[offset:end])
        return [arena.name, offset, size]

    def _allocate(self, size: int) -> tuple[_Arena, int, int]:
        """A slot of ``size`` bytes, and how far its arena had been written."""
        with self._lock:
            for arena in self._arenas.values():
                offset = arena.allocator.allocate(size)
                if offset >= 0:
                    break
            else:
                arena = _Arena(shm.segment_name(self.node_pid), self.arena_size)
                self._arenas[arena.name] = arena
                offset = arena.allocator.allocate(size)
                if offset < 0:  # pragma: no cover - size <= arena_size // 2
                    raise ObjectStoreFullError("arena allocation failed")
            return arena, offset, arena.touched

    def free(self, location) -> None:
        name, offset, _size = location
        with self._lock:
            arena = self._arenas.get(name)
            if arena is not None:
                arena.allocator.free(offset)
                return
            if self._dedicated.pop(name, None) is not None:
                shm.unlink(name)

    def owns(self, name: str) -> bool:
        return name in self._arenas or name in self._dedicated

    def bytes_in_use(self) -> int:
        with self._lock:
            return sum(a.allocator.bytes_in_use for a in self._arenas.values()) + sum(
                self._dedicated.values()
            )

    def allocator_stats(self) -> dict:
        with self._lock:
            allocated = sum(a.allocator.allocated_count for a in self._arenas.values())
            freed = sum(a.allocator.freed_count for a in self._arenas.values())
            return {
                "arenas": len(self._arenas),
                "dedicated": len(self._dedicated),
                "allocated_count": allocated,
                "freed_count": freed,
                "bytes_in_use": sum(a.allocator.bytes_in_use for a in self._arenas.values()),
            }

    # -- reading --------------------------------------------------------------
    def map(self, location) -> tuple[shm.MappedRegion, memoryview]:
        name, offset, size = location
        fd = self._read_fds.get(name)
        try:
            if fd is None:
                fd = shm.open_readonly(name)
                if shm.is_arena(name):
                    self._read_fds[name] = fd
                else:
                    try:
                        region, skew = shm.map_region(fd, offset, size, writable=False)
                    finally:
                        os.close(fd)
                    return region, memoryview(region)[skew:skew + size]
            region, skew = shm.map_region(fd, offset, size, writable=False)
        except FileNotFoundError:
            raise ObjectLostError(
                reason=f"its shared-memory segment {name} no longer exists"
            ) from None
        return region, memoryview(region)[skew:skew + size]

    def read(self, location, on_release=None):
        """Deserialize the object at ``location`` as zero-copy views.

        ``on_release`` is called once no view of the mapping is left.
        """
        region, view = self.map(location)
        value = deserialize_view(view)
        if on_release is not None:
            weakref.finalize(region, on_release)
        return value

    def write_raw(self, data) -> list:
        """Store bytes already in the shared-memory layout (restoring a spill)."""
        return self.write(_RawLayout(data))

    def forget_segment(self, name: str) -> None:
        fd = self._read_fds.pop(name, None)
        if fd is not None:
            os.close(fd)

    def close(self, unlink: bool = True) -> None:
        """Close every handle; unlink the segments this process owns if ``unlink``."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            for arena in self._arenas.values():
                arena.view.release()
                try:
                    arena.mapping.close()
                except BufferError:
                    pass  # views still exported; unlinking is what matters
                os.close(arena.fd)
                # An arena with nothing left in it can go even when others may
                # still read our objects: a long-lived head would otherwise keep
                # one empty segment per driver or worker that ever ran.
                if unlink or arena.allocator.bytes_in_use == 0:
                    shm.unlink(arena.name)
            if unlink:
                for name in self._dedicated:
                    shm.unlink(name)
            self._arenas.clear()
            self._dedicated.clear()
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()


class _RawLayout:
    """Quacks like SerializedValue for ``LocalStore.write``."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data

    def shm_size(self) -> int:
        return len(self.data)

    def write_into(self, view) -> int:
        view[:len(self.data)] = self.data
        return len(self.data)


def _fmt(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"  # pragma: no cover
