"""Dataset shards: each worker sees every world-size-th row of a dataset.

A light stand-in for Ray Data: ``datasets=`` takes in-memory data (a numpy
array, a dict of equal-length column arrays, a torch tensor, or any sequence).
The trainer puts each dataset in the object store once, so numpy data is
shared by all workers through shared memory instead of copied per worker.
"""

from __future__ import annotations

import numpy as np


def _length(data) -> int:
    if isinstance(data, dict):
        lengths = {len(v) for v in data.values()}
        if len(lengths) > 1:
            raise ValueError(f"the columns of a dict dataset must have one length, got "
                             f"{sorted(lengths)}")
        return lengths.pop() if lengths else 0
    return len(data)


def validate_dataset(name: str, data) -> None:
    """Raise a clear error now, on the driver, for data a shard cannot index."""
    if isinstance(data, dict):
        _length(data)
        return
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise TypeError(
            f"datasets[{name!r}] is a {type(data).__name__}; miniray.train takes in-memory "
            "data: a numpy array, a dict of column arrays, a torch tensor or a sequence.")


def _take(data, index):
    """Rows ``index`` (a slice or an index array) of ``data``."""
    if isinstance(data, dict):
        return {k: _take(v, index) for k, v in data.items()}
    if isinstance(index, slice) or hasattr(data, "shape"):
        return data[index]
    return [data[i] for i in index]


class DatasetShard:
    """One worker's rows of a dataset: rows ``rank, rank + world_size, ...``.

    Shards differ in size by at most one row. Iterating yields rows (for a
    dict dataset: dicts of column values).
    """

    def __init__(self, data, rank: int, world_size: int):
        self._data = data
        self._rank = rank
        self._world_size = world_size
        total = _length(data)
        self._indices = range(rank, total, world_size)

    def __len__(self) -> int:
        return len(self._indices)

    def count(self) -> int:
        """Number of rows in this shard (as Ray Data's ``count``)."""
        return len(self)

    def materialize(self):
        """The shard's rows as one object of the dataset's own kind."""
        return _take(self._data, slice(self._rank, None, self._world_size))

    def __getitem__(self, i):
        index = self._indices[i]
        if isinstance(index, range):
            return _take(self._data, slice(index.start, index.stop, index.step))
        if isinstance(self._data, dict):
            return {k: v[index] for k, v in self._data.items()}
        return self._data[index]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def iter_batches(self, *, batch_size: int = 256, shuffle: bool = False,
                     seed: int | None = None, drop_last: bool = False):
        """Yield batches of ``batch_size`` rows (numpy arrays, or dicts of them).

        With ``shuffle``, the order of rows changes every call unless ``seed``
        is given.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        order = np.asarray(self._indices)
        if shuffle:
            order = np.random.default_rng(seed).permutation(order)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            if drop_last and len(index) < batch_size:
                return
            yield _as_numpy(_take(self._data, index))

    def iter_torch_batches(self, *, batch_size: int = 256, shuffle: bool = False,
                           seed: int | None = None, drop_last: bool = False,
                           device=None, dtypes=None):
        """Like :meth:`iter_batches`, yielding torch tensors on ``device``.

        ``device`` defaults to this worker's device (:func:`miniray.train.torch.get_device`).
        """
        import torch

        from .torch import get_device

        device = get_device() if device is None else device

        def convert(value, key=None):
            # np.array copies: the shard may be a read-only view of shared memory,
            # which torch.from_numpy would warn about (and must not write to).
            tensor = torch.from_numpy(np.array(value))
            dtype = dtypes.get(key) if isinstance(dtypes, dict) else dtypes
            if dtype is not None:
                tensor = tensor.to(dtype)
            return tensor.to(device)

        for batch in self.iter_batches(batch_size=batch_size, shuffle=shuffle, seed=seed,
                                       drop_last=drop_last):
            if isinstance(batch, dict):
                yield {k: convert(v, k) for k, v in batch.items()}
            else:
                yield convert(batch)

    def __repr__(self) -> str:
        return f"DatasetShard(rows={len(self)}, rank={self._rank}, world_size={self._world_size})"


def _as_numpy(batch):
    if isinstance(batch, dict):
        return {k: _as_numpy(v) for k, v in batch.items()}
    if isinstance(batch, np.ndarray):
        return batch
    if hasattr(batch, "numpy"):  # a torch tensor
        return batch.numpy()
    return np.asarray(batch)
