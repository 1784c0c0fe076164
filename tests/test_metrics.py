"""miniray.util.metrics: Counter, Gauge and Histogram recorded in the driver, tasks
and actors, exported on the dashboard's /metrics in Prometheus text format."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest

pytest.importorskip("aiohttp")

import miniray  # noqa: E402
from miniray.util import metrics  # noqa: E402

from .dashboard_util import local_url, running_dashboard  # noqa: E402


def _scrape(dashboard) -> str:
    with urllib.request.urlopen(local_url(dashboard) + "/metrics", timeout=10) as response:
        return response.read().decode()


def _wait_for_lines(dashboard, lines, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        text = _scrape(dashboard)
        if all(line in text.splitlines() for line in lines):
            return text
        if time.monotonic() > deadline:
            missing = [line for line in lines if line not in text.splitlines()]
            raise AssertionError(f"not on /metrics after {timeout} s: {missing}\n{text}")
        time.sleep(0.05)


def test_metrics_from_tasks_actors_and_driver(ray):
    runtime = miniray.api._runtime

    @ray.remote
    def handle(route):
        requests = metrics.Counter("app_requests", description="Requests served",
                                   tag_keys=("route",))
        requests.set_default_tags({"route": "/"})
        requests.inc()
        requests.inc(2.0, tags={"route": route})
        return True

    @ray.remote
    class Server:
        def __init__(self):
            self.latency = metrics.Histogram("app_latency_s", description="Latency",
                                             boundaries=[0.1, 1.0])
            self.load = metrics.Gauge("app_load", tag_keys=("server",))

        def serve(self, seconds):
            self.latency.observe(seconds)
            self.load.set(seconds * 10, tags={"server": "sync"})
            return True

    @ray.remote
    class AsyncServer:
        async def serve(self, value):
            await asyncio.sleep(0)
            metrics.Gauge("app_load", tag_keys=("server",)).set(value, tags={"server": "async"})
            return True

    with running_dashboard(runtime) as dashboard:
        assert all(ray.get([handle.remote("/a"), handle.remote("/a"), handle.remote("/b")]))
        server = Server.remote()
        ray.get([server.serve.remote(0.05), server.serve.remote(0.5),
                 server.serve.remote(5.0)])
        ray.get(AsyncServer.remote().serve.remote(7))
        metrics.Counter("driver_events").inc(4)
        text = _wait_for_lines(dashboard, [
            'app_requests_total{route="/"} 3.0',
            'app_requests_total{route="/a"} 4.0',
            'app_requests_total{route="/b"} 2.0',
            'app_latency_s_bucket{le="0.1"} 1',
            'app_latency_s_bucket{le="1.0"} 2',
            'app_latency_s_bucket{le="+Inf"} 3',
            'app_latency_s_sum 5.55',
            'app_latency_s_count 3',
            'app_load{server="sync"} 50.0',
            'app_load{server="async"} 7.0',
            'driver_events_total 4.0',
        ])
        assert "# TYPE app_requests_total counter" in text
        assert "# HELP app_requests_total Requests served" in text
        assert "# TYPE app_latency_s histogram" in text
        assert "# TYPE app_load gauge" in text


def test_metric_definitions_are_checked():
    with pytest.raises(ValueError, match="Invalid metric name"):
        metrics.Counter("bad name")
    with pytest.raises(ValueError, match="boundaries"):
        metrics.Histogram("h", boundaries=[1.0, 0.5])
    with pytest.raises(TypeError, match="tag_keys"):
        metrics.Gauge("g", tag_keys="route")
    counter = metrics.Counter("c", tag_keys=("route",))
    with pytest.raises(ValueError, match="Missing value for tag key"):
        counter.inc()
    with pytest.raises(ValueError, match="Unrecognized tag key"):
        counter.inc(tags={"other": "x"})
    with pytest.raises(ValueError, match="positive"):
        counter.inc(-1)
    assert counter.info["tag_keys"] == ("route",)
