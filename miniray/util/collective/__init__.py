"""Ray's collective communication between actors (``ray.util.collective``),
on the CPU with the gloo backend of ``torch.distributed``.

Each actor joins a named group, either itself with
:func:`init_collective_group` or declared from the driver with
:func:`create_collective_group` (the actors join on their first collective
call), then calls :func:`allreduce`, :func:`broadcast`, :func:`allgather`,
:func:`reduce`, :func:`reducescatter`, :func:`barrier`, :func:`send` and
:func:`recv` on torch tensors or numpy arrays (changed in place, as in Ray).
The members rendezvous through a file store on this machine; several groups
can live in one process. ``backend="nccl"`` (GPU tensors) is not supported:
use ``miniray.train`` (which sets up nccl process groups) for GPU training.
"""

from __future__ import annotations

import os
import tempfile

from .types import Backend, ReduceOp

__all__ = ["Backend", "ReduceOp", "allgather", "allreduce", "barrier", "broadcast",
           "create_collective_group", "destroy_collective_group", "get_collective_group_size",
           "get_rank", "gloo_available", "init_collective_group", "is_group_initialized",
           "nccl_available", "recv", "reduce", "reducescatter", "send"]

_groups: dict = {}  # group name -> _Group, in this process


class _Group:
    def __init__(self, name: str, world_size: int, rank: int, timeout_ms: int):
        import datetime

        import torch.distributed as dist

        self.name, self.world_size, self.rank = name, world_size, rank
        self.path = _store_path(name)
        self.store = dist.FileStore(self.path, world_size)
        options = dist.ProcessGroupGloo._Options()
        options._timeout = datetime.timedelta(milliseconds=timeout_ms)
        options._devices = [dist.ProcessGroupGloo.create_device(hostname="127.0.0.1")]
        self.pg = dist.ProcessGroupGloo(self.store, rank, world_size, options)
        # Every member is connected once all reach this barrier: the rendezvous
        # file is not needed any more, so it cannot outlive a member that dies.
        self.pg.barrier().wait()
        if rank == 0:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def _store_path(name: str) -> str:
    from ... import get_runtime_context

    node = get_runtime_context().get_node_id()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return os.path.join(tempfile.gettempdir(), f"miniray_collective_{os.getuid()}_{node}_{safe}")


def nccl_available() -> bool:
    """False: miniray's collectives run on gloo (CPU)."""
    return False


def gloo_available() -> bool:
    try:
        import torch.distributed as dist
    except ImportError:
        return False
    return dist.is_gloo_available()


def is_group_initialized(group_name: str = "default") -> bool:
    return group_name in _groups


def init_collective_group(world_size: int, rank: int, backend: str = "gloo",
                          group_name: str = "default", gloo_timeout: int = 30000) -> None:
    """Join group ``group_name`` as ``rank`` of ``world_size``; blocks until all
    members joined (or ``gloo_timeout`` ms passed). Call it in each actor."""
    if Backend(backend) != Backend.GLOO:
        raise ValueError(f"backend {backend!r} is not supported by miniray's collectives: "
                         "use backend='gloo' (CPU tensors), or miniray.train for GPU "
                         "training with nccl")
    if not isinstance(group_name, str) or not group_name:
        raise ValueError("group_name must be a non-empty string")
    if group_name in _groups:
        raise RuntimeError(f"Trying to initialize a group twice: {group_name!r}")
    if not (isinstance(world_size, int) and world_size > 0):
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if not (isinstance(rank, int) and 0 <= rank < world_size):
        raise ValueError(f"rank must be in [0, {world_size}), got {rank!r}")
    if not gloo_available():
        raise RuntimeError("miniray's collectives need torch with gloo: pip install torch")
    _groups[group_name] = _Group(group_name, world_size, rank, gloo_timeout)


def create_collective_group(actors: list, world_size: int, ranks: list,
                            backend: str = "gloo", group_name: str = "default",
                            gloo_timeout: int = 30000) -> None:
    """Declare, from the driver, ``actors`` as group ``group_name`` with these
    ``ranks``; each actor joins on its first collective call."""
    import miniray

    Backend(backend)
    if len(ranks) != len(actors):
        raise ValueError(f"Each actor should correspond to one rank. Got {len(ranks)} ranks "
                         f"but {len(actors)} actors")
    if sorted(ranks) != list(range(world_size)):
        raise ValueError(f"ranks must be 0..{world_size - 1}, each once; got {ranks}")
    info = _declaration_class().options(name=_declaration_name(group_name), lifetime="detached",
                                num_cpus=0).remote(
        {a._actor_id.hex(): r for a, r in zip(actors, ranks)}, world_size, backend,
        gloo_timeout)
    miniray.get(info.ping.remote())


def _declaration_name(group_name: str) -> str:
    return f"miniray_collective_info_{group_name}"


class _DeclarationClass:
    def __init__(self, ranks, world_size, backend, timeout):
        self.info = (ranks, world_size, backend, timeout)

    def ping(self):
        return True

    def get(self):
        return self.info


_declaration_cls = None


def _declaration_class():
    global _declaration_cls
    if _declaration_cls is None:
        import miniray

        _declaration_cls = miniray.remote(_DeclarationClass)
    return _declaration_cls


def __getattr__(name):
    from ..._surface import missing

    raise missing(__name__, name)


def _group(group_name: str) -> _Group:
    group = _groups.get(group_name)
    if group is not None:
        return group
    import miniray

    try:
        info = miniray.get_actor(_declaration_name(group_name))
    except ValueError:
        raise RuntimeError(f"The collective group {group_name!r} is not initialized in this "
                           "process: call init_collective_group in it, or "
                           "create_collective_group from the driver") from None
    ranks, world_size, backend, timeout = miniray.get(info.get.remote())
    actor_id = miniray.get_runtime_context().get_actor_id()
    if actor_id not in ranks:
        raise RuntimeError(f"This actor is not a member of collective group {group_name!r}")
    init_collective_group(world_size, ranks[actor_id], backend, group_name, timeout)
    return _groups[group_name]


def destroy_collective_group(group_name: str = "default") -> None:
    """Leave the group here (and drop the driver's declaration of it)."""
    import miniray

    group = _groups.pop(group_name, None)
    if group is not None:
        del group.pg, group.store
    try:
        miniray.kill(miniray.get_actor(_declaration_name(group_name)))
    except ValueError:
        pass


def get_rank(group_name: str = "default") -> int:
    """This process's rank in the group; -1 if it is not in it."""
    group = _groups.get(group_name)
    return group.rank if group is not None else -1


def get_collective_group_size(group_name: str = "default") -> int:
    """The group's size; -1 if this process is not in it."""
    group = _groups.get(group_name)
    return group.world_size if group is not None else -1


def _torch(tensor):
    import torch

    if isinstance(tensor, torch.Tensor):
        if tensor.is_cuda:
            raise ValueError("miniray's collectives run on gloo: move the tensor to the CPU")
        return tensor
    import numpy as np

    if isinstance(tensor, np.ndarray):
        return torch.from_numpy(tensor)  # shares the memory: results land in the array
    raise TypeError(f"Unrecognized tensor type {type(tensor).__name__}: use a torch tensor "
                    "or a numpy array")


def _op(op):
    import torch.distributed as dist

    table = {ReduceOp.SUM: dist.ReduceOp.SUM, ReduceOp.PRODUCT: dist.ReduceOp.PRODUCT,
             ReduceOp.MIN: dist.ReduceOp.MIN, ReduceOp.MAX: dist.ReduceOp.MAX}
    if op not in table:
        raise ValueError(f"op must be a ReduceOp, got {op!r}")
    return table[op]


def allreduce(tensor, group_name: str = "default", op=ReduceOp.SUM) -> None:
    """Reduce ``tensor`` across the group, in place on every member."""
    import torch.distributed as dist

    options = dist.AllreduceOptions()
    options.reduceOp = _op(op)
    _group(group_name).pg.allreduce([_torch(tensor)], options).wait()


def barrier(group_name: str = "default") -> None:
    """Wait until every member reached the barrier."""
    _group(group_name).pg.barrier().wait()


def reduce(tensor, dst_rank: int = 0, group_name: str = "default", op=ReduceOp.SUM) -> None:
    """Reduce into ``tensor`` of rank ``dst_rank``."""
    import torch.distributed as dist

    group = _group(group_name)
    _check_rank(group, dst_rank)
    options = dist.ReduceOptions()
    options.reduceOp = _op(op)
    options.rootRank = dst_rank
    group.pg.reduce([_torch(tensor)], options).wait()


def broadcast(tensor, src_rank: int = 0, group_name: str = "default") -> None:
    """Copy rank ``src_rank``'s ``tensor`` into every member's."""
    import torch.distributed as dist

    group = _group(group_name)
    _check_rank(group, src_rank)
    options = dist.BroadcastOptions()
    options.rootRank = src_rank
    group.pg.broadcast([_torch(tensor)], options).wait()


def allgather(tensor_list: list, tensor, group_name: str = "default") -> None:
    """Fill ``tensor_list`` (one tensor per member) with every member's ``tensor``."""
    group = _group(group_name)
    if len(tensor_list) != group.world_size:
        raise ValueError(f"tensor_list needs {group.world_size} tensors (one per member), "
                         f"got {len(tensor_list)}")
    group.pg.allgather([[_torch(t) for t in tensor_list]], [_torch(tensor)]).wait()


def reducescatter(tensor, tensor_list: list, group_name: str = "default",
                  op=ReduceOp.SUM) -> None:
    """Reduce ``tensor_list`` across members; member i gets part i in ``tensor``."""
    group = _group(group_name)
    if len(tensor_list) != group.world_size:
        raise ValueError(f"tensor_list needs {group.world_size} tensors (one per member), "
                         f"got {len(tensor_list)}")
    # gloo has no reduce_scatter: each part is reduced to its owner.
    for owner, part in enumerate(tensor_list):
        staged = _torch(part).clone()
        reduce(staged, owner, group_name, op)
        if owner == group.rank:
            _torch(tensor).copy_(staged)


def send(tensor, dst_rank: int, group_name: str = "default") -> None:
    """Send ``tensor`` to rank ``dst_rank`` (blocks until it is received)."""
    group = _group(group_name)
    _check_rank(group, dst_rank)
    group.pg.send([_torch(tensor)], dst_rank, 0).wait()


def recv(tensor, src_rank: int, group_name: str = "default") -> None:
    """Receive into ``tensor`` what rank ``src_rank`` sends."""
    group = _group(group_name)
    _check_rank(group, src_rank)
    group.pg.recv([_torch(tensor)], src_rank, 0).wait()


def _check_rank(group: _Group, rank: int) -> None:
    if not (isinstance(rank, int) and 0 <= rank < group.world_size):
        raise ValueError(f"rank must be in [0, {group.world_size}) for group "
                         f"{group.name!r}, got {rank!r}")
