"""Two real Ray clusters for the whole session, on 127.0.0.1 only.

``x86`` (custom resource ``x86_64``, with the Ray dashboard for jobs) and
``arm`` (``arm64``, no dashboard) stand for two machines of different
architectures. Both use Ray token authentication, each with its own token
(one from a file, one from the environment). Each ``ray start`` runs in a
process group of its own; teardown kills exactly those PIDs.
"""

from __future__ import annotations

import gc
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

import miniray
from miniray.cluster import ClusterConfig, Settings

from ..conftest import iter_processes

RAY = os.path.join(os.path.dirname(sys.executable), "ray")
PORTS_PER_CLUSTER = 10


def _free_base(start: int) -> int:
    """A base port with PORTS_PER_CLUSTER free ports above it (plus worker ports)."""
    for base in range(start, start + 5000, 250):
        ok = True
        for port in list(range(base, base + PORTS_PER_CLUSTER)) + [base + 100, base + 199]:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range for a test Ray cluster")


@dataclass
class RayCluster:
    name: str
    resource: str
    base: int
    temp_dir: str
    token: str
    token_path: str | None = None
    dashboard: bool = False
    process: subprocess.Popen | None = None
    pgid: int | None = None
    pids: set = field(default_factory=set)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.base}"

    @property
    def client_address(self) -> str:
        return f"ray://127.0.0.1:{self.base + 2}"

    @property
    def dashboard_url(self) -> str | None:
        return f"http://127.0.0.1:{self.base + 1}" if self.dashboard else None

    def env(self) -> dict:
        env = dict(os.environ)
        # Ray maps 127.0.0.1 to the machine's routable address unless told
        # this is a single-machine cluster; the tests must stay on loopback.
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        env["RAY_AUTH_MODE"] = "token"
        env.pop("RAY_AUTH_TOKEN", None)
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        if self.token_path:
            env["RAY_AUTH_TOKEN_PATH"] = self.token_path
        else:
            env["RAY_AUTH_TOKEN"] = self.token
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        # CI machines are small and busy: give Ray's agents time to come up.
        env["RAY_agent_register_timeout_ms"] = "90000"
        return env

    def start(self) -> None:
        b = self.base
        cmd = [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={b}",
               "--num-cpus=1", f'--resources={{"{self.resource}": 4}}',
               f"--include-dashboard={'true' if self.dashboard else 'false'}",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={b + 1}",
               f"--ray-client-server-port={b + 2}", f"--dashboard-agent-listen-port={b + 3}",
               f"--dashboard-agent-grpc-port={b + 4}", f"--runtime-env-agent-port={b + 5}",
               f"--metrics-export-port={b + 6}", f"--node-manager-port={b + 7}",
               f"--object-manager-port={b + 8}", f"--min-worker-port={b + 100}",
               f"--max-worker-port={b + 199}", f"--temp-dir={self.temp_dir}",
               "--disable-usage-stats", "--object-store-memory=100000000"]
        self.process = subprocess.Popen(cmd, env=self.env(), start_new_session=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.pgid = self.process.pid

    def wait_started(self, timeout: float = 120) -> None:
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        if self.process.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start for {self.name} failed:\n{out.decode()[-3000:]}")
        self._collect()

    def _collect(self) -> None:
        self.pids |= set(_group_pids(self.pgid))

    def group_pids(self) -> list:
        return _group_pids(self.pgid)

    def signal(self, sig) -> None:
        for pid in self.group_pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """Kill every process of this cluster by PID and wait until they are gone."""
        self._collect()
        pids = self.group_pids()
        for sig in (signal.SIGCONT, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        while self.group_pids() and time.monotonic() < deadline:
            time.sleep(0.1)

    def config(self, **overrides) -> ClusterConfig:
        fields = dict(name=self.name, address=self.address, tags=[self.resource],
                      dashboard=self.dashboard_url)
        if self.token_path:
            fields["auth_token_path"] = self.token_path
        else:
            fields["auth_token"] = self.token
        fields.update(overrides)
        return ClusterConfig(**fields)


def _group_pids(pgid: int) -> list:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


@pytest.fixture(scope="session")
def ray_clusters(tmp_path_factory):
    """The two clusters, started in parallel; stopped by PID at the end."""
    root = tmp_path_factory.mktemp("ray")
    token_path = root / "x86_token"
    token_path.write_text(secrets.token_hex(32))
    first = _free_base(41000)
    clusters = {
        "x86": RayCluster("x86", "x86_64", first, str(root / "x86"), token_path.read_text(),
                          token_path=str(token_path), dashboard=True),
        "arm": RayCluster("arm", "arm64", _free_base(first + 500), str(root / "arm"),
                          secrets.token_hex(32)),
    }
    try:
        for cluster in clusters.values():
            cluster.start()
        for cluster in clusters.values():
            cluster.wait_started()
        yield clusters
    finally:
        for cluster in clusters.values():
            cluster.stop()
        leftovers = {name: c.group_pids() for name, c in clusters.items() if c.group_pids()}
        assert not leftovers, f"Ray processes left behind: {leftovers}"


FAST = Settings(health_interval=0.3, probe_timeout=3.0, breaker_failures=2,
                breaker_reset=1.0, backoff_base=0.05, backoff_cap=0.5, connect_timeout=60.0)


@pytest.fixture
def node():
    """A local miniray node; the control plane is disconnected by shutdown."""
    miniray.init(num_cpus=2, object_store_memory=128 << 20)
    try:
        yield miniray
    finally:
        gc.collect()
        miniray.shutdown()
        assert_no_drivers()


def driver_pids() -> list:
    """This process's cluster driver processes still alive."""
    me = os.getpid()
    return [pid for pid, cmd, stat in iter_processes()
            if b"miniray.cluster._ray_driver" in cmd and int(stat[1]) == me and stat[0] != "Z"]


def assert_no_drivers() -> None:
    deadline = time.monotonic() + 10
    while driver_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not driver_pids(), f"cluster driver processes left behind: {driver_pids()}"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: restarts a Ray cluster (run in CI; skip locally with -m 'not slow')")
