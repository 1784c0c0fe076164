"""Result collection: turn what a cluster answered into the value or the
error that ``miniray.get`` gives, naming the cluster."""

from __future__ import annotations

from ..exceptions import RayActorError, RayTaskError
from .errors import ClusterConnectionLost
from .ray_backend import RemoteError
from .retry import CLUSTER_FAILURE_NAMES


def is_cluster_level(error: BaseException) -> bool:
    """Failures of the cluster, retried elsewhere; the rest go to the caller."""
    if isinstance(error, (ClusterConnectionLost, ConnectionError)):
        return True
    if isinstance(error, RemoteError):
        return error.kind == "system" and error.type_name in CLUSTER_FAILURE_NAMES
    return False


def user_error(error: BaseException, what: str, cluster: str) -> BaseException:
    """The exception ``get`` raises: an application error keeps its type
    (``RayTaskError`` and the original class, as in Ray) with the cluster in
    its message."""
    where = f"{what} on cluster {cluster!r}"
    if isinstance(error, RemoteError):
        if error.kind == "actor":
            return RayActorError(f"{where}: the actor died: {error.traceback_str.strip()}")
        cause = error.cause
        if cause is None:
            cause = RuntimeError(f"{error.type_name} (not unpicklable here)")
        return RayTaskError(where, error.traceback_str, cause).as_instanceof_cause()
    if isinstance(error, RayTaskError):
        return RayTaskError(where, error.traceback_str, error.cause).as_instanceof_cause()
    return error
