"""The node's store of application metrics (``miniray.util.metrics``).

Each process aggregates what its code records and sends a batch now and then
(``rpc_metrics_record``); the store sums counters and histogram counts over all
processes and keeps each gauge's newest value, per metric and tag set. The
dashboard's ``/metrics`` exports it (see ``dashboard/prometheus.py``).

Batch: ``[[name, kind, description, boundaries, tag_keys, [[tags, payload], ...]], ...]``
where ``tags`` is a list of ``[key, value]`` pairs and ``payload`` is a counter's
increment, a gauge's value, or a histogram's ``[bucket_counts, sum, count]``
(``bucket_counts`` has one more entry than ``boundaries``: the +Inf bucket).

Invariant: a metric name has one kind, description and set of boundaries (the
first process to report it defines them); a batch that disagrees is dropped with
a warning, never merged into the wrong series.
"""

from __future__ import annotations

import logging

log = logging.getLogger("miniray.metrics")

KINDS = ("counter", "gauge", "histogram")


class _Family:
    __slots__ = ("kind", "description", "boundaries", "tag_keys", "series")

    def __init__(self, kind, description, boundaries, tag_keys):
        self.kind = kind
        self.description = description
        self.boundaries = list(boundaries or ())
        self.tag_keys = tuple(tag_keys or ())
        self.series: dict[tuple, object] = {}


class UserMetrics:
    """Every application metric of the node, as the processes reported it."""

    def __init__(self):
        self.families: dict[str, _Family] = {}
        self.dropped = 0

    def record(self, batch) -> None:
        for name, kind, description, boundaries, tag_keys, series in batch:
            family = self.families.get(name)
            if family is None:
                if kind not in KINDS:
                    self.dropped += 1
                    continue
                family = self.families[name] = _Family(kind, description, boundaries,
                                                       tag_keys)
            elif family.kind != kind or (kind == "histogram"
                                         and family.boundaries != list(boundaries or ())):
                self.dropped += 1
                log.warning("metric %r: a process reported it as a %s with boundaries %r, "
                            "but it is a %s with boundaries %r; values dropped", name, kind,
                            boundaries, family.kind, family.boundaries)
                continue
            for tags, payload in series:
                key = tuple(tuple(pair) for pair in tags)
                if kind == "counter":
                    family.series[key] = family.series.get(key, 0.0) + payload
                elif kind == "gauge":
                    family.series[key] = payload
                else:
                    buckets, total, count = payload
                    old = family.series.get(key)
                    if old is None:
                        family.series[key] = [list(buckets), total, count]
                    else:
                        old[0] = [a + b for a, b in zip(old[0], buckets)]
                        old[1] += total
                        old[2] += count

    def export(self, exposition) -> None:
        """Add every metric to a ``dashboard.prometheus.Exposition``."""
        for name, family in sorted(self.families.items()):
            help_text = family.description or f"Application metric {name}"
            for key, value in family.series.items():
                labels = dict(key)
                if family.kind == "counter":
                    exported = name if name.endswith("_total") else name + "_total"
                    exposition.add(exported, "counter", help_text, value, labels)
                elif family.kind == "gauge":
                    exposition.add(name, "gauge", help_text, value, labels)
                else:
                    buckets, total, count = value
                    cumulative = 0
                    bounds = [*family.boundaries, float("inf")]
                    for bound, bucket in zip(bounds, buckets):
                        cumulative += bucket
                        le = "+Inf" if bound == float("inf") else _format_bound(bound)
                        exposition.add(name, "histogram", help_text, cumulative,
                                       {**labels, "le": le}, suffix="_bucket")
                    exposition.add(name, "histogram", help_text, total, labels,
                                   suffix="_sum")
                    exposition.add(name, "histogram", help_text, count, labels,
                                   suffix="_count")


def _format_bound(bound: float) -> str:
    return repr(float(bound))
