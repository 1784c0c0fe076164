"""``/api/openapi.json``: an OpenAPI 3.1 description of every HTTP route,
built-in and registered (so it is built per request: routes come and go)."""

from __future__ import annotations

import re

from .. import __version__ as _version

# aiohttp's path placeholders: {name} or {name:regex} (the regex may hold {m,n}).
PATH_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::((?:[^{}]|\{[^{}]*\})+))?\}")

_ERROR = {"description": "error", "content": {"application/json": {"schema": {
    "type": "object", "required": ["error", "status"],
    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}}}}}}

_EXTRA_PATHS = {
    "/api/openapi.json": {"get": {
        "operationId": "get_openapi", "summary": "This description",
        "responses": {"200": {"description": "OpenAPI 3.1 document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    "/metrics": {"get": {
        "operationId": "get_metrics_text",
        "summary": "Prometheus text exposition (format 0.0.4)",
        "responses": {"200": {"description": "metrics",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
}


def openapi_path(path: str) -> tuple[str, list[str]]:
    """aiohttp's path syntax as OpenAPI's, and the names of its parameters."""
    names = []

    def plain(match):
        names.append(match.group(1))
        return "{" + match.group(1) + "}"

    return PATH_PLACEHOLDER.sub(plain, path), names


def _operation_id(method: str, path: str) -> str:
    return method.lower() + "_" + (re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root")


def operation(route, require_token: bool) -> tuple[str, dict]:
    path, names = openapi_path(route.path)
    parameters = list(route.parameters)
    declared = {p.get("name") for p in parameters if p.get("in") == "path"}
    for name in names:
        if name not in declared:
            parameters.append({"name": name, "in": "path", "required": True,
                               "schema": {"type": "string"}})
    ok = {"description": "success"}
    if route.response_schema is not None:
        ok["content"] = {"application/json": {"schema": route.response_schema}}
    op = {
        "operationId": _operation_id(route.method, route.path),
        "summary": route.summary or f"{route.method} {route.path}",
        "parameters": parameters,
        "responses": {"200": ok, "400": _ERROR, "401": _ERROR, "404": _ERROR},
    }
    if route.mutating or require_token:
        op["security"] = [{"bearer": []}, {"query_token": []}, {"cookie_token": []}]
    if route.mutating:
        op["x-mutating"] = True
    return path, op


def build(builtin_routes, registered_routes, *, require_token: bool = False) -> dict:
    paths: dict = {}
    builtin = {(r.method, r.path) for r in builtin_routes}
    for route in list(builtin_routes) + [r for r in registered_routes
                                         if (r.method, r.path) not in builtin]:
        path, op = operation(route, require_token)
        paths.setdefault(path, {})[route.method.lower()] = op
    for path, item in _EXTRA_PATHS.items():
        paths.setdefault(path, item)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "miniray dashboard",
            "version": _version,
            "description": "Live state of a miniray node. The WebSocket at /ws/events "
                           "pushes batched changes; see docs/dashboard.md.",
        },
        "paths": paths,
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "query_token": {"type": "apiKey", "in": "query", "name": "token"},
            "cookie_token": {"type": "apiKey", "in": "cookie",
                             "name": "miniray_dashboard_token"},
        }},
        "x-websockets": {"/ws/events": {
            "summary": "Batched state changes (task, actor, worker, object) and metrics",
            "client_messages": {"subscribe": ["task", "actor", "worker", "object",
                                              "metrics"]},
            "server_messages": ["hello", "update", "dropped", "subscribed", "error"],
        }},
    }
