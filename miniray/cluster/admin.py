"""The admin REST API and Prometheus metrics, registered on the dashboard's
route registry (served when the dashboard runs)."""

from __future__ import annotations

import asyncio

PREFIX = "/api/clusters"
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


def _plane():
    from . import current

    return current()


async def _on_plane(coro_factory):
    """Run on the control loop without blocking the dashboard's loop."""
    plane = _plane()
    if plane is None:
        return None
    return await asyncio.wrap_future(
        asyncio.run_coroutine_threadsafe(coro_factory(plane), plane.loop))


def _not_connected():
    from ..dashboard.routes import json_response

    return json_response({"error": "no cluster control plane is connected"}, status=503)


async def list_clusters(request):
    from ..dashboard.routes import json_response

    status = await _on_plane(lambda plane: plane._status())
    return json_response(status) if status is not None else _not_connected()


async def get_cluster(request):
    from ..dashboard.routes import json_response

    name = request.match_info["name"]
    status = await _on_plane(lambda plane: plane._status())
    if status is None:
        return _not_connected()
    for cluster in status["clusters"]:
        if cluster["name"] == name:
            return json_response(cluster)
    return json_response({"error": f"no cluster named {name!r}",
                          "known": [c["name"] for c in status["clusters"]]}, status=404)


async def get_queue(request):
    from ..dashboard.routes import json_response

    status = await _on_plane(lambda plane: plane._status())
    if status is None:
        return _not_connected()
    return json_response({"queue": status["queue"], "counters": status["counters"]})


def _action(action: str):
    async def handler(request):
        from ..dashboard.routes import json_response

        name = request.match_info["name"]
        plane = _plane()
        if plane is None:
            return _not_connected()
        if name not in plane.registry:
            return json_response({"error": f"no cluster named {name!r}",
                                  "known": plane.registry.names()}, status=404)
        if action == "check":
            result = await _on_plane(lambda p: p.check(name))
        else:
            result = await _on_plane(lambda p: p.set_state(name, action))
        return json_response(result)

    handler.__name__ = f"cluster_{action}"
    return handler


def metrics() -> list:
    """Prometheus samples per cluster (read without locking: gauges)."""
    plane = _plane()
    if plane is None:
        return []
    samples = []
    for member in plane.registry:
        labels = {"cluster": member.name}
        health = member.health
        samples += [
            ("miniray_cluster_up", "gauge", "1 when the last health check passed", labels,
             1 if health.alive else 0),
            ("miniray_cluster_inflight", "gauge", "Tasks in flight on the cluster", labels,
             member.inflight),
            ("miniray_cluster_capacity", "gauge", "Most tasks in flight at once", labels,
             member.capacity),
            ("miniray_cluster_breaker_state", "gauge",
             "Circuit breaker: 0 closed, 1 half-open, 2 open", labels,
             BREAKER_VALUES[member.breaker.state]),
        ]
        if health.alive:
            # Absent while the cluster is down: its last figures are not current.
            samples += [
                ("miniray_cluster_cpus_total", "gauge", "CPUs of the cluster", labels,
                 health.total.get("CPU", 0)),
                ("miniray_cluster_cpus_available", "gauge", "CPUs free at the last check",
                 labels, health.available.get("CPU", 0)),
                ("miniray_cluster_nodes", "gauge", "Alive nodes", labels, health.nodes),
                ("miniray_cluster_health_latency_seconds", "gauge",
                 "Round trip of the last health check", labels, health.latency_s or 0),
            ]
        for counter, value in member.counters.items():
            samples.append((f"miniray_cluster_tasks_{counter}_total", "counter",
                            f"Tasks {counter.replace('_', ' ')} on the cluster", labels, value))
    samples.append(("miniray_cluster_queue_waiting", "gauge",
                    "Submissions waiting for a cluster", {}, len(plane.queue)))
    return samples


def register() -> None:
    from ..dashboard import routes

    routes.add_route("GET", PREFIX, list_clusters,
                     summary="Clusters: health, breaker, admin state, queue and counters")
    routes.add_route("GET", PREFIX + "/queue", get_queue,
                     summary="The dispatch queue and dispatcher counters")
    routes.add_route("GET", PREFIX + "/{name}", get_cluster, summary="One cluster")
    for action, summary in (("drain", "Stop new work; in-flight work finishes"),
                            ("undrain", "Take new work again (ends drain and cordon)"),
                            ("cordon", "Stop new work now"),
                            ("check", "Run a health check now")):
        routes.add_route("POST", f"{PREFIX}/{{name}}/{action}", _action(action),
                         mutating=True, summary=summary)
    routes.add_metrics_collector(metrics)


def unregister() -> None:
    from ..dashboard import routes

    routes.remove_routes(PREFIX)
    routes.remove_metrics_collector(metrics)
