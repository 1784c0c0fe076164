"""Application metrics: Ray's ``ray.util.metrics`` Counter, Gauge and Histogram.

Record them anywhere (the driver, tasks, actors); the node exports them on the
dashboard's ``/metrics`` in Prometheus text format::

    from miniray.util.metrics import Counter, Histogram

    requests = Counter("app_requests", description="Requests served",
                       tag_keys=("route",))
    requests.set_default_tags({"route": "/"})
    requests.inc()                          # app_requests_total{route="/"} 1.0
    latency = Histogram("app_latency_s", boundaries=[0.01, 0.1, 1.0])
    latency.observe(0.05)                   # app_latency_s_bucket{le="0.1"} 1 ...

How values travel: each process adds up what it records (counter increments,
the last gauge value, histogram bucket counts per tag set) and sends the batch
to the node at most every ``MINIRAY_METRICS_INTERVAL_S`` seconds (0.5 by default)
and whenever a task worker goes idle, so a task's metrics reach the node with
its result; an actor with an event loop sends its first values on the next turn
of its loop, then at most once per interval. The node sums counters and histograms over processes; a gauge
shows the newest value set for its tags by any process.

Exported names: counters get Prometheus's ``_total`` suffix (unless the name has
it); gauges and histograms keep their names. Unlike Ray there is no ``ray_``
prefix and no implicit per-worker tags.
"""

from __future__ import annotations

import os
import re
import threading
import time

from .._core import context as _context

__all__ = ["Counter", "Gauge", "Histogram", "Metric"]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_TAG = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def _interval() -> float:
    try:
        return max(0.01, float(os.environ.get("MINIRAY_METRICS_INTERVAL_S", "0.5")))
    except ValueError:
        return 0.5


class _Recorder:
    """This process's values not yet sent to the node, and the sending."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pending: dict[str, list] = {}  # name -> [metric, {tags: payload}]
        self.last_sent = 0.0
        self.timer: threading.Thread | None = None
        self.hooked_client = None
        self.scheduled = False
        self.interval = _interval()

    def add(self, metric: "Metric", tags: tuple, update) -> None:
        with self.lock:
            entry = self.pending.get(metric._name)
            if entry is None:
                entry = self.pending[metric._name] = [metric, {}]
            series = entry[1]
            series[tags] = update(series.get(tags))
        worker = _context._worker_client
        if worker is None:
            if self.timer is None:  # the driver: a thread sends every interval
                self._start_timer()
        elif not worker.concurrent:
            # A task worker: its thread alone writes the socket. Send from here now
            # and then, and when the worker goes idle (its idle hook).
            if self.hooked_client is not worker:
                worker.idle_hooks.append(self.flush)
                self.hooked_client = worker
            if time.monotonic() - self.last_sent >= self.interval:
                self.flush()
        elif not self.scheduled:
            # An actor with an event loop: send on the loop, promptly for the first
            # value and then at most once per interval. (An actor can be killed as
            # soon as its caller has the result; a sleeping thread would lose the tail.)
            self.scheduled = True
            delay = max(0.0, self.interval - (time.monotonic() - self.last_sent))
            worker.loop.call_soon_threadsafe(worker.loop.call_later, delay,
                                             self._flush_on_loop)

    def _start_timer(self) -> None:
        with self.lock:
            if self.timer is not None:
                return
            self.timer = threading.Thread(target=self._send_periodically,
                                          name="miniray-metrics", daemon=True)
        self.timer.start()

    def _flush_on_loop(self) -> None:
        self.scheduled = False
        self.flush()

    def _send_periodically(self) -> None:
        while True:
            time.sleep(self.interval)
            with self.lock:
                if not self.pending:
                    self.timer = None
                    return
            try:
                self.flush()
            except Exception:  # the node went away (shutdown): nothing to send to
                with self.lock:
                    self.pending.clear()
                    self.timer = None
                return

    def take_batch(self) -> list:
        with self.lock:
            pending, self.pending = self.pending, {}
            self.last_sent = time.monotonic()
        batch = []
        for metric, series in pending.values():
            batch.append([metric._name, metric._kind, metric._description,
                          list(getattr(metric, "boundaries", ()) or ()),
                          list(metric._tag_keys),
                          [[[list(pair) for pair in tags], payload]
                           for tags, payload in series.items()]])
        return batch

    def flush(self) -> None:
        """Send what was recorded since the last batch (nothing when nothing was)."""
        if not self.pending:
            return
        from .._core.refs import get_client

        client = get_client()
        if client is None:  # no node (not initialized, or shut down): values are dropped
            with self.lock:
                self.pending.clear()
            return
        batch = self.take_batch()
        if not batch:
            return
        worker = _context._worker_client
        if worker is not None:  # thread-safe in an actor with a loop; else its one thread
            worker.notify("metrics_record", batch)
        else:
            client.generic("metrics_record", batch)


_recorder = _Recorder()


class Metric:
    """Base of the three kinds: a name, a description and tag keys."""

    _kind = ""

    def __init__(self, name: str, description: str = "", tag_keys: tuple | None = None):
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"Invalid metric name {name!r}: use letters, digits, '_' and ':', not "
                "starting with a digit (Prometheus's rule), e.g. 'requests_served'")
        if tag_keys is None:
            tag_keys = ()
        if isinstance(tag_keys, str) or not isinstance(tag_keys, (tuple, list)):
            raise TypeError(f"tag_keys must be a tuple of strings, e.g. ('route',), got "
                            f"{tag_keys!r}")
        for key in tag_keys:
            if not isinstance(key, str) or not _TAG.match(key) or key == "le":
                raise ValueError(f"Invalid tag key {key!r} of metric {name}: use letters, "
                                 "digits and '_' ('le' is reserved for histograms)")
        self._name = name
        self._description = description or ""
        self._tag_keys = tuple(tag_keys)
        self._default_tags: dict = {}
        # The tag tuple of a record without tags=, when the defaults cover every key.
        self._default_key: tuple | None = () if not self._tag_keys else None

    @property
    def info(self) -> dict:
        """The metric's name, description, tag keys and default tags."""
        return {"name": self._name, "description": self._description,
                "tag_keys": self._tag_keys, "default_tags": dict(self._default_tags)}

    def set_default_tags(self, default_tags: dict) -> "Metric":
        """Tags used when a record does not give them (keys must be in ``tag_keys``)."""
        for key, value in default_tags.items():
            if key not in self._tag_keys:
                raise ValueError(f"Unrecognized tag key {key!r} for metric {self._name}; "
                                 f"its tag keys are {list(self._tag_keys)}")
            if not isinstance(value, str):
                raise TypeError(f"Tag values must be strings; {key}={value!r}")
        self._default_tags = dict(default_tags)
        self._default_key = (tuple((key, default_tags[key]) for key in self._tag_keys)
                             if all(key in default_tags for key in self._tag_keys) else None)
        return self

    def _tags(self, tags: dict | None) -> tuple:
        if tags is None and self._default_key is not None:
            return self._default_key
        merged = dict(self._default_tags)
        for key, value in (tags or {}).items():
            if key not in self._tag_keys:
                raise ValueError(f"Unrecognized tag key {key!r} for metric {self._name}; "
                                 f"its tag keys are {list(self._tag_keys)}")
            if not isinstance(value, str):
                raise TypeError(f"Tag values must be strings; {key}={value!r}")
            merged[key] = value
        missing = [key for key in self._tag_keys if key not in merged]
        if missing:
            raise ValueError(f"Missing value for tag key(s) {missing} of metric {self._name}; "
                             "pass tags={...} or call set_default_tags")
        return tuple((key, merged[key]) for key in self._tag_keys)

    @staticmethod
    def _number(value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"metric values must be numbers, got {value!r}")
        return float(value)

    def __reduce__(self):
        # A metric passed to a task records there, under the same definition.
        return (_rebuild, (type(self), self._name, self._description, self._tag_keys,
                           getattr(self, "boundaries", None), self._default_tags))


def _rebuild(cls, name, description, tag_keys, boundaries, default_tags):
    if cls is Histogram:
        metric = cls(name, description, boundaries, tag_keys)
    else:
        metric = cls(name, description, tag_keys)
    if default_tags:
        metric.set_default_tags(default_tags)
    return metric


class Counter(Metric):
    """A count that only goes up: ``inc(value=1.0, tags=None)``."""

    _kind = "counter"

    def inc(self, value: float = 1.0, tags: dict | None = None) -> None:
        value = self._number(value)
        if value <= 0:
            raise ValueError(f"Counter {self._name}: inc() takes a positive value, "
                             f"got {value}")
        _recorder.add(self, self._tags(tags), lambda old: (old or 0.0) + value)


class Gauge(Metric):
    """A value that goes up and down: ``set(value, tags=None)``."""

    _kind = "gauge"

    def set(self, value: float, tags: dict | None = None) -> None:
        value = self._number(value)
        _recorder.add(self, self._tags(tags), lambda old: value)


class Histogram(Metric):
    """A distribution over fixed buckets: ``observe(value, tags=None)``.

    ``boundaries`` are the buckets' upper bounds, increasing and positive.
    """

    _kind = "histogram"

    def __init__(self, name: str, description: str = "", boundaries=None,
                 tag_keys: tuple | None = None):
        super().__init__(name, description, tag_keys)
        if not boundaries:
            raise ValueError(f"Histogram {name} needs boundaries, e.g. [0.1, 1.0, 10.0]")
        bounds = [self._number(b) for b in boundaries]
        if any(b <= 0 for b in bounds) or any(a >= b for a, b in zip(bounds, bounds[1:])):
            raise ValueError(f"Histogram {name}: boundaries must be positive and strictly "
                             f"increasing, got {list(boundaries)}")
        self.boundaries = bounds

    def observe(self, value: float, tags: dict | None = None) -> None:
        value = self._number(value)
        index = len(self.boundaries)
        for i, bound in enumerate(self.boundaries):
            if value <= bound:
                index = i
                break
        slots = len(self.boundaries) + 1

        def update(old):
            if old is None:
                old = [[0] * slots, 0.0, 0]
            old[0][index] += 1
            old[1] += value
            old[2] += 1
            return old

        _recorder.add(self, self._tags(tags), update)

    @property
    def info(self) -> dict:
        return {**super().info, "boundaries": list(self.boundaries)}


def flush() -> None:
    """Send this process's recorded values to the node now (they go on their
    own within ``MINIRAY_METRICS_INTERVAL_S`` seconds otherwise)."""
    _recorder.flush()
