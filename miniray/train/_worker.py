"""The training worker actor: joins the process group and runs the loop.

The training function runs on a thread of its own inside the actor, so the
actor's main thread stays free to answer ``poll`` calls from the driver
(reports, completion, errors) while training goes on.
"""

from __future__ import annotations

import inspect
import os
import pickle
import queue
import socket
import threading
import traceback

_DONE = object()


class TrainWorker:
    """One training process (use through the trainer, not directly)."""

    def __init__(self):
        self._outbox: queue.Queue = queue.Queue()
        self._thread = None
        self._status = "idle"
        self._error = None
        self._device_index = None
        self._done = False

    def info(self) -> dict:
        """The process id and the GPUs miniray gave this actor."""
        return {"pid": os.getpid(), "gpu_ids": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def free_port(self) -> int:
        """A TCP port free on 127.0.0.1 now; rank 0 then binds it as the store's port."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def setup(self, rank: int, world_size: int, master_port: int, backend: str,
              timeout_s: float, num_threads: int, cuda_visible: str | None,
              device_index: int | None) -> str:
        """Join the ``torch.distributed`` process group (blocks until all ranks join)."""
        # The usual torchrun variables, so code written for torchrun works too.
        os.environ.update({
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(master_port),
            "RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world_size), "NODE_RANK": "0", "GROUP_RANK": "0",
        })
        if cuda_visible is not None:
            # Every worker sees all GPUs of the group (before CUDA starts up), so
            # nccl can use peer-to-peer transfers; each picks its own by index.
            os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible
        if backend is None:  # a custom BackendConfig sets its framework up itself
            return None
        import datetime

        import torch
        import torch.distributed as dist

        # One thread per reserved CPU: workers sharing the cores would otherwise
        # each start a thread per core and slow each other down.
        torch.set_num_threads(max(1, num_threads))
        self._device_index = device_index
        if device_index is not None:
            torch.cuda.set_device(device_index)
        dist.init_process_group(backend=backend, init_method="env://", rank=rank,
                                world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
        return backend

    def start(self, fn, config, context_args: dict, checkpoint_path, datasets: dict,
              next_index: int) -> None:
        """Start the training function on a thread; ``poll`` follows its progress."""
        from . import _session
        from ._checkpoint import Checkpoint

        # Nested refs are not resolved by the call itself: fetch the data here,
        # on the main thread, before training starts.
        if datasets:
            import miniray

            names = list(datasets)
            values = miniray.api._get_blocking([datasets[n] for n in names])
            datasets = dict(zip(names, values))
        checkpoint = Checkpoint(checkpoint_path) if checkpoint_path else None
        context = _session.TrainContext(**context_args)
        _session._set_session(_session._Session(context, self._outbox, checkpoint,
                                                datasets or {}, next_index))
        takes_config = _takes_argument(fn)

        def target():
            try:
                if takes_config:
                    fn(config if config is not None else {})
                else:
                    fn()
                self._status = "finished"
            except BaseException as exc:  # noqa: BLE001 - everything is reported to the driver
                self._error = (_picklable(exc), traceback.format_exc())
                self._status = "failed"
            finally:
                self._outbox.put(_DONE)

        self._status = "running"
        self._thread = threading.Thread(target=target, name="train_loop", daemon=True)
        self._thread.start()

    def poll(self, timeout: float):
        """Reports made since the last poll, waiting up to ``timeout`` for one.

        Returns ``(reports, status, error)``; status is running, finished or
        failed, and error is ``(exception, traceback text)`` when failed.
        """
        reports = []
        done = self._done
        try:
            if done:
                raise queue.Empty
            item = self._outbox.get(timeout=timeout)
            while True:
                if item is _DONE:
                    done = self._done = True
                else:
                    reports.append(item)
                item = self._outbox.get_nowait()
        except queue.Empty:
            pass
        status = self._status if done else "running"
        return reports, status, self._error if status == "failed" else None

    def execute(self, fn, args, kwargs):
        """Run a backend hook's function here (``WorkerGroup.execute``)."""
        return fn(*args, **kwargs)

    def shutdown(self) -> None:
        """Leave the process group (the driver then ends the process)."""
        try:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception:
            pass


def _takes_argument(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
               for p in params)


def _picklable(exc: BaseException) -> BaseException:
    import cloudpickle

    try:
        pickle.loads(cloudpickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
