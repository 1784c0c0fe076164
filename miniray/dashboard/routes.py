"""The dashboard's open registry of routes and metric collectors.

Sub-libraries (``miniray.tune``, ``miniray.cluster``) add their endpoints here
without importing aiohttp themselves; it is imported only when a handler
runs. Routes may be added before or after the dashboard starts.

    from miniray.dashboard import routes

    async def list_clusters(request):          # an aiohttp handler
        return routes.json_response({...})

    routes.add_route("GET", "/api/clusters", list_clusters,
                     summary="Registered clusters and their health")
    routes.add_route("POST", "/api/clusters/{name}/drain", drain, mutating=True,
                     summary="Stop sending new work to a cluster")
    routes.add_metrics_collector(lambda: [
        ("miniray_cluster_inflight", "gauge", "Tasks in flight", {"cluster": "mac"}, 3),
    ])

Handlers run on the node's event loop: they must not block (use
``loop.run_in_executor`` for anything slow). ``mutating=True`` routes always
require the dashboard token; read-only routes require it only when the
dashboard listens beyond loopback.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Route:
    method: str
    path: str
    handler: Callable
    summary: str = ""
    mutating: bool = False
    parameters: list = field(default_factory=list)  # OpenAPI parameter objects
    response_schema: dict | None = None  # OpenAPI schema of the 200 response


_lock = threading.Lock()
_routes: list[Route] = []
_collectors: list[Callable[[], list]] = []
_listeners: list[Callable[[Route], None]] = []


def add_route(method: str, path: str, handler: Callable, *, summary: str = "",
              mutating: bool = False, parameters: list | None = None,
              response_schema: dict | None = None) -> Route:
    """Register an HTTP endpoint of the dashboard (``path`` uses aiohttp's
    ``{name}`` placeholders). Registering the same method and path again
    replaces the handler."""
    method = method.upper()
    if method not in ("GET", "POST", "PUT", "DELETE", "PATCH"):
        raise ValueError(f"unsupported HTTP method {method!r}")
    if not path.startswith("/"):
        raise ValueError(f"route path must start with '/', got {path!r}")
    if method != "GET" and not mutating:
        raise ValueError(f"{method} {path}: routes that change state must say mutating=True")
    route = Route(method, path, handler, summary, mutating, list(parameters or ()),
                  response_schema)
    with _lock:
        _routes[:] = [r for r in _routes if (r.method, r.path) != (method, path)]
        _routes.append(route)
        listeners = list(_listeners)
    for listener in listeners:
        listener(route)
    return route


def remove_routes(prefix: str) -> None:
    """Forget every route whose path starts with ``prefix``."""
    with _lock:
        _routes[:] = [r for r in _routes if not r.path.startswith(prefix)]


def routes() -> list[Route]:
    with _lock:
        return list(_routes)


def add_metrics_collector(collect: Callable[[], list]) -> Callable[[], list]:
    """Register ``collect() -> [(name, type, help, labels, value), ...]`` for
    ``/metrics``; ``type`` is ``"counter"`` or ``"gauge"``."""
    with _lock:
        _collectors.append(collect)
    return collect


def remove_metrics_collector(collect) -> None:
    with _lock:
        if collect in _collectors:
            _collectors.remove(collect)


def metrics_collectors() -> list:
    with _lock:
        return list(_collectors)


def on_route_added(listener: Callable[[Route], None]) -> None:
    """For the dashboard itself: hear about routes added after it started."""
    with _lock:
        _listeners.append(listener)


def json_response(data: Any, status: int = 200):
    """An aiohttp JSON response (aiohttp imported lazily)."""
    from aiohttp import web

    return web.json_response(data, status=status)
