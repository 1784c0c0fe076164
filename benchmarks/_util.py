"""Small helpers shared by the benchmark parent and its per-system children.

Process inspection uses psutil when it is installed and falls back to /proc
(Linux) otherwise, so the harness keeps working in a bare environment.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

try:  # optional dependency
    import psutil  # type: ignore
except Exception:  # pragma: no cover - exercised only without psutil
    psutil = None

MB = 1_000_000  # memory is reported in MB (10**6 bytes), matching the targets
GiB = 1 << 30
MiB = 1 << 20


# ---------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------

def rate(op: Callable[[], object], ops_per_call: int, min_time: float,
         min_calls: int = 1) -> float:
    """Call ``op`` until ``min_time`` seconds (and ``min_calls`` calls) have
    elapsed; return operations per second (``ops_per_call`` ops per call)."""
    perf = time.perf_counter
    calls = 0
    t0 = perf()
    while True:
        op()
        calls += 1
        elapsed = perf() - t0
        if elapsed >= min_time and calls >= min_calls:
            return calls * ops_per_call / elapsed


def percentile(values: List[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]."""
    if not values:
        raise ValueError("no values")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]


# ---------------------------------------------------------------------------
# process inspection (psutil, else /proc)
# ---------------------------------------------------------------------------

class ProcInfo:
    __slots__ = ("pid", "ppid", "sid", "start", "cmdline", "name")

    def __init__(self, pid, ppid, sid, start, cmdline, name):
        self.pid = pid
        self.ppid = ppid
        self.sid = sid
        self.start = start  # creation time, seconds since epoch (approx.)
        self.cmdline = cmdline
        self.name = name

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"ProcInfo(pid={self.pid}, name={self.name!r})"


def _boot_time() -> float:
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("btime"):
                return float(line.split()[1])
    return 0.0


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_fs_info(pid: int, btime: float) -> Optional[ProcInfo]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("utf-8", "replace")
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2:].split()
        ppid, sid = int(rest[1]), int(rest[3])
        start = btime + int(rest[19]) / _CLK_TCK
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            cmd = ""
        return ProcInfo(pid, ppid, sid, start, cmd, name)
    except (OSError, ValueError, IndexError):
        return None


def iter_procs() -> Iterable[ProcInfo]:
    """All processes we can see (zombies included where visible)."""
    if psutil is not None:
        for p in psutil.process_iter(["pid", "ppid", "create_time", "cmdline", "name"]):
            info = p.info
            try:
                sid = os.getsid(info["pid"])
            except OSError:
                sid = -1
            cmd = " ".join(info.get("cmdline") or [])
            yield ProcInfo(info["pid"], info.get("ppid") or 0, sid,
                           info.get("create_time") or 0.0, cmd, info.get("name") or "")
        return
    if not os.path.isdir("/proc"):
        return
    btime = _boot_time()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _proc_fs_info(int(entry), btime)
            if info is not None:
                yield info


def node_processes(root_pid: int, markers: Iterable[str] = (),
                   since: float = 0.0) -> List[ProcInfo]:
    """Processes belonging to the "node" started by ``root_pid``.

    That is: ``root_pid`` itself, all of its descendants (recursively), every
    process in its session (catches daemons re-parented to init), and every
    process started after ``since`` whose command line contains one of
    ``markers`` (e.g. Ray's session directory)."""
    procs = list(iter_procs())
    by_pid = {p.pid: p for p in procs}
    children: Dict[int, List[ProcInfo]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p)
    try:
        root_sid = os.getsid(root_pid)
    except OSError:
        root_sid = None
    selected: Dict[int, ProcInfo] = {}
    if root_pid in by_pid:
        selected[root_pid] = by_pid[root_pid]
    stack = [root_pid]
    while stack:
        for c in children.get(stack.pop(), ()):
            if c.pid not in selected:
                selected[c.pid] = c
                stack.append(c.pid)
    markers = [m for m in markers if m]
    for p in procs:
        if p.pid in selected:
            continue
        # the session is only "ours" when root leads it (the benchmark starts
        # every child with start_new_session=True)
        if root_sid == root_pid and p.sid == root_sid:
            selected[p.pid] = p
        elif markers and p.start >= since - 1.0 and any(m in p.cmdline for m in markers):
            selected[p.pid] = p
    # extend with descendants of the marker-matched processes
    stack = list(selected)
    while stack:
        for c in children.get(stack.pop(), ()):
            if c.pid not in selected:
                selected[c.pid] = c
                stack.append(c.pid)
    return sorted(selected.values(), key=lambda p: p.pid)


def _rss_pss_proc_fs(pid: int) -> Tuple[int, Optional[int]]:
    rss = 0
    pss = None
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
                break
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return rss, pss


def memory_of(pids: Iterable[int]) -> Dict[str, object]:
    """Sum RSS (and PSS, which does not double count shared pages) over pids."""
    total_rss = 0
    total_pss = 0
    pss_ok = True
    per: List[Tuple[int, int]] = []
    for pid in pids:
        try:
            if psutil is not None:
                p = psutil.Process(pid)
                rss = p.memory_info().rss
                try:
                    pss = getattr(p.memory_full_info(), "pss", None)
                except Exception:
                    pss = None
            else:
                rss, pss = _rss_pss_proc_fs(pid)
        except Exception:
            continue
        total_rss += rss
        if pss is None:
            pss_ok = False
        else:
            total_pss += pss
        per.append((pid, rss))
    return {"rss": total_rss, "pss": total_pss if pss_ok else None, "per_pid": per}


def proc_start_time(pid: int) -> Optional[float]:
    if psutil is not None:
        try:
            return psutil.Process(pid).create_time()
        except Exception:
            return None
    info = _proc_fs_info(pid, _boot_time())
    return info.start if info else None


def _alive(pid: int, start: Optional[float]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    if start is None:
        return True
    cur = proc_start_time(pid)
    # create times from psutil and /proc may differ slightly; 1 s slack
    return cur is not None and abs(cur - start) < 1.0


def kill_processes(sid: Optional[int], recorded: Iterable[Tuple[int, float]],
                   grace: float = 3.0) -> List[int]:
    """Terminate every process of session ``sid`` and every still-alive
    recorded (pid, start_time); SIGKILL after ``grace`` seconds. Returns the
    pids that were signalled. Never touches this process or its session."""
    me = os.getpid()
    my_sid = os.getsid(0)
    victims: Dict[int, Optional[float]] = {}
    if sid is not None and sid > 1 and sid != my_sid:
        for p in iter_procs():
            if p.sid == sid and p.pid != me:
                victims[p.pid] = p.start
    for pid, start in recorded:
        if pid != me and pid not in victims and _alive(pid, start):
            try:
                if os.getsid(pid) == my_sid:
                    continue
            except OSError:
                continue
            victims[pid] = start
    if not victims:
        return []
    for pid in victims:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not any(_alive(pid, st) for pid, st in victims.items()):
            break
        time.sleep(0.05)
    for pid, st in victims.items():
        if _alive(pid, st):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return sorted(victims)


# ---------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------

def fmt_num(v: float) -> str:
    """Three significant digits, thousands separators for big numbers."""
    if v is None:
        return "-"
    av = abs(v)
    if av >= 1000:
        return f"{v:,.0f}"
    if av >= 100:
        return f"{v:.0f}"
    if av >= 10:
        return f"{v:.1f}"
    if av >= 1:
        return f"{v:.2f}"
    if av >= 0.01:
        return f"{v:.3f}"
    if av == 0:
        return "0"
    return f"{v:.2e}"


def short_error(msg: str, limit: int = 70) -> str:
    line = (msg or "").strip().splitlines()[0] if msg and msg.strip() else "unknown error"
    return line if len(line) <= limit else line[: limit - 1] + "…"
