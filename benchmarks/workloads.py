"""Benchmark workloads and their registry.

A workload is registered with the :func:`workload` decorator.  The decorated
function is the implementation for the Ray-API systems (``miniray`` and
``ray``): it receives a :class:`Ctx` whose ``api`` attribute is the module
(``import miniray as ray`` / ``import ray``), does its setup, and returns a
*trial* callable.  The harness calls the trial ``warmup`` times, then ``reps``
times, and keeps the best value.  A trial returns either a float (in the
workload's unit) or ``(float, extras_dict)``.

An implementation for ``concurrent.futures.ProcessPoolExecutor`` is attached
with ``@<workload>.futures``; workloads without one are reported as ``n/a``
for that system.  Example -- adding an actor workload::

    @workload("my_actor_calls", "calls/s", higher_is_better=True,
              target=Ratio(5), group="actors",
              description="what it measures")
    def my_actor_calls(ctx):
        a = ctx.remote.Counter.remote()
        ctx.api.get(a.m.remote())            # make sure the actor is up
        def trial():
            return rate(lambda: ctx.api.get(a.m.remote()), 1, ctx.min_time)
        return trial

Startup workloads (``kind="startup"``) are different: they are measured once
per fresh child process by :func:`measure_startup` and are only declared in
the registry (their function body is never called as a setup).

Remote functions and actor classes are created per system by
:func:`make_remote` from *nested* definitions, so cloudpickle ships them by
value and the workers need not be able to import this module.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional

from _util import GiB, MB, MiB, memory_of, node_processes, percentile, rate

SYSTEMS = ("miniray", "ray", "futures")
RAY_API_SYSTEMS = ("miniray", "ray")
LARGE_BYTES = 100 * MiB


# ---------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------

class Target:
    def describe(self) -> str:
        raise NotImplementedError

    def check(self, miniray: Optional[dict], ratio: Optional[float]) -> Optional[bool]:
        """True/False when decidable; None when miniray has no result."""
        raise NotImplementedError


@dataclass
class Ratio(Target):
    """miniray/ray ratio (oriented so that > 1 means miniray is better)."""
    at_least: float

    def describe(self) -> str:
        return f"≥{self.at_least:g}× vs ray"

    def check(self, miniray, ratio):
        if ratio is None:
            return None
        return ratio >= self.at_least


@dataclass
class Absolute(Target):
    """Absolute bound on the miniray value (in the workload's unit)."""
    limit: float
    op: str  # "<=" or "<" or ">="
    label: str = ""

    def describe(self) -> str:
        sym = {"<=": "≤", "<": "<", ">=": "≥"}[self.op]
        return f"{sym}{self.label or self.limit} (miniray)"

    def check(self, miniray, ratio):
        v = (miniray or {}).get("value")
        if v is None:
            return None
        if self.op == "<=":
            return v <= self.limit
        if self.op == "<":
            return v < self.limit
        return v >= self.limit


@dataclass
class ZeroCopy(Target):
    """miniray's result must be zero-copy (extras['zero_copy'] is True)."""

    def describe(self) -> str:
        return "zero-copy (miniray)"

    def check(self, miniray, ratio):
        extras = (miniray or {}).get("extras") or {}
        if "zero_copy" not in extras:
            return None
        return bool(extras["zero_copy"])


# ---------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------

@dataclass
class Workload:
    name: str
    unit: str
    higher_is_better: bool
    target: Optional[Target]
    description: str
    group: str
    kind: str  # "main" (measured in the long-lived child) or "startup"
    impls: Dict[str, Callable] = field(default_factory=dict)
    warmup: Optional[int] = None  # override ctx.warmup
    reps: Optional[int] = None    # override ctx.reps
    quick_reps: Optional[int] = None
    # init() arguments this workload needs (a small store, say): the child
    # restarts the system with them for it, then with the defaults again.
    init_kwargs: Optional[dict] = None

    def futures(self, fn: Callable) -> Callable:
        """Decorator: attach the ProcessPoolExecutor implementation."""
        self.impls["futures"] = fn
        return fn

    def supports(self, system: str) -> bool:
        return system in self.impls

    def better(self, a: float, b: float) -> float:
        return max(a, b) if self.higher_is_better else min(a, b)


REGISTRY: Dict[str, Workload] = {}


def workload(name: str, unit: str, *, higher_is_better: bool,
             target: Optional[Target] = None, description: str = "",
             group: str = "core", kind: str = "main",
             systems=RAY_API_SYSTEMS, warmup: Optional[int] = None,
             reps: Optional[int] = None, quick_reps: Optional[int] = None,
             init_kwargs: Optional[dict] = None):
    """Register a workload; the decorated function becomes the Ray-API
    implementation for every system in ``systems``. Returns the
    :class:`Workload` (use ``@<name>.futures`` to add a futures version)."""

    def deco(fn: Callable) -> Workload:
        if name in REGISTRY:
            raise ValueError(f"duplicate workload {name!r}")
        wl = Workload(name, unit, higher_is_better, target,
                      description or (fn.__doc__ or "").strip(), group, kind,
                      {s: fn for s in systems}, warmup, reps, quick_reps, init_kwargs)
        REGISTRY[name] = wl
        return wl

    return deco


# ---------------------------------------------------------------------------
# per-system context
# ---------------------------------------------------------------------------

@dataclass
class Ctx:
    system: str
    quick: bool
    api: object = None            # the ray-like module (miniray / ray)
    executor: object = None       # ProcessPoolExecutor for "futures"
    min_time: float = 1.0         # seconds per throughput trial
    reps: int = 3
    warmup: int = 1
    _remote: Optional[SimpleNamespace] = None

    @property
    def remote(self) -> SimpleNamespace:
        if self._remote is None:
            self._remote = make_remote(self.api)
        return self._remote

    def size(self, default: int, quick: int) -> int:
        return quick if self.quick else default


def make_remote(api) -> SimpleNamespace:
    """Remote functions and actor classes for a Ray-API module. Defined as
    closures so that cloudpickle serialises them by value."""

    @api.remote
    def noop():
        return 1

    @api.remote
    def inc(x):
        return x + 1

    @api.remote
    def first(arr):
        return int(arr[0])

    @api.remote
    def total(arr):
        return int(arr.sum())  # reads every byte

    @api.remote
    def arg_is_zero_copy(arr):
        # defined inline: must not reference this module (shipped by value)
        addr = arr.ctypes.data
        try:
            with open("/proc/self/maps") as fh:
                for line in fh:
                    parts = line.split()
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    if lo <= addr < hi:
                        path = parts[5] if len(parts) > 5 else ""
                        return parts[1].endswith("s") or (bool(path) and not path.startswith("["))
        except OSError:
            pass
        return not arr.flags.writeable

    @api.remote
    def sleep_pid(seconds):
        time.sleep(seconds)
        return os.getpid()

    @api.remote
    class Actor:
        def m(self):
            return 1

        def echo_len(self, payload):
            return len(payload)

    @api.remote
    class AsyncActor:
        async def m(self):
            return 1

    return SimpleNamespace(noop=noop, inc=inc, first=first, total=total,
                           arg_is_zero_copy=arg_is_zero_copy, sleep_pid=sleep_pid,
                           Actor=Actor, AsyncActor=AsyncActor)


# top-level functions for ProcessPoolExecutor (pickled by reference; the
# workers are forked, or import this module through PYTHONPATH)

def fut_noop():
    return 1


def fut_inc(x):
    return x + 1


def fut_first(arr):
    return int(arr[0])


def fut_sleep_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def mapping_kind(arr) -> Optional[bool]:
    """True if arr's buffer lies in a shared or file-backed mapping (i.e. it
    was not copied into private anonymous memory), False if it is private
    anonymous memory, None if /proc/self/maps is unavailable."""
    addr = arr.ctypes.data
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                parts = line.split()
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                if lo <= addr < hi:
                    path = parts[5] if len(parts) > 5 else ""
                    return parts[1].endswith("s") or (bool(path) and not path.startswith("["))
    except OSError:
        return None
    return False


def _large_array():
    import numpy as np
    arr = np.zeros(LARGE_BYTES, dtype=np.uint8)
    # np.zeros is lazily backed by the kernel zero page; touch every page so
    # that copies read real memory (otherwise put bandwidth is inflated)
    arr.fill(0)
    return arr


# ---------------------------------------------------------------------------
# core task / object workloads
# ---------------------------------------------------------------------------

@workload("sync_tasks", "tasks/s", higher_is_better=True, target=Ratio(20),
          description="ray.get(f.remote()) one at a time (round-trip task latency)")
def sync_tasks(ctx: Ctx):
    get, noop = ctx.api.get, ctx.remote.noop

    def op():
        for _ in range(10):
            get(noop.remote())

    return lambda: rate(op, 10, ctx.min_time)


@sync_tasks.futures
def _sync_tasks_futures(ctx: Ctx):
    ex = ctx.executor

    def op():
        for _ in range(10):
            ex.submit(fut_noop).result()

    return lambda: rate(op, 10, ctx.min_time)


@workload("batched_tasks", "tasks/s", higher_is_better=True, target=Ratio(20),
          description="ray.get([f.remote() for _ in range(N)]) (task throughput)")
def batched_tasks(ctx: Ctx):
    get, noop = ctx.api.get, ctx.remote.noop
    n = ctx.size(1000, 500)

    def op():
        out = get([noop.remote() for _ in range(n)])
        assert len(out) == n

    return lambda: rate(op, n, ctx.min_time)


@batched_tasks.futures
def _batched_tasks_futures(ctx: Ctx):
    ex = ctx.executor
    n = ctx.size(1000, 500)

    def op():
        futs = [ex.submit(fut_noop) for _ in range(n)]
        for f in futs:
            f.result()

    return lambda: rate(op, n, ctx.min_time)


@workload("small_put", "puts/s", higher_is_better=True, target=Ratio(20),
          description="ray.put(100-byte bytes object); the ref is dropped at once")
def small_put(ctx: Ctx):
    put = ctx.api.put
    payload = b"x" * 100

    def op():
        for _ in range(100):
            put(payload)

    return lambda: rate(op, 100, ctx.min_time)


@workload("small_get", "gets/s", higher_is_better=True, target=Ratio(10),
          description="ray.get(ref) of a put 100-byte bytes object")
def small_get(ctx: Ctx):
    get = ctx.api.get
    ref = ctx.api.put(b"x" * 100)
    assert get(ref) == b"x" * 100

    def op():
        for _ in range(100):
            get(ref)

    return lambda: rate(op, 100, ctx.min_time)


@workload("large_put", "GiB/s", higher_is_better=True, target=Ratio(1),
          description="ray.put(np.zeros(100 MiB, uint8)) bandwidth, one put per timing",
          reps=5, quick_reps=3)
def large_put(ctx: Ctx):
    put = ctx.api.put
    arr = _large_array()
    perf = time.perf_counter

    def trial():
        t0 = perf()
        ref = put(arr)
        dt = perf() - t0
        del ref
        return LARGE_BYTES / GiB / dt

    return trial


@workload("large_get", "µs/get", higher_is_better=False, target=ZeroCopy(),
          description="ray.get of a put 100 MiB array; zero-copy = two gets share "
                      "memory or the buffer is a shared/file-backed mapping")
def large_get(ctx: Ctx):
    import numpy as np
    get = ctx.api.get
    ref = ctx.api.put(_large_array())
    a1 = get(ref)
    a2 = get(ref)
    assert a1.nbytes == LARGE_BYTES
    # zero-copy: two gets return the same memory, or the buffer is a
    # shared/file-backed mapping (the object store) rather than a private copy
    shares = bool(np.shares_memory(a1, a2))
    read_only = not a1.flags.writeable
    mapped = mapping_kind(a1)
    zero_copy = shares or bool(mapped)
    del a1, a2
    n = ctx.size(20, 5)
    perf = time.perf_counter

    def trial():
        t0 = perf()
        for _ in range(n):
            a = get(ref)
            del a
        dt = (perf() - t0) / n
        return dt * 1e6, {"zero_copy": zero_copy, "read_only": read_only,
                          "shares_memory": shares, "shared_mapping": mapped,
                          "GiB/s": LARGE_BYTES / GiB / dt}

    return trial


@workload("large_arg_tasks", "tasks/s", higher_is_better=True, target=None,
          description="f.remote(ref_to_100MiB_array) returning arr[0], batches of 4 "
                      "(futures: the array is pickled to the worker)")
def large_arg_tasks(ctx: Ctx):
    get, first = ctx.api.get, ctx.remote.first
    ref = ctx.api.put(_large_array())
    zero_copy = bool(get(ctx.remote.arg_is_zero_copy.remote(ref)))

    def op():
        assert get([first.remote(ref) for _ in range(4)]) == [0] * 4

    return lambda: (rate(op, 4, ctx.min_time), {"zero_copy": zero_copy})


@large_arg_tasks.futures
def _large_arg_tasks_futures(ctx: Ctx):
    ex = ctx.executor
    arr = _large_array()

    def op():
        futs = [ex.submit(fut_first, arr) for _ in range(4)]
        assert [f.result() for f in futs] == [0] * 4

    return lambda: (rate(op, 4, ctx.min_time), {"zero_copy": False})


@workload("big_arg_sum", "tasks/s", higher_is_better=True, target=Ratio(1.5),
          description="f.remote(ref_to_100MiB_array) returning arr.sum() (every byte read), "
                      "batches of 4")
def big_arg_sum(ctx: Ctx):
    get, total = ctx.api.get, ctx.remote.total
    ref = ctx.api.put(_large_array())

    def op():
        assert get([total.remote(ref) for _ in range(4)]) == [0] * 4

    return lambda: rate(op, 4, ctx.min_time)


PRESSURE_STORE = 512 * 1024 * 1024


@workload("big_arg_sum_pressure", "tasks/s", higher_is_better=True, target=Ratio(1.5),
          description="arr.sum() tasks over ten 100 MiB arrays, 2x a 512 MiB store: "
                      "objects spill and are restored as tasks take them",
          init_kwargs={"object_store_memory": PRESSURE_STORE}, reps=3, quick_reps=2)
def big_arg_sum_pressure(ctx: Ctx):
    get, total = ctx.api.get, ctx.remote.total
    arr = _large_array()
    refs = [ctx.api.put(arr) for _ in range(2 * PRESSURE_STORE // LARGE_BYTES)]
    del arr

    def op():
        assert get([total.remote(r) for r in refs]) == [0] * len(refs)

    return lambda: rate(op, len(refs), ctx.min_time)


@workload("chain_200", "chains/s", higher_is_better=True, target=Ratio(10),
          description="200-deep dependency chain x = f.remote(x), then get the last")
def chain_200(ctx: Ctx):
    get, inc = ctx.api.get, ctx.remote.inc
    perf = time.perf_counter

    def trial():
        t0 = perf()
        x = inc.remote(0)
        for _ in range(199):
            x = inc.remote(x)
        assert get(x) == 200
        dt = perf() - t0
        return 1.0 / dt, {"seconds": dt}

    return trial


@chain_200.futures
def _chain_200_futures(ctx: Ctx):
    ex = ctx.executor
    perf = time.perf_counter

    def trial():
        t0 = perf()
        x = 0
        for _ in range(200):  # no futures-as-arguments: resolve each step
            x = ex.submit(fut_inc, x).result()
        assert x == 200
        dt = perf() - t0
        return 1.0 / dt, {"seconds": dt}

    return trial


@workload("asyncio_await_5000", "s", higher_is_better=False, target=Ratio(20),
          description="asyncio.run(main()) creating 5,000 task refs and awaiting "
                      "asyncio.gather(*refs); lower is better",
          warmup=0, reps=2, quick_reps=1)
def asyncio_await_5000(ctx: Ctx):
    noop = ctx.remote.noop
    perf = time.perf_counter

    def run(n):
        async def main():
            refs = [noop.remote() for _ in range(n)]
            out = await asyncio.gather(*refs)
            assert len(out) == n

        t0 = perf()
        asyncio.run(main())
        return perf() - t0

    run(500)  # warm-up (smaller than a full trial)
    return lambda: run(5000)


@asyncio_await_5000.futures
def _asyncio_await_5000_futures(ctx: Ctx):
    ex = ctx.executor
    perf = time.perf_counter

    def run(n):
        async def main():
            futs = [asyncio.wrap_future(ex.submit(fut_noop)) for _ in range(n)]
            out = await asyncio.gather(*futs)
            assert len(out) == n

        t0 = perf()
        asyncio.run(main())
        return perf() - t0

    run(500)
    return lambda: run(5000)


# ---------------------------------------------------------------------------
# actor workloads
# ---------------------------------------------------------------------------

def _ready_actor(ctx: Ctx, cls):
    a = cls.remote()
    ctx.api.get(a.m.remote())
    return a


@workload("sync_actor_calls", "calls/s", higher_is_better=True, target=Ratio(7),
          group="actors", description="ray.get(a.m.remote()) one at a time on one actor")
def sync_actor_calls(ctx: Ctx):
    get = ctx.api.get
    a = _ready_actor(ctx, ctx.remote.Actor)

    def op():
        for _ in range(10):
            get(a.m.remote())

    return lambda: rate(op, 10, ctx.min_time)


@workload("batched_actor_calls", "calls/s", higher_is_better=True, target=Ratio(10),
          group="actors", description="ray.get([a.m.remote() for _ in range(N)]) on one actor")
def batched_actor_calls(ctx: Ctx):
    return _batched_calls(ctx, ctx.remote.Actor)


def _batched_calls(ctx: Ctx, actor_class):
    get = ctx.api.get
    a = _ready_actor(ctx, actor_class)
    n = ctx.size(1000, 500)

    def op():
        assert len(get([a.m.remote() for _ in range(n)])) == n

    return lambda: rate(op, n, ctx.min_time)


@workload("async_actor_batched", "calls/s", higher_is_better=True, target=Ratio(10),
          group="actors", description="batched calls to an async (async def) actor method")
def async_actor_batched(ctx: Ctx):
    return _batched_calls(ctx, ctx.remote.AsyncActor)


@workload("actor_1kib_arg_calls", "calls/s", higher_is_better=True, target=None,
          group="actors", description="batched actor calls each with a 1 KiB bytes argument")
def actor_1kib_arg_calls(ctx: Ctx):
    get = ctx.api.get
    a = _ready_actor(ctx, ctx.remote.Actor)
    payload = b"y" * 1024
    n = ctx.size(1000, 500)

    def op():
        assert get([a.echo_len.remote(payload) for _ in range(n)]) == [1024] * n

    return lambda: rate(op, n, ctx.min_time)


@workload("actor_1_to_2", "calls/s", higher_is_better=True, target=None,
          group="actors", description="one caller, batched calls alternating over 2 actors")
def actor_1_to_2(ctx: Ctx):
    get = ctx.api.get
    a = _ready_actor(ctx, ctx.remote.Actor)
    b = _ready_actor(ctx, ctx.remote.Actor)
    n = ctx.size(1000, 500)

    def op():
        refs = []
        for _ in range(n // 2):
            refs.append(a.m.remote())
            refs.append(b.m.remote())
        assert len(get(refs)) == len(refs)

    return lambda: rate(op, n // 2 * 2, ctx.min_time)


@workload("actor_p50_latency", "µs", higher_is_better=False,
          target=Absolute(150, "<", "150 µs"), group="actors",
          description="p50 of single ray.get(a.m.remote()) round trips (p99 in JSON)")
def actor_p50_latency(ctx: Ctx):
    get = ctx.api.get
    a = _ready_actor(ctx, ctx.remote.Actor)
    n = ctx.size(2000, 500)
    perf = time.perf_counter

    def trial():
        lat = []
        for _ in range(n):
            t0 = perf()
            get(a.m.remote())
            lat.append((perf() - t0) * 1e6)
        return percentile(lat, 50), {"p99_us": percentile(lat, 99),
                                     "p90_us": percentile(lat, 90)}

    return trial


# ---------------------------------------------------------------------------
# startup workloads (fresh process per measurement, see measure_startup)
# ---------------------------------------------------------------------------

_ALL = SYSTEMS


@workload("import_time", "s", higher_is_better=False, kind="startup", group="startup",
          systems=RAY_API_SYSTEMS, description="wall time of `import <system>` in a fresh process")
def import_time(ctx):  # measured by measure_startup
    raise NotImplementedError


@workload("init_time", "s", higher_is_better=False, kind="startup", group="startup",
          target=Absolute(0.5, "<=", "0.5 s"), systems=_ALL,
          description="wall time of init(num_cpus=2) in a fresh process "
                      "(futures: ProcessPoolExecutor(2) construction)")
def init_time(ctx):
    raise NotImplementedError


@workload("first_task_time", "s", higher_is_better=False, kind="startup", group="startup",
          systems=_ALL, description="init + first ray.get(f.remote()) in a fresh process")
def first_task_time(ctx):
    raise NotImplementedError


@workload("idle_rss", "MB", higher_is_better=False, kind="startup", group="startup",
          target=Absolute(200, "<=", "200 MB"), systems=_ALL,
          description="summed RSS of the driver and every node process (all "
                      "descendants, same-session processes, Ray processes by session "
                      "dir) after 2 workers ran a task and the node idled; PSS in JSON")
def idle_rss(ctx):
    raise NotImplementedError


STARTUP_WORKLOADS = [n for n, w in REGISTRY.items() if w.kind == "startup"]


def import_system(system: str):
    if system == "miniray":
        # MINIRAY_BENCH_MODULE lets one benchmark another build/module under
        # the "miniray" column (also used to test the harness itself)
        import importlib
        return importlib.import_module(os.environ.get("MINIRAY_BENCH_MODULE", "miniray"))
    if system == "ray":
        import ray as api
        return api
    if system == "futures":
        import concurrent.futures as api
        return api
    raise ValueError(system)


def init_system(system: str, api, **extra):
    """Start the runtime; returns the executor for "futures", else None."""
    if system == "ray":
        api.init(num_cpus=2, include_dashboard=False, log_to_driver=False, **extra)
    elif system == "miniray":
        # The same settings as Ray's line above (bench_dashboard.py measures the
        # dashboard's cost on its own).
        api.init(num_cpus=2, include_dashboard=False, log_to_driver=False, **extra)
    elif system == "futures":
        return api.ProcessPoolExecutor(2)
    return None


def shutdown_system(system: str, api, executor):
    if system == "futures":
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    elif api is not None:
        api.shutdown()


def session_markers(system: str, api) -> List[str]:
    """Command-line substrings identifying the node's processes that may not
    be our descendants."""
    if system == "ray":
        try:
            node = api._private.worker._global_node
            return [node.get_session_dir_path()]
        except Exception:
            return []
    return []


def _short_name(p) -> str:
    """'raylet', 'ray::IDLE', 'python -m miniray._core.worker.worker_main', 'python monitor.py'."""
    parts = p.cmdline.split() if p.cmdline else []
    if not parts:
        return p.name[:40]
    exe = parts[0].rsplit("/", 1)[-1]
    if exe.startswith("python"):
        args = [a for a in parts[1:] if a not in ("-u", "-B", "-E", "-s", "-S")]
        if len(args) >= 2 and args[0] == "-m":
            return ("python -m " + args[1])[:60]
        if args and not args[0].startswith("-"):
            return ("python " + args[0].rsplit("/", 1)[-1])[:60]
    return exe[:40]


def measure_startup(system: str, settle: float) -> dict:
    """Measure the startup metrics in this (fresh) process. Returns
    {name: result} with result = {"value": v, "extras": {...}} or
    {"error": msg}; a failing stage marks itself and every later stage."""
    perf = time.perf_counter
    out: Dict[str, dict] = {}
    stages = ["import_time", "init_time", "first_task_time", "idle_rss"]
    api = executor = None
    procs = []
    try:
        t0 = perf()
        api = import_system(system)
        out["import_time"] = {"value": perf() - t0}
        wall0 = time.time()
        t0 = perf()
        executor = init_system(system, api)
        t_init = perf() - t0
        out["init_time"] = {"value": t_init}
        t0 = perf()
        if system == "futures":
            assert executor.submit(fut_noop).result() == 1
        else:
            remote = make_remote(api)
            assert api.get(remote.noop.remote()) == 1
        t_first = perf() - t0
        out["first_task_time"] = {"value": t_init + t_first,
                                  "extras": {"first_task_only_s": t_first}}
        # make sure 2 workers exist (two concurrent sleeping tasks), then idle
        if system == "futures":
            pids = [f.result() for f in [executor.submit(fut_sleep_pid, 0.3)
                                         for _ in range(2)]]
        else:
            pids = api.get([remote.sleep_pid.remote(0.3) for _ in range(2)])
        time.sleep(settle)
        procs = node_processes(os.getpid(), session_markers(system, api), since=wall0)
        mem = memory_of(p.pid for p in procs)
        names: Dict[str, int] = {}
        for p in procs:
            short = _short_name(p)
            names[short] = names.get(short, 0) + 1
        out["idle_rss"] = {"value": mem["rss"] / MB, "extras": {
            "pss_MB": (mem["pss"] / MB) if mem["pss"] is not None else None,
            "processes": len(procs),
            "distinct_worker_pids": len(set(pids)),
            "process_names": names,
        }}
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        msg = f"{type(e).__name__}: {e}".replace("\n", " ")[:2000]
        for st in stages:
            out.setdefault(st, {"error": msg})
    if not procs:
        try:
            procs = node_processes(os.getpid())
        except Exception:
            procs = []
    out["_pids"] = [[p.pid, p.start] for p in procs]
    out["_api"] = (api, executor)
    return out


def describe_versions(system: str, api) -> Dict[str, str]:
    v = {"python": sys.version.split()[0]}
    if system != "futures":
        v[system] = str(getattr(api, "__version__", "?"))
    try:
        import numpy
        v["numpy"] = numpy.__version__
    except Exception:
        pass
    return v


# ---------------------------------------------------------------------------
# compiled DAGs (issue #22 §2): a fixed 2-actor chain over pre-allocated
# channels, miniray.dag vs Ray Compiled Graphs (ray.dag), in the same run.
# Each execution is timed on its own; the row is the median (p90/p99 in JSON).
# ---------------------------------------------------------------------------

def _compiled_chain(ctx: Ctx, enable_asyncio: bool):
    import importlib

    api = ctx.api
    dag_module = importlib.import_module(f"{ctx.system}.dag")  # miniray.dag / ray.dag

    @api.remote
    class Stage:
        def inc(self, x):
            return x + 1

    a, b = Stage.remote(), Stage.remote()
    api.get([a.inc.remote(0), b.inc.remote(0)])
    with dag_module.InputNode() as inp:
        dag = b.inc.bind(a.inc.bind(inp))
    return dag.experimental_compile(enable_asyncio=enable_asyncio), (a, b)


def _latency_result(lat: List[float]):
    return percentile(lat, 50), {"p90_us": percentile(lat, 90), "p99_us": percentile(lat, 99),
                                 "executions_per_s": len(lat) / (sum(lat) / 1e6)}


@workload("compiled_chain_get", "µs", higher_is_better=False, target=Ratio(5),
          group="compiled",
          description="compiled 2-actor chain: ray.get(dag.execute(i)), median per execution")
def compiled_chain_get(ctx: Ctx):
    compiled, actors = _compiled_chain(ctx, False)
    get = ctx.api.get
    n = ctx.size(3000, 1000)
    perf = time.perf_counter

    def trial():
        lat = []
        for i in range(n):
            t0 = perf()
            assert get(compiled.execute(i)) == i + 2
            lat.append((perf() - t0) * 1e6)
        return _latency_result(lat)

    trial.compiled, trial.actors = compiled, actors  # torn down with the trial
    return trial


@workload("compiled_chain_async", "µs", higher_is_better=False, target=Ratio(5),
          group="compiled",
          description="compiled 2-actor chain: await (await dag.execute_async(i)), median")
def compiled_chain_async(ctx: Ctx):
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # Ray's compiled DAG binds the current loop
    compiled, actors = _compiled_chain(ctx, True)
    n = ctx.size(3000, 1000)
    perf = time.perf_counter

    async def run():
        lat = []
        for i in range(n):
            t0 = perf()
            fut = await compiled.execute_async(i)
            assert await fut == i + 2
            lat.append((perf() - t0) * 1e6)
        return lat

    def trial():
        return _latency_result(loop.run_until_complete(run()))

    trial.compiled, trial.actors, trial.loop = compiled, actors, loop
    return trial


# ---------------------------------------------------------------------------
# Session 10, direct calls (issue 22 §1): the machine's floor for one call, and
# one await at a time. A separate block; other sessions' rows come after it.
# ---------------------------------------------------------------------------

_FLOOR_ECHO = r"""
import socket, sys, msgpack
sock = socket.socket(fileno=int(sys.argv[1]))
unpacker = msgpack.Unpacker(raw=False)
buf = bytearray(65536)
while True:
    n = sock.recv_into(buf)
    if not n:
        break
    unpacker.feed(memoryview(buf)[:n])
    for message in unpacker:
        sock.sendall(msgpack.packb([20, message[1], [[message[3][0][1], None]]],
                                   use_bin_type=True))
"""


@workload("floor_pingpong", "round trips/s", higher_is_better=True, group="direct",
          systems=("miniray",),
          description="the machine's floor for one call: two Python processes ping-pong "
                      "a task-sized msgpack message over a unix socketpair (the transport "
                      "miniray's node and workers use); sync_tasks / this = how close a "
                      "call is to it")
def floor_pingpong(ctx: Ctx):
    import atexit
    import pickle
    import socket
    import subprocess

    import msgpack

    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = subprocess.Popen([sys.executable, "-c", _FLOOR_ECHO, str(child.fileno())],
                            pass_fds=[child.fileno()])
    child.close()
    unpacker = msgpack.Unpacker(raw=False)
    buf = bytearray(65536)
    view = memoryview(buf)
    task_id = os.urandom(16)
    value = pickle.dumps(None)
    message = msgpack.packb([2, task_id, os.urandom(16), [[0, value]], None, [task_id],
                             "noop", None, None, None], use_bin_type=True)

    def one():
        parent.sendall(message)
        while True:
            n = parent.recv_into(buf)
            unpacker.feed(view[:n])
            for reply in unpacker:
                return reply

    def op():
        for _ in range(10):
            one()

    def trial():
        if proc.poll() is not None:
            raise RuntimeError("the echo process exited")
        return rate(op, 10, ctx.min_time)

    atexit.register(lambda: (parent.close(), proc.wait(5)))
    return trial


@workload("single_await", "calls/s", higher_is_better=True, target=Ratio(20), group="direct",
          description="await f.remote() one at a time in a running loop (asyncio.run)")
def single_await(ctx: Ctx):
    noop = ctx.remote.noop
    perf = time.perf_counter

    async def warm():
        for _ in range(20):
            await noop.remote()

    asyncio.run(warm())

    def trial():
        # One loop for the whole trial: the loop's start-up is no part of a call.
        async def main():
            n = 0
            t0 = perf()
            while True:
                for _ in range(10):
                    await noop.remote()
                n += 10
                elapsed = perf() - t0
                if elapsed >= ctx.min_time:
                    return n / elapsed

        return asyncio.run(main())

    return trial
