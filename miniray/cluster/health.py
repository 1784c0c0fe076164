"""The health monitor: polls every member's resources, node count, liveness
and latency on the control loop, and feeds the circuit breakers."""

from __future__ import annotations

import asyncio
import time


class HealthMonitor:
    """Polls each member every ``interval`` seconds (members are polled
    concurrently, so one slow cluster delays no other).

    ``on_change(member, opened)`` runs after each poll that changed something:
    ``opened`` is True when this poll opened the member's breaker.
    """

    def __init__(self, registry, settings, on_change):
        self.registry = registry
        self.interval = settings.health_interval
        self.timeout = settings.probe_timeout
        self.on_change = on_change
        self._task: asyncio.Task | None = None
        self._running: dict[str, asyncio.Task] = {}
        self._kick = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        tasks = [t for t in [self._task, *self._running.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def kick(self) -> None:
        """Poll every member now rather than at the next interval."""
        self._kick.set()

    async def _loop(self) -> None:
        while True:
            for member in self.registry:
                if member.name not in self._running and member.breaker.try_probe():
                    self._running[member.name] = asyncio.create_task(self._poll(member))
            self._kick.clear()
            try:
                await asyncio.wait_for(self._kick.wait(), self.interval)
            except asyncio.TimeoutError:
                pass

    async def check(self, member) -> dict:
        """Poll one member now (a forced check: also probes an open breaker)."""
        running = self._running.get(member.name)
        if running is None:
            if member.breaker.state == "open":
                member.breaker.state = "half_open"
            running = self._running[member.name] = asyncio.create_task(self._poll(member))
        await asyncio.shield(running)
        return member.snapshot()

    async def _poll(self, member) -> None:
        health = member.health
        try:
            result = await asyncio.wait_for(member.backend.probe(), self.timeout)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            health.checks += 1
            health.failures += 1
            health.alive = False
            health.checked_at = time.time()
            health.error = (f"no answer in {self.timeout:g}s"
                            if isinstance(exc, asyncio.TimeoutError)
                            else f"{type(exc).__name__}: {exc}")
            opened = member.breaker.record_failure(health.error)
            self.on_change(member, opened)
        else:
            health.checks += 1
            health.alive = True
            health.total = result.get("total", {})
            health.available = result.get("available", {})
            health.nodes = result.get("nodes", 0)
            health.latency_s = result.get("latency_s")
            health.checked_at = health.ok_at = time.time()
            health.error = None
            member.breaker.record_success()
            self.on_change(member, False)
        finally:
            self._running.pop(member.name, None)
