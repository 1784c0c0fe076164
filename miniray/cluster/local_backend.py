"""The embedded local node as a member of the pool."""

from __future__ import annotations


class LocalBackend:
    """Runs work on the local node through the core's normal path (the
    router lets the call through). Health is the node's own resources."""

    kind = "local"
    info = {"backend": "miniray"}

    def __init__(self):
        self.connected = True

    async def connect(self) -> dict:
        return self.info

    async def probe(self) -> dict:
        import time

        from ..api import available_resources, cluster_resources

        started = time.perf_counter()
        return {"total": cluster_resources(), "available": available_resources(), "nodes": 1,
                "latency_s": time.perf_counter() - started}

    def disconnect(self, reason: str = "") -> None:
        pass

    async def close(self) -> None:
        pass
