"""Configuration objects of a training run, with Ray Train's names and fields."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class ScalingConfig:
    """How many workers train, and what each one reserves.

    Args:
        num_workers: training worker processes (one actor each); they form one
            ``torch.distributed`` process group.
        use_gpu: give each worker one GPU (unless ``resources_per_worker``
            says otherwise) and use the ``nccl`` backend. Raises ``ValueError``
            at ``fit()`` when the node has too few GPUs.
        resources_per_worker: what each worker reserves, e.g.
            ``{"CPU": 2, "GPU": 1}``. Default: 1 CPU (and 1 GPU with
            ``use_gpu``). The CPU count also sets ``torch.set_num_threads``
            in the worker, so workers do not oversubscribe the cores.
        trainer_resources: accepted for Ray compatibility; the trainer runs
            in the calling process and reserves nothing.
        placement_strategy: accepted for Ray compatibility (one node only).
    """

    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict | None = None
    trainer_resources: dict | None = None
    placement_strategy: str = "PACK"

    def __post_init__(self):
        if not isinstance(self.num_workers, int) or self.num_workers < 1:
            raise ValueError(f"num_workers must be an int >= 1, got {self.num_workers!r}")
        if self.resources_per_worker is not None:
            if not isinstance(self.resources_per_worker, dict):
                raise TypeError("resources_per_worker must be a dict like {'CPU': 1}")
            for key, amount in self.resources_per_worker.items():
                if not isinstance(amount, (int, float)) or amount < 0:
                    raise ValueError(f"resources_per_worker[{key!r}] must be a number >= 0, "
                                     f"got {amount!r}")

    @property
    def num_cpus_per_worker(self) -> float:
        """CPUs each worker reserves."""
        return float((self.resources_per_worker or {}).get("CPU", 1))

    @property
    def num_gpus_per_worker(self) -> float:
        """GPUs each worker reserves (0 unless ``use_gpu`` or asked for)."""
        default = 1 if self.use_gpu else 0
        return float((self.resources_per_worker or {}).get("GPU", default))

    @property
    def additional_resources_per_worker(self) -> dict:
        """Custom resources each worker reserves (everything but CPU and GPU)."""
        return {k: v for k, v in (self.resources_per_worker or {}).items()
                if k not in ("CPU", "GPU")}

    @property
    def total_resources(self) -> dict:
        """What the whole worker group reserves."""
        out = {"CPU": self.num_cpus_per_worker * self.num_workers,
               "GPU": self.num_gpus_per_worker * self.num_workers}
        for key, amount in self.additional_resources_per_worker.items():
            out[key] = amount * self.num_workers
        return out


@dataclass
class FailureConfig:
    """How often a failed run is restarted.

    Args:
        max_failures: restarts of the whole worker group after a worker
            process dies or the training function raises; each restart
            resumes from the latest reported checkpoint. ``0``: none,
            ``-1``: without limit.
        fail_fast: accepted for Ray compatibility (ignored).
    """

    max_failures: int = 0
    fail_fast: bool = False

    def __post_init__(self):
        if not isinstance(self.max_failures, int) or self.max_failures < -1:
            raise ValueError(f"max_failures must be an int >= -1, got {self.max_failures!r}")


@dataclass
class CheckpointConfig:
    """Which persisted checkpoints are kept.

    Args:
        num_to_keep: keep at most this many checkpoints on disk (``None``:
            all). The latest checkpoint is always kept, because a restart
            resumes from it.
        checkpoint_score_attribute: metric that ranks checkpoints for
            ``num_to_keep`` (default: recency).
        checkpoint_score_order: ``"max"`` or ``"min"``.
    """

    num_to_keep: int | None = None
    checkpoint_score_attribute: str | None = None
    checkpoint_score_order: str = "max"

    def __post_init__(self):
        if self.num_to_keep is not None and (not isinstance(self.num_to_keep, int)
                                             or self.num_to_keep < 1):
            raise ValueError(f"num_to_keep must be None or an int >= 1, "
                             f"got {self.num_to_keep!r}")
        if self.checkpoint_score_order not in ("max", "min"):
            raise ValueError("checkpoint_score_order must be 'max' or 'min'")


@dataclass
class LoggingConfig:
    """Ray Train's logging: the level of Train's own ``miniray.train`` logger
    (restarts, failures) for a run; the root logger is left alone.

    Args:
        log_level: a logging level name (``"INFO"``, the default).
    """

    log_level: str = "INFO"

    def __post_init__(self):
        import logging

        if (not isinstance(self.log_level, str)
                or self.log_level.upper() not in logging._nameToLevel):
            raise ValueError(f"Invalid log_level: {self.log_level!r}. Must be one of: "
                             f"{', '.join(sorted(logging._nameToLevel))}.")
        self.log_level = self.log_level.upper()


def _default_storage_path() -> str:
    return os.path.join(os.path.expanduser("~"), "miniray_results")


@dataclass
class RunConfig:
    """Where a run persists its checkpoints, and how it handles failures.

    Args:
        name: the run's folder under ``storage_path`` (default: the trainer's
            class name and a timestamp).
        storage_path: root folder for runs (default ``~/miniray_results``).
            Reported checkpoints are copied to
            ``storage_path/name/checkpoint_NNNNNN``.
        failure_config: restarts after failures.
        checkpoint_config: how many checkpoints are kept.
        verbose: ``0`` is quiet; ``1`` (default) prints restarts.
        callbacks: :class:`~miniray.train.UserCallback` objects, called on the
            driver after each report and after worker failures (e.g.
            ``miniray.tune.integration.ray_train.TuneReportCallback``).
        logging_config: a :class:`LoggingConfig` (the level of Train's logs).
    """

    name: str | None = None
    storage_path: str | None = None
    failure_config: FailureConfig = field(default_factory=FailureConfig)
    checkpoint_config: CheckpointConfig = field(default_factory=CheckpointConfig)
    verbose: int = 1
    callbacks: list | None = None
    logging_config: LoggingConfig | None = None

    def __post_init__(self):
        if self.logging_config is None:
            self.logging_config = LoggingConfig()
        if self.failure_config is None:
            self.failure_config = FailureConfig()
        if self.checkpoint_config is None:
            self.checkpoint_config = CheckpointConfig()
        if self.storage_path is not None:
            self.storage_path = os.fspath(self.storage_path)
