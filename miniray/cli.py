"""The ``miniray`` command line (also ``python -m miniray``).

    miniray start --head [--num-cpus N] [--port P] [--dashboard-port 8265]
    miniray status [--address auto] [--json]
    miniray stop [--force]
    miniray dashboard [--no-browser]
    miniray clusters status|drain|undrain ...   (with miniray.cluster)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time


def _fmt_bytes(n) -> str:
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def cmd_start(args) -> int:
    from ._core.driver import head, session

    if not args.head:
        print("miniray start needs --head: miniray runs one node per machine; drivers join "
              "it with miniray.init(address='auto').", file=sys.stderr)
        return 2
    existing = session.read_head()
    if existing is not None:
        print(f"A miniray head is already running (pid {existing['pid']}, "
              f"{existing['address']}). Stop it with `miniray stop` first.", file=sys.stderr)
        return 1
    forwarded = []
    for name in ("num_cpus", "num_gpus", "resources", "object_store_memory", "port", "host",
                 "dashboard_host", "dashboard_port", "include_dashboard"):
        value = getattr(args, name)
        if value is not None:
            forwarded += ["--" + name.replace("_", "-"), str(value)]
    if args.block:
        return head.main(forwarded)
    log_path = os.path.join(session.session_root(), "head.log")
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_root + os.pathsep + env.get("PYTHONPATH", "")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "miniray._core.driver.head", *forwarded],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=env)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        info = session.read_head()
        if info is not None and info.get("pid") == proc.pid:
            _print_started(info)
            return 0
        if proc.poll() is not None:
            print(f"The head exited at start (code {proc.returncode}). Its log "
                  f"({log_path}) ends with:\n{_tail(log_path)}", file=sys.stderr)
            return 1
        time.sleep(0.05)
    proc.terminate()
    print(f"The head did not start within {args.timeout} s; see {log_path}:\n"
          f"{_tail(log_path)}", file=sys.stderr)
    return 1


def _print_started(info) -> None:
    print(f"miniray head started (pid {info['pid']})")
    print(f"  address:    {info['address']}")
    print("  connect:    miniray.init(address='auto')   "
          f"or   miniray.init(address='{info['address']}')")
    if info.get("dashboard_url"):
        print(f"  dashboard:  {info['dashboard_url']}")
    print(f"  logs:       {info['log_dir']}")
    print("  stop with:  miniray stop")


def _tail(path, lines=20) -> str:
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
    except OSError:
        return "(no log)"


def cmd_stop(args) -> int:
    from ._core.driver import session
    from ._core.store import shm

    info = session.read_head()
    if info is None:
        print("No running miniray head.")
        _remove_stale_files()
        return 0
    pid = int(info["pid"])
    if not session.is_head_process(pid):
        # head.json names a process that is not this user's head (a pid reused
        # since the head died, or a file planted to make us signal something).
        print(f"{session.head_file()} names pid {pid}, which is not a miniray head of "
              "yours; not signalling it. Removing the stale files.", file=sys.stderr)
        _remove_stale_files(force=True)
        return 1
    os.kill(pid, signal.SIGKILL if args.force else signal.SIGTERM)
    if not _wait_gone(pid, args.timeout):
        print(f"The head (pid {pid}) did not stop within {args.timeout} s; killing it.",
              file=sys.stderr)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not _wait_gone(pid, 10.0):
            print(f"The head (pid {pid}) is still there 10 s after SIGKILL (stuck in the "
                  "kernel?); giving up.", file=sys.stderr)
            return 1
    # After a SIGKILL its watchdog reclaims workers and segments; wait for that.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
            name.startswith(f"miniray_{info['node_pid']}_") for name in _shm_names()):
        time.sleep(0.05)
    shm.sweep_dead()
    _remove_stale_files()
    print(f"Stopped the miniray head (pid {pid}).")
    return 0


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited (a zombie counts as exited: only its parent
    can reap it); False if it is still running after ``timeout`` seconds."""
    from ._core.driver import session

    deadline = time.monotonic() + timeout
    while True:
        _reap(pid)
        if not session.pid_alive(pid) or session.is_zombie(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _reap(pid) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _shm_names():
    try:
        return os.listdir("/dev/shm")
    except OSError:  # pragma: no cover - not Linux
        return []


def _remove_stale_files(force: bool = False) -> None:
    from ._core.driver import session

    if not force and session.read_head() is not None:
        return
    root = session.session_root()
    for path in (session.head_file(), session.token_file(),
                 os.path.join(root, "head.sock"), os.path.join(root, "head.log")):
        try:
            os.unlink(path)
        except OSError:
            pass


def cmd_status(args) -> int:
    from ._core.driver import session

    try:
        info = session.request_once(args.address, "summary")
    except (ConnectionError, PermissionError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=1, sort_keys=True))
        return 0
    total, avail = info["resources_total"], info["resources_available"]
    print(f"miniray node {info['node_id']} (pid {info['pid']}), up {info['uptime_s']:.0f} s")
    print("Resources")
    for key in sorted(total):
        used = total[key] - avail.get(key, 0)
        if key in ("memory", "object_store_memory"):  # bytes
            print(f"  {key:<12} {_fmt_bytes(used)} / {_fmt_bytes(total[key])} in use")
        else:
            print(f"  {key:<12} {used:g} / {total[key]:g} in use")
    w = info["workers"]
    print(f"Workers      {w['total']} ({w['task']} task, {w['actor']} actor; "
          f"{w['idle']} idle, {w['blocked']} blocked in get)")
    print(f"Drivers      {info['drivers']} connected")
    t = info["tasks"]
    print(f"Tasks        {t['running']} running, {t['pending']} pending; "
          f"{t['finished_total']} finished, {t['failed_total']} failed, "
          f"{t['retried_total']} retried")
    states = ", ".join(f"{k} {v}" for k, v in t["by_state"].items() if v)
    if states:
        print(f"  recent     {states}")
    for demand in info.get("infeasible") or ():
        # Ray's "infeasible" demands: waiting for more than the node has in all.
        print(f"  infeasible {demand['resources']}: {demand['tasks']} task(s), "
              f"{demand['actors']} actor(s) pending")
    a = info["actors"]
    print(f"Actors       {a['alive']} alive ({a['total']} created)")
    o = info["object_store"]
    print(f"Object store {o['objects']} objects, {_fmt_bytes(o['used_bytes'])} / "
          f"{_fmt_bytes(o['capacity_bytes'])}, {o['spilled_total']} spilled "
          f"({_fmt_bytes(o.get('spilled_bytes', 0))} on disk now)")
    head = session.read_head() if args.address == "auto" else None
    if head and head.get("dashboard_url"):
        print(f"Dashboard    {head['dashboard_url']}")
    return 0


def cmd_dashboard(args) -> int:
    from ._core.driver import session

    info = session.read_head()
    if info is None:
        print("No running miniray head; start one with `miniray start --head`.",
              file=sys.stderr)
        return 1
    url = info.get("dashboard_url")
    if not url:
        print("The running head has no dashboard (started with --include-dashboard false, "
              "or aiohttp is not installed: pip install 'miniray[dashboard]').",
              file=sys.stderr)
        return 1
    print(url)
    if not args.no_browser:
        import webbrowser

        webbrowser.open(url)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ._core.driver import head

    parser = argparse.ArgumentParser(
        prog="miniray", description="Run and inspect a miniray head node.")
    sub = parser.add_subparsers(dest="command", metavar="command")
    sub.required = True

    start = sub.add_parser("start", help="start a head node in the background")
    start.add_argument("--head", action="store_true", help="start the head node")
    start.add_argument("--block", action="store_true",
                       help="run in the foreground until Ctrl-C")
    start.add_argument("--timeout", type=float, default=30.0,
                       help="seconds to wait for the head to come up")
    head.build_parser(start)
    for action in start._actions:  # unset defaults are not forwarded to the head
        if action.dest in ("port", "host", "dashboard_host", "include_dashboard"):
            action.default = None
    start.set_defaults(func=cmd_start)

    stop = sub.add_parser("stop", help="stop the head node and everything it started")
    stop.add_argument("--force", action="store_true", help="SIGKILL at once")
    stop.add_argument("--timeout", type=float, default=15.0)
    stop.set_defaults(func=cmd_stop)

    status = sub.add_parser("status", help="resources, workers, tasks, object store")
    status.add_argument("--address", default="auto", help="head address (default: auto)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)

    dashboard = sub.add_parser("dashboard", help="print (and open) the dashboard URL")
    dashboard.add_argument("--no-browser", action="store_true")
    dashboard.set_defaults(func=cmd_dashboard)

    try:
        from .cluster.cli import add_parser as add_clusters
    except ImportError:
        pass
    else:
        add_clusters(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except PermissionError as exc:  # an unsafe session directory, a socket not ours
        print(f"miniray: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
