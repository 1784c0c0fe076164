"""Errors raised by the cluster control plane."""

from __future__ import annotations

from ..exceptions import RayError


class ClusterError(RayError):
    """Base class of the control plane's own errors."""


class ClusterConfigError(ClusterError, ValueError):
    """A cluster configuration (file, ``ClusterConfig`` or option) is invalid."""


class ClusterUnavailableError(ClusterError):
    """Work could not run on any cluster: every attempt met a cluster-level
    failure (connection lost, cluster down) and the retries are spent.

    ``attempts`` lists ``(cluster_name, reason)`` for each try.
    """

    def __init__(self, what: str, attempts: list | None = None, message: str | None = None):
        self.what = what
        self.attempts = list(attempts or ())
        if message is None:
            tried = "; ".join(f"{name}: {reason}" for name, reason in self.attempts) or "none"
            message = (f"{what} could not run on any cluster after {len(self.attempts)} "
                       f"attempt(s) ({tried})")
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.what, self.attempts, str(self)))


class ClusterConnectionLost(ClusterError):
    """The connection to a cluster broke while work was in flight there.

    A cluster-level failure: the dispatcher retries the work elsewhere.
    """

    def __init__(self, cluster: str, reason: str = "connection lost"):
        self.cluster = cluster
        self.reason = reason
        super().__init__(f"cluster {cluster!r}: {reason}")

    def __reduce__(self):
        return (type(self), (self.cluster, self.reason))


class QueueFullError(ClusterError):
    """The dispatch queue is full and the submission was asked not to wait."""


class NoEligibleClusterError(ClusterError, ValueError):
    """No configured cluster can ever take this work (unknown cluster name,
    tags no cluster has, or resources no cluster offers)."""
