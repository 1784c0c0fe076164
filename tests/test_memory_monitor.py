"""Ray's memory monitor: above ``memory_usage_threshold`` the node kills the
worker running the newest task, which fails with ``OutOfMemoryError`` (or is
retried while it has retries)."""

from __future__ import annotations

import pytest

from miniray import exceptions
from miniray._core.node.memory_monitor import memory_usage, settings

_GIB = 1 << 30


def _threshold_just_above_now(margin_bytes: int) -> float:
    used, total = memory_usage()
    return min(0.99, (used + margin_bytes) / total)


def _hog(n_bytes):
    import time

    import numpy as np

    block = np.ones(n_bytes // 8)  # written, so really resident
    time.sleep(60)
    return int(block[0])


def test_a_task_crossing_the_threshold_is_killed_with_out_of_memory_error(ray_factory):
    used, total = memory_usage()
    if total - used < 3 * _GIB:
        pytest.skip("needs 3 GiB of free memory")
    threshold = _threshold_just_above_now(_GIB // 2)
    ray = ray_factory(_system_config={"memory_usage_threshold": threshold,
                                      "memory_monitor_refresh_ms": 100})
    hog = ray.remote(max_retries=0)(_hog)
    with pytest.raises(exceptions.OutOfMemoryError, match="memory_usage_threshold") as info:
        ray.get(hog.remote(2 * _GIB), timeout=60)
    assert "_hog" in str(info.value)
    assert not isinstance(info.value, exceptions.WorkerCrashedError)
    # The node goes on: small work still runs (below the threshold again).
    assert ray.get(ray.remote(lambda: 7).remote(), timeout=60) == 7


def test_memory_monitor_settings_are_checked():
    assert settings(None)[0] == 0.95 and settings(None)[1] == 250
    assert settings({"memory_monitor_refresh_ms": 0})[1] == 0
    with pytest.raises(ValueError, match="memory_usage_threshold must be in"):
        settings({"memory_usage_threshold": 1.5})
    used, total = memory_usage()
    assert 0 < used < total
