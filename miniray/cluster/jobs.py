"""Whole scripts on a cluster through Ray's Job Submission API."""

from __future__ import annotations

import time

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class JobHandle:
    """A job submitted with :func:`miniray.cluster.submit_job`."""

    def __init__(self, plane, cluster: str, job_id: str):
        self._plane = plane
        self.cluster = cluster
        self.job_id = job_id

    def _job(self, op: str, *args):
        member = self._plane.registry.get(self.cluster)
        return self._plane.call(member.backend.job(op, *args))

    def status(self) -> str:
        """``PENDING``, ``RUNNING``, ``SUCCEEDED``, ``FAILED`` or ``STOPPED``."""
        return self._job("status", self.job_id)

    def logs(self) -> str:
        return self._job("logs", self.job_id)

    def stop(self) -> bool:
        return self._job("stop", self.job_id)

    def wait(self, timeout: float = 300.0, poll: float = 0.5) -> str:
        """Wait until the job ends; returns its final status. Raises
        ``TimeoutError`` naming the job and its last status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status in TERMINAL:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {self.job_id} on cluster {self.cluster!r} is still "
                                   f"{status} after {timeout:g}s")
            time.sleep(poll)

    def __repr__(self) -> str:
        return f"JobHandle({self.job_id!r}, cluster={self.cluster!r})"


def submit_job(plane, entrypoint: str, runtime_env=None, cluster=None, tags=None,
               submission_id=None, metadata=None) -> JobHandle:
    from .errors import NoEligibleClusterError
    from .policies import PlacementRequest

    if not isinstance(entrypoint, str) or not entrypoint.strip():
        raise ValueError("entrypoint must be a shell command, e.g. 'python script.py'")
    request = PlacementRequest("job", entrypoint, {}, cluster, list(tags or ()), [])
    candidates = [m for m in plane.registry
                  if m.backend.kind == "ray" and m.config.dashboard
                  and (cluster is None or m.name == cluster)]
    candidates = plane.policy.filter(request, candidates)
    if not candidates:
        raise NoEligibleClusterError(
            f"no Ray cluster with a dashboard address matches cluster={cluster!r}, "
            f"tags={list(tags or ())}: jobs need dashboard='http://host:8265' in the config")
    accepting = [m for m in candidates if m.accepting] or candidates
    from .policies import rank

    member = rank(plane.policy, request, accepting)[0]
    job_id = plane.call(member.backend.job("submit", entrypoint, runtime_env, submission_id,
                                           metadata))
    return JobHandle(plane, member.name, job_id)
