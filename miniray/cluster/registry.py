"""The cluster registry: every member, its health, breaker and admin state."""

from __future__ import annotations

from dataclasses import dataclass, field

from .breaker import CircuitBreaker

ACTIVE = "active"
CORDONED = "cordoned"   # no new work; in-flight work finishes
DRAINING = "draining"   # cordoned and waiting for in-flight work
DRAINED = "drained"     # cordoned, nothing in flight


@dataclass
class Health:
    """The latest poll of a member (``alive`` is False until one succeeds)."""

    alive: bool = False
    total: dict = field(default_factory=dict)
    available: dict = field(default_factory=dict)
    nodes: int = 0
    latency_s: float | None = None
    checked_at: float | None = None
    error: str | None = None
    checks: int = 0
    failures: int = 0
    ok_at: float | None = None  # wall time of the last check that passed


class Member:
    """One cluster of the pool (the embedded local node included)."""

    def __init__(self, config, backend, settings):
        self.config = config
        self.backend = backend
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset)
        self.health = Health()
        self.admin_state = ACTIVE
        self.inflight = 0
        self.actor_calls_inflight = 0
        self.actors = 0  # actors placed here and not known dead (set by the control plane)
        self.local_actors = 0  # local actors being created (control plane bookkeeping)
        self.counters = {"dispatched": 0, "succeeded": 0, "app_errors": 0,
                         "cluster_failures": 0, "retried_elsewhere": 0}

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def tags(self) -> list:
        return self.config.tags

    @property
    def capacity(self) -> int:
        if self.config.max_inflight is not None:
            return self.config.max_inflight
        cpus = self.health.total.get("CPU", 0)
        return max(4, int(4 * cpus))

    @property
    def saturated(self) -> bool:
        return self.inflight >= self.capacity

    @property
    def accepting(self) -> bool:
        """May take new work now (ignoring its in-flight limit)."""
        return (self.admin_state == ACTIVE and self.breaker.allows_work()
                and self.health.alive)

    def offers(self, resources: dict) -> bool:
        """True if the cluster has (in total) every resource asked for."""
        total = self.health.total
        if not self.health.checks and not total:
            return True  # not polled yet: do not rule it out
        return all(total.get(name, 0) >= amount for name, amount in resources.items()
                   if amount)

    def update_drain(self) -> None:
        if self.admin_state == DRAINING and self.inflight == 0:
            self.admin_state = DRAINED

    def snapshot(self) -> dict:
        health = self.health
        return {
            "name": self.name, "kind": self.backend.kind,
            "address": self.config.address or "local", "tags": list(self.tags),
            "prefer": self.config.prefer, "weight": self.config.weight,
            "state": self.admin_state, "breaker": self.breaker.snapshot(),
            "inflight": self.inflight, "capacity": self.capacity,
            "actor_calls_inflight": self.actor_calls_inflight, "actors": self.actors,
            "health": self._health_snapshot(),
            "counters": dict(self.counters),
            "info": dict(getattr(self.backend, "info", {}) or {}),
        }


    def _health_snapshot(self) -> dict:
        health = self.health
        common = {"alive": health.alive, "latency_s": health.latency_s,
                  "checked_at": health.checked_at, "ok_at": health.ok_at,
                  "error": health.error, "checks": health.checks, "failures": health.failures}
        if health.alive:
            return {**common, "stale": False, "total": health.total,
                    "available": health.available, "nodes": health.nodes}
        # A cluster that is down has no current nodes or CPUs: the last
        # poll's figures are reported as what they are, not as the present.
        return {**common, "stale": True, "total": {}, "available": {}, "nodes": None,
                "last_known": {"total": health.total, "available": health.available,
                               "nodes": health.nodes, "at": health.ok_at}}


class Registry:
    """Members by name, in configuration order."""

    def __init__(self):
        self._members: dict[str, Member] = {}

    def add(self, member: Member) -> None:
        if member.name in self._members:
            from .errors import ClusterConfigError

            raise ClusterConfigError(f"cluster name {member.name!r} is used twice")
        self._members[member.name] = member

    def get(self, name: str) -> Member:
        try:
            return self._members[name]
        except KeyError:
            from .errors import NoEligibleClusterError

            raise NoEligibleClusterError(
                f"no cluster named {name!r}; known: {sorted(self._members)}") from None

    def __contains__(self, name) -> bool:
        return name in self._members

    def __iter__(self):
        return iter(list(self._members.values()))

    def __len__(self) -> int:
        return len(self._members)

    def names(self) -> list:
        return list(self._members)
