"""PyTorch data-parallel training: :class:`TorchTrainer` and the helpers its loop calls.

torch is imported when these are used, not when this module is imported, so
the driver can build a trainer without loading torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .._backend import BackendConfig
from .._config import RunConfig, ScalingConfig
from .._trainer import DataParallelTrainer

from .._checkpoint import Checkpoint

__all__ = ["TorchTrainer", "TorchConfig", "TorchCheckpoint", "prepare_model",
           "prepare_data_loader", "get_device", "get_devices", "enable_reproducibility",
           "accelerate", "prepare_optimizer", "backward"]

_AMP_GONE = ("accelerate, backward and prepare_optimizer were deprecated by Ray Train and "
             "raise in Ray 2.60, as here: use PyTorch's mixed precision directly "
             "(torch.autocast and torch.amp.GradScaler in the training function), or a "
             "library such as Lightning or HuggingFace Accelerate.")


def accelerate(amp: bool = False) -> None:
    """Deprecated in Ray Train: raises ``DeprecationWarning`` (as Ray 2.60 does)."""
    raise DeprecationWarning(_AMP_GONE)


def prepare_optimizer(optimizer):
    """Deprecated in Ray Train: raises ``DeprecationWarning`` (as Ray 2.60 does)."""
    raise DeprecationWarning(_AMP_GONE)


def backward(tensor) -> None:
    """Deprecated in Ray Train: raises ``DeprecationWarning`` (as Ray 2.60 does)."""
    raise DeprecationWarning(_AMP_GONE)


class TorchCheckpoint(Checkpoint):
    """A checkpoint holding a PyTorch model (Ray's ``TorchCheckpoint``): its
    ``state_dict`` (``from_state_dict``) or the whole module (``from_model``) in
    ``model.pt``; :meth:`get_model` loads it back."""

    MODEL_FILENAME = "model.pt"

    @classmethod
    def from_state_dict(cls, state_dict: dict, *, preprocessor=None) -> "TorchCheckpoint":
        """A checkpoint (in a new temporary directory) of ``state_dict``."""
        import tempfile

        import torch

        path = tempfile.mkdtemp(prefix="checkpoint_")
        torch.save({k: v.cpu() if hasattr(v, "cpu") else v for k, v in state_dict.items()},
                   os.path.join(path, cls.MODEL_FILENAME))
        return cls(path)

    @classmethod
    def from_model(cls, model, *, preprocessor=None) -> "TorchCheckpoint":
        """A checkpoint (in a new temporary directory) of the whole module (pickled)."""
        import tempfile

        import torch

        path = tempfile.mkdtemp(prefix="checkpoint_")
        torch.save(getattr(model, "module", model), os.path.join(path, cls.MODEL_FILENAME))
        return cls(path)

    def get_model(self, model=None):
        """The saved module; for a saved state dict, ``model`` (a module of the same
        shape) is required and gets the weights loaded."""
        import torch

        saved = torch.load(os.path.join(self.path, self.MODEL_FILENAME), map_location="cpu",
                           weights_only=False)
        if isinstance(saved, torch.nn.Module):
            if model is not None:
                model.load_state_dict(saved.state_dict())
                return model
            return saved
        if model is None:
            raise ValueError("this TorchCheckpoint holds a state dict: pass the module to load "
                             "it into, get_model(model)")
        model.load_state_dict(saved)
        return model


@dataclass
class TorchConfig(BackendConfig):
    """How the workers' ``torch.distributed`` process group is set up.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default nccl with GPUs, gloo without.
        init_method: only ``"env"`` (``MASTER_ADDR``/``MASTER_PORT``) is supported.
        timeout_s: how long collectives wait for a peer before they fail.
    """

    backend: str | None = None
    init_method: str = "env"
    timeout_s: float = 1800

    _sets_up_torch = True  # the trainer itself joins the process group

    def __post_init__(self):
        if self.backend not in (None, "gloo", "nccl"):
            raise ValueError(f"backend must be 'gloo' or 'nccl', got {self.backend!r}")
        if self.init_method != "env":
            raise ValueError("only init_method='env' is supported")


class TorchTrainer(DataParallelTrainer):
    """Data-parallel PyTorch training on a group of worker processes.

    ``train_loop_per_worker(config)`` runs on ``scaling_config.num_workers``
    workers that form one ``torch.distributed`` process group (gloo on CPU,
    nccl with ``use_gpu=True``) on 127.0.0.1. Inside it use
    :func:`prepare_model`, :func:`prepare_data_loader`,
    :func:`miniray.train.report` and :func:`miniray.train.get_checkpoint`.

    Args:
        train_loop_per_worker: the training function, taking no argument or
            one (``train_loop_config``).
        train_loop_config: dict passed to the training function.
        torch_config: process group settings (backend, timeout).
        scaling_config: number of workers and their resources.
        run_config: name, storage path, failure and checkpoint settings.
        datasets: ``{name: data}`` of in-memory data; each worker reads its
            shard with :func:`miniray.train.get_dataset_shard`.
        resume_from_checkpoint: a checkpoint that ``get_checkpoint()`` returns
            on the first attempt.
        metadata: a dict the workers read with ``get_context().get_metadata()``.
    """

    def __init__(self, train_loop_per_worker, *, train_loop_config: dict | None = None,
                 torch_config: TorchConfig | None = None,
                 scaling_config: ScalingConfig | None = None,
                 run_config: RunConfig | None = None, datasets: dict | None = None,
                 resume_from_checkpoint=None, metadata: dict | None = None,
                 validation_config=None):
        super().__init__(train_loop_per_worker, train_loop_config=train_loop_config,
                         scaling_config=scaling_config, run_config=run_config,
                         datasets=datasets, resume_from_checkpoint=resume_from_checkpoint,
                         metadata=metadata, validation_config=validation_config)
        self.torch_config = torch_config or TorchConfig()

    def _backend(self) -> str:
        if self.torch_config.backend is not None:
            return self.torch_config.backend
        return "nccl" if self.scaling_config.use_gpu else "gloo"

    def _timeout_s(self) -> float:
        return float(self.torch_config.timeout_s)


def get_device():
    """This worker's torch device: its GPU with ``use_gpu=True``, else the CPU."""
    import torch

    if torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "") not in ("", "-1"):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def get_devices() -> list:
    """This worker's devices, as a list (one device per worker here)."""
    return [get_device()]


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def prepare_model(model, move_to_device: bool = True, parallel_strategy: str | None = "ddp",
                  parallel_strategy_kwargs: dict | None = None):
    """Move ``model`` to this worker's device and wrap it for data-parallel training.

    With more than one worker the model is wrapped in
    ``torch.nn.parallel.DistributedDataParallel`` (which averages gradients
    over the workers in ``backward``); ``parallel_strategy="fsdp"`` wraps it in
    ``FullyShardedDataParallel`` instead, and ``None`` leaves it unwrapped.
    """
    import torch

    device = get_device()
    if move_to_device:
        model = model.to(device)
    if parallel_strategy is None or _world_size() == 1:
        return model
    kwargs = dict(parallel_strategy_kwargs or {})
    if parallel_strategy == "ddp":
        if device.type == "cuda":
            kwargs.setdefault("device_ids", [device])
            kwargs.setdefault("output_device", device)
        return torch.nn.parallel.DistributedDataParallel(model, **kwargs)
    if parallel_strategy == "fsdp":
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(model, **kwargs)
    raise ValueError(f"parallel_strategy must be 'ddp', 'fsdp' or None, "
                     f"got {parallel_strategy!r}")


def prepare_data_loader(data_loader, add_dist_sampler: bool = True, move_to_device: bool = True,
                        auto_transfer: bool = True):
    """Give each worker its own part of ``data_loader``'s dataset, on its device.

    With more than one worker the loader is rebuilt with a
    ``DistributedSampler`` (shuffling if the original loader shuffled), so
    each worker sees ``1/world_size`` of the data per epoch. Call
    ``loader.sampler.set_epoch(epoch)`` at the start of each epoch for a new
    shuffle order, as with plain DDP. With ``move_to_device`` the batches
    arrive on the worker's device.
    """
    import torch
    from torch.utils.data import DataLoader, DistributedSampler, IterableDataset
    from torch.utils.data.sampler import RandomSampler

    world_size = _world_size()
    if add_dist_sampler and world_size > 1 and not isinstance(data_loader.dataset,
                                                              IterableDataset):
        import torch.distributed as dist

        shuffle = isinstance(data_loader.sampler, RandomSampler)
        sampler = DistributedSampler(data_loader.dataset, num_replicas=world_size,
                                     rank=dist.get_rank(), shuffle=shuffle)
        data_loader = DataLoader(
            data_loader.dataset, batch_size=data_loader.batch_size, sampler=sampler,
            num_workers=data_loader.num_workers, collate_fn=data_loader.collate_fn,
            pin_memory=data_loader.pin_memory, drop_last=data_loader.drop_last,
            timeout=data_loader.timeout, worker_init_fn=data_loader.worker_init_fn,
            generator=data_loader.generator,
            persistent_workers=data_loader.persistent_workers)
    device = get_device()
    if move_to_device and device.type != "cpu":
        return _DeviceDataLoader(data_loader, device, torch)
    return data_loader


class _DeviceDataLoader:
    """Iterates a loader, moving every tensor of each batch to ``device``."""

    def __init__(self, loader, device, torch):
        self._loader = loader
        self._device = device
        self._torch = torch

    def _move(self, item):
        if isinstance(item, self._torch.Tensor):
            return item.to(self._device, non_blocking=True)
        if isinstance(item, (list, tuple)):
            return type(item)(self._move(i) for i in item)
        if isinstance(item, dict):
            return {k: self._move(v) for k, v in item.items()}
        return item

    def __iter__(self):
        for batch in self._loader:
            yield self._move(batch)

    def __len__(self):
        return len(self._loader)

    def __getattr__(self, name):
        # sampler, dataset, batch_size, ... of the wrapped loader.
        return getattr(self._loader, name)


def enable_reproducibility(seed: int = 0) -> None:
    """Seed torch, numpy and random, and ask torch for deterministic kernels."""
    import random

    import numpy as np
    import torch

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
