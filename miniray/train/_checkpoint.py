"""Checkpoints: a directory of files that a run reports and resumes from."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


class Checkpoint:
    """A reference to a directory holding a checkpoint's files.

    Create one with :meth:`from_directory` on a folder you wrote (model
    weights, optimizer state, ...) and pass it to :func:`miniray.train.report`;
    the run copies it to its storage folder. ``Result.checkpoint`` and
    :func:`miniray.train.get_checkpoint` return checkpoints in the storage
    folder.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.path.abspath(os.fspath(path))

    @classmethod
    def from_directory(cls, path: str | os.PathLike) -> "Checkpoint":
        """A checkpoint of the files in ``path`` (which must be a directory)."""
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise ValueError(f"Checkpoint.from_directory: {path!r} is not a directory")
        return cls(path)

    def to_directory(self, path: str | os.PathLike | None = None) -> str:
        """Copy the checkpoint's files to ``path`` (default: a new temp dir); returns it."""
        if path is None:
            path = tempfile.mkdtemp(prefix="checkpoint_")
        path = os.fspath(path)
        shutil.copytree(self.path, path, dirs_exist_ok=True)
        return path

    @contextlib.contextmanager
    def as_directory(self):
        """Context manager yielding a local directory with the files (read them only).

        The checkpoint already lives on the local file system, so this is
        its own path: no copy is made.
        """
        yield self.path

    def get_metadata(self) -> dict:
        """Metadata stored with :meth:`set_metadata` (``{}`` if none)."""
        import json

        try:
            with open(os.path.join(self.path, ".metadata.json")) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def set_metadata(self, metadata: dict) -> None:
        """Store a JSON-serializable dict with the checkpoint."""
        import json

        with open(os.path.join(self.path, ".metadata.json"), "w") as f:
            json.dump(metadata, f)

    def __fspath__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"Checkpoint(path={self.path!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Checkpoint) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)
