"""Ray Train's backend API: ``BackendConfig`` and ``Backend`` hooks for a
framework other than torch.distributed (the trainer sets that one up itself).

``DataParallelTrainer(loop, backend_config=MyConfig())`` starts the workers,
then calls ``MyConfig().backend_cls()``'s ``on_start(worker_group, config)``
and ``on_training_start(worker_group, config)`` before the training function
runs, and ``on_shutdown(worker_group, config)`` after it; the hooks run code
on every worker with ``worker_group.execute(fn, *args)``. Workers get the
torchrun variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``...)
but no torch process group.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

__all__ = ["Backend", "BackendConfig", "WorkerGroup"]


class Backend:
    """Hooks a framework runs around training; each gets the worker group and
    the :class:`BackendConfig`. The defaults do nothing."""

    share_cuda_visible_devices: bool = False

    def on_start(self, worker_group: "WorkerGroup", backend_config: "BackendConfig") -> None:
        """After the workers started, before the training function."""

    def on_training_start(self, worker_group: "WorkerGroup",
                          backend_config: "BackendConfig") -> None:
        """Just before the training function starts on every worker."""

    def on_shutdown(self, worker_group: "WorkerGroup",
                    backend_config: "BackendConfig") -> None:
        """After the training function ended (or failed), before the workers exit."""


@dataclass
class BackendConfig:
    """The configuration of a training backend; subclass it and return your
    :class:`Backend` subclass from :attr:`backend_cls`."""

    @property
    def backend_cls(self):
        return Backend

    @property
    def train_func_context(self):
        return contextlib.nullcontext


class WorkerGroup:
    """The training workers, as a backend's hooks see them."""

    def __init__(self, workers: list):
        self._workers = list(workers)

    def __len__(self) -> int:
        return len(self._workers)

    @property
    def num_workers(self) -> int:
        return len(self._workers)

    def execute_async(self, func, *args, **kwargs) -> list:
        """Run ``func(*args, **kwargs)`` on every worker; their ObjectRefs, by rank."""
        return [w.execute.remote(func, args, kwargs) for w in self._workers]

    def execute(self, func, *args, **kwargs) -> list:
        """Run ``func(*args, **kwargs)`` on every worker; their results, by rank."""
        import miniray

        return miniray.api._get_blocking(self.execute_async(func, *args, **kwargs))

    def execute_single_async(self, worker_index: int, func, *args, **kwargs):
        return self._workers[worker_index].execute.remote(func, args, kwargs)

    def execute_single(self, worker_index: int, func, *args, **kwargs):
        """Run ``func`` on one worker (by rank); its result."""
        import miniray

        return miniray.api._get_blocking(
            self.execute_single_async(worker_index, func, *args, **kwargs))
