"""``/metrics``: the node in Prometheus text exposition format 0.0.4.

Counters come from ``runtime.counters`` (every one, as
``miniray_<name>_total``); gauges from the scheduler and the newest metrics
sample; then whatever collectors sub-libraries registered in
:mod:`.routes`.
"""

from __future__ import annotations

import inspect
import logging
import math
import re

from .._core.node import introspect
from . import routes

log = logging.getLogger("miniray.dashboard")

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

COUNTER_HELP = {
    "tasks_submitted": "Tasks submitted (not counting actor calls)",
    "actor_calls_submitted": "Actor method calls submitted",
    "tasks_finished": "Tasks and actor calls that finished successfully",
    "tasks_failed": "Tasks and actor calls that ended with an error",
    "tasks_retried": "Task attempts retried after a failure",
    "workers_started": "Worker processes started",
    "workers_died": "Worker processes that exited or crashed",
    "objects_spilled": "Objects spilled from shared memory to disk",
}


def format_value(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _escape_label(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class Exposition:
    """Metric families in order, each with HELP and TYPE once."""

    def __init__(self):
        self.families: dict[str, list] = {}  # name -> [type, help, [(labels, value)]]

    def add(self, name: str, kind: str, help_text: str, value, labels: dict | None = None,
            suffix: str = ""):
        """One sample; ``suffix`` names a histogram's ``_bucket``/``_sum``/``_count``."""
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        if kind not in ("counter", "gauge", "untyped", "histogram"):
            raise ValueError(f"metric {name}: type must be counter, gauge or histogram, "
                             f"got {kind!r}")
        for label in labels or ():
            if not _LABEL.match(label):
                raise ValueError(f"metric {name}: invalid label name {label!r}")
        if value is None:
            return
        family = self.families.get(name)
        if family is None:
            family = self.families[name] = [kind, help_text, []]
        elif family[0] != kind:
            raise ValueError(f"metric {name} is already a {family[0]}, not a {kind}")
        family[2].append((labels or {}, format_value(value), suffix))

    def text(self) -> str:
        lines = []
        for name, (kind, help_text, samples) in self.families.items():
            lines.append(f"# HELP {name} {_escape_help(help_text)}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value, suffix in samples:
                if labels:
                    body = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                    lines.append(f"{name}{suffix}{{{body}}} {value}")
                else:
                    lines.append(f"{name}{suffix} {value}")
        return "\n".join(lines) + "\n"


def node_metrics(runtime, stream=None) -> Exposition:
    out = Exposition()
    for key, value in sorted(runtime.counters.items()):
        name = "miniray_" + re.sub(r"[^a-zA-Z0-9_]", "_", key) + "_total"
        out.add(name, "counter", COUNTER_HELP.get(key, f"Node counter {key}"), value)
    info = introspect.summary(runtime)
    tasks = info["tasks"]
    out.add("miniray_tasks_running", "gauge", "Tasks running on workers now", tasks["running"])
    out.add("miniray_tasks_pending", "gauge", "Tasks waiting for arguments or a worker",
            tasks["pending"])
    for state, count in tasks["by_state"].items():
        out.add("miniray_task_table_tasks", "gauge",
                "Tasks in the dashboard's task table (the most recent ones) by state", count,
                {"state": state})
    workers = info["workers"]
    for kind in ("task", "actor"):
        out.add("miniray_workers", "gauge", "Live worker processes by type", workers[kind],
                {"type": kind})
    out.add("miniray_workers_idle", "gauge", "Task workers waiting for work", workers["idle"])
    out.add("miniray_actors_alive", "gauge", "Actors alive", info["actors"]["alive"])
    store = info["object_store"]
    out.add("miniray_objects", "gauge", "Objects in the object table", store["objects"])
    out.add("miniray_object_store_used_bytes", "gauge", "Shared-memory bytes in use",
            store["used_bytes"])
    out.add("miniray_object_store_capacity_bytes", "gauge", "Shared-memory capacity in bytes",
            store["capacity_bytes"])
    out.add("miniray_object_store_spilled_bytes", "gauge",
            "Bytes of objects in spill files on disk", store.get("spilled_bytes", 0))
    for resource, total in info["resources_total"].items():
        out.add("miniray_resource_capacity", "gauge", "Schedulable resources of the node", total,
                {"resource": resource})
    for resource, available in info["resources_available"].items():
        out.add("miniray_resource_available", "gauge", "Resources not leased to tasks now",
                available, {"resource": resource})
    out.add("miniray_uptime_seconds", "gauge", "Seconds since the node started",
            info["uptime_s"])
    samples = runtime.events.metrics
    if samples:
        last = samples[-1]
        out.add("miniray_tasks_finished_per_second", "gauge",
                "Tasks finished per second over the last sample interval", last["tasks_per_s"])
        for key, usage in last["processes"].items():
            labels = {"process": "node" if key == "node" else f"worker-{key}",
                      "pid": str(usage["pid"])}
            out.add("miniray_process_cpu_percent", "gauge",
                    "CPU use of a node process over the last sample interval (100 = one core)",
                    usage["cpu_percent"], labels)
            out.add("miniray_process_resident_memory_bytes", "gauge",
                    "Resident memory of a node process", usage["rss"], labels)
    for kind, ring in runtime.events.rings.items():
        out.add("miniray_events_total", "counter", "State-change events recorded, by kind",
                ring.next_seq, {"kind": kind})
    out.add("miniray_task_table_evicted_total", "counter",
            "Task records evicted from the capped task table", runtime.events.evicted_tasks)
    if stream is not None:
        stats = stream.statistics()
        out.add("miniray_dashboard_websocket_clients", "gauge",
                "WebSocket clients connected to /ws/events", stats["clients"])
        out.add("miniray_dashboard_websocket_messages_total", "counter",
                "Messages sent to WebSocket clients", stats["messages_total"])
        out.add("miniray_dashboard_websocket_dropped_total", "counter",
                "Messages dropped because a WebSocket client read too slowly",
                stats["dropped_total"])
    return out


async def render(runtime, stream=None) -> str:
    """The whole exposition: node metrics, then registered collectors."""
    out = node_metrics(runtime, stream)
    notes = []
    user_metrics = getattr(runtime, "user_metrics", None)  # miniray.util.metrics
    if user_metrics is not None:
        try:
            user_metrics.export(out)
        except ValueError as exc:  # a name that clashes with one of the node's
            notes.append(f"# application metrics: {exc}".replace("\n", " "))
    for collect in routes.metrics_collectors():
        try:
            samples = collect()
            if inspect.isawaitable(samples):
                samples = await samples
            for name, kind, help_text, labels, value in samples:
                out.add(name, kind, help_text, value, labels)
        except Exception as exc:  # one sub-library's bug must not hide the rest
            log.warning("metrics collector %r failed: %r", collect, exc)
            notes.append(f"# collector {getattr(collect, '__qualname__', collect)!s} failed: "
                         f"{type(exc).__name__}: {exc}".replace("\n", " "))
    text = out.text()
    if notes:
        text += "\n".join(notes) + "\n"
    return text
