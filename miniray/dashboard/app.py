"""The aiohttp application: security, errors, built-in and registered routes."""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import urlsplit

from aiohttp import web

from . import api, openapi, prometheus, routes
from .server import TOKEN_COOKIE, _is_loopback

log = logging.getLogger("miniray.dashboard")

DASHBOARD = web.AppKey("dashboard", object)
RUNTIME = web.AppKey("runtime", object)
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
                ".svg": "image/svg+xml"}


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


def _host_name(host: str) -> str:
    """``host[:port]`` -> host, brackets of IPv6 literals removed."""
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@web.middleware
async def security_middleware(request: web.Request, handler):
    dashboard = request.app[DASHBOARD]
    authorized = dashboard.is_authorized(request)
    if not authorized:
        if dashboard.require_token:
            return json_error(401, "this dashboard needs its token: open /?token=..., or send "
                                   "'Authorization: Bearer <token>'")
        # Loopback without a token: only loopback Host names, so a web page
        # that rebinds its own DNS name to 127.0.0.1 cannot read the API.
        if not _is_loopback(_host_name(request.host)):
            return json_error(403, f"Host {request.host!r} is not a loopback name; use "
                                   "http://127.0.0.1 or send the token")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        origin = request.headers.get("Origin")
        if origin and not _same_origin(origin, request):
            return json_error(403, f"cross-origin request from {origin!r} refused")
    return await handler(request)


def _same_origin(origin: str, request: web.Request) -> bool:
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == request.host.lower()


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except api.ApiError as exc:
        return json_error(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status >= 400 and not request.path.startswith("/static/") \
                and request.path != "/":
            return json_error(exc.status, exc.reason)
        raise
    except Exception as exc:  # a handler bug: answer and keep serving
        log.exception("dashboard handler %s %s failed", request.method, request.path)
        return json_error(500, f"{type(exc).__name__}: {exc}")


# -- registered routes (the router freezes at start; these may come later) -------
_PLACEHOLDER = openapi.PATH_PLACEHOLDER
_compiled: dict[str, re.Pattern] = {}


def compile_path(path: str) -> re.Pattern:
    """aiohttp's ``{name}`` / ``{name:regex}`` path syntax as one regex."""
    pattern = _compiled.get(path)
    if pattern is None:
        parts, last = [], 0
        for match in _PLACEHOLDER.finditer(path):
            parts.append(re.escape(path[last:match.start()]))
            parts.append(f"(?P<{match.group(1)}>{match.group(2) or '[^{}/]+'})")
            last = match.end()
        parts.append(re.escape(path[last:]))
        pattern = _compiled[path] = re.compile("".join(parts) + r"\Z")
    return pattern


async def dispatch_registered(request: web.Request):
    path = request.path
    allowed = []
    # In registration order, like aiohttp's router: "/x/queue" registered
    # before "/x/{name}" keeps its own handler.
    for route in routes.routes():
        match = compile_path(route.path).match(path)
        if match is None:
            continue
        if route.method != request.method and not (
                request.method == "HEAD" and route.method == "GET"):
            allowed.append(route.method)
            continue
        if route.mutating and not request.app[DASHBOARD].is_authorized(request):
            return json_error(401, f"{route.method} {route.path} changes the node's state "
                                   "and needs the dashboard token")
        request.match_info.clear()
        request.match_info.update(match.groupdict())
        return await route.handler(request)
    if not allowed:
        for route in api.BUILTIN_ROUTES + FIXED_ROUTES:
            if compile_path(route.path).match(path):
                allowed.append(route.method)
    if allowed:
        return web.json_response(
            {"error": f"method {request.method} not allowed on {path}", "status": 405},
            status=405, headers={"Allow": ", ".join(sorted(set(allowed)))})
    return json_error(404, f"no such endpoint: {path}")


# -- page and static files ---------------------------------------------------------
async def index(request: web.Request):
    dashboard = request.app[DASHBOARD]
    token = request.query.get("token")
    if token and dashboard.is_authorized(request):
        # Move the token from the address bar into a cookie the page and its
        # WebSocket send back automatically.
        response = web.HTTPFound("/")
        response.set_cookie(TOKEN_COOKIE, dashboard.token, httponly=True, samesite="Strict",
                            path="/")
        raise response
    return _static_file("index.html")


async def static_file(request: web.Request):
    return _static_file(request.match_info["name"])


def _static_file(name: str) -> web.Response:
    extension = os.path.splitext(name)[1]
    if os.path.basename(name) != name or extension not in STATIC_TYPES:
        return json_error(404, f"no such file: {name}")
    path = os.path.join(STATIC_DIR, name)
    try:
        with open(path, "rb") as f:  # a few tens of KiB from the page cache
            body = f.read()
    except OSError:
        return json_error(404, f"no such file: {name}")
    return web.Response(body=body, content_type=STATIC_TYPES[extension], charset="utf-8",
                        headers={"Cache-Control": "no-cache",
                                 "X-Content-Type-Options": "nosniff"})


async def openapi_document(request: web.Request):
    dashboard = request.app[DASHBOARD]
    return web.json_response(openapi.build(api.BUILTIN_ROUTES, routes.routes(),
                                           require_token=dashboard.require_token))


async def metrics_text(request: web.Request):
    text = await prometheus.render(request.app[RUNTIME], request.app[DASHBOARD].stream)
    return web.Response(text=text, headers={
        "Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def events_socket(request: web.Request):
    dashboard = request.app[DASHBOARD]
    origin = request.headers.get("Origin")
    if origin and not _same_origin(origin, request):
        return json_error(403, f"WebSocket from origin {origin!r} refused: "
                               "only pages served by this dashboard may connect")
    return await dashboard.stream.handle(request)


# Served by the router but not in api.BUILTIN_ROUTES (no JSON answer).
FIXED_ROUTES = [routes.Route("GET", path, None) for path in
                ("/", "/static/{name}", "/ws/events", "/metrics", "/api/openapi.json")]


def build_app(dashboard) -> web.Application:
    app = web.Application(middlewares=[error_middleware, security_middleware],
                          client_max_size=1 << 20)
    app[DASHBOARD] = dashboard
    app[RUNTIME] = dashboard.runtime
    router = app.router
    router.add_get("/", index)
    router.add_get("/static/{name}", static_file)
    router.add_get("/ws/events", events_socket)
    router.add_get("/metrics", metrics_text)
    router.add_get("/api/openapi.json", openapi_document)
    for route in api.BUILTIN_ROUTES:
        router.add_route(route.method, route.path, route.handler)
    router.add_route("*", "/{tail:.*}", dispatch_registered)
    return app

