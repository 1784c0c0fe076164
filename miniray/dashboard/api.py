"""The dashboard's built-in JSON endpoints, with their OpenAPI descriptions.

Each handler runs on the node's loop and reads the scheduler through
:mod:`miniray._core.node.introspect` and the event bus; the one that reads files
(a log tail) does so in the default executor.
"""

from __future__ import annotations

import asyncio
import math
import time

from aiohttp import web

from .._core.node import introspect
from .._core.node.events import TASK_STATES
from .routes import Route

MAX_PAGE = 1000


class ApiError(Exception):
    """An error answered as ``{"error": message, "status": status}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _runtime(request):
    from .app import RUNTIME

    return request.app[RUNTIME]


def int_param(request, name: str, default, minimum: int, maximum: int):
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ApiError(400, f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def float_param(request, name: str):
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ApiError(400, f"{name} must be a finite number, got {raw!r}")
    return value


# -- handlers -------------------------------------------------------------------
async def get_summary(request):
    runtime = _runtime(request)
    out = introspect.summary(runtime)
    out["time"] = time.time()
    out["event_caps"] = dict(runtime.events.caps)
    return web.json_response(out)


async def get_tasks(request):
    runtime = _runtime(request)
    states = None
    raw_state = request.query.get("state", "")
    if raw_state:
        states = [s.strip().upper() for s in raw_state.split(",") if s.strip()]
        unknown = [s for s in states if s not in TASK_STATES]
        if unknown:
            raise ApiError(400, f"unknown task state {unknown[0]!r}; one of "
                                f"{', '.join(TASK_STATES)} (comma-separated for several)")
    name = request.query.get("name", "")
    if len(name) > 200:
        raise ApiError(400, "name filter is longer than 200 characters")
    offset = int_param(request, "offset", 0, 0, 10**9)
    limit = int_param(request, "limit", 100, 1, MAX_PAGE)
    total, page = runtime.events.list_tasks(states, name, offset, limit)
    introspect.mark_infeasible(runtime, page)
    return web.json_response({
        "total": total, "offset": offset, "limit": limit, "tasks": page,
        "table_cap": runtime.events.caps["tasks"],
        "evicted_total": runtime.events.evicted_tasks,
    })


async def get_task(request):
    raw = request.match_info["task_id"]
    try:
        task_id = bytes.fromhex(raw)
    except ValueError:
        raise ApiError(400, f"task id must be hexadecimal, got {raw!r}") from None
    record = _runtime(request).events.get_task(task_id)
    if record is None:
        raise ApiError(404, f"no task {raw} in the task table (unknown, or evicted: "
                            "the table keeps the most recent tasks)")
    return web.json_response(record)


async def get_actors(request):
    return web.json_response({"actors": introspect.list_actors(_runtime(request))})


async def get_objects(request):
    offset = int_param(request, "offset", 0, 0, 10**9)
    limit = int_param(request, "limit", 100, 1, MAX_PAGE)
    total, page = introspect.list_objects(_runtime(request), offset, limit)
    return web.json_response({"total": total, "offset": offset, "limit": limit,
                              "objects": page})


async def get_workers(request):
    return web.json_response({"workers": introspect.list_workers(_runtime(request))})


async def get_nodes(request):
    return web.json_response({"nodes": introspect.list_nodes(_runtime(request))})


async def get_metrics(request):
    runtime = _runtime(request)
    since = float_param(request, "since")
    limit = int_param(request, "limit", runtime.events.caps["metrics"], 1, 100_000)
    samples = runtime.events.metrics
    if since is None:
        selected = list(samples)
    else:
        selected = []
        for sample in reversed(samples):  # newest first: stop at the cursor
            if sample["time"] <= since:
                break
            selected.append(sample)
        selected.reverse()
    interval = getattr(getattr(runtime, "sampler", None), "interval", 1.0)
    return web.json_response({"interval": interval, "samples": selected[-limit:]})


async def get_dag(request):
    limit = int_param(request, "limit", 200, 1, MAX_PAGE)
    return web.json_response(_runtime(request).events.dag(limit))


async def get_logs(request):
    return web.json_response({"logs": introspect.list_logs(_runtime(request))})


async def get_log(request):
    runtime = _runtime(request)
    name = request.match_info["name"]
    lines = int_param(request, "lines", 200, 1, 10_000)
    offset = int_param(request, "offset", None, 0, 1 << 62)
    loop = asyncio.get_running_loop()
    try:
        out = await loop.run_in_executor(None, introspect.tail_log, runtime, name, lines,
                                         offset)
    except ValueError as exc:
        raise ApiError(404, str(exc)) from None
    return web.json_response(out)


# -- OpenAPI descriptions -------------------------------------------------------------
def _query(name, schema, description, required=False):
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


def _path(name, schema, description):
    return {"name": name, "in": "path", "required": True, "schema": schema,
            "description": description}


_OFFSET = _query("offset", {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0},
                 "rows to skip")
_LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE,
                          "default": 100}, "rows to return")
_NUM = {"type": "number"}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_NULLABLE_NUM = {"type": ["number", "null"]}
_NULLABLE_STR = {"type": ["string", "null"]}


def _object(required: dict, **extra) -> dict:
    return {"type": "object", "required": sorted(required), "properties": required, **extra}


TASK_SCHEMA = _object({
    "task_id": _STR, "name": _STR, "state": {"enum": list(TASK_STATES)},
    "type": {"enum": ["NORMAL_TASK", "ACTOR_TASK"]}, "actor_id": _NULLABLE_STR,
    "submitted_at": _NUM, "started_at": _NULLABLE_NUM, "ended_at": _NULLABLE_NUM,
    "duration_s": _NULLABLE_NUM, "worker_id": {"type": ["integer", "null"]},
    "attempt": _INT, "error": _NULLABLE_STR,
})
TASK_DETAIL_SCHEMA = dict(TASK_SCHEMA, properties=dict(
    TASK_SCHEMA["properties"], dependencies={"type": "array", "items": _STR},
    returns={"type": "array", "items": _STR}, traceback=_STR))
METRIC_SAMPLE_SCHEMA = _object({
    "time": _NUM, "tasks_per_s": _NUM, "failed_per_s": _NUM, "running": _INT,
    "pending": _INT, "workers": _INT, "actors": _INT, "objects": _INT, "store_used": _INT,
    "store_capacity": _INT, "cpu_percent": _NUM, "memory_bytes": _INT,
    "processes": {"type": "object", "additionalProperties": _object(
        {"pid": _INT, "cpu_percent": _NUM, "rss": _INT})},
    "tasks_finished_total": _INT, "tasks_failed_total": _INT,
})


def _list_of(key: str, item: dict | None = None, **more) -> dict:
    return _object({key: {"type": "array", "items": item or {"type": "object"}}, **more})


BUILTIN_ROUTES = [
    Route("GET", "/api/summary", get_summary,
          "Node overview: resources, workers, task counts by state, object store",
          response_schema=_object({
              "node_id": _STR, "pid": _INT, "uptime_s": _NUM, "time": _NUM,
              "resources_total": {"type": "object"}, "resources_available": {"type": "object"},
              "workers": {"type": "object"}, "tasks": {"type": "object"},
              "actors": {"type": "object"}, "object_store": {"type": "object"},
              "counters": {"type": "object"}, "event_caps": {"type": "object"}})),
    Route("GET", "/api/tasks", get_tasks,
          "Recent tasks, newest first (the table keeps the most recent ones)",
          parameters=[
              _query("state", _STR, "filter by state, comma-separated: "
                     + ", ".join(TASK_STATES)),
              _query("name", {"type": "string", "maxLength": 200},
                     "filter: task names containing this text"),
              _OFFSET, _LIMIT],
          response_schema=_object({
              "total": _INT, "offset": _INT, "limit": _INT,
              "tasks": {"type": "array", "items": TASK_SCHEMA},
              "table_cap": _INT, "evicted_total": _INT})),
    Route("GET", "/api/tasks/{task_id}", get_task,
          "One task: state, timing, dependencies, return objects and error traceback",
          parameters=[_path("task_id", _STR, "the task id in hex")],
          response_schema=TASK_DETAIL_SCHEMA),
    Route("GET", "/api/actors", get_actors, "Actors, newest first (dead ones capped)",
          response_schema=_list_of("actors")),
    Route("GET", "/api/objects", get_objects, "Objects in the store, largest first",
          parameters=[_OFFSET, _LIMIT],
          response_schema=_object({"total": _INT, "offset": _INT, "limit": _INT,
                                   "objects": {"type": "array", "items": {"type": "object"}}})),
    Route("GET", "/api/workers", get_workers,
          "Worker processes: state, current tasks, CPU and memory, log files",
          response_schema=_list_of("workers")),
    Route("GET", "/api/nodes", get_nodes, "Nodes of the cluster (this node)",
          response_schema=_list_of("nodes")),
    Route("GET", "/api/metrics", get_metrics,
          "Time series sampled once a second: task rates, queues, CPU, memory, store",
          parameters=[
              _query("since", _NUM, "only samples taken after this unix time"),
              _query("limit", {"type": "integer", "minimum": 1, "maximum": 100000},
                     "at most this many (the newest)")],
          response_schema=_object({"interval": _NUM, "samples": {
              "type": "array", "items": METRIC_SAMPLE_SCHEMA}})),
    Route("GET", "/api/dag", get_dag,
          "Recent tasks as a graph: edges from the ObjectRefs each task consumed",
          parameters=[_query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE,
                                       "default": 200}, "newest tasks to include")],
          response_schema=_object({
              "nodes": {"type": "array", "items": _object(
                  {"id": _STR, "name": _STR, "state": _STR, "type": _STR})},
              "edges": {"type": "array", "items": _object(
                  {"source": _STR, "target": _STR, "object_id": _STR})}})),
    Route("GET", "/api/logs", get_logs, "Worker stdout/stderr log files",
          response_schema=_list_of("logs", _object({"name": _STR, "size": _INT}))),
    Route("GET", "/api/logs/{name}", get_log,
          "Tail of a log file; pass the returned offset back as offset= to follow it",
          parameters=[
              _path("name", _STR, "a file name from /api/logs"),
              _query("lines", {"type": "integer", "minimum": 1, "maximum": 10000,
                               "default": 200}, "lines from the end"),
              _query("offset", {"type": "integer", "minimum": 0, "maximum": 1 << 62},
                     "instead of a tail: the bytes after this offset")],
          response_schema=_object({"name": _STR, "offset": _INT, "text": _STR})),
]
