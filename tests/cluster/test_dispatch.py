"""Placement, results, actors, backpressure and the admin API on two real Ray
clusters (see conftest.py)."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import threading
import time

import pytest

import miniray
import miniray.cluster as mc
from miniray.cluster import QueueFullError, Settings

from .conftest import FAST


@miniray.remote
def where(x=0):
    """Which cluster ran it: the custom resource its Ray node offers, or 'local'."""
    try:
        import ray

        if ray.is_initialized():
            resources = ray.get_runtime_context().get_node_labels() and ray.cluster_resources()
            return x, "arm64" if "arm64" in resources else "x86_64"
    except ImportError:
        pass
    return x, "local"


@miniray.remote
def sleepy(seconds, x=0):
    import time as _time

    _time.sleep(seconds)
    return where_name(x)


def where_name(x):
    try:
        import ray

        if ray.is_initialized():
            return x, "arm64" if "arm64" in ray.cluster_resources() else "x86_64"
    except ImportError:
        pass
    return x, "local"


@miniray.remote
def fails(message):
    raise KeyError(message)


def connect(ray_clusters, include_local=True, settings=FAST, **x86_overrides):
    return mc.connect([ray_clusters["x86"].config(**x86_overrides), ray_clusters["arm"].config()],
                      settings=settings, include_local=include_local)


def test_placement_by_tag_cluster_and_resource(node, ray_clusters):
    connect(ray_clusters)
    on_arm = [where.options(tags=["arm64"]).remote(i) for i in range(6)]
    on_x86 = [where.options(cluster="x86").remote(i) for i in range(6)]
    on_local = where.options(cluster="local").remote(7)
    by_resource = where.options(resources={"arm64": 1}).remote(8)
    assert miniray.get(on_arm, timeout=60) == [(i, "arm64") for i in range(6)]
    assert miniray.get(on_x86, timeout=60) == [(i, "x86_64") for i in range(6)]
    assert miniray.get(on_local, timeout=60) == (7, "local")
    assert miniray.get(by_resource, timeout=60) == (8, "arm64")
    clusters = {c["name"]: c for c in mc.status()["clusters"]}
    assert clusters["arm"]["counters"]["succeeded"] == 7
    assert clusters["x86"]["counters"]["succeeded"] == 6
    assert clusters["arm"]["health"]["alive"] and clusters["arm"]["health"]["nodes"] == 1
    assert clusters["arm"]["info"]["ray_version"] == "2.60.0"


def test_impossible_placement_fails_at_submit(node, ray_clusters):
    connect(ray_clusters)
    with pytest.raises(mc.NoEligibleClusterError, match="no cluster named 'mac'"):
        where.options(cluster="mac").remote()
    with pytest.raises(mc.NoEligibleClusterError, match="no cluster can ever run it"):
        where.options(tags=["riscv"]).remote()
    with pytest.raises(mc.NoEligibleClusterError):
        where.options(cluster="x86", tags=["arm64"]).remote()


def test_preference_and_score(node, ray_clusters):
    mc.connect([ray_clusters["x86"].config(prefer=True), ray_clusters["arm"].config()],
               settings=FAST, include_local=False)
    # Preferred while it has room: a handful of quick tasks all go to x86.
    assert {c for _, c in miniray.get([where.remote(i) for i in range(4)], timeout=60)} \
        == {"x86_64"}
    mc.disconnect()
    # No preference: the free-resource score spreads slow work over both clusters.
    mc.connect([ray_clusters["x86"].config(max_inflight=2), ray_clusters["arm"].config(
        max_inflight=2)], settings=FAST, include_local=False)
    placed = miniray.get([sleepy.remote(0.5, i) for i in range(8)], timeout=60)
    counts = {name: sum(1 for _, c in placed if c == name) for name in ("x86_64", "arm64")}
    assert counts["x86_64"] >= 2 and counts["arm64"] >= 2, counts


def test_results_errors_refs_and_await(node, ray_clusters):
    connect(ray_clusters)
    with pytest.raises(KeyError) as info:
        miniray.get(fails.options(cluster="arm").remote("missing-key"), timeout=60)
    assert isinstance(info.value, miniray.exceptions.RayTaskError)
    assert "on cluster 'arm'" in str(info.value) and "missing-key" in str(info.value)
    # A local ObjectRef as argument is resolved before going to Ray.
    local_value = miniray.put(41)
    assert miniray.get(where.options(cluster="arm").remote(local_value), timeout=60) == (
        41, "arm64")
    refs = [where.options(tags=["x86_64"]).remote(i) for i in range(3)]
    ready, pending = miniray.wait(refs, num_returns=3, timeout=60)
    assert len(ready) == 3 and not pending

    async def main():
        return await where.options(cluster="arm").remote(5)

    assert asyncio.run(main()) == (5, "arm64")
    pair = split.options(cluster="arm", num_returns=2).remote(3)
    assert miniray.get(pair, timeout=60) == [3, 4]


@miniray.remote
def split(x):
    return x, x + 1


@miniray.remote
class Counter:
    def __init__(self, start):
        self.value = start

    def add(self, n):
        self.value += n
        return self.value

    def arch(self):
        import ray

        return "arm64" if "arm64" in ray.cluster_resources() else "x86_64"

    def crash(self):
        raise RuntimeError("actor method failed")


def test_actors_stay_on_their_cluster(node, ray_clusters):
    connect(ray_clusters)
    counter = Counter.options(tags=["arm64"]).remote(10)
    assert counter.cluster == "arm"
    refs = [counter.add.remote(1) for _ in range(5)]     # in order, on one actor
    assert miniray.get(refs, timeout=60) == [11, 12, 13, 14, 15]
    assert miniray.get(counter.arch.remote(), timeout=60) == "arm64"
    with pytest.raises(RuntimeError, match="actor method failed") as info:
        miniray.get(counter.crash.remote(), timeout=60)
    assert "cluster 'arm'" in str(info.value)
    local = Counter.options(cluster="local").remote(1)
    assert isinstance(local, miniray.ActorHandle)
    assert miniray.get(local.add.remote(2), timeout=30) == 3
    miniray.kill(counter)  # the core API knows routed handles too
    with pytest.raises(mc.ClusterError, match="killed"):
        miniray.get(counter.add.remote(1), timeout=30)
    mc.kill(local)
    with pytest.raises(miniray.exceptions.RayActorError):
        miniray.get(local.add.remote(1), timeout=30)


def test_unpinned_actors_spread_over_clusters(node, ray_clusters):
    """Running actors hold no CPU in Ray, so the polled resources do not show
    them: placement counts the actors each cluster holds against its capacity."""
    connect(ray_clusters, include_local=False)
    actors = [Counter.remote(i) for i in range(6)]
    placed = [a.cluster for a in actors]
    assert sorted(set(placed)) == ["arm", "x86"], placed
    assert placed.count("arm") == 3, placed
    arches = miniray.get([a.arch.remote() for a in actors], timeout=120)
    assert arches == [{"x86": "x86_64", "arm": "arm64"}[c] for c in placed]
    assert {c["name"]: c["actors"] for c in mc.status()["clusters"]} == {"x86": 3, "arm": 3}
    for actor in actors[:3]:
        miniray.kill(actor)
    # Killed actors no longer count: the next ones go where there is room.
    more = [Counter.remote(0) for _ in range(3)]
    counts = {c["name"]: c["actors"] for c in mc.status()["clusters"]}
    assert counts == {"x86": 3, "arm": 3}, (counts, placed, [a.cluster for a in more])
    for actor in actors[3:] + more:
        miniray.kill(actor)


@miniray.remote
def make_detached(name, namespace):
    """Creates a named, detached actor with Ray's own API, from inside a task
    that runs on the cluster (as another Ray program would)."""
    import ray

    class Box:
        def value(self):
            return "boxed"

    ray.remote(Box).options(name=name, namespace=namespace, lifetime="detached",
                            num_cpus=0).remote()
    return name


def test_get_actor_finds_named_actors_on_ray(node, ray_clusters):
    connect(ray_clusters, include_local=False)
    counter = Counter.options(name="the-counter", tags=["arm64"]).remote(5)
    found = miniray.get_actor("the-counter")
    assert found.cluster == "arm"
    assert miniray.get(found.add.remote(1), timeout=60) == 6
    assert miniray.get(counter.add.remote(1), timeout=60) == 7   # the same actor
    # One this program did not create: found through the cluster's own registry.
    assert miniray.get(make_detached.options(cluster="x86").remote("box", "i23"),
                       timeout=60) == "box"
    box = miniray.get_actor("box", namespace="i23")
    assert box.cluster == "x86"
    assert miniray.get(box.value.remote(), timeout=60) == "boxed"
    miniray.kill(box)
    with pytest.raises(ValueError):
        miniray.get_actor("nobody-has-this-name")


def test_backpressure_queue_waits_or_raises(node, ray_clusters):
    settings = Settings(**{**vars(FAST), "queue_size": 3, "block_when_full": False})
    mc.connect([ray_clusters["arm"].config(max_inflight=1)], settings=settings,
               include_local=False)
    first = sleepy.remote(1.0, 0)          # in flight
    time.sleep(0.3)
    waiting = [sleepy.remote(0.01, i) for i in (1, 2, 3)]   # fill the queue
    with pytest.raises(QueueFullError, match="queue is full"):
        sleepy.remote(0.01, 4)
    status = mc.status()
    assert status["queue"]["waiting"] == 3 and status["clusters"][0]["inflight"] == 1
    assert miniray.get([first, *waiting], timeout=60) == [(i, "arm64") for i in range(4)]
    mc.disconnect()

    # Blocking flavour: remote() waits for room instead of raising.
    settings = Settings(**{**vars(FAST), "queue_size": 1, "block_when_full": True})
    mc.connect([ray_clusters["arm"].config(max_inflight=1)], settings=settings,
               include_local=False)
    started = time.monotonic()
    refs = [sleepy.remote(0.4, i) for i in range(4)]
    submit_time = time.monotonic() - started
    assert submit_time > 0.3, "remote() should have waited for queue room"
    assert [c for _, c in miniray.get(refs, timeout=60)] == ["arm64"] * 4


def test_drain_cordon_and_check(node, ray_clusters):
    connect(ray_clusters, include_local=False)
    mc.drain("arm")
    assert {c for _, c in miniray.get([where.remote(i) for i in range(5)], timeout=60)} == {
        "x86_64"}
    assert mc.status()["clusters"][1]["state"] == "drained"
    # Pinned work waits while its cluster is drained, then runs after undrain.
    pinned = where.options(cluster="arm").remote(1)
    ready, _ = miniray.wait([pinned], timeout=1.0)
    assert not ready
    mc.undrain("arm")
    assert miniray.get(pinned, timeout=60) == (1, "arm64")
    snapshot = mc.check("x86")
    assert snapshot["health"]["alive"] and snapshot["breaker"]["state"] == "closed"


def test_init_with_cluster_file(ray_clusters, tmp_path):
    x86, arm = ray_clusters["x86"], ray_clusters["arm"]
    path = tmp_path / "clusters.yaml"
    path.write_text(textwrap.dedent(f"""
        local:
          tags: [driver]
        clusters:
          - name: x86
            address: "{x86.address}"
            tags: [x86_64]
            auth_token_path: "{x86.token_path}"
          - name: arm
            address: "{arm.address}"
            tags: [arm64]
            auth_token: "{arm.token}"
        settings:
          health_interval: 0.5
    """))
    info = miniray.init(num_cpus=1, clusters=str(path))
    try:
        assert info["clusters"] == ["local", "x86", "arm"]
        assert miniray.get(where.options(tags=["driver"]).remote(1), timeout=60) == (1, "local")
        assert miniray.get(where.options(tags=["arm64"]).remote(2), timeout=60) == (2, "arm64")
    finally:
        miniray.shutdown()
    assert mc.current() is None
    from miniray._core import hooks

    assert hooks.router is None


def test_backend_ray_runs_the_program_on_ray(ray_clusters, monkeypatch):
    arm = ray_clusters["arm"]
    monkeypatch.setenv("RAY_AUTH_TOKEN", arm.token)
    info = miniray.init(num_cpus=1, backend="ray", address=arm.address)
    try:
        assert info["backend"] == "ray" and info["ray_version"] == "2.60.0"
        assert miniray.get(where.remote(3), timeout=60) == (3, "arm64")
        counter = Counter.remote(0)
        assert miniray.get(counter.arch.remote(), timeout=60) == "arm64"
    finally:
        miniray.shutdown()


def test_wrong_token_is_a_clear_error(node, ray_clusters):
    # Default settings: no waiting out Ray's ~20 s of GCS retries.
    with pytest.raises(mc.ClusterUnavailableError,
                       match="cannot connect to arm.*authentication failed.*auth_token"):
        mc.connect([ray_clusters["arm"].config(auth_token="not-the-token")],
                   include_local=False, strict=True)
    assert mc.current() is None


def test_ray_client_address(node, ray_clusters):
    arm = ray_clusters["arm"]
    mc.connect([mc.ClusterConfig("arm", arm.client_address, tags=["arm64"],
                                 auth_token=arm.token)], settings=FAST, include_local=False)
    assert miniray.get(where.remote(9), timeout=60) == (9, "arm64")


def test_submit_job(node, ray_clusters, tmp_path):
    connect(ray_clusters)
    script = tmp_path / "job.py"
    script.write_text("import ray\nray.init()\nprint('job-on', sorted(ray.cluster_resources()))\n")
    job = mc.submit_job(f"{sys.executable} {script}", tags=["x86_64"])
    assert job.cluster == "x86"
    assert job.wait(timeout=120) == "SUCCEEDED", job.logs()
    assert "job-on" in job.logs() and "x86_64" in job.logs()
    with pytest.raises(mc.NoEligibleClusterError, match="dashboard"):
        mc.submit_job("python x.py", cluster="arm")


async def test_admin_api_and_metrics(node, ray_clusters, aiohttp_client=None):
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from miniray.dashboard import routes

    await asyncio.to_thread(connect, ray_clusters)
    app = web.Application()
    for route in routes.routes():
        if route.path.startswith("/api/clusters"):
            app.router.add_route(route.method, route.path, route.handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/api/clusters")
        assert response.status == 200
        body = await response.json()
        assert [c["name"] for c in body["clusters"]] == ["local", "x86", "arm"]
        assert body["clusters"][2]["breaker"]["state"] == "closed"
        response = await client.post("/api/clusters/arm/cordon")
        assert (await response.json())["state"] == "cordoned"
        assert (await (await client.get("/api/clusters/arm")).json())["state"] == "cordoned"
        response = await client.post("/api/clusters/arm/undrain")
        assert (await response.json())["state"] == "active"
        response = await client.post("/api/clusters/arm/check")
        assert (await response.json())["health"]["checks"] >= 2
        assert (await client.get("/api/clusters/nope")).status == 404
        assert (await client.post("/api/clusters/nope/drain")).status == 404
        queue = await (await client.get("/api/clusters/queue")).json()
        assert queue["queue"]["waiting"] == 0
    samples = {(name, labels.get("cluster")): value
               for collect in routes.metrics_collectors()
               for name, _, _, labels, value in collect()}
    assert samples[("miniray_cluster_up", "arm")] == 1
    assert samples[("miniray_cluster_breaker_state", "x86")] == 0
    assert samples[("miniray_cluster_cpus_total", "arm")] == 1
    await asyncio.to_thread(mc.disconnect)
    assert not [r for r in routes.routes() if r.path.startswith("/api/clusters")]


def test_a_down_cluster_shows_no_current_nodes_or_cpus(node, ray_clusters):
    """While a cluster does not answer, status, the CLI and /metrics must not
    present its last poll's nodes and CPUs as current."""
    import signal

    from miniray.cluster import admin, cli

    arm = ray_clusters["arm"]
    connect(ray_clusters, include_local=False)

    def arm_status():
        return {c["name"]: c for c in mc.status()["clusters"]}["arm"]

    def arm_metrics():
        return {name: value for name, _, _, labels, value in admin.metrics()
                if labels.get("cluster") == "arm"}

    assert arm_status()["health"]["stale"] is False
    assert arm_metrics()["miniray_cluster_nodes"] == 1
    arm.signal(signal.SIGSTOP)  # hung: probes time out, the breaker opens
    try:
        deadline = time.monotonic() + 60
        while arm_status()["health"]["alive"] and time.monotonic() < deadline:
            time.sleep(0.2)
        health = arm_status()["health"]
        assert not health["alive"] and health["stale"], health
        assert health["nodes"] is None and health["total"] == {} and health["available"] == {}
        assert health["last_known"]["nodes"] == 1 and health["last_known"]["total"]["CPU"] == 1
        assert health["last_known"]["at"] <= health["checked_at"]
        samples = arm_metrics()
        assert samples["miniray_cluster_up"] == 0
        assert "miniray_cluster_nodes" not in samples
        assert "miniray_cluster_cpus_total" not in samples
        row = [line for line in cli.format_status(mc.status()).splitlines()
               if line.startswith("arm ")][0]
        assert " no " in row and "1/1" not in row and "0/1" not in row, row
    finally:
        arm.signal(signal.SIGCONT)
    deadline = time.monotonic() + 60
    while not arm_status()["health"]["alive"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert arm_status()["health"]["stale"] is False
    assert arm_metrics()["miniray_cluster_cpus_total"] == 1


def test_cli_against_a_live_admin_api(node, ray_clusters, capsys):
    from aiohttp import web

    from miniray.cluster import cli
    from miniray.dashboard import routes

    connect(ray_clusters)
    loop = asyncio.new_event_loop()
    seen_tokens = []

    @web.middleware
    async def record_token(request, handler):
        seen_tokens.append(request.headers.get("Authorization"))
        return await handler(request)

    app = web.Application(middlewares=[record_token])
    for route in routes.routes():
        if route.path.startswith("/api/clusters"):
            app.router.add_route(route.method, route.path, route.handler)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        assert cli.main(["clusters", "drain", "arm", "--address", url, "--token", "t0k"]) == 0
        assert cli.main(["clusters", "status", "--address", url]) == 0
        out = capsys.readouterr().out
        assert "arm" in out and "drained" in out and "x86" in out
        os.environ["MINIRAY_DASHBOARD_URL"] = url
        try:
            assert cli.main(["clusters", "undrain", "arm"]) == 0
            assert cli.main(["clusters", "drain", "nope"]) == 1
        finally:
            del os.environ["MINIRAY_DASHBOARD_URL"]
        assert "HTTP 404" in capsys.readouterr().err
        assert seen_tokens[0] == "Bearer t0k"
        assert mc.status()["clusters"][2]["state"] == "active"
        assert cli.main(["clusters", "status", "--address", "http://127.0.0.1:9"]) == 1
        assert "cannot reach the dashboard" in capsys.readouterr().err
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
