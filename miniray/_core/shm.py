"""POSIX shared-memory segments for the object store.

We use the primitives under ``multiprocessing.shared_memory`` (``shm_open`` /
``shm_unlink`` from ``_posixshmem``) rather than the ``SharedMemory`` class:
before Python 3.13 that class registers every *attached* segment with
multiprocessing's resource tracker, which then unlinks segments owned by
other processes when a reader exits and starts an extra tracker process.
Ownership is ours to manage: every segment name encodes the node and the
owning process, so a crashed node's segments can be found and reclaimed.

Names: ``miniray_<nodepid>_<ownerpid>_<kind><counter>_<random>``.
"""

from __future__ import annotations

import mmap
import os
import secrets

try:  # Linux/macOS; the object store needs POSIX shared memory.
    import _posixshmem
except ImportError:  # pragma: no cover - Windows
    _posixshmem = None

PREFIX = "miniray_"


def physical_memory() -> int:
    """Bytes of RAM in the machine (8 GiB where the OS will not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover
        return 8 << 30
SHM_DIR = "/dev/shm"
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


def create(name: str, size: int) -> int:
    """Create a segment of ``size`` bytes and return its file descriptor."""
    fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        unlink(name)
        raise
    return fd


def open_readonly(name: str) -> int:
    return _posixshmem.shm_open("/" + name, os.O_RDONLY, mode=0o600)


def open_readwrite(name: str) -> int:
    return _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)


def unlink(name: str) -> bool:
    try:
        _posixshmem.shm_unlink("/" + name)
        return True
    except FileNotFoundError:
        return False


def map_region(fd: int, offset: int, size: int, writable: bool) -> tuple[MappedRegion, int]:
    """Map ``size`` bytes at ``offset``; returns the mapping and the start of the
    data inside it (mmap offsets must be page aligned)."""
    aligned = offset - (offset % mmap.ALLOCATIONGRANULARITY)
    skew = offset - aligned
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    region = MappedRegion(fd, skew + size, mmap.MAP_SHARED, prot, offset=aligned)
    return region, skew


_MADV_POPULATE_WRITE = 23  # Linux 5.14+; not in the mmap module yet
_can_populate = hasattr(mmap.mmap, "madvise") and os.uname().sysname == "Linux"


def populate(mapping: mmap.mmap, start: int, length: int) -> None:
    """Fault in ``length`` bytes of a writable mapping from page-aligned ``start``.

    One madvise instead of one page fault per 4 KiB page: a cold 100 MiB
    write goes from ~115 to ~80 ms here. Best effort: older kernels refuse
    the advice and the write faults the pages in as before.
    """
    global _can_populate
    if not _can_populate or length <= 0:
        return
    try:
        mapping.madvise(_MADV_POPULATE_WRITE, start, length)
    except OSError:
        _can_populate = False


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


def list_segments(node_pid: int | None = None) -> list[str]:
    try:
        names = os.listdir(SHM_DIR)
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


def sweep_node(node_pid: int) -> int:
    """Unlink every segment of one node; returns how many were removed."""
    return sum(unlink(n) for n in list_segments(node_pid))


def sweep_dead() -> int:
    """Unlink segments whose node process is gone (a crashed driver), and
    remove that node's spill directory."""
    removed = 0
    for n in list_segments():
        node_pid, _owner = parse_name(n)
        if not pid_alive(node_pid):
            removed += unlink(n)
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
