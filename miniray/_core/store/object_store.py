"""The per-process half of the shared-memory object store.

Every process (the driver and each worker) writes the large objects it
creates into arenas it owns: big ``/dev/shm`` segments carved up by the slot
allocator, so a ``put`` or a large task result needs no round trip to
allocate. Objects bigger than half an arena get a dedicated segment. Freeing
is a message to the owner (or a direct call in the owning process).

Readers map each arena read-only once and keep the mapping; each read makes
a small anchor object viewing the object's bytes, and the read pins the
object: while any view of it (a numpy array, a memoryview) is alive, the node
keeps the slot, and a ``weakref.finalize`` on the anchor releases the pin.

Pages are reserved before they are written and punched out when freed, so
the store never faults on a full tmpfs and gives memory back at once.

Locations are ``(segment_name, offset, size)`` lists so they travel in msgpack.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
import weakref

from ..._speedups import SlotAllocator
from ...exceptions import ObjectLostError, ObjectStoreFullError
from . import shm
from .serialization import SerializedValue, deserialize_view

DEFAULT_ARENA_SIZE = 256 * 1024 * 1024
MIN_BLOCK = 4096
# Reads at least this large are mapped in one madvise instead of page by page.
POPULATE_READ_MIN = 1 << 20
# Freed pages the driver keeps resident for the next put, and for how long.
WARM_KEEP_S = 1.0
# A write into a store full of pinned objects waits this long for them to be
# let go (unpins arrive batched, a moment after the tasks that held them end).
STORE_FULL_GRACE_S = 3.0
_RETRIES = 4


def _page_end(n: int) -> int:
    return n + (-n % MIN_BLOCK)


class _Arena:
    __slots__ = ("name", "fd", "mapping", "view", "allocator")

    def __init__(self, name: str, size: int):
        self.name = name
        self.fd = shm.create(name, size)
        self.mapping, _ = shm.map_region(self.fd, 0, size, writable=True)
        self.view = memoryview(self.mapping)
        self.allocator = SlotAllocator(size, MIN_BLOCK)


class LocalStore:
    """Arenas owned by this process, and read access to everybody's segments.

    Hooks set by the process's client:

    - ``reserve(size)``: ask the node for ``size`` bytes of the node-wide
      budget before writing (workers; the node spills or raises
      ``ObjectStoreFullError``).
    - ``on_full(size)``: the filesystem refused to reserve pages; make room
      (spill) and return whether anything was freed, so the write is retried.
    - ``reclaim()``: run the frees still queued for the node thread (driver).
    """

    def __init__(self, node_pid: int, capacity: int, arena_size: int = DEFAULT_ARENA_SIZE,
                 warm_limit: int = 0):
        self.node_pid = node_pid
        self.capacity = capacity
        self.arena_size = max(MIN_BLOCK * 16, min(arena_size, capacity))
        self.arena_size -= self.arena_size % MIN_BLOCK
        self._arenas: dict[str, _Arena] = {}
        self._dedicated: dict[str, int] = {}  # name -> size, segments we own whole
        self._read_maps: dict[str, mmap.mmap] = {}  # arenas mapped whole, kept
        self._populated: dict = {}  # (arena, offset) -> size read-populated here
        self._lock = threading.Lock()
        self.closed = False
        # Freed ranges whose pages are kept for a while: a put right after a
        # del reuses them warm (a cold 100 MiB write costs several times a
        # warm one). [arena, start, end, freed_at]; counted in warm_bytes,
        # which the node adds to its budget, and punched out by trim().
        self.warm_limit = warm_limit
        self._warm: list = []
        self.warm_bytes = 0
        self.reserve = None
        self.on_full = None
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
        if self.reserve is None:
            return self._write(value, size)
        self.reserve(size)
        try:
            return self._write(value, size)
        except BaseException:
            self.reserve(-size)
            raise

    def _write(self, value, size: int) -> list:
        for attempt in range(_RETRIES):
            try:
                if size > self.arena_size // 2:
                    return self._write_dedicated(value, size)
                return self._write_arena(value, size)
            except shm.NoSpace as exc:
                # Trim our own warm pages first, then ask for a spill.
                freed = self.trim() > 0
                if self.on_full is not None:
                    freed = self.on_full(size) or freed
                if not freed or attempt == _RETRIES - 1:
                    raise ObjectStoreFullError(self._full_message(size, exc)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _write_dedicated(self, value, size: int) -> list:
        name = shm.segment_name(self.node_pid, kind="d")
        fd = shm.create(name, size)
        try:
            shm.reserve(fd, 0, size)
            region, _skew = shm.map_region(fd, 0, size, writable=True)
        except BaseException:
            shm.unlink(name)
            raise
        finally:
            os.close(fd)
        with region:
            shm.populate(region, 0, size)
            value.write_into(memoryview(region))
            # ``with region`` closes the writable mapping; views are gone by now.
        with self._lock:
            self._dedicated[name] = size
        return [name, 0, size]

    def _write_arena(self, value, size: int) -> list:
        arena, offset, warm = self._allocate(size)
        if not warm and self.reclaim is not None and self.reclaim():
            # A del just reached the node: its slot is warm now, take it.
            with self._lock:
                arena.allocator.free(offset)
                shm.release(arena.mapping, offset, _page_end(offset + size) - offset)
            arena, offset, warm = self._allocate(size)
        end = _page_end(offset + size)
        if not warm:
            try:
                shm.reserve(arena.fd, offset, end - offset)
            except shm.NoSpace:
                with self._lock:
                    arena.allocator.free(offset)
                    shm.release(arena.mapping, offset, end - offset)
                raise
            shm.populate(arena.mapping, offset, end - offset)
        value.write_into(arena.view[offset:offset + size])
        return [arena.name, offset, size]

    def _allocate(self, size: int) -> tuple[_Arena, int, bool]:
        """A slot of ``size`` bytes, and whether its pages are all warm."""
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
            warm = self._take_warm(arena, offset, _page_end(offset + size)) if self._warm \
                else False
            return arena, offset, warm

    def _take_warm(self, arena, start: int, end: int) -> bool:
        """Claim the warm ranges overlapping [start, end) for a new slot; the
        parts of them outside it are punched out. True if all of it is warm."""
        covered = 0
        keep = []
        for item in self._warm:
            a, s, e, _t = item
            if a is not arena or e <= start or s >= end:
                keep.append(item)
                continue
            self.warm_bytes -= e - s
            covered += min(e, end) - max(s, start)
            if s < start:
                shm.release(a.mapping, s, start - s)
            if e > end:
                shm.release(a.mapping, end, e - end)
        self._warm = keep
        return covered >= end - start

    def free(self, location) -> None:
        name, offset, size = location
        with self._lock:
            arena = self._arenas.get(name)
            if arena is not None:
                arena.allocator.free(offset)
                end = _page_end(offset + size)
                if self.warm_limit <= 0 or end - offset > self.warm_limit:
                    shm.release(arena.mapping, offset, end - offset)
                    return
                self._warm.append([arena, offset, end, time.monotonic()])
                self.warm_bytes += end - offset
                while self.warm_bytes > self.warm_limit:
                    self._punch(self._warm.pop(0))
                return
            if self._dedicated.pop(name, None) is not None:
                shm.unlink(name)

    def _punch(self, item) -> None:
        arena, start, end, _t = item
        self.warm_bytes -= end - start
        shm.release(arena.mapping, start, end - start)

    def trim(self, older_than: float | None = None) -> int:
        """Give back the warm pages freed more than ``older_than`` seconds ago
        (all of them by default); returns the bytes released."""
        if not self._warm:
            return 0
        released = 0
        with self._lock:
            now = time.monotonic()
            keep = []
            for item in self._warm:
                if older_than is None or now - item[3] >= older_than:
                    released += item[2] - item[1]
                    self._punch(item)
                else:
                    keep.append(item)
            self._warm = keep
        return released

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
                "warm_bytes": self.warm_bytes,
            }

    def _full_message(self, size: int, exc) -> str:
        where = shm.SHM_DIR
        try:
            st = os.statvfs(where)
            fs = (f"{where} holds {_fmt(st.f_blocks * st.f_frsize)}, "
                  f"{_fmt(st.f_bavail * st.f_frsize)} of it free")
        except OSError:  # pragma: no cover
            fs = f"{where} is unavailable"
        return (
            f"The object store could not reserve {_fmt(size)} of shared memory ({exc}): "
            f"{fs}; this process holds {_fmt(self.bytes_in_use())} of objects in a store "
            f"of {_fmt(self.capacity)}, and spilling freed nothing more. Drop references to "
            "objects you no longer need, give the machine more shared memory (Docker: "
            "--shm-size), or lower miniray.init(object_store_memory=...) so that objects "
            "spill to disk sooner (_system_config={'object_spilling_directory': ...} "
            "chooses where)."
        )

    # -- reading --------------------------------------------------------------
    def map(self, location):
        """A read-only view of the object at ``location``, and the object whose
        life the view's keeps (the pin anchor: the view holds it)."""
        name, offset, size = location
        try:
            if shm.is_arena(name):
                # Each arena is mapped whole once and the mapping kept: a second
                # read of the same pages costs no page faults.
                mapping = self._read_maps.get(name)
                if mapping is None:
                    mapping = self._map_arena(name)
                if size >= POPULATE_READ_MIN and self._populated.get((name, offset)) != size:
                    # Once per location: populating pages already mapped still
                    # walks them (~1 ms per 100 MiB), more than a whole get.
                    if len(self._populated) > 4096:
                        self._populated.clear()
                    self._populated[(name, offset)] = size
                    start = offset - offset % MIN_BLOCK
                    shm.populate_read(mapping, start, offset + size - start)
                import numpy

                # A per-read object viewing the shared mapping: the views of
                # this read keep it alive, so its finalizer marks the last one.
                anchor = numpy.frombuffer(mapping, numpy.uint8, size, offset)
                return anchor, memoryview(anchor)
            fd = shm.open_readonly(name)
            try:
                region, skew = shm.map_region(fd, offset, size, writable=False)
            finally:
                os.close(fd)
            if size >= POPULATE_READ_MIN:
                shm.populate_read(region, 0, skew + size)
            return region, memoryview(region)[skew:skew + size]
        except FileNotFoundError:
            raise ObjectLostError(
                reason=f"its shared-memory segment {name} no longer exists"
            ) from None

    def _map_arena(self, name: str) -> mmap.mmap:
        fd = shm.open_readonly(name)
        try:
            mapping = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        with self._lock:
            existing = self._read_maps.get(name)
            if existing is not None:  # another thread mapped it meanwhile
                mapping.close()
                return existing
            self._read_maps[name] = mapping
        return mapping

    def read(self, location, on_release=None):
        """Deserialize the object at ``location`` as zero-copy views.

        ``on_release`` is called once no view of the object is left.
        """
        anchor, view = self.map(location)
        value = deserialize_view(view)
        if on_release is not None:
            weakref.finalize(anchor, on_release)
        return value

    def copy_to_file(self, location, path: str) -> None:
        """Write the object's bytes to ``path`` (spilling)."""
        anchor, view = self.map(location)
        try:
            with open(path, "wb") as f:
                f.write(view)
        finally:
            view.release()
            del anchor

    def write_raw(self, data) -> list:
        """Store bytes already in the shared-memory layout."""
        return self.write(_RawLayout(data))

    def write_from_file(self, path: str, size: int) -> list:
        """Restore a spill file: read straight into the new slot (one copy)."""
        return self.write(_FileLayout(path, size))

    def forget_segment(self, name: str) -> None:
        with self._lock:
            mapping = self._read_maps.pop(name, None)
        if mapping is not None:
            try:
                mapping.close()
            except BufferError:
                pass  # a view is alive; the mapping goes with it

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
            self._warm.clear()
            self.warm_bytes = 0
            for mapping in self._read_maps.values():
                try:
                    mapping.close()
                except BufferError:
                    pass
            self._read_maps.clear()


def read_file(path: str):
    """Deserialize a spill file as zero-copy views of a read-only mapping of it.

    The page cache serves it: a second read costs no disk access. The file
    may be unlinked while mapped (its object deleted) without harm.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ObjectLostError(
            reason=f"its spill file {path} could not be read ({exc.strerror or exc})"
        ) from None
    try:
        size = os.fstat(fd).st_size
        region = shm.MappedRegion(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
    except (OSError, ValueError) as exc:
        raise ObjectLostError(reason=f"its spill file {path} could not be mapped ({exc})") \
            from None
    finally:
        os.close(fd)
    if size >= POPULATE_READ_MIN:
        shm.populate_read(region, 0, size)
    return deserialize_view(memoryview(region))


class _FileLayout:
    """Quacks like SerializedValue for ``LocalStore.write``: a spill file."""

    __slots__ = ("path", "size")

    def __init__(self, path: str, size: int):
        self.path = path
        self.size = size

    def shm_size(self) -> int:
        return self.size

    def write_into(self, view) -> int:
        with open(self.path, "rb", buffering=0) as f:
            n = f.readinto(view[:self.size])
        if n != self.size:
            raise OSError(f"spill file {self.path} is short: {n} of {self.size} bytes")
        return n


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
