"""Runtime context: what is running where (``miniray.get_runtime_context()``)."""

from __future__ import annotations

import os

current_actor_id: bytes | None = None
_worker_client = None
# The placement group the running task or actor was scheduled in, and the same
# group again if it captures child tasks (placement_group_capture_child_tasks).
current_placement_group = None
capture_group = None


def set_placement(placement) -> None:
    """Set by the worker for each task (``None`` or ``[pg_id, bundles, capture]``)."""
    global current_placement_group, capture_group
    if placement is None:
        current_placement_group = capture_group = None
        return
    from . import hooks

    group = hooks.placement_group(placement[0], placement[1])
    current_placement_group = group
    capture_group = group if placement[2] else None


def set_worker_context(client) -> None:
    global _worker_client
    _worker_client = client


class RuntimeContext:
    """Ray's ``RuntimeContext``: ids of the job, node, worker, task and actor."""

    def __init__(self, namespace: str, node_pid: int, job_id: str | None = None):
        self.namespace = namespace
        self._node_pid = node_pid
        self._job_id = job_id

    def get_job_id(self) -> str:
        """The driver's job (its record in ``miniray.util.state.list_jobs()``). A
        driver connected to a head has its own; its tasks report the head's."""
        return self._job_id or f"{self._node_pid:08x}"

    def get_node_id(self) -> str:
        return f"node-{self._node_pid}"

    @property
    def node_id(self) -> str:
        """Ray's ``RuntimeContext.node_id``: the same id as :meth:`get_node_id`."""
        return self.get_node_id()

    @property
    def job_id(self) -> str:
        return self.get_job_id()

    @property
    def task_id(self) -> str | None:
        return self.get_task_id()

    @property
    def actor_id(self) -> str | None:
        return self.get_actor_id()

    def is_canceled(self) -> bool:
        """True inside a task (or actor call) after ``miniray.cancel`` was called on it.

        A sync task sees ``TaskCancelledError`` raised in it; code that catches it
        (to clean up) can ask here why it stopped. An async actor method is
        cancelled as an asyncio task: this is true while its cancellation is pending.
        """
        client = _worker_client
        if client is None:
            raise RuntimeError("is_canceled() is for code running in a task or actor; "
                               "the driver is never cancelled")
        if getattr(client, "concurrent", False):
            import asyncio

            try:
                task = asyncio.current_task()
            except RuntimeError:  # a thread of a threaded actor
                task = None
            return task is not None and task.cancelling() > 0
        task_id = client.current_task
        return task_id is not None and task_id in client.cancelled

    def get_worker_id(self) -> str:
        return f"worker-{os.getpid()}"

    def get_task_id(self) -> str | None:
        client = _worker_client
        if client is None or client.current_task is None:
            return None
        return client.current_task.hex()

    def get_actor_id(self) -> str | None:
        return current_actor_id.hex() if current_actor_id is not None else None

    @property
    def worker_mode(self) -> str:
        return "WORKER_MODE" if _worker_client is not None else "SCRIPT_MODE"

    def get_assigned_resources(self) -> dict:
        """Resources held by the current task or actor (``{}`` in the driver)."""
        if _worker_client is None:
            return {}
        return _worker_client.request("worker_context")["resources"]

    def get_accelerator_ids(self) -> dict:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return {"GPU": visible.split(",") if visible else []}

    @property
    def was_current_actor_reconstructed(self) -> bool:
        """True in an actor that was restarted after its process died."""
        if _worker_client is None or current_actor_id is None:
            return False
        return _worker_client.request("worker_context")["restarted"]
