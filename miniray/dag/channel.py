"""Shared-memory channels of compiled DAGs: one writer, one reader, a ring of slots.

A channel is one segment of the node's shared memory (``/dev/shm``, or the
store's file directory), created ``0600`` by the driver when a DAG is compiled
and named ``miniray_<nodepid>_<driverpid>_g<dag>c<n>_<random>``: the node's
shutdown, its crash watchdog and the next start's sweep remove it like any
other segment of the node, and ``teardown()`` removes every segment of its DAG
by the ``g<dag>`` part. Layout::

    0     u32 written    records written so far (mod 2**32)
    64    u32 consumed   records read so far: the writer's futex word when the ring is full
    128   u32 closed     set by teardown (or when a peer died): both sides stop
    192   u32 reader_sleeping, 256 u32 writer_sleeping: raised around a wait
    4096  slot 0 .. slot nslots-1, each: u32 kind, u32 length, 8 bytes free, data

Each word sits on its own cache line. The writer fills slot ``written %
nslots`` and then bumps ``written``; the reader copies the record out and then
bumps ``consumed``. A reader with nothing to read raises its flag and sleeps in
``poll`` on the channel's doorbell, a FIFO beside the segment (``<name>_w``);
the writer, after its bump, writes one byte to the doorbell only when the flag
is up, so a busy reader costs the writer no system call. A FIFO rather than a
futex because a pipe write wakes its reader as a *synchronous* wake-up (the
scheduler runs the reader on the writer's CPU as the writer goes to sleep):
three hand-overs between three processes took 12.5 us over FIFOs and 19 us over
futexes on this 2-core VM (a plain pipe ping-pong, data in the pipe, 7 us). A
writer facing a full ring (rare: the ring holds ``_max_inflight_executions``
records) sleeps with ``FUTEX_WAIT`` on ``consumed`` (a ``syscall`` through
ctypes, which lets the GIL go) and the reader wakes it with ``FUTEX_WAKE``
under the same flag rule. No thread of the node is in between.

The flag protocol is Dekker's: the sleeper stores its flag and then loads the
word; the waker stores the word and then loads the flag. x86 may let each
later load pass the earlier store (the store waits in the store buffer), so
:func:`_fence` sits between them on both sides: a locked instruction (a
``threading.Lock`` round trip: glibc's semaphore does a ``lock cmpxchg``), a
full barrier on x86. Waits are cut into slices anyway, so that a caller can
check that its peers are still alive (a process killed in the middle of a DAG
never wakes anyone).

The words are plain aligned 32-bit loads and stores: on x86-64 (total store
order) a reader that sees ``written`` move also sees the slot written before
it. Other architectures would need barriers; :func:`check_platform` refuses
them with a clear error.

Values: plain data (numbers, strings, bytes, small numeric numpy arrays and
shallow tuples, lists and dicts of them) is pickled with the C pickler straight
into the slot (``PICKLE``; ~0.5 us where cloudpickle takes ~5 us). Anything
else is the object store's layout of a cloudpickle-5 value (meta plus
out-of-band buffers, see ``_core.store.serialization``). Small values are copied
into the slot and copied out by the reader (the slot is reused). A value too
big for a slot, or whose buffers (numpy arrays) are large enough that a copy
costs more than a new mapping, goes into a segment of its own: the slot only
names it, the reader maps it read-only, unlinks its name at once and
deserializes zero-copy (arrays are read-only views of that mapping, freed when
the last view goes).
"""

from __future__ import annotations

import collections
import ctypes
import errno
import mmap
import os
import pickle
import platform
import secrets
import select
import struct
import threading
import time

from .._core.store import shm
from .._core.store.serialization import PLAIN_TYPES, deserialize_view, serialize
from ..exceptions import RayChannelError, RayChannelTimeoutError

HEADER = 4096
SLOT_HEADER = 16
_WRITTEN, _CONSUMED, _CLOSED, _READER_SLEEPING, _WRITER_SLEEPING = 0, 64, 128, 192, 256
# Record kinds.
VALUE, ERROR, SEGMENT, PICKLE = 1, 2, 3, 4
# Plain data up to this size takes the C pickler's path.
_PLAIN_MAX_ITEMS = 64
_PLAIN_ARRAY_MAX = 64 * 1024
_NUMERIC_KINDS = frozenset("biufc")
# Out-of-band buffers of at least this many bytes go to a segment of their own,
# read zero-copy; smaller ones are copied through the slot (cheaper than a mapping).
ZERO_COPY_MIN = 1 << 20
# How long one futex wait lasts before the caller's liveness check runs.
WAIT_SLICE_S = 0.05
WAIT_SLICE_MS = 50

_SLOT = struct.Struct("<II")
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1  # not FUTEX_PRIVATE: the word is shared between processes
_SYS_FUTEX = {"x86_64": 202, "amd64": 202}


def check_platform() -> None:
    """Raise unless this machine can run channels (Linux on x86-64)."""
    machine = platform.machine().lower()
    if os.uname().sysname != "Linux" or machine not in _SYS_FUTEX:
        raise NotImplementedError(
            f"Compiled DAGs need Linux on x86-64 (futex wake-ups and its memory "
            f"ordering); this is {os.uname().sysname} on {machine}. Run the DAG "
            "uncompiled with dag.execute(...).")


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_syscall = None


def _futex():
    global _syscall
    if _syscall is None:
        check_platform()
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syscall
        fn.restype = ctypes.c_long
        fn.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32,
                       ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32]
        # Wakes go through a bare prototype: no argtypes conversion and no errno
        # copy, 0.6 us a call here instead of 1.9 (the wait's cost hides in its sleep).
        global _wake
        _wake = ctypes.CDLL(None).syscall
        _syscall = fn
    return _syscall


_wake = None


def futex_wait(address: int, expected: int, timeout_s: float) -> None:
    """Sleep while the u32 at ``address`` equals ``expected``, at most ``timeout_s``."""
    ts = _Timespec(int(timeout_s), int((timeout_s - int(timeout_s)) * 1e9))
    _futex()(_SYS_FUTEX["x86_64"], address, _FUTEX_WAIT, expected, ctypes.addressof(ts),
             None, 0)


def futex_wake(address: int) -> None:
    _futex()
    _wake(_SYS_FUTEX["x86_64"], ctypes.c_void_p(address), _FUTEX_WAKE, 0x7FFFFFFF)


_fence_lock = threading.Lock()


def _fence() -> None:
    """A full memory barrier (see the module doc): a locked instruction."""
    _fence_lock.acquire()
    _fence_lock.release()


def is_plain(value, depth: int = 3) -> bool:
    """Whether the C pickler can write ``value`` so that any process can load it:
    builtin scalars, numeric numpy arrays, and small tuples/lists/dicts of them
    (not user classes: pickle names them, and ``__main__`` differs per process)."""
    t = type(value)
    if t in PLAIN_TYPES:
        return True
    if depth == 0:
        return False
    if t is tuple or t is list:
        return len(value) <= _PLAIN_MAX_ITEMS and all(is_plain(v, depth - 1) for v in value)
    if t is dict:
        return len(value) <= _PLAIN_MAX_ITEMS and all(
            type(k) in PLAIN_TYPES and is_plain(v, depth - 1) for k, v in value.items())
    if t.__name__ == "ndarray" and t.__module__ == "numpy":
        return value.dtype.kind in _NUMERIC_KINDS and value.nbytes <= _PLAIN_ARRAY_MAX
    return False


class ChannelClosed(RayChannelError):
    """The channel was closed: the DAG is being torn down (or a peer died)."""


def segment_name(node_pid: int, token: str, part: str) -> str:
    return f"{shm.PREFIX}{node_pid}_{os.getpid()}_g{token}{part}_{secrets.token_hex(3)}"


def dag_segments(token: str, directory: str | None = None) -> list[str]:
    """Every segment of the compiled DAG ``token`` (channels, large values, its FIFO)."""
    tag = f"_g{token}"
    return [name for name in shm.list_segments(None, directory) if tag in name]


def create(node_pid: int, token: str, index: int, nslots: int, slot_size: int) -> str:
    """A new channel segment; returns its name (the driver creates them all)."""
    name = segment_name(node_pid, token, f"c{index}")
    fd = shm.create(name, HEADER + nslots * slot_size)
    try:
        shm.reserve(fd, 0, HEADER)
    except BaseException:
        os.close(fd)
        shm.unlink(name)
        raise
    os.close(fd)
    try:
        os.mkfifo(doorbell_path(name), 0o600)
    except BaseException:
        shm.unlink(name)
        raise
    return name


def doorbell_path(name: str) -> str:
    """The channel's doorbell: a FIFO beside its segment (same name, ``_w`` added,
    so the node's sweeps and ``teardown`` remove it with the segment)."""
    return os.path.join(shm.SHM_DIR, name + "_w")


class Channel:
    """One end of a channel (either end may read or write; each side uses one)."""

    def __init__(self, name: str, nslots: int, slot_size: int, notify_path: str | None = None,
                 doorbell: bool = True):
        _futex()
        self.name = name
        self.nslots = nslots
        self.slot_size = slot_size
        self.fd = shm.open_readwrite(name)
        self.mm = mmap.mmap(self.fd, HEADER + nslots * slot_size, mmap.MAP_SHARED,
                            mmap.PROT_READ | mmap.PROT_WRITE)
        self.view = memoryview(self.mm)
        self._written = ctypes.c_uint32.from_buffer(self.mm, _WRITTEN)
        self._consumed = ctypes.c_uint32.from_buffer(self.mm, _CONSUMED)
        self._closed = ctypes.c_uint32.from_buffer(self.mm, _CLOSED)
        self._reader_sleeping = ctypes.c_uint32.from_buffer(self.mm, _READER_SLEEPING)
        self._writer_sleeping = ctypes.c_uint32.from_buffer(self.mm, _WRITER_SLEEPING)
        self._consumed_at = ctypes.addressof(self._consumed)
        self._consumed_ptr = ctypes.c_void_p(self._consumed_at)
        self._timespec = _Timespec()
        self._timespec_at = ctypes.addressof(self._timespec)
        # Slot bytes whose backing this writer reserved already (fallocate once).
        self._reserved = [0] * nslots
        # Large-value segments this side wrote and whose reader may not have
        # taken them yet: at most one per slot; unlinked when the channel closes.
        self._own_segments: collections.deque = collections.deque(maxlen=nslots + 1)
        self._notify_path = notify_path
        self._notify_fd = -1
        self._bell = -1
        self._poll = None
        if doorbell:
            # O_RDWR: a FIFO opened for both never blocks the open nor sees EOF.
            self._bell = os.open(doorbell_path(name),
                                 os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
            self._poll = select.poll()
            self._poll.register(self._bell, select.POLLIN)
        self._syscall = _syscall

    # -- state ----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed.value != 0

    def close(self) -> None:
        """Mark the channel closed and wake both sides (teardown)."""
        if self.mm is None:
            return
        self._closed.value = 1
        self._ring()
        futex_wake(self._consumed_at)

    def _ring(self) -> None:
        if self._bell < 0:
            return
        try:
            os.write(self._bell, b"\0")
        except (BlockingIOError, OSError):  # full: the reader has wake-ups pending
            pass

    def release(self) -> None:
        """Unmap this side's view (the segment itself is unlinked by its owner)."""
        if self.mm is None:
            return
        for name in self._own_segments:
            shm.unlink(name)
        self._own_segments.clear()
        if self._notify_fd >= 0:
            os.close(self._notify_fd)
            self._notify_fd = -1
        if self._bell >= 0:
            self._poll.unregister(self._bell)
            os.close(self._bell)
            self._bell = -1
        del self._written, self._consumed, self._closed
        del self._reader_sleeping, self._writer_sleeping
        mm, self.mm = self.mm, None
        os.close(self.fd)
        try:
            self.view.release()
            mm.close()
        except BufferError:  # a view still lives (a traceback's frame): unmapped with it
            pass

    # -- waiting --------------------------------------------------------------------
    def _wait(self, address: int, expected: int, deadline: float | None, check,
              flag) -> None:
        """Sleep until the word at ``address`` differs from ``expected`` (or the
        slice ends: the caller re-checks), with ``flag`` (this side's sleeping
        flag) up meanwhile. ``check`` runs between slices."""
        if self._closed.value:
            raise ChannelClosed(f"channel {self.name} is closed (the DAG was torn down)")
        slice_s = WAIT_SLICE_S
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RayChannelTimeoutError("timed out waiting on a compiled DAG channel")
            slice_s = min(slice_s, left)
        ts = self._timespec
        ts.tv_sec = int(slice_s)
        ts.tv_nsec = int((slice_s - int(slice_s)) * 1e9)
        flag.value = 1
        result = self._syscall(202, address, _FUTEX_WAIT, expected, self._timespec_at,
                               None, 0)
        flag.value = 0
        if result == -1:
            err = ctypes.get_errno()
            if err == errno.ETIMEDOUT and check is not None:
                check()
            elif err not in (errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT):  # pragma: no cover
                raise OSError(err, os.strerror(err))

    def _wait_readable(self, consumed: int, deadline: float | None, check) -> None:
        """Sleep on the doorbell until a record may be there (or the slice ends)."""
        if self._closed.value:
            raise ChannelClosed(f"channel {self.name} is closed (the DAG was torn down)")
        slice_ms = WAIT_SLICE_MS
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RayChannelTimeoutError("timed out waiting on a compiled DAG channel")
            slice_ms = min(slice_ms, int(left * 1000) + 1)
        flag = self._reader_sleeping
        flag.value = 1
        _fence()
        if self._written.value == consumed and not self._closed.value:
            if self._poll.poll(slice_ms):
                try:
                    os.read(self._bell, 4096)
                except BlockingIOError:
                    pass
            elif check is not None:
                flag.value = 0
                check()
        flag.value = 0

    def _advance(self, consumed: int) -> None:
        """The slot is free again: tell a writer that sleeps on a full ring."""
        self._consumed.value = (consumed + 1) & 0xFFFFFFFF
        _fence()
        if self._writer_sleeping.value:
            _wake(202, self._consumed_ptr, _FUTEX_WAKE, 0x7FFFFFFF)

    def ready(self) -> bool:
        """Whether a record is waiting to be read."""
        return self._written.value != self._consumed.value

    # -- writing --------------------------------------------------------------------
    def write_value(self, value, timeout: float | None = None, check=None,
                    node_pid: int = 0, token: str = "") -> None:
        if is_plain(value):
            data = pickle.dumps(value, 5)
            if len(data) + SLOT_HEADER <= self.slot_size:
                self.write_pickle(data, timeout, check)
                return
        self.write_serialized(serialize(value, "a compiled DAG value"), timeout, check,
                              node_pid, token)

    def write_pickle(self, data: bytes, timeout: float | None = None, check=None) -> None:
        """Write plain pickle bytes (:func:`is_plain` data; they fit a slot)."""
        self._write(PICKLE, len(data), data, timeout, check)

    def write_serialized(self, serialized, timeout: float | None = None, check=None,
                         node_pid: int = 0, token: str = "") -> None:
        """Write a value ``serialize`` made (one serialization for several channels)."""
        size = serialized.shm_size()
        oob = size - len(serialized.meta)
        if size + SLOT_HEADER <= self.slot_size and oob < ZERO_COPY_MIN:
            self._write(VALUE, size, serialized.write_into, timeout, check)
            return
        name = segment_name(node_pid, token, "v")
        fd = shm.create(name, size)
        try:
            try:
                shm.reserve(fd, 0, size)
            except shm.NoSpace:
                raise RayChannelError(
                    f"no room in {shm.SHM_DIR} for a {size}-byte compiled DAG value; "
                    "free shared memory or pass smaller values") from None
            with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as mm:
                shm.populate(mm, 0, size)
                with memoryview(mm) as view:
                    serialized.write_into(view)
        except BaseException:
            shm.unlink(name)
            raise
        finally:
            os.close(fd)
        data = name.encode()
        self._own_segments.append(name)
        try:
            self._write(SEGMENT, len(data), data, timeout, check)
        except BaseException:
            shm.unlink(name)
            raise

    def write_error(self, data: bytes, timeout: float | None = None, check=None) -> None:
        if len(data) + SLOT_HEADER > self.slot_size:
            from .._core.store.serialization import deserialize_inline

            error = deserialize_inline(data)
            error.traceback_str = error.traceback_str[-(self.slot_size // 2):]
            error.cause = None
            data = serialize(error).to_inline()
        self._write(ERROR, len(data), data, timeout, check)

    def _write(self, kind: int, size: int, fill, timeout, check) -> None:
        """Write one record; ``fill`` is its bytes, or a function that writes
        them into the slot's view."""
        written = self._written.value
        deadline = None if timeout is None or timeout < 0 or \
            ((written - self._consumed.value) & 0xFFFFFFFF) < self.nslots \
            else time.monotonic() + timeout
        while ((written - self._consumed.value) & 0xFFFFFFFF) >= self.nslots:
            self._wait(self._consumed_at, self._consumed.value, deadline, check,
                       self._writer_sleeping)
        if self._closed.value:
            raise ChannelClosed(f"channel {self.name} is closed (the DAG was torn down)")
        slot = written % self.nslots
        start = HEADER + slot * self.slot_size
        end = SLOT_HEADER + size
        if end > self._reserved[slot]:
            try:
                shm.reserve(self.fd, start, end)
            except shm.NoSpace:
                raise RayChannelError(
                    f"no room in {shm.SHM_DIR} for a {size}-byte compiled DAG value") from None
            self._reserved[slot] = end
        view = self.view
        if type(fill) is bytes:
            view[start + SLOT_HEADER:start + end] = fill
        else:
            fill(view[start + SLOT_HEADER:start + end])
        _SLOT.pack_into(view, start, kind, size)
        self._written.value = (written + 1) & 0xFFFFFFFF
        _fence()
        if self._reader_sleeping.value:
            self._ring()
        if self._notify_path is not None:
            self._notify()

    def _notify(self) -> None:
        """Poke the driver's event loop (a DAG compiled with ``enable_asyncio``)."""
        if self._notify_fd < 0:
            try:
                self._notify_fd = os.open(self._notify_path, os.O_WRONLY | os.O_NONBLOCK
                                          | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:  # the driver is gone or tore the DAG down
                return
        try:
            os.write(self._notify_fd, b"\0")
        except BlockingIOError:  # a full pipe: the driver has wake-ups pending anyway
            pass
        except OSError:
            pass

    # -- reading --------------------------------------------------------------------
    def read(self, timeout: float | None = None, check=None):
        """The next record: ``(kind, value)``; ``kind`` is VALUE or ERROR (the
        error's bytes). ``timeout`` None waits for ever, 0 does not wait."""
        consumed = self._consumed.value
        if self._written.value == consumed:
            deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
            while self._written.value == consumed:
                self._wait_readable(consumed, deadline, check)
        slot = consumed % self.nslots
        start = HEADER + slot * self.slot_size
        view = self.view
        kind, size = _SLOT.unpack_from(view, start)
        if kind == PICKLE:
            # Unpickled from the slot itself (plain data keeps no view of it).
            value = pickle.loads(view[start + SLOT_HEADER:start + SLOT_HEADER + size])
            self._advance(consumed)
            return VALUE, value
        data = view[start + SLOT_HEADER:start + SLOT_HEADER + size].tobytes()
        self._advance(consumed)
        if kind == VALUE:
            return VALUE, deserialize_view(memoryview(data))
        if kind == SEGMENT:
            return VALUE, _read_segment(data.decode())
        return ERROR, data


def _read_segment(name: str):
    """A large value's own segment: mapped read-only, its name unlinked at once
    (the pages live as long as the mapping, i.e. the value's views)."""
    fd = shm.open_readonly(name)
    try:
        size = os.fstat(fd).st_size
        region = shm.MappedRegion(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)
        shm.unlink(name)
    shm.populate_read(region, 0, size)
    return deserialize_view(memoryview(region))


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")
