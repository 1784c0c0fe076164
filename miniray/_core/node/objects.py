"""The object directory: every object's entry, refcount, pins and storage.

Owns ``objects`` (id -> ObjectEntry), ``_pinned_garbage``, ``_state_lock``,
the store budget (``store``, ``store_dir``, ``arena_size``, ``store_used``,
``capacity``, ``_used_lock``), reservations (``WorkerHandle.reserved``) and
spilling (``spill``, ``spill_dir``). Serves
``put``, ``get``, ``wait``, ``reserve`` and the ref-count RPCs.

Invariants:
- An entry's ``refcount`` counts holders: each process holding an ObjectRef
  (counted once per process), each pending task using it as an argument, and
  each stored object containing a ref to it. At zero the entry is deleted and
  its storage freed once no reader pins it (``_pinned_garbage`` meanwhile).
- ``store_used`` counts every byte in the node's shared memory (objects,
  reservations of objects being written, the driver's warm pages): the store
  makes room by spilling unpinned objects before it refuses a write.
- A spilled object is restored before a reader gets its location.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time

from ...exceptions import ObjectStoreFullError, OutOfDiskError
from .. import protocol as P
from ..store import shm
from ..client import VALUE_ERROR, VALUE_INLINE, VALUE_SHM, VALUE_SPILLED
from ..store.object_store import STORE_FULL_GRACE_S, LocalStore, _fmt
from ..store.spilling import SpillFiles
from .state import DRIVER, ObjectEntry, PENDING, _error_bytes, _lost
from .core import NodeCore


class ObjectDirectory(NodeCore):
    def _init_objects(self, object_store_memory, arena_size, spill_dir, spill_parent,
                      store_dir) -> None:
        self.capacity = int(object_store_memory)
        shm.set_dir(store_dir or os.environ.get(shm.STORE_DIR_ENV) or "/dev/shm")
        self.store_dir = shm.SHM_DIR
        # The driver keeps up to a quarter of the store of freed pages warm for
        # the next put (they count in the budget and are given back first).
        self.store = LocalStore(self.node_pid, self.capacity,
                                arena_size or min(self.capacity, 512 * 1024 * 1024),
                                warm_limit=min(self.capacity // 4, 512 * 1024 * 1024))
        self.spill_dir = spill_dir or tempfile.mkdtemp(prefix=f"miniray_spill_{self.node_pid}_")
        self.spill = SpillFiles(self.node_pid, spill_parent, self.spill_dir)
        self.objects: dict[bytes, ObjectEntry] = {}
        self._pinned_garbage: dict[bytes, ObjectEntry] = {}
        self._used_lock = threading.Lock()
        self.store_used = 0
        self._state_lock = threading.Lock()
        self.arena_size = self.store.arena_size

    def _release_pins(self, holder) -> None:
        """Drop the pins of a worker or driver that is gone."""
        for object_id, n in holder.pins.items():
            entry = self.objects.get(object_id)
            if entry is not None:
                entry.pins -= n
                self._maybe_free_unpinned(object_id, entry)
        holder.pins.clear()

    def _release_held(self, holder) -> None:
        """Drop the refs a worker or driver that is gone held."""
        for object_id, n in list(holder.held.items()):
            self._decref(object_id, n)
        holder.held.clear()

    # -- object table --------------------------------------------------------------
    def _set_value(self, object_id: bytes, state, data, contained=None, size=0) -> None:
        if state == VALUE_SHM:
            self._settle_reservation(data)
        entry: ObjectEntry = self.objects.get(object_id)
        if entry is None:
            # Nobody holds a ref any more: drop the value at once.
            if state == VALUE_SHM:
                self._free_storage(data)
            self._release_contained(contained)
            return
        if entry.state != PENDING:  # a retried task finished twice; keep the first
            if state == VALUE_SHM:
                self._free_storage(data)
            self._release_contained(contained)
            return
        entry.contained = contained
        entry.size = size
        if state == VALUE_SHM:
            self._add_used(size)
            self.events.object_event(object_id, "SEALED", size)
        with self._state_lock:
            entry.data = data  # before state: readers of inline values take no lock
            entry.state = state
            waiters = entry.waiters
            entry.waiters = None
        for waiter in waiters:
            waiter(object_id, entry)
        if state == VALUE_SHM and self._over_budget(0) > 0:
            self._spill_over()

    def _add_used(self, delta) -> None:
        with self._used_lock:  # the driver's put adds from its own thread
            self.store_used += delta

    def _release_contained(self, contained) -> None:
        if contained:
            for object_id in contained:
                self._decref(object_id, 1)

    def _incref(self, object_id: bytes, n = 1) -> None:
        entry: ObjectEntry = self.objects.get(object_id)
        if entry is not None:
            entry.refcount += n

    def _decref(self, object_id: bytes, n = 1) -> None:
        entry: ObjectEntry = self.objects.get(object_id)
        if entry is None:
            return
        entry.refcount -= n
        if entry.refcount <= 0:
            self._delete(object_id, entry)

    def _delete(self, object_id: bytes, entry: ObjectEntry) -> None:
        del self.objects[object_id]
        if self.streams and object_id in self.streams:  # a generator dropped mid-way
            self._stream_ended(object_id, entry)
        if entry.is_actor_handle:
            self._on_actor_handles_gone(object_id)
            return
        self.counters["objects_freed"] += 1
        if entry.state == VALUE_SHM:
            self.events.object_event(object_id, "FREED", entry.size)
            if entry.pins > 0:
                entry.free_when_unpinned = True
                self._pinned_garbage[object_id] = entry
            else:
                self._free_entry_storage(entry)
        if self.spill.files and object_id in self.spill.files:
            self.spill.remove(object_id)
        self._release_contained(entry.contained)
        entry.contained = None

    def _free_entry_storage(self, entry: ObjectEntry) -> None:
        self._add_used(-entry.size)
        self._free_storage(entry.data)

    def _maybe_free_unpinned(self, object_id, entry) -> None:
        if entry.free_when_unpinned and entry.pins <= 0:
            entry.free_when_unpinned = False
            self._pinned_garbage.pop(object_id, None)
            self._free_entry_storage(entry)

    def _free_storage(self, location) -> None:
        name = location[0]
        if self.store.owns(name):
            self.store.free(location)
            return
        parsed = shm.parse_name(name)
        owner = self.workers_by_pid.get(parsed[1]) if parsed else None
        if owner is not None and not owner.dead:
            # Its pages go back now, not when the owner next reads its socket
            # (a worker in a long task would keep them past the budget).
            shm.release_in(name, location[1], location[2])
            self._send(owner, [P.FREE, [location]])
            return
        # Owner is gone: the segment is adopted; unlink it when its last object goes.
        if not shm.is_arena(name):
            shm.unlink(name)
            self.store.forget_segment(name)
            return
        live = sum(1 for e in list(self.objects.values())
                   if e.state == VALUE_SHM and e.data[0] == name)
        live += sum(1 for e in list(self._pinned_garbage.values()) if e.data[0] == name)
        # Its pages go back now: readers elsewhere may keep the arena mapped
        # (warm mappings) after it is unlinked, which would keep them alive.
        shm.release_in(name, location[1], location[2])
        if live == 0:
            shm.unlink(name)
            self.store.forget_segment(name)

    def unpin_threadsafe(self, object_id: bytes) -> None:
        self.post_lazy(self._unpin, object_id)

    def _unpin(self, object_id: bytes, n = 1) -> None:
        entry: ObjectEntry = self.objects.get(object_id) or self._pinned_garbage.get(object_id)
        if entry is None:
            return
        entry.pins -= n
        self._maybe_free_unpinned(object_id, entry)

    # -- spilling and the node-wide budget ---------------------------------------------
    # ``store_used`` counts the bytes of every process's live objects, plus what
    # workers reserved for objects they are writing; the driver's warm freed
    # pages count too. Together they stay within ``capacity``.
    def _spill(self, need: int) -> int:
        freed = 0
        spill = self.spill
        for object_id, entry in list(self.objects.items()):
            if freed >= need:
                break
            if entry.state != VALUE_SHM or entry.pins > 0:
                continue
            path = spill.write(self.store, object_id, entry.data)
            if path is None:
                break  # the disk is full too
            location = entry.data
            with self._state_lock:
                if entry.pins > 0:  # a reader got in first; the file serves next time
                    continue
                entry.state = VALUE_SPILLED
                entry.data = path
            self._free_storage(location)
            self._add_used(-entry.size)
            freed += entry.size
            self.counters["objects_spilled"] += 1
            self.counters["bytes_spilled"] += entry.size
            self.events.object_event(object_id, "SPILLED", entry.size)
        return freed

    def _restore(self, object_id: bytes, entry: ObjectEntry) -> None:
        """Bring a spilled object back into shared memory when the budget
        allows; otherwise it stays spilled and readers read its file."""
        # Restored objects are pinned while tasks run on them; a quarter of
        # the store stays free of them so new objects still fit.
        size = entry.size + self.capacity // 4
        if self._over_budget(size) > 0 and (not self.store.trim()
                                             or self._over_budget(size) > 0):
            # No room without spilling something else: readers map the file
            # (the page cache serves it) rather than the store thrashing.
            self.counters["restores_deferred"] += 1
            return
        try:
            location = self.store.write_from_file(entry.data, entry.size)
        except (ObjectStoreFullError, OSError):
            self.counters["restores_deferred"] += 1
            return
        with self._state_lock:
            entry.state = VALUE_SHM
            entry.data = location
        # The file stays until the object is deleted: a reader may hold its path.
        self._add_used(entry.size)
        self.counters["objects_restored"] += 1
        self.events.object_event(object_id, "RESTORED", entry.size)

    def _spill_over(self) -> None:
        """Back within budget after an object arrived past it (best effort)."""
        if self.store.trim() and self._over_budget(0) <= 0:
            return
        self._spill(self._over_budget(0))
        self.store.trim()

    def _over_budget(self, size: int) -> int:
        return self.store_used + self.store.warm_bytes + size - self.capacity

    def _make_room(self, size: int) -> int:
        """Free budget for ``size`` more bytes (warm pages, then spilling);
        raises ObjectStoreFullError when pinned objects leave no room."""
        over = self._over_budget(size)
        if over <= 0:
            return 0
        freed = self.store.trim()
        if self._over_budget(size) > 0:
            freed += self._spill(self._over_budget(size))
            self.store.trim()  # what spilling freed in our own arenas stays warm
        if self._over_budget(size) > 0:
            self._raise_full(size, freed)
        return freed

    def _raise_full(self, size: int, freed: int) -> None:
        refused = self.spill.disk_full
        if refused is not None:
            raise OutOfDiskError(
                f"The object store is full and spilling to {self.spill.dir} failed: the "
                f"disk is full ({refused.strerror}). Free disk space there, choose another "
                "directory with init(object_spilling_directory=...), drop references to "
                "objects you no longer need, or raise miniray.init(object_store_memory=...).")
        pinned = sum(e.size for e in list(self.objects.values())
                     if e.state == VALUE_SHM and e.pins)
        pinned += sum(e.size for e in list(self._pinned_garbage.values()))
        raise ObjectStoreFullError(
            f"The object store is full: {_fmt(self.store_used)} of {_fmt(self.capacity)} "
            f"in use, {_fmt(pinned)} of it pinned by live views or running tasks, and "
            f"{_fmt(size)} more was asked for (spilling freed {_fmt(freed)}; "
            f"{_fmt(self.spill.bytes)} is spilled to {self.spill.dir}). Drop references "
            "to objects you no longer need, or raise miniray.init(object_store_memory=...).")

    def make_room_threadsafe(self, size: int) -> None:
        """Called by the driver before writing a large object."""
        if size > self.capacity:
            raise ObjectStoreFullError(
                f"An object of {_fmt(size)} does not fit in the object store of "
                f"{_fmt(self.capacity)}; raise miniray.init(object_store_memory=...).")
        if self._over_budget(size) <= 0:
            return
        if threading.get_ident() == self._loop_thread_id():
            self._make_room(size)  # pins cannot be released while this thread waits
            return
        # Objects pinned by tasks that just ended are unpinned a moment later
        # (workers batch their unpins): as Ray's store does, wait a grace period
        # for room before calling the store full.
        deadline = time.monotonic() + STORE_FULL_GRACE_S
        pause = 0.005
        while True:
            try:
                self._on_loop(self._make_room, size)
                return
            except OutOfDiskError:
                raise
            except ObjectStoreFullError:
                if time.monotonic() >= deadline or not self._anything_pinned():
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _anything_pinned(self) -> bool:
        return bool(self._pinned_garbage) or any(
            e.pins for e in list(self.objects.values()) if e.state == VALUE_SHM)

    def _on_store_full(self, size: int) -> bool:
        """The filesystem under the store refused pages (other processes use it
        too): spill regardless of the budget; True if anything was freed."""
        if self._closing:
            return False
        return self._on_loop(self._spill, size) > 0

    def rpc_reserve(self, caller, size: int, force: bool = False, no_wait: bool = False):
        """A worker is about to write ``size`` bytes: take them from the budget
        (spilling if needed). ``force``: its filesystem is full, spill anyway.
        ``no_wait``: sent without waiting for a reply (an async actor's loop),
        so it cannot fail. A negative size returns an unused reservation."""
        if force:
            return self._spill(size) > 0
        if size > 0:
            try:
                self._make_room(size)
            except ObjectStoreFullError:
                if not no_wait:
                    raise
        caller.reserved += size
        self._add_used(size)
        return True

    def _settle_reservation(self, location) -> None:
        """A worker's object arrived: its reservation becomes the object's bytes."""
        parsed = shm.parse_name(location[0])
        if parsed is None or parsed[1] == self.node_pid:
            return
        owner = self.workers_by_pid.get(parsed[1])
        if owner is None or owner.reserved <= 0:
            return
        size = min(location[2], owner.reserved)
        owner.reserved -= size
        self._add_used(-size)  # added back as the object's own bytes

    def _drop_reservation(self, holder) -> None:
        if holder.reserved:
            self._add_used(-holder.reserved)
            holder.reserved = 0

    def rpc_add_ref(self, caller, object_id: bytes) -> None:
        entry: ObjectEntry = self.objects.get(object_id)
        if entry is None:
            return
        entry.refcount += 1
        if caller is not DRIVER:
            caller.held[object_id] += 1

    def rpc_remove_ref(self, caller, object_id: bytes) -> None:
        if caller is not DRIVER:
            if caller.held.get(object_id, 0) <= 0:
                return
            caller.held[object_id] -= 1
            if caller.held[object_id] == 0:
                del caller.held[object_id]
        self._decref(object_id, 1)

    def rpc_pin(self, caller, object_id: bytes) -> None:
        entry = self.objects.get(object_id)
        if entry is not None:
            entry.pins += 1
            caller.pins[object_id] += 1

    def rpc_unpin(self, caller, object_id: bytes) -> None:
        if caller.pins.get(object_id, 0) > 0:
            caller.pins[object_id] -= 1
            if caller.pins[object_id] == 0:
                del caller.pins[object_id]
            self._unpin(object_id)

    def fulfill_value(self, object_id: bytes, state: int, data, contained, size) -> None:
        """Set a future ref's value (DriverClient.fulfill); runs on the loop."""
        if contained:
            for c in contained:
                self._incref(c)
        self._set_value(object_id, state, data, contained, size)

    def rpc_put(self, caller, object_id: bytes, data, contained) -> None:
        if caller is not DRIVER:
            self.objects[object_id] = ObjectEntry(1)
            caller.held[object_id] += 1
        if type(contained) is int:  # P.RESULT_ERROR: a generator's error, kept as a ref
            self._set_value(object_id, VALUE_ERROR, data)
            return
        for c in contained:
            self._incref(c)
        if isinstance(data, list):
            self._set_value(object_id, VALUE_SHM, data, contained or None, data[2])
        else:
            self._set_value(object_id, VALUE_INLINE, data, contained or None)

    def rpc_get(self, caller, object_ids, timeout):
        entries = []
        missing = []
        for object_id in object_ids:
            entry = self.objects.get(object_id)
            if entry is None:
                entry = ObjectEntry(0)
                entry.state = VALUE_ERROR
                entry.data = _error_bytes(_lost(object_id))
            entries.append(entry)
            if entry.state == PENDING:
                missing.append(entry)
        if not missing:
            return self._reply_values(caller, object_ids, entries)
        future = self.loop.create_future()
        remaining = [len(missing)]
        if caller is not DRIVER:
            self._block(caller)

        def on_ready(object_id, entry):
            remaining[0] -= 1
            if remaining[0] == 0 and not future.done():
                future.set_result(self._reply_values(caller, object_ids, entries))

        for entry in missing:
            entry.waiters.append(on_ready)
        if timeout is not None:
            self.loop.call_later(timeout, lambda: future.done() or future.set_result(None))
        if caller is not DRIVER:
            future.add_done_callback(lambda f: self._unblock(caller))
        return future

    def _reply_values(self, caller, object_ids, entries):
        out = []
        for object_id, entry in zip(object_ids, entries):
            if entry.state == VALUE_SPILLED:
                self._restore(object_id, entry)  # else the caller reads the file
            if entry.state == VALUE_SHM and caller is not DRIVER:
                # Pinned before the reply leaves: between the reply and the
                # reader's mapping, the object must not be spilled or freed.
                entry.pins += 1
                caller.pins[object_id] += 1
            out.append([entry.state, entry.data])
        return out

    def rpc_wait(self, caller, object_ids, num_returns, timeout):
        def ready_ids():
            return [i for i in object_ids
                    if (e := self.objects.get(i)) is None or e.state != PENDING]

        done = ready_ids()
        if len(done) >= num_returns or timeout == 0:
            return done[:num_returns]
        future = self.loop.create_future()
        if caller is not DRIVER:
            self._block(caller)
            future.add_done_callback(lambda f: self._unblock(caller))

        def check(*_):
            if future.done():
                return
            ready = ready_ids()
            if len(ready) >= num_returns:
                future.set_result(ready[:num_returns])

        for object_id in object_ids:
            entry = self.objects.get(object_id)
            if entry is not None and entry.state == PENDING:
                entry.waiters.append(check)
        if timeout is not None:
            self.loop.call_later(
                timeout, lambda: future.done() or future.set_result(ready_ids()[:num_returns]))
        return future
