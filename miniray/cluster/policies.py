"""Placement policies: which cluster takes a piece of work.

A policy has two steps, both optional: ``filter(request, members)`` drops
members that must not take the work (hard constraints) and
``score(request, member)`` ranks the rest (higher is better). Policies
compose with :class:`CompositePolicy`; the dispatcher multiplies the total by
each member's configured ``weight`` and picks the best member that has room.

Write your own by subclassing :class:`Policy`::

    class CheapestFirst(Policy):
        def score(self, request, member):
            return 1.0 if "spot" in member.tags else 0.0

    miniray.cluster.connect(..., policy=CompositePolicy([default_policy(), (CheapestFirst(), 5)]))
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PlacementRequest:
    """What a piece of work asks for.

    ``tags`` must all be on the chosen cluster; ``soft_tags`` (written
    ``"~tag"`` in ``options(tags=...)``) are preferred; ``resources`` is the
    Ray resource shape (``{"CPU": 1, "arm64": 0.5}``); ``cluster`` pins it.
    """

    kind: str
    name: str
    resources: dict = field(default_factory=dict)
    cluster: str | None = None
    tags: list = field(default_factory=list)
    soft_tags: list = field(default_factory=list)


class Policy:
    """Base class: keeps every member, scores them all 0."""

    def filter(self, request: PlacementRequest, members: list) -> list:
        return members

    def score(self, request: PlacementRequest, member) -> float:
        return 0.0


class ResourceFit(Policy):
    """Hard: only clusters that have (in total) every resource the work asks
    for, e.g. the custom resource ``arm64``."""

    def filter(self, request, members):
        return [m for m in members if m.offers(request.resources)]


class TagAffinity(Policy):
    """Tags of ``options(tags=[...])``: hard (every tag must be on the cluster)
    by default, or soft with ``hard=False``. Soft tags score the fraction
    matched."""

    def __init__(self, hard: bool = True):
        self.hard = hard

    def filter(self, request, members):
        if not self.hard or not request.tags:
            return members
        wanted = set(request.tags)
        return [m for m in members if wanted.issubset(m.tags)]

    def score(self, request, member):
        soft = list(request.soft_tags) + ([] if self.hard else list(request.tags))
        if not soft:
            return 0.0
        return sum(1 for tag in soft if tag in member.tags) / len(soft)


def actor_room(member) -> float:
    """The free share of a member's room for actors: the actors it holds
    against its capacity (running actors hold no CPU in Ray, so the CPUs
    polled do not show them)."""
    return 1.0 - min(1.0, getattr(member, "actors", 0) / max(1, member.capacity))


class FreeResources(Policy):
    """Favour the cluster with the most room: the free share of its CPUs (as
    last polled) plus the free share of its in-flight slots (for tasks) or of
    its room for actors (for actors: those it already holds, against its
    capacity, so unpinned actors spread over the clusters)."""

    def score(self, request, member):
        health = member.health
        total = health.total.get("CPU", 0) or 0
        cpu_free = (health.available.get("CPU", 0) / total) if total else 0.0
        if request.kind == "actor":
            slots_free = actor_room(member)
        else:
            slots_free = 1.0 - min(1.0, member.inflight / max(1, member.capacity))
        return max(0.0, min(1.0, cpu_free)) * 0.5 + slots_free * 0.5


class WeightedPreference(Policy):
    """Clusters configured with ``prefer: true`` score 1, others 0 (for
    actors: while the preferred cluster holds fewer actors than its capacity)."""

    def score(self, request, member):
        if not member.config.prefer:
            return 0.0
        if request.kind == "actor" and actor_room(member) <= 0.0:
            return 0.0
        return 1.0


class CompositePolicy(Policy):
    """Several policies as one: every filter applies in turn; scores add up,
    each times its weight. Entries are policies or ``(policy, weight)``."""

    def __init__(self, policies):
        self.policies = []
        for entry in policies:
            policy, weight = entry if isinstance(entry, tuple) else (entry, 1.0)
            if not isinstance(policy, Policy):
                raise TypeError(f"{policy!r} is not a miniray.cluster.Policy")
            self.policies.append((policy, float(weight)))

    def filter(self, request, members):
        for policy, _ in self.policies:
            members = policy.filter(request, members)
        return members

    def score(self, request, member):
        return sum(weight * policy.score(request, member) for policy, weight in self.policies)


def default_policy() -> CompositePolicy:
    """Resource fit and tag affinity (hard), then preferred clusters first
    while they have room, then the one with the most free resources."""
    return CompositePolicy([ResourceFit(), TagAffinity(hard=True), (WeightedPreference(), 10.0),
                            (FreeResources(), 1.0)])


def rank(policy: Policy, request: PlacementRequest, members: list) -> list:
    """Members ordered best first (ties: fewer in flight, then config order)."""
    scored = [(policy.score(request, m) * m.config.weight, -m.inflight, -i, m)
              for i, m in enumerate(members)]
    scored.sort(key=lambda entry: entry[:3], reverse=True)
    return [entry[3] for entry in scored]
