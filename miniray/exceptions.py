"""Exceptions raised by miniray, named as in ``ray.exceptions``.

Programs written for Ray catch these by the same names, so ``except
ray.exceptions.GetTimeoutError`` keeps working after ``import miniray as ray``.
"""

from __future__ import annotations

import traceback as _traceback

__all__ = [
    "RayError",
    "RayTaskError",
    "TaskError",
    "GetTimeoutError",
    "WorkerCrashedError",
    "ObjectStoreFullError",
    "TaskCancelledError",
    "ObjectLostError",
    "OwnerDiedError",
    "RayActorError",
    "ActorDiedError",
    "ActorUnavailableError",
    "RaySystemError",
    "PendingCallsLimitExceeded",
    "RuntimeEnvSetupError",
    "ActorAlreadyExistsError",
    "TaskUnschedulableError",
    "TaskPlacementGroupRemoved",
    "ActorPlacementGroupRemoved",
    "OutOfDiskError",
    "OutOfMemoryError",
    "UnserializableException",
    "RayChannelError",
    "RayChannelTimeoutError",
    "RayCgraphCapacityExceeded",
]


class RayError(Exception):
    """Base class of every error miniray raises on its own behalf."""


class RaySystemError(RayError):
    """The runtime itself failed (not the user's code)."""


class RayChannelError(RaySystemError):
    """A compiled DAG's channel failed: the DAG was torn down, or a process
    at the other end of a channel died."""


class RayChannelTimeoutError(RayChannelError, TimeoutError):
    """A compiled DAG's ``execute`` or ``get`` ran out of time waiting on a channel."""


class RayCgraphCapacityExceeded(RaySystemError):
    """A compiled DAG has as many executions in flight (or results buffered) as
    it allows: get some results before executing more."""


class GetTimeoutError(RayError, TimeoutError):
    """``get`` or ``wait`` ran out of time before the objects were ready."""


class WorkerCrashedError(RayError):
    """The worker process running a task died (and the retries, if any, ran out)."""


class ObjectStoreFullError(RayError, MemoryError):
    """The object store cannot hold a new object and nothing can be spilled or freed."""


class TaskCancelledError(RayError):
    """The task was cancelled with ``miniray.cancel`` before it finished."""

    def __init__(self, task_id: str | None = None, message: str | None = None):
        self.task_id = task_id
        super().__init__(message or f"Task {task_id} was cancelled")


class ObjectLostError(RayError):
    """The object's data is gone (its storage was removed) and cannot be rebuilt."""

    def __init__(self, object_id: str = "", reason: str = ""):
        self.object_id = object_id
        msg = f"Object {object_id} is lost"
        if reason:
            msg += f": {reason}"
        super().__init__(msg)


class OwnerDiedError(ObjectLostError):
    """The process that owned the object died."""


class RayActorError(RayError):
    """An actor could not run a method call."""

    def __init__(self, message: str = "The actor died unexpectedly", actor_id: str | None = None):
        self.actor_id = actor_id
        self.error_msg = message
        super().__init__(message)


class ActorAlreadyExistsError(ValueError, RayError):
    """An actor with this name is alive in the namespace already. Also a
    ``ValueError`` (as in Ray), so ``except ValueError`` keeps working."""

    def __init__(self, error_message: str):
        super().__init__(error_message)
        self.error_message = error_message


class ActorDiedError(RayActorError):
    """The actor is dead: its process exited, it was killed, or ``__init__`` raised."""


class ActorUnavailableError(RayActorError):
    """The actor is temporarily unreachable (restarting)."""


class PendingCallsLimitExceeded(RayError):
    """An actor has too many calls queued (``max_pending_calls``)."""


class TaskUnschedulableError(RayError):
    """A task can no longer be scheduled, e.g. its placement group was removed."""


class TaskPlacementGroupRemoved(TaskUnschedulableError):
    """The placement group a task was to run in was removed before the task
    started (Ray's name). Also a :class:`TaskUnschedulableError`, which
    miniray raised here before."""

    def __init__(self, message: str | None = None):
        super().__init__(message or
                         "The placement group corresponding to this task has been removed.")


class ActorPlacementGroupRemoved(ActorDiedError):
    """The placement group an actor was created in was removed, which ends the
    actor (Ray's name). Also an :class:`ActorDiedError`, so code catching
    that keeps working."""

    def __init__(self, message: str | None = None, actor_id: str | None = None):
        super().__init__(message or
                         "The placement group corresponding to this Actor has been removed.",
                         actor_id)


class OutOfDiskError(ObjectStoreFullError):
    """The object store is full and spilling to disk failed because the disk
    (the node's spill directory) is full too (Ray's name). Also an
    :class:`ObjectStoreFullError`."""


class OutOfMemoryError(RayError):
    """The machine was close to running out of memory, and the memory monitor
    killed the worker running this task (Ray's name and behaviour; see
    ``memory_usage_threshold``). Raised once the task has no retries left."""

    def __init__(self, message: str = "The node is running out of memory."):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UnserializableException(RayError):
    """A task's exception could not be rebuilt in the caller: its class does
    not import there, or its pickle does not load back (an ``__init__`` that
    does not take its own ``args``, an attribute that cannot be pickled).

    As in Ray, it carries the original exception's text and traceback. ``get``
    raises it as a :class:`RayTaskError` that is also an
    ``UnserializableException`` (its ``cause``); ``cause_name`` names the
    original class.
    """

    def __init__(self, original_stack_trace: str = ""):
        super().__init__(original_stack_trace)
        self._original_stack_trace = original_stack_trace

    def __str__(self) -> str:
        return ("Failed to deserialize exception. Make its class importable in the "
                "caller and picklable (an __init__ that accepts its own args, or a "
                "__reduce__).\nOriginal exception:\n" + self._original_stack_trace)


class RuntimeEnvSetupError(RayError):
    """A worker could not set up its runtime environment: the
    ``runtime_env`` ``worker_process_setup_hook`` raised (Ray's name)."""


class RayTaskError(RayError):
    """A task or actor method raised; carries the remote traceback.

    ``get`` raises an instance of a class derived from both ``RayTaskError`` and
    the original exception's class, so both ``except RayTaskError`` and
    ``except ValueError`` (say) catch it, as in Ray.
    """

    def __init__(
        self,
        function_name: str,
        traceback_str: str,
        cause: BaseException | None,
        proctitle: str | None = None,
        pid: int | None = None,
        cause_name: str | None = None,
    ):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.proctitle = proctitle
        self.pid = pid
        # The cause's class name, kept when the cause itself could not travel
        # (its class cannot be rebuilt here, or it is not picklable).
        self.cause_name = cause_name or (type(cause).__name__ if cause is not None else None)
        Exception.__init__(self, self._message())

    def _message(self) -> str:
        where = f" (pid={self.pid})" if self.pid else ""
        name = getattr(self, "cause_name", None) or (
            type(self.cause).__name__ if self.cause is not None else "Error")
        return f"{name} in {self.function_name}{where}:\n{self.traceback_str.rstrip()}"

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self):
        return (
            _rebuild_task_error,
            (self.function_name, self.traceback_str, self.cause, self.proctitle, self.pid,
             getattr(self, "cause_name", None)),
        )

    @classmethod
    def from_exception(cls, function_name: str, exc: BaseException, pid: int | None = None):
        tb = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(function_name, tb, exc, pid=pid)

    def as_instanceof_cause(self) -> "RayTaskError":
        """Return an error that is also an instance of the cause's class.

        Never raises: where no such class can be made or instantiated, the
        plain ``RayTaskError`` (still carrying ``cause``) is returned. A cause
        that is not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``,
        ``GeneratorExit``) is never mixed in, so a task calling ``sys.exit()``
        cannot end or interrupt the caller: ``get`` raises a task error.
        """
        cause = self.cause
        if cause is None or isinstance(cause, RayTaskError):
            return self
        cause_cls = type(cause)
        if not issubclass(cause_cls, Exception):
            return self
        try:
            derived = _derived_class(cause_cls)
            if derived is None:
                return self
            # Through the type's own constructor: calling a base's __new__
            # directly is refused for builtins with their own allocator
            # (MemoryError, OSError).
            try:
                err = derived(*cause.args)
            except Exception:
                err = derived()
            # The cause's own attributes (errno, args, custom fields) stay visible.
            try:
                err.__dict__.update(getattr(cause, "__dict__", {}))
            except Exception:
                pass
            err.args = cause.args
            err.function_name = self.function_name
            err.traceback_str = self.traceback_str
            err.cause = cause
            err.cause_name = self.cause_name
            err.proctitle = self.proctitle
            err.pid = self.pid
            return err
        except Exception:
            return self


TaskError = RayTaskError

_derived_cache: dict[type, type] = {}


def _derived_class(cause_cls: type):
    """The class deriving from both RayTaskError and ``cause_cls``, or None if
    the two cannot be combined (incompatible layouts, a final class)."""
    if cause_cls in _derived_cache:
        return _derived_cache[cause_cls]

    def __init__(self, *args, **kwargs):
        Exception.__init__(self, *args)

    try:
        derived = type(
            f"RayTaskError({cause_cls.__name__})",
            (RayTaskError, cause_cls),
            {
                "__init__": __init__,
                "__str__": RayTaskError.__str__,
                "__reduce__": RayTaskError.__reduce__,
                "__module__": "miniray.exceptions",
            },
        )
    except TypeError:
        derived = None
    _derived_cache[cause_cls] = derived
    return derived


def _rebuild_task_error(function_name, traceback_str, cause, proctitle, pid, cause_name=None):
    if cause is None and cause_name:
        # The worker dropped a cause that would not load back here.
        cause = UnserializableException(f"{cause_name}: {traceback_str}")
    return RayTaskError(function_name, traceback_str, cause, proctitle, pid,
                        cause_name).as_instanceof_cause()


def __getattr__(name):
    from ._surface import missing

    raise missing(__name__, name)
