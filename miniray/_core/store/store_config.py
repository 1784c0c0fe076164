"""How big the object store is, and what backs it.

The store's pages live in ``/dev/shm`` (tmpfs) when it can hold a useful
store. Containers often give it 64 MiB (Docker's default) or little more;
there, as Ray does, the store is backed by files in a private directory under
the temp dir instead (the kernel's page cache keeps them fast), with one clear
warning. Either way ``object_store_memory`` is the node-wide budget of bytes
the store's processes hold together; past it, objects spill to disk.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile

SHM = "/dev/shm"
MIN_SHM_STORE = 1 << 30  # smaller /dev/shm: back the store with files instead
MIN_STORE = 64 << 20
_warned = False


def _free_bytes(path: str) -> tuple[int, int]:
    """(size, free) of the filesystem at ``path``; (0, 0) if unavailable."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0, 0
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def private_dir(parent: str | None = None) -> str:
    """A directory only this user can enter, for file-backed segments.

    Shared by this user's nodes (segment names carry the node's pid); checked
    so that another user cannot have planted it or a symlink in its place.
    """
    parent = parent or tempfile.gettempdir()
    path = os.path.join(parent, f"miniray_objects_{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if (not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid()
            or stat.S_IMODE(st.st_mode) & 0o077):
        # Not ours, or open to others: use a fresh one rather than trust it.
        return tempfile.mkdtemp(prefix=f"miniray_objects_{os.getuid()}_", dir=parent)
    return path


def choose(object_store_memory: int | None, directory: str | None = None) -> tuple[int, str]:
    """The store's capacity in bytes and the directory its segments live in."""
    from .shm import physical_memory

    ram_share = int(physical_memory() * 0.3)
    if directory:  # _plasma_directory: the user chose
        os.makedirs(directory, exist_ok=True)
        if object_store_memory is None:
            object_store_memory = max(min(ram_share, int(_free_bytes(directory)[1] * 0.5)),
                                      MIN_STORE)
        return int(object_store_memory), directory
    shm_size, shm_free = _free_bytes(SHM)
    if object_store_memory is None:
        if shm_free >= MIN_SHM_STORE:
            return max(min(ram_share, int(shm_free * 0.8)), MIN_STORE), SHM
        path = private_dir()
        capacity = max(min(ram_share, int(_free_bytes(path)[1] * 0.5)), MIN_STORE)
        _warn(f"/dev/shm holds only {_fmt(shm_size)} ({_fmt(shm_free)} free), too small for "
              f"the object store; backing it with files in {path} instead (the page cache "
              f"keeps them fast), {_fmt(capacity)} of them before objects spill to disk. "
              "In Docker, pass --shm-size=2g (or more) to keep it in shared memory.")
        return capacity, path
    # Leave /dev/shm some room for everybody else on the machine.
    if object_store_memory <= shm_free * 0.9:
        return int(object_store_memory), SHM
    path = private_dir()
    _warn(f"/dev/shm has only {_fmt(shm_free)} free, less than object_store_memory "
          f"({_fmt(object_store_memory)}); backing the object store with files in {path} "
          "instead. In Docker, pass a larger --shm-size to keep it in shared memory.")
    return int(object_store_memory), path


def _warn(message: str) -> None:
    global _warned
    if _warned:
        return
    _warned = True
    print(f"miniray: WARNING: {message}", file=sys.stderr, flush=True)


def _fmt(n: int) -> str:
    from .object_store import _fmt as fmt

    return fmt(n)

