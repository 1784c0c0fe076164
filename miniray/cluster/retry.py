"""Retries of cluster-level failures: exponential backoff with full jitter."""

from __future__ import annotations

import random

from .errors import ClusterConnectionLost


class Backoff:
    """Delays for attempt 1, 2, ...: uniform in ``[0, min(cap, base * 2**(n-1))]``
    ("full jitter"), so clients that failed together do not retry together."""

    def __init__(self, base: float = 0.1, cap: float = 5.0, rng: random.Random | None = None):
        if base <= 0 or cap <= 0:
            raise ValueError("backoff base and cap must be > 0")
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()

    def ceiling(self, attempt: int) -> float:
        return min(self.cap, self.base * (2 ** max(0, attempt - 1)))

    def delay(self, attempt: int) -> float:
        return self._rng.uniform(0.0, self.ceiling(attempt))


# Ray errors (by class name, so this module never imports Ray) that mean the
# cluster, not the application, failed.
CLUSTER_FAILURE_NAMES = frozenset({
    "NodeDiedError", "RaySystemError", "ObjectLostError", "OwnerDiedError",
    # What a task in flight sees while its cluster is being killed:
    "LocalRayletDiedError", "WorkerCrashedError", "RpcError",
    "ObjectFetchTimedOutError", "ReferenceCountingAssertionError", "ObjectReconstructionFailedError",
    "ObjectReconstructionFailedMaxAttemptsExceededError",
    "ObjectReconstructionFailedLineageEvictedError", "RuntimeEnvSetupError",
})


def is_cluster_failure(error: BaseException) -> bool:
    """True for failures of the cluster (retried on another cluster), False
    for application errors (raised to the caller)."""
    if isinstance(error, (ClusterConnectionLost, ConnectionError)):
        return True
    return type(error).__name__ in CLUSTER_FAILURE_NAMES
