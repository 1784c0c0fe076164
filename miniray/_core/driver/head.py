"""A long-lived head node (``miniray start --head``), run as its own process.

The node runtime runs on this process's main-thread loop; drivers join it
over a Unix socket (``address="auto"``) or TCP on loopback, each presenting
the per-node token from a file only this user can read. The dashboard, when
enabled, serves from the same loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
import time

from . import session


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m miniray._core.driver.head")
    parser.add_argument("--num-cpus", type=float, default=None,
                        help="CPUs to schedule on (default: all)")
    parser.add_argument("--num-gpus", type=float, default=None,
                        help="GPUs (default: detected)")
    parser.add_argument("--resources", default=None,
                        help='custom resources as JSON, e.g. \'{"accelerator": 2}\'')
    parser.add_argument("--object-store-memory", type=int, default=None,
                        help="bytes of shared memory for objects before they spill")
    parser.add_argument("--port", type=int, default=session.DEFAULT_PORT,
                        help=f"TCP port for drivers (default {session.DEFAULT_PORT}; 0 picks one)")
    parser.add_argument("--node-ip-address", "--host", dest="host", default="127.0.0.1",
                        help="address drivers connect to (default 127.0.0.1, loopback only)")
    parser.add_argument("--dashboard-host", default="127.0.0.1",
                        help="dashboard listen address (default 127.0.0.1); any other needs "
                             "the token on every request")
    parser.add_argument("--dashboard-port", type=int, default=None,
                        help="dashboard port (default 8265, or the next free one)")
    parser.add_argument("--include-dashboard", choices=("auto", "true", "false"),
                        default="auto", help="serve the dashboard (auto: if aiohttp is "
                                             "installed)")
    return parser


def parse_resources(text):
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"--resources must be JSON like '{{\"accelerator\": 2}}': {exc}")
    if not isinstance(value, dict):
        raise SystemExit("--resources must be a JSON object")
    return value


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    existing = session.read_head()
    if existing is not None and existing.get("pid") != os.getpid():
        print(f"A miniray head is already running (pid {existing['pid']}); stop it with "
              "`miniray stop` first.", file=sys.stderr)
        return 1
    from .. import hooks
    from ..node.state import detect_gpus
    from ..store import store_config
    from ..loop import new_event_loop
    from ..node.runtime import NodeRuntime

    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    num_cpus = args.num_cpus if args.num_cpus is not None else (os.cpu_count() or 1)
    num_gpus = args.num_gpus if args.num_gpus is not None else detect_gpus()
    capacity, store_dir = store_config.choose(args.object_store_memory or None)
    runtime = NodeRuntime(num_cpus, num_gpus, parse_resources(args.resources),
                          capacity, "default", store_dir=store_dir)
    runtime.log_to_driver = False  # no terminal: worker output goes to the log files
    runtime.start(loop)
    from ..node import memory_monitor

    runtime.memory_monitor = memory_monitor.start(runtime, None)  # Ray's defaults, or RAY_* vars
    token = secrets.token_urlsafe(32)
    runtime.dashboard_token = token
    root = session.session_root()
    unix_path = os.path.join(root, "head.sock")
    if os.path.exists(unix_path):
        os.unlink(unix_path)  # left by a head that was killed
    session.write_private(session.token_file(), token + "\n")
    files = [session.head_file(), session.token_file(), unix_path]
    try:
        addresses = loop.run_until_complete(
            runtime.serve_drivers(token, unix_path=unix_path, host=args.host,
                                  port=args.port))
        dashboard_url = None
        if args.include_dashboard != "false":
            dashboard_url = hooks.start_dashboard(
                runtime, True if args.include_dashboard == "true" else None,
                args.dashboard_host, args.dashboard_port)
        info = {
            "pid": os.getpid(), "node_pid": runtime.node_pid, "address": addresses[-1],
            "unix_socket": unix_path, "dashboard_url": dashboard_url,
            "session_dir": runtime.spill_dir, "log_dir": runtime.log_dir,
            "started_at": time.time(), "resources": runtime.total,
        }
        session.write_private(session.head_file(), json.dumps(info, indent=1))
        print(f"miniray head ready: {json.dumps(info)}", flush=True)
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, stop.set)
        loop.run_until_complete(stop.wait())
        print("miniray head stopping", flush=True)
        loop.run_until_complete(runtime.stop_dashboard())
    finally:
        for path in files:
            try:
                os.unlink(path)
            except OSError:
                pass
        runtime.shutdown()
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
