#!/usr/bin/env python
"""Benchmark miniray against Ray and concurrent.futures in one run.

    python benchmarks/run.py [--only NAME,...] [--quick] [--json out.json]
                             [--markdown out.md] [--skip-ray] [--skip-miniray]
                             [--skip-futures]

Every system runs in its own fresh child process (started in a new session);
the parent never imports ray or miniray.  Children stream JSON-lines events to
a file; the parent enforces a per-workload time limit, restarts a child after
a hang or crash (the offending workload is reported as an error), and kills
every process of a child's session plus every node process the child reported
(Ray's raylet/gcs/workers, miniray's workers, pool workers) when it is done.

See benchmarks/README.md for what each workload measures.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Dict, List, Optional, Set, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
if REPO not in sys.path:
    sys.path.insert(1, REPO)

from _util import fmt_num, kill_processes, node_processes, short_error  # noqa: E402
import workloads as W  # noqa: E402

SYSTEM_LABEL = {"miniray": "miniray", "ray": "ray", "futures": "futures"}


# ===========================================================================
# child side
# ===========================================================================

class _Emitter:
    def __init__(self, path: str):
        self.fh = open(path, "a", buffering=1)

    def __call__(self, **event):
        self.fh.write(json.dumps(event, default=str) + "\n")
        self.fh.flush()


def _err(e: BaseException) -> str:
    msg = f"{type(e).__name__}: {e}".strip()
    return msg.replace("\n", " ")[:2000]


def _settings(quick: bool) -> Dict[str, float]:
    if quick:
        return {"min_time": 0.25, "reps": 2, "warmup": 1, "settle": 1.0}
    return {"min_time": 1.0, "reps": 3, "warmup": 1, "settle": 2.0}


def run_workload(wl: W.Workload, ctx: W.Ctx) -> dict:
    trial = wl.impls[ctx.system](ctx)
    warmup = ctx.warmup if wl.warmup is None else wl.warmup
    reps = ctx.reps
    if ctx.quick and wl.quick_reps is not None:
        reps = wl.quick_reps
    elif not ctx.quick and wl.reps is not None:
        reps = wl.reps
    for _ in range(warmup):
        trial()
    values: List[float] = []
    extras_list: List[dict] = []
    for _ in range(reps):
        r = trial()
        if isinstance(r, tuple):
            v, ex = r
        else:
            v, ex = r, {}
        values.append(float(v))
        extras_list.append(ex)
    best_i = max(range(len(values)), key=lambda i: values[i]) if wl.higher_is_better \
        else min(range(len(values)), key=lambda i: values[i])
    del trial
    return {"value": values[best_i], "trials": values,
            "median": statistics.median(values), "extras": extras_list[best_i]}


def _orphan_watchdog():
    """If the parent dies (even by SIGKILL), kill this child's whole session
    (node processes included) and exit, so nothing is left behind."""
    import threading

    parent = os.getppid()

    def loop():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                me, sid = os.getpid(), os.getsid(0)
                from _util import iter_procs
                for p in iter_procs():
                    if p.sid == sid and p.pid != me:
                        try:
                            os.kill(p.pid, signal.SIGKILL)
                        except OSError:
                            pass
                os._exit(1)

    threading.Thread(target=loop, name="bench-orphan-watchdog", daemon=True).start()


def child_main(args) -> int:
    emit = _Emitter(args.child_out)
    _orphan_watchdog()
    system = args.child
    names = [n for n in args.child_workloads.split(",") if n]
    settings = _settings(args.quick)
    api = executor = None
    try:
        if args.child_phase == "startup":
            emit(event="start", workload="<startup>")
            try:
                res = W.measure_startup(system, settings["settle"])
            except BaseException as e:
                emit(event="fatal", error=_err(e), trace=traceback.format_exc())
                return 1
            api, executor = res.pop("_api")
            pids = res.pop("_pids")
            emit(event="pids", pids=pids,
                 versions=W.describe_versions(system, api) if api is not None else {})
            for n in names:
                emit(event="result", workload=n,
                     result=res.get(n, {"error": "not measured"}))
            return 0

        emit(event="start", workload="<init>")
        try:
            api = W.import_system(system)
            executor = W.init_system(system, api)
            if executor is not None:  # start the pool's processes up front
                assert [f.result() for f in [executor.submit(W.fut_noop)
                                             for _ in range(4)]] == [1] * 4
        except BaseException as e:
            emit(event="fatal", error=_err(e), trace=traceback.format_exc())
            return 1
        wall0 = time.time()
        markers = [W.session_markers(system, api)]

        def pids():
            return [[p.pid, p.start] for p in
                    node_processes(os.getpid(), markers[0], since=wall0 - 60)]

        emit(event="pids", pids=pids(), versions=W.describe_versions(system, api))
        ctx = W.Ctx(system=system, quick=args.quick, api=None if system == "futures" else api,
                    executor=executor, min_time=settings["min_time"],
                    reps=int(settings["reps"]), warmup=int(settings["warmup"]))
        for n in names:
            wl = W.REGISTRY[n]
            emit(event="start", workload=n)
            restarted = bool(wl.init_kwargs) and system != "futures"
            try:
                if restarted:
                    W.shutdown_system(system, api, executor)
                    W.init_system(system, api, **wl.init_kwargs)
                    markers[0] = W.session_markers(system, api)
                    emit(event="pids", pids=pids())
                    ctx._remote = None  # remote functions of the new session
                res = run_workload(wl, ctx)
            except Exception as e:  # SystemExit/KeyboardInterrupt end the child
                res = {"error": _err(e), "trace": traceback.format_exc()}
            gc.collect()
            if restarted:  # back to the settings every other workload runs with
                W.shutdown_system(system, api, executor)
                W.init_system(system, api)
                markers[0] = W.session_markers(system, api)
                ctx._remote = None
            emit(event="result", workload=n, result=res)
            emit(event="pids", pids=pids())
        return 0
    finally:
        emit(event="start", workload="<shutdown>")
        try:
            W.shutdown_system(system, api, executor)
        except BaseException as e:
            emit(event="shutdown_error", error=_err(e))
        emit(event="done")


# ===========================================================================
# parent side
# ===========================================================================

_LIVE: Dict[int, Set[Tuple[int, float]]] = {}  # child sid -> recorded node pids


def _cleanup_all():
    for sid, recorded in list(_LIVE.items()):
        kill_processes(sid, recorded)
        _LIVE.pop(sid, None)


def _on_signal(signum, frame):
    _cleanup_all()
    raise SystemExit(128 + signum)


class ChildRunner:
    def __init__(self, args, logdir: str):
        self.args = args
        self.logdir = logdir
        self.counter = 0
        q = args.quick
        self.workload_limit = args.timeout or (45.0 if q else 150.0)
        self.init_limit = 120.0
        self.versions: Dict[str, dict] = {}
        self.logs: List[str] = []

    def _env(self) -> Dict[str, str]:
        env = dict(os.environ)
        pp = [HERE, REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env["PYTHONPATH"] = os.pathsep.join(pp)
        env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def run(self, system: str, phase: str, names: List[str]) -> Dict[str, dict]:
        """Run ``names`` in as many fresh children as needed. Returns results."""
        results: Dict[str, dict] = {}
        remaining = list(names)
        while remaining:
            got, failed, fatal = self._one_child(system, phase, remaining)
            results.update(got)
            if fatal is not None:
                for n in remaining:
                    if n not in results:
                        results[n] = {"error": fatal}
                break
            if failed is not None:
                results[failed[0]] = {"error": failed[1]}
            remaining = [n for n in remaining if n not in results]
        return results

    def _one_child(self, system, phase, names):
        self.counter += 1
        tag = f"{self.counter:02d}-{system}-{phase}"
        events_path = os.path.join(self.logdir, tag + ".events")
        log_path = os.path.join(self.logdir, tag + ".log")
        self.logs.append(log_path)
        open(events_path, "w").close()
        cmd = [sys.executable, os.path.abspath(__file__), "--child", system,
               "--child-phase", phase, "--child-out", events_path,
               "--child-workloads", ",".join(names)]
        if self.args.quick:
            cmd.append("--quick")
        log = open(log_path, "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=self._env(), cwd=REPO)
        sid = proc.pid
        recorded: Set[Tuple[int, float]] = set()
        _LIVE[sid] = recorded
        results: Dict[str, dict] = {}
        failed = fatal = None
        current, started = "<spawn>", time.monotonic()
        pos, buf = 0, ""

        def drain():
            nonlocal pos, buf, current, started, fatal
            with open(events_path) as fh:
                fh.seek(pos)
                chunk = fh.read()
                pos = fh.tell()
            buf += chunk
            *lines, buf = buf.split("\n")
            for line in lines:
                if not line.strip():
                    continue
                ev = json.loads(line)
                kind = ev.get("event")
                if kind == "start":
                    current, started = ev["workload"], time.monotonic()
                elif kind == "result":
                    results[ev["workload"]] = ev["result"]
                    self._progress(system, ev["workload"], ev["result"])
                elif kind == "pids":
                    recorded.update((int(p), float(t)) for p, t in ev["pids"])
                    if ev.get("versions"):
                        self.versions.setdefault(system, {}).update(ev["versions"])
                elif kind == "fatal":
                    fatal = ev["error"]
                elif kind == "done":
                    current = None

        try:
            while True:
                drain()
                rc = proc.poll()
                if rc is not None:
                    drain()
                    break
                if current is not None:
                    limit = self.init_limit if current.startswith("<") else self.workload_limit
                    if current == "<shutdown>":
                        limit = 30.0
                    if time.monotonic() - started > limit:
                        msg = f"timeout after {limit:.0f}s"
                        if current.startswith("<") and current != "<shutdown>":
                            fatal = f"{current.strip('<>')} {msg}"
                        elif current != "<shutdown>":
                            failed = (current, msg)
                        kill_processes(sid, recorded)
                        proc.wait()
                        drain()
                        break
                time.sleep(0.05)
            rc = proc.returncode
            if fatal is None and failed is None and current not in (None, "<shutdown>"):
                # the child died without finishing
                tail = _log_tail(log_path)
                how = f"rc={rc}"
                if rc is not None and rc < 0:
                    try:
                        how = f"killed by {signal.Signals(-rc).name}"
                    except ValueError:
                        pass
                msg = f"child exited ({how})" + (f": {tail}" if tail else "")
                if current.startswith("<"):
                    fatal = msg
                elif current not in results:
                    failed = (current, msg)
        finally:
            kill_processes(sid, recorded)
            _LIVE.pop(sid, None)
            log.close()
        if failed is not None:
            self._progress(system, failed[0], {"error": failed[1]})
        if fatal is not None:
            print(f"  [{system}] error: {fatal}  (log: {log_path})", file=sys.stderr)
        return results, failed, fatal

    def _progress(self, system, name, res):
        if self.args.quiet:
            return
        if "error" in res:
            s = "error: " + short_error(res["error"], 100)
        else:
            s = f"{fmt_num(res['value'])} {W.REGISTRY[name].unit}" if name in W.REGISTRY \
                else str(res.get("value"))
        print(f"  [{system}] {name}: {s}", file=sys.stderr, flush=True)


def _log_tail(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            lines = fh.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    keys = ("Error", "error", "Exception", "Fatal", "FATAL", "Segmentation", "Abort",
            "Killed", "core dumped")
    for line in reversed(lines[-200:]):
        if any(k in line for k in keys):
            return line.strip()[:300]
    return ""


def _aggregate_startup(runs: List[Dict[str, dict]], names: List[str]) -> Dict[str, dict]:
    out = {}
    for n in names:
        ok = [r[n] for r in runs if n in r and "error" not in r[n]]
        if not ok:
            errs = [r[n]["error"] for r in runs if n in r and "error" in r[n]]
            out[n] = {"error": errs[0] if errs else "not measured"}
            continue
        wl = W.REGISTRY[n]
        vals = [r["value"] for r in ok]
        best = max(ok, key=lambda r: r["value"]) if wl.higher_is_better \
            else min(ok, key=lambda r: r["value"])
        out[n] = {"value": best["value"], "trials": vals,
                  "median": statistics.median(vals), "extras": best.get("extras", {})}
    return out


def _run_round(runner, systems, main, startup, startup_reps, label) -> Dict[str, Dict[str, dict]]:
    """Every workload once per system, in the order given."""
    results: Dict[str, Dict[str, dict]] = {}
    for system in systems:
        t0 = time.monotonic()
        print(f"== {system}{label}", file=sys.stderr, flush=True)
        mine = {}
        applicable = [n for n in main if W.REGISTRY[n].supports(system)]
        for n in main:
            if n not in applicable:
                mine[n] = {"na": True}
        if applicable:
            mine.update(runner.run(system, "main", applicable))
        st = [n for n in startup if W.REGISTRY[n].supports(system)]
        if st:
            runs = []
            for _ in range(startup_reps):
                r = runner.run(system, "startup", st)
                runs.append(r)
                if all("error" in v for v in r.values()):
                    break
            mine.update(_aggregate_startup(runs, st))
        results[system] = mine
        print(f"== {system} done in {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
    return results


def _combine_rounds(rounds, names) -> Dict[str, Dict[str, dict]]:
    """One result per system and workload: the median of its rounds' values."""
    if len(rounds) == 1:
        return rounds[0]
    out: Dict[str, Dict[str, dict]] = {}
    for system in rounds[0]:
        mine = out[system] = {}
        for n in names:
            got = [r[system].get(n) for r in rounds if r.get(system, {}).get(n) is not None]
            ok = [g for g in got if "value" in g]
            if not ok:
                if got:
                    mine[n] = got[0]
                continue
            values = [g["value"] for g in ok]
            # Extras (p99, zero-copy, ...) as the first round measured them.
            mine[n] = {**ok[0], "value": statistics.median(values), "rounds": values}
    return out


def ratio_for(wl: W.Workload, res: Dict[str, dict]) -> Optional[float]:
    m = (res.get("miniray") or {}).get("value")
    r = (res.get("ray") or {}).get("value")
    if m is None or r is None or m <= 0 or r <= 0:
        return None
    return m / r if wl.higher_is_better else r / m


def _cell(res: Optional[dict], limit: int = 48) -> str:
    if res is None:
        return "skipped"
    if res.get("na"):
        return "n/a"
    if "error" in res:
        return short_error("error: " + res["error"], limit)
    return fmt_num(res["value"])


def _yn(res: Optional[dict]) -> str:
    if not res or "extras" not in res or "zero_copy" not in (res.get("extras") or {}):
        return "-"
    return "yes" if res["extras"]["zero_copy"] else "no"


def build_rows(names, results, systems_run, rounds=None):
    rows = []
    for n in names:
        wl = W.REGISTRY[n]
        res = {s: results.get(s, {}).get(n) for s in W.SYSTEMS}
        for s in W.SYSTEMS:
            if s in systems_run and res[s] is None and not wl.supports(s):
                res[s] = {"na": True}
        ratio = ratio_for(wl, res)
        ratios = []
        if rounds and len(rounds) > 1:
            # Paired: each round's miniray against the same round's Ray.
            ratios = [x for x in (ratio_for(wl, {s: r.get(s, {}).get(n) for s in W.SYSTEMS})
                                  for r in rounds) if x is not None]
            if ratios:
                ratio = statistics.median(ratios)
        met = wl.target.check(res.get("miniray"), ratio) if wl.target else None
        zc = ""
        if any("zero_copy" in ((res[s] or {}).get("extras") or {}) for s in W.SYSTEMS):
            zc = "/".join(_yn(res[s]) if s in systems_run else "-" for s in W.SYSTEMS)
        rows.append({
            "workload": n, "unit": wl.unit, "higher_is_better": wl.higher_is_better,
            "results": res, "ratio": ratio, "ratios": ratios,
            "target": wl.target.describe() if wl.target else "",
            "met": met, "zero_copy": zc,
        })
    return rows


def render_markdown(rows, meta) -> str:
    head = ["workload", "unit", "miniray", "ray", "futures", "miniray/ray",
            "target", "met", "zero-copy m/r/f"]
    lines = [
        f"Benchmark: {meta['mode']}; {meta['stat']}. Machine: {meta['machine']}.",
        "",
        "Ratio convention: miniray/ray = miniray ÷ ray for higher-is-better units "
        "(…/s, GiB/s) and ray ÷ miniray for lower-is-better units (s, µs, MB), so "
        "**ratio > 1 always means miniray is better**. ✓/✗ = target met/missed, "
        "? = miniray has no result, blank = no target. n/a = workload does not apply.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---", "---", "---:", "---:", "---:", "---:", "---", ":-:", ":-:"]) + "|",
    ]
    for r in rows:
        res = r["results"]
        met = "" if not r["target"] else ("?" if r["met"] is None else ("✓" if r["met"] else "✗"))
        unit = r["unit"] + (" ↑" if r["higher_is_better"] else " ↓")
        cells = [r["workload"], unit, _cell(res["miniray"]), _cell(res["ray"]),
                 _cell(res["futures"]),
                 _ratio_cell(r),
                 r["target"], met, r["zero_copy"]]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines.append("")
    lines.append("↑ higher is better, ↓ lower is better.")
    grouped: Dict[Tuple[str, str], List[str]] = {}
    for r in rows:
        for s in W.SYSTEMS:
            x = r["results"].get(s)
            if x and "error" in x:
                grouped.setdefault((s, short_error(x["error"], 300)), []).append(r["workload"])
    errs = [f"- {s} ({', '.join(ws) if len(ws) < 4 else f'{len(ws)} workloads'}): error: {msg}"
            for (s, msg), ws in grouped.items()]
    if errs:
        lines += ["", "Errors:", ""] + errs
    return "\n".join(lines) + "\n"


def _ratio_cell(row) -> str:
    if row["ratio"] is None:
        return "-"
    cell = fmt_num(row["ratio"]) + "×"
    if len(row.get("ratios") or ()) > 1:
        cell += f" ({fmt_num(min(row['ratios']))}–{fmt_num(max(row['ratios']))})"
    return cell


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
            mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} CPUs ({cpu}){mem}, {platform.system()} {platform.release()}"


def _loadavg() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def select_workloads(only: Optional[str]) -> List[str]:
    if not only:
        return list(W.REGISTRY)
    wanted = []
    groups = {wl.group for wl in W.REGISTRY.values()}
    for tok in [t.strip() for t in only.split(",") if t.strip()]:
        if tok in W.REGISTRY:
            wanted.append(tok)
        elif tok in groups:
            wanted += [n for n, wl in W.REGISTRY.items() if wl.group == tok]
        else:
            raise SystemExit(f"unknown workload or group {tok!r}; known: "
                             f"{', '.join(W.REGISTRY)}; groups: {', '.join(sorted(groups))}")
    seen = set()
    return [n for n in W.REGISTRY if n in wanted and not (n in seen or seen.add(n))]


def parent_main(args) -> int:
    names = select_workloads(args.only)
    systems = [s for s in W.SYSTEMS if not getattr(args, f"skip_{s}")]
    if args.list:
        for n, wl in W.REGISTRY.items():
            print(f"{n:22s} {wl.group:8s} {wl.unit:9s} {wl.description}")
        return 0
    startup = [n for n in names if W.REGISTRY[n].kind == "startup"]
    main = [n for n in names if W.REGISTRY[n].kind == "main"]
    settings = _settings(args.quick)
    startup_reps = args.startup_reps or (1 if args.quick else 2)
    logdir = tempfile.mkdtemp(prefix="miniray-bench-")
    runner = ChildRunner(args, logdir)
    atexit.register(_cleanup_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    t_start = time.monotonic()
    load0 = _loadavg()
    rounds: List[Dict[str, Dict[str, dict]]] = []
    try:
        for i in range(args.rounds):
            # Alternate the order, so neither system always gets the later (or
            # earlier) minutes of a host whose speed drifts.
            order = systems if i % 2 == 0 else systems[::-1]
            rounds.append(_run_round(runner, order, main, startup, startup_reps,
                                     f" (round {i + 1}/{args.rounds})" if args.rounds > 1 else ""))
    except KeyboardInterrupt:
        _cleanup_all()
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        _cleanup_all()
    results = _combine_rounds(rounds, names)
    elapsed = time.monotonic() - t_start
    stat = (f"each value is the best of {int(settings['reps'])} timed trials after "
            f"{int(settings['warmup'])} warm-up (≥{settings['min_time']}s per throughput "
            f"trial; a few workloads use their own counts, see README); startup metrics: "
            f"best of {startup_reps} fresh processes")
    if args.rounds > 1:
        stat += (f"; then the median of {args.rounds} rounds, the systems taking turns "
                 "to go first, and each ratio the median of the per-round ratios "
                 "(their range in brackets)")
    meta = {
        "mode": ("--quick" if args.quick else "default") + f" run, {elapsed:.0f}s total",
        "stat": stat,
        "rounds": args.rounds,
        "machine": _machine() + f"; load avg at start/end {load0}/{_loadavg()}",
        "versions": runner.versions,
        "python": sys.version.split()[0],
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    rows = build_rows(names, results, systems, rounds)
    md = render_markdown(rows, meta)
    print(md)
    vers = ", ".join(f"{s}: " + ", ".join(f"{k} {v}" for k, v in d.items())
                     for s, d in runner.versions.items())
    if vers:
        print("versions — " + vers)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(md)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "settings": settings,
                       "workloads": {r["workload"]: {
                           "unit": r["unit"], "higher_is_better": r["higher_is_better"],
                           "description": W.REGISTRY[r["workload"]].description,
                           "target": r["target"], "met": r["met"], "ratio": r["ratio"],
                           "round_ratios": r["ratios"],
                           "results": r["results"]} for r in rows}},
                      fh, indent=2, default=str)
    had_errors = any("error" in (r["results"].get(s) or {}) for r in rows for s in W.SYSTEMS)
    if args.keep_logs or had_errors:
        print(f"child logs: {logdir}", file=sys.stderr)
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="comma-separated workload names or groups "
                                  "(core, actors, startup)")
    p.add_argument("--quick", action="store_true", help="smaller sizes / fewer repetitions")
    p.add_argument("--json", metavar="FILE", help="write full results as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write the table as Markdown")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every system this many times, taking turns, and report "
                        "medians (ratios paired by round): steadier on a noisy host")
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--skip-miniray", action="store_true")
    p.add_argument("--skip-futures", action="store_true")
    p.add_argument("--timeout", type=float, default=None,
                   help="per-workload time limit in seconds (default 150, quick 45)")
    p.add_argument("--startup-reps", type=int, default=None,
                   help="fresh processes for the startup metrics (default 2, quick 1)")
    p.add_argument("--keep-logs", action="store_true", help="keep the child logs")
    p.add_argument("--list", action="store_true", help="list workloads and exit")
    p.add_argument("--quiet", action="store_true", help="no per-workload progress")
    # internal: child mode
    p.add_argument("--child", choices=W.SYSTEMS, help=argparse.SUPPRESS)
    p.add_argument("--child-phase", choices=("main", "startup"), help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--child-workloads", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.child:
        return child_main(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
