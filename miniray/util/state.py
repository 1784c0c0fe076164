"""Ray's state API (``ray.util.state``) for the local node.

``list_tasks``, ``list_actors``, ``list_objects``, ``list_workers`` and
``list_nodes`` return the node's records, newest first, as :class:`StateRecord`
(a dict whose keys are also attributes: ``t["state"]`` or ``t.state``), with
Ray's ``filters`` (``[("state", "=", "RUNNING")]``, predicates ``=`` and ``!=``)
and ``limit``. ``detail`` is accepted; every record is already the detailed one. The same
records back the dashboard; the task table keeps the newest 10,000 tasks
(``init(_system_config={"event_caps": {"tasks": N}})``).
"""

from __future__ import annotations

__all__ = ["StateRecord", "get_actor", "get_job", "get_node", "get_objects",
           "get_placement_group", "get_log", "get_task", "get_worker", "list_actors",
           "list_jobs", "list_logs", "list_nodes", "list_objects", "list_placement_groups",
           "list_tasks", "list_workers", "summarize_actors", "summarize_objects",
           "summarize_tasks"]

_PREDICATES = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b}


class StateRecord(dict):
    """One record: a dict with attribute access to its keys."""

    __slots__ = ()

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"{name!r}: a state record has {sorted(self)}") from None


# Ray's parameters with no meaning for one local node: accepted, not used.
_RAY_ONLY = {"address", "timeout", "raise_on_missing_output", "_explain"}


def _list(kind: str, filters, limit: int, detail: bool, extra: dict) -> list:
    from ..api import _client

    unknown = set(extra) - _RAY_ONLY
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")

    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    checks = []
    for item in filters or ():
        if not (isinstance(item, (tuple, list)) and len(item) == 3):
            raise ValueError(f"a filter is (key, predicate, value), e.g. "
                             f"('state', '=', 'RUNNING'); got {item!r}")
        key, predicate, value = item
        if predicate not in _PREDICATES:
            raise ValueError(f"filter predicate must be '=' or '!=', got {predicate!r}")
        checks.append((key, _PREDICATES[predicate], value))
    # Filtering happens here, so ask for every record when filters are given.
    records = _client().generic("state", kind, 1 << 30 if checks else limit)
    out = []
    for record in records:
        if all(check(_coerce(record.get(key), value), value) for key, check, value in checks):
            out.append(StateRecord(record))
            if len(out) >= limit:
                break
    return out


def _coerce(actual, wanted):
    # Ray's CLI-style filters compare as strings ("state=RUNNING", "pid=123").
    if isinstance(wanted, str) and not isinstance(actual, str) and actual is not None:
        return str(actual)
    return actual


def list_tasks(filters=None, limit: int = 100, detail: bool = False, **kwargs) -> list:
    """Tasks and actor calls in the node's table, newest first."""
    return _list("tasks", filters, limit, detail, kwargs)


def list_actors(filters=None, limit: int = 100, detail: bool = False, **kwargs) -> list:
    """Actors, live and recently dead, newest first."""
    return _list("actors", filters, limit, detail, kwargs)


def list_objects(filters=None, limit: int = 100, detail: bool = False, **kwargs) -> list:
    """Objects held by the node, largest first."""
    return _list("objects", filters, limit, detail, kwargs)


def list_workers(filters=None, limit: int = 100, detail: bool = False, **kwargs) -> list:
    """Worker processes, live then recently dead."""
    return _list("workers", filters, limit, detail, kwargs)


def list_nodes(filters=None, limit: int = 100, detail: bool = False, **kwargs) -> list:
    """The node (a one-element list)."""
    return _list("nodes", filters, limit, detail, kwargs)


def list_jobs(filters=None, limit: int = 100, detail: bool = False, **kwargs) -> list:
    """Jobs, newest first: one per driver, as Ray lists driver jobs (``type``
    ``"DRIVER"``): the process that started this node, or each driver that
    connected to a head (``init(address=...)``), ``RUNNING`` while connected and
    ``SUCCEEDED`` once it left. Keys are Ray's: ``job_id``, ``status``,
    ``entrypoint`` (the driver's command line), ``start_time``/``end_time`` (ms),
    ``driver_info`` (``pid``). Ray's submitted jobs (``submission_id``) have no
    miniray counterpart: run drivers yourself, or see ``miniray.cluster`` jobs."""
    return _list("jobs", filters, limit, detail, kwargs)


def get_job(id: str, **kwargs):
    """The job with this id (``get_runtime_context().get_job_id()`` of its
    driver), or None."""
    return _get("jobs", "job_id", id, kwargs)


def summarize_tasks(**kwargs) -> dict:
    """Count of tasks in the table by function name and state."""
    summary: dict = {}
    for task in _list("tasks", None, 1 << 30, False, kwargs):
        by_state = summary.setdefault(task["name"], {})
        by_state[task["state"]] = by_state.get(task["state"], 0) + 1
    return summary


def _get(kind: str, key: str, value, kwargs: dict):
    if isinstance(value, bytes):
        value = value.hex()
    found = _list(kind, [(key, "=", value)], 1, True, kwargs)
    return found[0] if found else None


def get_actor(id: str, **kwargs):
    """The actor with this id (hex), or None."""
    return _get("actors", "actor_id", id, kwargs)


def get_task(id: str, **kwargs):
    """The task with this id (hex), or None (also once it left the capped table)."""
    return _get("tasks", "task_id", id, kwargs)


def get_worker(id, **kwargs):
    """The worker with this id, or None."""
    return _get("workers", "worker_id", id, kwargs)


def get_node(id: str, **kwargs):
    """The node, if ``id`` is its id (``get_runtime_context().get_node_id()``); else None."""
    return _get("nodes", "node_id", id, kwargs)


def get_objects(id: str, **kwargs) -> list:
    """The object with this id (hex), as a list of records (Ray's shape), empty if none."""
    record = _get("objects", "object_id", id, kwargs)
    return [record] if record is not None else []


def list_placement_groups(filters=None, limit: int = 100, detail: bool = False,
                          **kwargs) -> list:
    """Placement groups: ``placement_group_id``, ``name``, ``state``, ``bundles``,
    ``strategy``, with the same filters as the other lists."""
    from .placement_group import placement_group_table

    unknown = set(kwargs) - _RAY_ONLY
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
    records = []
    for group_id, info in placement_group_table().items():
        records.append(StateRecord({
            "placement_group_id": group_id, "name": info.get("name") or "",
            "state": info.get("state"), "strategy": info.get("strategy"),
            "bundles": [{"bundle_id": i, "resources": b}
                        for i, b in sorted(info.get("bundles", {}).items())],
        }))
    checks = []
    for item in filters or ():
        if not (isinstance(item, (tuple, list)) and len(item) == 3) \
                or item[1] not in _PREDICATES:
            raise ValueError(f"a filter is (key, '=' or '!=', value); got {item!r}")
        checks.append((item[0], _PREDICATES[item[1]], item[2]))
    out = [r for r in records
           if all(check(_coerce(r.get(key), value), value) for key, check, value in checks)]
    return out[:limit]


def get_placement_group(id: str, **kwargs):
    """The placement group with this id (hex), or None."""
    found = list_placement_groups([("placement_group_id", "=", id)], 1, **kwargs)
    return found[0] if found else None


def summarize_actors(**kwargs) -> dict:
    """Count of actors by class name and state."""
    summary: dict = {}
    for actor in _list("actors", None, 1 << 30, False, kwargs):
        by_state = summary.setdefault(actor["class_name"], {})
        by_state[actor["state"]] = by_state.get(actor["state"], 0) + 1
    return summary


def summarize_objects(**kwargs) -> dict:
    """How many objects the node holds and their total size in bytes."""
    objects = _list("objects", None, 1 << 30, False, kwargs)
    return {"total_objects": len(objects),
            "total_size_bytes": sum(o.get("size") or 0 for o in objects)}



def _log_files() -> list:
    from ..api import _client

    return _client().generic("state", "logs", 1 << 30)


def list_logs(glob_filter: str | None = None, **kwargs) -> dict:
    """The workers' log files by kind: ``{"worker_out": [...], "worker_err": [...]}``
    (``glob_filter`` as in Ray, e.g. ``"*.err"``)."""
    import fnmatch

    unknown = set(kwargs) - _RAY_ONLY - {"node_id", "node_ip"}
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
    out: dict = {}
    for log in _log_files():
        name = log["name"]
        if glob_filter is not None and not fnmatch.fnmatch(name, glob_filter):
            continue
        kind = "worker_err" if name.endswith(".err") else "worker_out"
        out.setdefault(kind, []).append(name)
    return out


def get_log(filename: str | None = None, *, pid: int | None = None,
            actor_id: str | None = None, task_id: str | None = None, tail: int = 1000,
            suffix: str = "out", follow: bool = False, interval_s: float = 0.5, **kwargs):
    """Yield the text of a worker's log, found by ``filename``, ``pid``, ``actor_id``
    or ``task_id`` (its worker's file; ``suffix`` "out" or "err"): the last ``tail``
    lines (``tail=-1``: all), then, with ``follow=True``, what is appended, until the
    caller stops iterating."""
    import time

    unknown = set(kwargs) - _RAY_ONLY - {"node_id", "node_ip", "encoding", "errors"}
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
    if suffix not in ("out", "err"):
        raise ValueError(f"suffix must be 'out' or 'err', got {suffix!r}")
    given = [k for k, v in (("filename", filename), ("pid", pid), ("actor_id", actor_id),
                            ("task_id", task_id)) if v is not None]
    if len(given) != 1:
        raise ValueError("get_log() needs exactly one of filename=, pid=, actor_id=, task_id=")
    if actor_id is not None or task_id is not None:
        record = get_actor(actor_id) if actor_id is not None else get_task(task_id)
        if record is None:
            raise ValueError(f"no {'actor' if actor_id else 'task'} "
                             f"{actor_id or task_id} in the state API")
        worker = get_worker(record.get("worker_id")) if record.get("worker_id") else None
        if worker is None:
            raise ValueError(f"{'actor' if actor_id else 'task'} {actor_id or task_id} "
                             "has no worker (yet)")
        pid = worker["pid"]
    logs = _log_files()
    if pid is not None:
        matches = [log for log in logs if log["name"].endswith(f"-{pid}.{suffix}")]
    else:
        matches = [log for log in logs if log["name"] == filename]
    if not matches:
        raise ValueError(f"no log file for {given[0]}={filename or pid!r}; list_logs() "
                         "shows the files")
    path = matches[0]["path"]
    return _read_log(path, tail, follow, interval_s, time)


def _read_log(path, tail, follow, interval_s, time):
    with open(path, "rb") as f:
        data = f.read()
        lines = data.decode(errors="replace").splitlines(keepends=True)
        if tail is not None and tail >= 0:
            lines = lines[-tail:] if tail else []
        if lines:
            yield "".join(lines)
        while follow:
            more = f.read()
            if more:
                yield more.decode(errors="replace")
            else:
                time.sleep(interval_s)


def __getattr__(name):
    from .._surface import missing

    raise missing(__name__, name)
