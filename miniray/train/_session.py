"""The worker side of a run: the calls a training function makes.

One training function runs per worker process, so the session is a module
global of that process, set by the worker actor before the function starts.
"""

from __future__ import annotations

import numbers
import os
import shutil

from ._checkpoint import Checkpoint

_session = None


class TrainContext:
    """Where this worker stands in the run: ranks, sizes and names.

    Returned by :func:`miniray.train.get_context` inside a training function.
    miniray runs one node, so the local rank equals the world rank and the
    node rank is 0.
    """

    def __init__(self, world_rank: int, world_size: int, local_rank: int,
                 local_world_size: int, node_rank: int, experiment_name: str,
                 storage_path: str, attempt: int, metadata: dict | None = None):
        self._world_rank = world_rank
        self._world_size = world_size
        self._local_rank = local_rank
        self._local_world_size = local_world_size
        self._node_rank = node_rank
        self._experiment_name = experiment_name
        self._storage_path = storage_path
        self._attempt = attempt
        self._metadata = metadata or {}

    def get_world_rank(self) -> int:
        """This worker's rank among all workers (0 .. world size - 1)."""
        return self._world_rank

    def get_world_size(self) -> int:
        """Number of workers in the run."""
        return self._world_size

    def get_local_rank(self) -> int:
        """This worker's rank among the workers of its node."""
        return self._local_rank

    def get_local_world_size(self) -> int:
        """Number of workers on this worker's node."""
        return self._local_world_size

    def get_node_rank(self) -> int:
        """Rank of this worker's node (always 0: miniray runs one node)."""
        return self._node_rank

    def get_experiment_name(self) -> str:
        """The run's name (``RunConfig.name``)."""
        return self._experiment_name

    def get_trial_name(self) -> str:
        """Same as :meth:`get_experiment_name` (Ray names the Tune trial here)."""
        return self._experiment_name

    def get_storage_path(self) -> str:
        """The run's folder, ``storage_path/name``, where checkpoints are persisted."""
        return self._storage_path

    def get_metadata(self) -> dict:
        """The ``metadata`` dict given to the trainer."""
        return dict(self._metadata)

    def get_attempt(self) -> int:
        """How many times the worker group was restarted before this attempt (0 at first).

        A miniray extension, handy to test failure handling.
        """
        return self._attempt

    def __repr__(self) -> str:
        return (f"TrainContext(world_rank={self._world_rank}, world_size={self._world_size}, "
                f"local_rank={self._local_rank}, node_rank={self._node_rank})")


class _Session:
    def __init__(self, context: TrainContext, outbox, checkpoint: Checkpoint | None,
                 datasets: dict, next_index: int):
        self.context = context
        self.outbox = outbox
        self.checkpoint = checkpoint
        self.datasets = datasets
        self.next_index = next_index


def _set_session(session) -> None:
    global _session
    _session = session


def _require_session(what: str) -> _Session:
    if _session is None:
        raise RuntimeError(
            f"miniray.train.{what}() can only be called inside a training function that a "
            "trainer runs (TorchTrainer(train_loop_per_worker).fit()).")
    return _session


def _tune_session():
    """The ``miniray.tune`` module when running inside a tune trial, else None."""
    from ._tune import in_tune_trial

    if not in_tune_trial():
        return None
    import sys

    return sys.modules["miniray.tune"]


def get_context() -> TrainContext:
    """The :class:`TrainContext` of this worker (ranks, world size, run name).

    Outside a training function it describes a single process (rank 0 of 1).
    """
    if _session is None:
        return TrainContext(0, 1, 0, 1, 0, "", "", 0)
    return _session.context


def _plain(value):
    # 0-d tensors and numpy scalars become Python numbers, so metrics stay
    # readable on the driver (and in a DataFrame) without importing torch there.
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "ndim", 1) == 0:
        try:
            return item()
        except Exception:
            return value
    if isinstance(value, numbers.Number):
        return float(value)
    return value


def report(metrics: dict, checkpoint: Checkpoint | None = None,
           checkpoint_dir_name: str | None = None, checkpoint_upload_mode=None,
           delete_local_checkpoint_after_upload: bool | None = None,
           checkpoint_upload_fn=None, validation=False) -> None:
    """Report metrics (and optionally a checkpoint) for this step of training.

    Every worker must call ``report`` the same number of times. The driver
    records rank 0's metrics. A checkpoint is copied at once to
    ``storage_path/name/checkpoint_NNNNNN`` (every rank that passes one copies
    its files into the same folder), so the source folder can be deleted
    afterwards; it becomes the run's latest checkpoint once all workers have
    reported this step.

    Ray Train v2's options: ``checkpoint_dir_name`` names the folder in the run
    folder (the same on every rank); ``checkpoint_upload_mode`` is a
    :class:`CheckpointUploadMode` (``ASYNC`` also deletes the source folder, unless
    ``delete_local_checkpoint_after_upload=False``; ``NO_UPLOAD`` records the folder
    where it is); ``checkpoint_upload_fn(checkpoint, dir_name) -> Checkpoint``
    persists it your way. ``validation=True`` (or a :class:`ValidationTaskConfig`)
    runs the trainer's ``ValidationConfig.fn`` on the checkpoint as a task beside
    training; its metrics are merged into the checkpoint's.

    Inside a ``miniray.tune`` trial that is not a training run, this forwards
    to the tune report function.
    """
    from ._report_config import CheckpointUploadMode

    from ._validation import REQUEST_KEY, request

    validation_request = request(validation, checkpoint)
    mode = CheckpointUploadMode(getattr(checkpoint_upload_mode, "value",
                                        checkpoint_upload_mode or "SYNC"))
    if _session is None:
        tune = _tune_session()
        if tune is not None:
            return tune.report(metrics, checkpoint=checkpoint)
    session = _require_session("report")
    if not isinstance(metrics, dict):
        raise TypeError(f"report() takes a dict of metrics, got {type(metrics).__name__}")
    if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
        raise TypeError("checkpoint must be a miniray.train.Checkpoint "
                        "(Checkpoint.from_directory(path))")
    index = session.next_index
    session.next_index += 1
    path = None
    if checkpoint is not None:
        name = checkpoint_dir_name or f"checkpoint_{index:06d}"
        if os.sep in name or name in ("", ".", ".."):
            raise ValueError(f"checkpoint_dir_name must be a folder name, got {name!r}")
        path = os.path.join(session.context.get_storage_path(), name)
        if checkpoint_upload_fn is not None:
            path = checkpoint_upload_fn(checkpoint, name).path
        elif mode == CheckpointUploadMode.NO_UPLOAD:
            path = os.path.abspath(checkpoint.path)
        elif os.path.abspath(checkpoint.path) != path:
            shutil.copytree(checkpoint.path, path, dirs_exist_ok=True)
            delete = delete_local_checkpoint_after_upload
            if delete is None:
                delete = mode.default_delete_local_checkpoint_after_upload()
            if delete:
                shutil.rmtree(checkpoint.path, ignore_errors=True)
    session.last_reported = index
    plain = {str(k): _plain(v) for k, v in metrics.items()}
    if validation_request is not None:  # the driver runs it once the step is committed
        plain[REQUEST_KEY] = validation_request
    session.outbox.put((index, plain, path))


def get_all_reported_checkpoints(consistency_mode=None, timeout_s: float | None = None):
    """Every checkpoint the run committed so far (kept on disk), oldest first, as
    :class:`ReportedCheckpoint` (checkpoint, metrics); from a training function.

    Waits until the driver committed this worker's latest report (every worker
    reported that step); ``TimeoutError`` after ``timeout_s`` seconds.
    """
    import json
    import time

    from ._report_config import ReportedCheckpoint
    from ._result import SNAPSHOT_FILE

    session = _require_session("get_all_reported_checkpoints")
    run_dir = session.context.get_storage_path()
    wanted = getattr(session, "last_reported", None)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            with open(os.path.join(run_dir, SNAPSHOT_FILE)) as f:
                snapshot = json.load(f)
        except (OSError, ValueError):  # not written yet, or being replaced
            snapshot = {}
        committed = snapshot.get("committed_index", -1)
        if wanted is None or committed >= wanted:
            break
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"report {wanted} was not committed within {timeout_s} s "
                               "(do all workers call report the same number of times?)")
        time.sleep(0.02)
    out = []
    for name, metrics in snapshot.get("checkpoints", []):
        out.append(ReportedCheckpoint(Checkpoint(os.path.join(run_dir, name)), metrics))
    return out


def get_checkpoint() -> Checkpoint | None:
    """The checkpoint to resume from, or None on a fresh start.

    After a restart this is the latest checkpoint the run reported; on the
    first attempt it is the trainer's ``resume_from_checkpoint``.
    """
    if _session is None:
        tune = _tune_session()
        if tune is not None and hasattr(tune, "get_checkpoint"):
            return tune.get_checkpoint()
    return _require_session("get_checkpoint").checkpoint


def get_dataset_shard(name: str):
    """This worker's shard of the dataset passed as ``datasets={name: ...}``.

    Returns a :class:`DatasetShard`: rows ``rank, rank + world_size, ...`` of
    the dataset, with ``len``, indexing, iteration, ``iter_batches`` and
    ``iter_torch_batches``.
    """
    session = _require_session("get_dataset_shard")
    if name not in session.datasets:
        raise KeyError(f"no dataset named {name!r}; the trainer got "
                       f"{sorted(session.datasets) or 'no datasets'}")
    from ._data import DatasetShard

    ctx = session.context
    return DatasetShard(session.datasets[name], ctx.get_world_rank(), ctx.get_world_size())
