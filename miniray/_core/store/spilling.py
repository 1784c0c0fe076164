"""Spill files of one node: objects moved from shared memory to disk.

A spilled object's file is written once and kept until the object itself is
deleted, even after the object is restored into shared memory: any process
may read the file by path at any moment (the driver reads spilled objects
without a round trip to the node), so restoring never pulls a file from under
a reader, and spilling the same object again costs nothing. A holder of the
object's ref keeps it from being deleted, so a reader always finds the file.

The directory is ``miniray_spill_<nodepid>_...`` under the configured spill
directory (``_system_config={"object_spilling_directory": ...}``, Ray's
``object_spilling_config`` JSON, or the temp dir), removed at shutdown and
by the crash watchdog.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile

from ...exceptions import ObjectLostError


def spill_directory_from(system_config: dict | None, explicit: str | None = None) -> str | None:
    """The parent directory for spill files named by the user, or None.

    Accepts ``object_spilling_directory`` (a path) and Ray's
    ``object_spilling_config`` (a JSON string or dict of the form
    ``{"type": "filesystem", "params": {"directory_path": ...}}``).
    """
    if explicit:
        return _checked(explicit, "object_spilling_directory")
    config = system_config or {}
    if config.get("object_spilling_directory"):
        return _checked(config["object_spilling_directory"], "object_spilling_directory")
    raw = config.get("object_spilling_config")
    if not raw:
        return None
    try:
        spec = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"_system_config['object_spilling_config'] must be JSON like "
            f'\'{{"type": "filesystem", "params": {{"directory_path": "/path"}}}}\', '
            f"got {raw!r} ({exc})") from None
    kind = spec.get("type", "filesystem")
    if kind != "filesystem":
        raise ValueError(
            f"object_spilling_config type {kind!r} is not supported; miniray spills to a "
            "local directory: use {'type': 'filesystem', 'params': {'directory_path': ...}}.")
    path = (spec.get("params") or {}).get("directory_path")
    if isinstance(path, list):  # Ray accepts a list of directories; we use the first
        path = path[0] if path else None
    if not path:
        raise ValueError("object_spilling_config needs params.directory_path")
    return _checked(path, "object_spilling_config directory_path")


def _checked(path, what: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path, got {type(path).__name__}")
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{what} {path!r} cannot be created: {exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path!r} is not writable by this user")
    return path


class SpillFiles:
    """The spill files of one node (used by the node's thread only)."""

    def __init__(self, node_pid: int, parent: str | None, session_dir: str):
        if parent is None:
            self.dir = os.path.join(session_dir, "spill")
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            self.owned = False  # removed with the session directory
        else:
            self.dir = tempfile.mkdtemp(prefix=f"miniray_spill_{node_pid}_", dir=parent)
            self.owned = True
        self.files: dict[bytes, int] = {}  # object id -> bytes in its file
        self.bytes = 0
        self._warned = False
        # The disk's refusal of the last write (ENOSPC, EDQUOT), None once one
        # succeeds: a store that then cannot make room is out of disk too.
        self.disk_full: OSError | None = None

    def path(self, object_id: bytes) -> str:
        return os.path.join(self.dir, object_id.hex())

    def write(self, store, object_id: bytes, location) -> str | None:
        """The spill file of an object, written now unless it exists already;
        None when the disk refused it (the object then stays in memory)."""
        path = self.path(object_id)
        if object_id in self.files:
            return path
        try:
            store.copy_to_file(location, path)
        except (OSError, ObjectLostError) as exc:
            try:
                os.unlink(path)
            except OSError:
                pass
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self.disk_full = exc
            if not self._warned:
                self._warned = True
                print(f"miniray: spilling to {self.dir} failed ({exc}); objects stay in "
                      "shared memory. Choose another directory with "
                      "_system_config={'object_spilling_directory': ...}.", file=sys.stderr)
            return None
        self.disk_full = None
        self.files[object_id] = location[2]
        self.bytes += location[2]
        return path

    def remove(self, object_id: bytes) -> None:
        size = self.files.pop(object_id, None)
        if size is None:
            return
        self.bytes -= size
        try:
            os.unlink(self.path(object_id))
        except OSError:
            pass

    def cleanup(self) -> None:
        import shutil

        self.files.clear()
        self.bytes = 0
        shutil.rmtree(self.dir, ignore_errors=True)
