"""Snapshots of a node for the dashboard and ``miniray status``.

Everything here runs on the node's loop (it reads scheduler state without
locks) and is called at most a few times a second, so it favours clarity over
speed; the per-event hot path lives in :mod:`miniray._core.node.events`.
"""

from __future__ import annotations

import os
import time

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
OBJECT_STATES = {-1: "PENDING", 0: "INLINE", 1: "SHARED_MEMORY", 2: "ERROR", 3: "SPILLED"}


def proc_usage(pid: int):
    """(cpu seconds, rss bytes) of a process from /proc; (None, None) if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open(f"/proc/{pid}/statm", "rb") as f:
            rss_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None, None
    # After the ")" of the command name: state is field 0, utime 11, stime 12.
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return cpu, rss_pages * _PAGE


class MetricsSampler:
    """Once a second: task rates, queue sizes, CPU and memory per process."""

    def __init__(self, runtime, interval: float = 1.0):
        self.runtime = runtime
        self.interval = interval
        self._last_time = None
        self._last_counts = (0, 0)
        self._last_cpu: dict[int, float] = {}
        self._handle = None

    def start(self) -> None:
        self._handle = self.runtime.loop.call_later(self.interval, self._run)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _run(self) -> None:
        try:
            self.sample()
        finally:
            if not self.runtime._closing:
                self._handle = self.runtime.loop.call_later(self.interval, self._run)

    def sample(self) -> dict:
        runtime = self.runtime
        now = time.time()
        counters = runtime.counters
        finished = counters["tasks_finished"]
        failed = counters["tasks_failed"]
        dt = (now - self._last_time) if self._last_time else None
        running = sum(len(w.assigned) for w in runtime.workers.values())
        per_worker = {}
        cpu_total = 0.0
        rss_total = 0
        cpu_seen = {}
        pids = [("node", runtime.node_pid)] + [(w.worker_id, w.pid)
                                               for w in runtime.workers.values()]
        for key, pid in pids:
            cpu, rss = proc_usage(pid)
            if cpu is None:
                continue
            previous = self._last_cpu.get(pid)
            percent = (100.0 * (cpu - previous) / dt) if (dt and previous is not None) else 0.0
            cpu_seen[pid] = cpu
            cpu_total += percent
            rss_total += rss
            per_worker[str(key)] = {"pid": pid, "cpu_percent": round(percent, 1), "rss": rss}
        self._last_cpu = cpu_seen
        sample = {
            "time": now,
            "tasks_finished_total": finished,
            "tasks_failed_total": failed,
            "tasks_per_s": round((finished - self._last_counts[0]) / dt, 2) if dt else 0.0,
            "failed_per_s": round((failed - self._last_counts[1]) / dt, 2) if dt else 0.0,
            "running": running,
            "pending": max(0, len(runtime.tasks) - running),
            "workers": len(runtime.workers),
            "actors": sum(1 for a in runtime.actors.values() if a.state != "DEAD"),
            "objects": len(runtime.objects),
            "store_used": runtime.store_used,
            "store_capacity": runtime.capacity,
            "spilled_bytes": runtime.spill.bytes,
            "cpu_percent": round(cpu_total, 1),
            "memory_bytes": rss_total,
            "processes": per_worker,
        }
        self._last_time = now
        self._last_counts = (finished, failed)
        runtime.events.metrics.append(sample)
        return sample


def summary(runtime, by_state: bool = True) -> dict:
    """What ``miniray status`` prints. ``by_state=False`` leaves out the count
    of the task table by state, which walks the whole table (for callers that
    ask several times a second)."""
    running = sum(len(w.assigned) for w in runtime.workers.values())
    counters = runtime.counters
    workers = list(runtime.workers.values())
    return {
        "node_id": f"node-{runtime.node_pid}",
        "pid": runtime.node_pid,
        "uptime_s": round(time.time() - runtime.started_at, 1),
        "resources_total": {k: v for k, v in runtime.total.items() if v or k == "CPU"},
        "resources_available": {k: v for k, v in runtime.available.items()
                                if runtime.total.get(k) or k == "CPU"},
        "workers": {
            "total": len(workers),
            "task": sum(1 for w in workers if w.actor is None),
            "actor": sum(1 for w in workers if w.actor is not None),
            "idle": len(runtime.idle),
            "blocked": sum(1 for w in workers if w.blocked),
        },
        "drivers": len(getattr(runtime, "drivers", ()) or ()),
        "tasks": {
            "running": running,
            "pending": max(0, len(runtime.tasks) - running),
            "submitted_total": counters["tasks_submitted"] + counters["actor_calls_submitted"],
            "finished_total": counters["tasks_finished"],
            "failed_total": counters["tasks_failed"],
            "retried_total": counters["tasks_retried"],
            "by_state": runtime.events.task_counts() if by_state else None,
        },
        "actors": {
            "alive": sum(1 for a in runtime.actors.values() if a.state == "ALIVE"),
            "total": len(runtime.actors),
        },
        "object_store": {
            "objects": len(runtime.objects),
            "used_bytes": runtime.store_used,
            "capacity_bytes": runtime.capacity,
            "spilled_total": counters["objects_spilled"],
            "restored_total": counters["objects_restored"],
            "spilled_bytes": runtime.spill.bytes,
            "spilled_objects": len(runtime.spill.files),
            "spill_dir": runtime.spill.dir,
            "store_dir": runtime.store_dir,
        },
        "infeasible": infeasible_demands(runtime),
        "counters": dict(counters),
    }


def list_workers(runtime) -> list:
    last = runtime.events.metrics[-1]["processes"] if runtime.events.metrics else {}
    out = []
    for worker in runtime.workers.values():
        record = dict(runtime.events.workers.get(worker.worker_id) or {
            "worker_id": worker.worker_id, "pid": worker.pid})
        usage = last.get(str(worker.worker_id), {})
        record.update({
            "state": ("BLOCKED" if worker.blocked else "BUSY" if worker.assigned
                      else "IDLE" if worker.ready else "STARTING"),
            "current_tasks": [t.name for t in worker.assigned.values()][:8],
            "cpu_percent": usage.get("cpu_percent"),
            "rss": usage.get("rss"),
            "log_files": _worker_logs(runtime, worker.worker_id, worker.pid),
        })
        out.append(record)
    for record in reversed(runtime.events.dead_workers):
        out.append(dict(record, log_files=_worker_logs(runtime, record["worker_id"],
                                                        record["pid"])))
    return out


def _worker_logs(runtime, worker_id, pid) -> list:
    return [name for name in (f"worker-{worker_id}-{pid}.out", f"worker-{worker_id}-{pid}.err")
            if os.path.exists(os.path.join(runtime.log_dir, name))]


def infeasible_demands(runtime) -> list:
    """The resource shapes that tasks and actors wait for but the node can never
    give (Ray's "infeasible" demands): [{"resources", "tasks", "actors"}]."""
    shapes: dict = {}
    for work in runtime.infeasible:
        is_task = hasattr(work, "task_id")
        resources = work.resources if is_task else work.lease
        shape = tuple(sorted((k, v) for k, v in resources.items() if v))
        counts = shapes.setdefault(shape, [0, 0])
        counts[0 if is_task else 1] += 1
    return [{"resources": dict(shape), "tasks": n_tasks, "actors": n_actors}
            for shape, (n_tasks, n_actors) in shapes.items()]


def mark_infeasible(runtime, records: list) -> list:
    """Task records (``task_dict``) with ``infeasible`` set for the tasks that
    ask for more than the node has in all."""
    ids = {work.task_id.hex() for work in runtime.infeasible if hasattr(work, "task_id")}
    for record in records:
        record["infeasible"] = record["task_id"] in ids
    return records


def list_actors(runtime) -> list:
    out = []
    for actor_id, record in runtime.events.actors.items():
        actor = runtime.actors.get(actor_id)
        item = dict(record)
        if actor is not None:
            item["pending_calls"] = len(actor.queue)
            item["running_calls"] = len(actor.inflight)
            item["infeasible"] = actor in runtime.infeasible
        out.append(item)
    out.reverse()
    return out


def list_objects(runtime, offset: int = 0, limit: int = 100):
    """(total, page) of the object table, largest first."""
    producers = runtime.events.producers()
    entries = [(oid, e) for oid, e in list(runtime.objects.items()) if not e.is_actor_handle]
    entries.sort(key=lambda item: item[1].size, reverse=True)
    page = []
    for object_id, entry in entries[offset:offset + limit]:
        producer = producers.get(object_id)
        page.append({
            "object_id": object_id.hex(),
            "state": OBJECT_STATES.get(entry.state, str(entry.state)),
            "size": entry.size,
            "refcount": entry.refcount,
            "pins": entry.pins,
            "task": producer.name if producer is not None else None,
            "task_id": producer.task_id.hex() if producer is not None else None,
        })
    return len(entries), page


def list_nodes(runtime) -> list:
    info = summary(runtime)
    return [{
        "node_id": info["node_id"], "alive": True, "address": "127.0.0.1",
        "hostname": os.uname().nodename, "pid": runtime.node_pid,
        "resources_total": info["resources_total"],
        "resources_available": info["resources_available"],
        "object_store": info["object_store"], "uptime_s": info["uptime_s"],
    }]


def driver_job_id(runtime, conn) -> str:
    """The job id of a driver connected to a head: one per connection."""
    return f"{runtime.node_pid:08x}{conn.worker_id:08x}"


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return " ".join(part.decode(errors="replace") for part in f.read().split(b"\0") if part)
    except OSError:  # gone, or another user's
        return ""


def _job(runtime, job_id: str, pid: int, start: float, end: float | None,
         entrypoint: str) -> dict:
    # Ray's JobDetails for a driver job (type DRIVER): RUNNING while connected,
    # SUCCEEDED once it disconnected (Ray reports a finished driver so too).
    return {
        "type": "DRIVER", "job_id": job_id, "submission_id": None,
        "status": "RUNNING" if end is None else "SUCCEEDED",
        "entrypoint": entrypoint, "message": None, "error_type": None,
        "start_time": int(start * 1000), "end_time": None if end is None else int(end * 1000),
        "metadata": {}, "runtime_env": {}, "driver_exit_code": None,
        "driver_node_id": f"node-{runtime.node_pid}",
        "driver_info": {"id": job_id, "node_ip_address": "127.0.0.1", "pid": str(pid)},
    }


def list_jobs(runtime) -> list:
    """One job per driver, newest first: the process that started an embedded
    node, or each driver that connected to a head (the last 1,000 that left)."""
    jobs = []
    if not runtime._driver_servers:  # an embedded node: its driver is this process
        jobs.append(_job(runtime, f"{runtime.node_pid:08x}", runtime.node_pid,
                         runtime.started_at, None, command_line(runtime.node_pid)))
    for conn in list(runtime.drivers.values()) + list(runtime.ended_drivers):
        jobs.append(_job(runtime, driver_job_id(runtime, conn), conn.pid, conn.connected_at,
                         getattr(conn, "ended_at", None), getattr(conn, "entrypoint", "")))
    jobs.sort(key=lambda job: job["start_time"], reverse=True)
    return jobs


def list_logs(runtime) -> list:
    try:
        names = sorted(os.listdir(runtime.log_dir))
    except OSError:
        return []
    out = []
    for name in names:
        path = os.path.join(runtime.log_dir, name)
        try:
            out.append({"name": name, "size": os.path.getsize(path)})
        except OSError:
            pass
    return out


def tail_log(runtime, name: str, lines: int = 200, offset: int | None = None):
    """The last ``lines`` lines of a log file (or the bytes after ``offset``,
    for following it). ``name`` must be a file listed by :func:`list_logs`."""
    if os.path.basename(name) != name or not name.startswith("worker-"):
        raise ValueError(f"no such log file: {name!r}")
    path = os.path.join(runtime.log_dir, name)
    if not os.path.isfile(path):
        raise ValueError(f"no such log file: {name!r}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if offset is not None:
            f.seek(min(max(0, offset), size))
            data = f.read(1 << 20)
            return {"name": name, "offset": f.tell(), "text": data.decode(errors="replace")}
        block = min(size, max(4096, lines * 200))
        f.seek(size - block)
        data = f.read()
    text = b"\n".join(data.split(b"\n")[-lines - 1:]).decode(errors="replace")
    return {"name": name, "offset": size, "text": text}
