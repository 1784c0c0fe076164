"""``Checkpoint``: a directory of files saved by a trial (Ray's ``ray.tune.Checkpoint``)."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import tempfile

__all__ = ["Checkpoint"]

_DICT_FILE = "checkpoint_dict.pkl"
_META_FILE = ".metadata.json"


class Checkpoint:
    """A checkpoint: a directory on the local disk.

    Create one with :meth:`from_directory` (or :meth:`from_dict`) and pass it to
    ``tune.report(metrics, checkpoint=...)``; Tune copies it into the trial's
    directory (``checkpoint_000005/``). Read one back with :meth:`as_directory`,
    :meth:`to_directory` or :meth:`to_dict`.
    """

    def __init__(self, path: str | os.PathLike, filesystem=None):
        self.path = os.fspath(path)
        self.filesystem = filesystem  # always the local disk; kept for Ray's signature

    @classmethod
    def from_directory(cls, path: str | os.PathLike) -> "Checkpoint":
        """A checkpoint of the files in ``path``."""
        if not os.path.isdir(path):
            raise FileNotFoundError(f"checkpoint directory {os.fspath(path)!r} does not exist")
        return cls(path)

    @classmethod
    def from_dict(cls, data: dict) -> "Checkpoint":
        """A checkpoint holding ``data`` (pickled into a new temporary directory)."""
        path = tempfile.mkdtemp(prefix="miniray-ckpt-")
        with open(os.path.join(path, _DICT_FILE), "wb") as f:
            pickle.dump(data, f)
        return cls(path)

    def to_dict(self) -> dict:
        """The dict saved by :meth:`from_dict` (or by a class trainable's ``save_checkpoint``)."""
        with open(os.path.join(self.path, _DICT_FILE), "rb") as f:
            return pickle.load(f)

    def to_directory(self, path: str | os.PathLike | None = None) -> str:
        """Copy the checkpoint's files to ``path`` (a new temporary directory by default)."""
        path = os.fspath(path) if path is not None else tempfile.mkdtemp(prefix="miniray-ckpt-")
        shutil.copytree(self.path, path, dirs_exist_ok=True)
        return path

    @contextlib.contextmanager
    def as_directory(self):
        """Context manager yielding a local directory with the files (the checkpoint itself:
        it is already local, so nothing is copied; do not modify it)."""
        yield self.path

    def get_metadata(self) -> dict:
        """Metadata saved with :meth:`set_metadata` (``{}`` if none)."""
        try:
            with open(os.path.join(self.path, _META_FILE)) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def set_metadata(self, metadata: dict) -> None:
        """Save a JSON-serializable dict with the checkpoint."""
        with open(os.path.join(self.path, _META_FILE), "w") as f:
            json.dump(metadata, f)

    def update_metadata(self, metadata: dict) -> None:
        """Merge ``metadata`` into the saved metadata."""
        self.set_metadata({**self.get_metadata(), **metadata})

    def __repr__(self):
        return f"Checkpoint(path={self.path!r})"

    def __eq__(self, other):
        return isinstance(other, Checkpoint) and other.path == self.path

    def __hash__(self):
        return hash(self.path)

    def __fspath__(self):
        return self.path
