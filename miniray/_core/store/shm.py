"""POSIX shared-memory segments for the object store.

Segments are files in ``/dev/shm`` (what ``shm_open`` does on Linux), or in a
private directory under the temp dir when ``/dev/shm`` is too small for a
useful store (see ``store_config``). We open them directly rather than with
``multiprocessing.shared_memory.SharedMemory``: before Python 3.13 that class
registers every *attached* segment with multiprocessing's resource tracker,
which then unlinks segments owned by other processes when a reader exits.

A segment is sparse: a range's pages are reserved (``posix_fallocate``) before
it is written, so a full filesystem is an error to handle, never SIGBUS, and
freed ranges are punched out (``MADV_REMOVE``) so their pages go back at once.
Ownership is ours to manage: every segment name encodes the node and the
owning process, so a crashed node's segments can be found and reclaimed.

Names: ``miniray_<nodepid>_<ownerpid>_<kind><counter>_<random>``.
"""

from __future__ import annotations

import errno
import mmap
import os
import secrets

PREFIX = "miniray_"


def physical_memory() -> int:
    """Bytes of RAM in the machine (8 GiB where the OS will not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover
        return 8 << 30
# Where this process's segments live. Workers inherit the node's choice.
SHM_DIR = os.environ.get("MINIRAY_STORE_DIR") or "/dev/shm"
STORE_DIR_ENV = "MINIRAY_STORE_DIR"
PAGE = mmap.PAGESIZE

_counter = 0


def segment_name(node_pid: int, kind: str = "a") -> str:
    """A new name; ``kind`` is ``a`` for an arena, ``d`` for a dedicated segment."""
    global _counter
    _counter += 1
    return f"{PREFIX}{node_pid}_{os.getpid()}_{kind}{_counter}_{secrets.token_hex(3)}"


def is_arena(name: str) -> bool:
    parts = name[len(PREFIX):].split("_")
    return len(parts) > 2 and parts[2].startswith("a")


def parse_name(name: str) -> tuple[int, int] | None:
    """Return (node_pid, owner_pid) of a miniray segment name, or None."""
    name = name.lstrip("/")
    if not name.startswith(PREFIX):
        return None
    parts = name[len(PREFIX):].split("_")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


class MappedRegion(mmap.mmap):
    """An mmap of part of a segment. A subclass only so that it takes weakrefs:
    the object store pins an object while any view of its mapping is alive."""


def set_dir(path: str) -> None:
    """Keep this process's segments in ``path`` (``/dev/shm``, or a private
    directory of files when ``/dev/shm`` is too small: see ``store_config``)."""
    global SHM_DIR
    SHM_DIR = path


def _path(name: str) -> str:
    return os.path.join(SHM_DIR, name)


# Opening ``/dev/shm/<name>`` is what shm_open does on Linux; plain opens work
# the same for a directory of files, so one code path serves both backings.
_O_FLAGS = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def create(name: str, size: int) -> int:
    """Create a segment of ``size`` bytes and return its file descriptor.

    The segment is sparse: its pages are reserved range by range with
    :func:`reserve` before they are written (a write into an unreserved page
    of a full tmpfs would kill the process with SIGBUS).
    """
    fd = os.open(_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR | _O_FLAGS, 0o600)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        unlink(name)
        raise
    return fd


def open_readonly(name: str) -> int:
    return os.open(_path(name), os.O_RDONLY | _O_FLAGS)


def open_readwrite(name: str) -> int:
    return os.open(_path(name), os.O_RDWR | _O_FLAGS)


def unlink(name: str) -> bool:
    try:
        os.unlink(_path(name))
        return True
    except FileNotFoundError:
        return False


class NoSpace(OSError):
    """The backing filesystem could not reserve the pages of a range."""


def reserve(fd: int, offset: int, length: int) -> None:
    """Allocate the backing pages of a range before anything writes to it.

    Raises :class:`NoSpace` when the filesystem is full: the caller spills and
    retries, or reports ``ObjectStoreFullError``, instead of taking SIGBUS.
    """
    if length <= 0:
        return
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EFBIG):
            raise NoSpace(exc.errno, os.strerror(exc.errno)) from None
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # pragma: no cover - odd fs
            return
        raise


_MADV_REMOVE = getattr(mmap, "MADV_REMOVE", 9)


def release(mapping: mmap.mmap, offset: int, length: int) -> None:
    """Give the pages of a freed range back to the OS (a hole punched in the
    segment): tmpfs keeps a freed object's pages otherwise, for as long as the
    segment lives. ``mapping`` is a writable shared mapping of the segment."""
    start = offset - offset % PAGE
    end = offset + length
    end += -end % PAGE
    if end <= start:
        return
    try:
        mapping.madvise(_MADV_REMOVE, start, end - start)
    except (OSError, ValueError):  # pragma: no cover - fs without hole punching
        pass


def release_in(name: str, offset: int, length: int) -> None:
    """:func:`release` for a segment this process has no writable mapping of
    (an arena adopted from a dead worker)."""
    try:
        fd = open_readwrite(name)
    except OSError:
        return
    try:
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        region = mmap.mmap(fd, offset + length - start, mmap.MAP_SHARED,
                           mmap.PROT_READ | mmap.PROT_WRITE, offset=start)
    except (OSError, ValueError):  # pragma: no cover
        return
    finally:
        os.close(fd)
    with region:
        release(region, offset - start, length)


def map_region(fd: int, offset: int, size: int, writable: bool) -> tuple[MappedRegion, int]:
    """Map ``size`` bytes at ``offset``; returns the mapping and the start of the
    data inside it (mmap offsets must be page aligned)."""
    aligned = offset - (offset % mmap.ALLOCATIONGRANULARITY)
    skew = offset - aligned
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    region = MappedRegion(fd, skew + size, mmap.MAP_SHARED, prot, offset=aligned)
    return region, skew


_MADV_POPULATE_READ = 22  # Linux 5.14+; not in the mmap module yet
_MADV_POPULATE_WRITE = 23
# Advice the kernel refused once (older than 5.14) is not asked for again.
_refused_advice = set() if hasattr(mmap.mmap, "madvise") and os.uname().sysname == "Linux" \
    else {_MADV_POPULATE_READ, _MADV_POPULATE_WRITE}


def _populate(mapping: mmap.mmap, advice: int, start: int, length: int) -> None:
    if length <= 0 or advice in _refused_advice:
        return
    try:
        mapping.madvise(advice, start, length)
    except OSError:
        _refused_advice.add(advice)


def populate(mapping: mmap.mmap, start: int, length: int) -> None:
    """Fault in ``length`` bytes of a writable mapping from page-aligned ``start``.

    One madvise instead of one page fault per 4 KiB page: a cold 100 MiB
    write goes from ~115 to ~80 ms here. Best effort: older kernels refuse
    the advice and the write faults the pages in as before.
    """
    _populate(mapping, _MADV_POPULATE_WRITE, start, length)


def populate_read(mapping: mmap.mmap, start: int, length: int) -> None:
    """Map ``length`` bytes of a read-only mapping in one call (page-aligned
    ``start``): a reader of 100 MiB otherwise takes thousands of faults."""
    _populate(mapping, _MADV_POPULATE_READ, start, length)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_segments(node_pid: int | None = None, directory: str | None = None) -> list[str]:
    try:
        names = os.listdir(directory or SHM_DIR)
    except OSError:  # pragma: no cover - no /dev/shm (macOS)
        return []
    out = []
    for n in names:
        parsed = parse_name(n)
        if parsed is None:
            continue
        if node_pid is None or parsed[0] == node_pid:
            out.append(n)
    return out


def _unlink_in(directory: str, name: str) -> bool:
    try:
        os.unlink(os.path.join(directory, name))
        return True
    except FileNotFoundError:
        return False


def sweep_node(node_pid: int, directory: str | None = None) -> int:
    """Unlink every segment of one node; returns how many were removed."""
    directory = directory or SHM_DIR
    return sum(_unlink_in(directory, n) for n in list_segments(node_pid, directory))


def sweep_dead(directories=None) -> int:
    """Unlink segments whose node process is gone (a crashed driver), and
    remove those nodes' spill directories."""
    removed = 0
    for directory in directories or (SHM_DIR,):
        for n in list_segments(None, directory):
            node_pid, _owner = parse_name(n)
            if not pid_alive(node_pid):
                removed += _unlink_in(directory, n)
    sweep_dead_spill_dirs()
    return removed


SPILL_PREFIX = "miniray_spill_"


def sweep_dead_spill_dirs(root: str | None = None) -> int:
    """Remove ``miniray_spill_<pid>_*`` directories (spilled objects, logs)
    of nodes whose process is gone: a node killed with SIGKILL, or one its
    host process ended (a Ray worker), never ran its own cleanup. Only this
    user's directories; a live pid keeps its directory. Returns how many
    were removed."""
    import shutil
    import tempfile

    root = root or tempfile.gettempdir()
    try:
        entries = os.listdir(root)
    except OSError:
        return 0
    removed = 0
    uid = os.getuid()
    for entry in entries:
        if not entry.startswith(SPILL_PREFIX):
            continue
        pid_text = entry[len(SPILL_PREFIX):].split("_", 1)[0]
        if not pid_text.isdigit() or pid_alive(int(pid_text)):
            continue
        path = os.path.join(root, entry)
        try:
            if os.stat(path, follow_symlinks=False).st_uid != uid or os.path.islink(path) \
                    or not os.path.isdir(path):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += not os.path.exists(path)
    return removed
