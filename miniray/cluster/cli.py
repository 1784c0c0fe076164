"""``miniray clusters status|drain|undrain|cordon|check NAME``: the admin REST
API over HTTP (the dashboard must be running)."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8265"


def add_parser(subparsers) -> None:
    """Register the ``clusters`` subcommand on an argparse subparsers object."""
    parser = subparsers.add_parser("clusters", help="inspect and steer miniray.cluster",
                                   description=__doc__)
    parser.add_argument("action", choices=["status", "drain", "undrain", "cordon", "check"])
    parser.add_argument("name", nargs="?", help="cluster name (all actions but status)")
    parser.add_argument("--address", default=None,
                        help="dashboard URL (default: $MINIRAY_DASHBOARD_URL or "
                             f"{DEFAULT_URL})")
    parser.add_argument("--token", default=None,
                        help="dashboard token (default: $MINIRAY_DASHBOARD_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    parser.set_defaults(func=run)


def request(address: str, method: str, path: str, token: str | None = None,
            timeout: float = 30.0):
    req = urllib.request.Request(address.rstrip("/") + path, method=method,
                                 data=b"" if method == "POST" else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def run(args) -> int:
    address = args.address or os.environ.get("MINIRAY_DASHBOARD_URL") or DEFAULT_URL
    token = args.token or os.environ.get("MINIRAY_DASHBOARD_TOKEN")
    if args.action != "status" and not args.name:
        print(f"miniray clusters {args.action}: give the cluster name", file=sys.stderr)
        return 2
    try:
        if args.action == "status":
            data = request(address, "GET", "/api/clusters" + (
                f"/{args.name}" if args.name else ""), token)
        else:
            data = request(address, "POST", f"/api/clusters/{args.name}/{args.action}", token)
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        print(f"miniray clusters {args.action}: HTTP {exc.code} from {address}: {body}",
              file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"miniray clusters: cannot reach the dashboard at {address} ({exc}); is "
              "miniray running with the dashboard? Set --address or MINIRAY_DASHBOARD_URL",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(format_status(data))
    return 0


def format_status(data) -> str:
    clusters = data.get("clusters", [data]) if isinstance(data, dict) else []
    lines = [f"{'NAME':<14} {'STATE':<9} {'BREAKER':<9} {'UP':<3} {'INFLIGHT':>8} "
             f"{'CPU FREE/TOTAL':>15} {'LATENCY':>8}  TAGS"]
    for c in clusters:
        h = c.get("health", {})
        cpus = f"{h.get('available', {}).get('CPU', 0):g}/{h.get('total', {}).get('CPU', 0):g}"
        latency = f"{h['latency_s'] * 1000:.0f}ms" if h.get("latency_s") is not None else "-"
        if h.get("stale"):
            cpus = latency = "-"  # down: the last poll's figures are not current
        lines.append(f"{c['name']:<14} {c['state']:<9} {c['breaker']['state']:<9} "
                     f"{'yes' if h.get('alive') else 'no':<3} "
                     f"{c['inflight']:>4}/{c['capacity']:<3} {cpus:>15} {latency:>8}  "
                     f"{','.join(c.get('tags', []))}")
    queue = data.get("queue") if isinstance(data, dict) else None
    if queue:
        lines.append(f"queue: {queue['waiting']} waiting (max {queue['maxsize']})")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="miniray")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
