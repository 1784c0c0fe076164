"""A circuit breaker per cluster: closed, open, half-open with one probe."""

from __future__ import annotations

import time

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops sending work to a cluster that keeps failing.

    Closed: work flows; ``failure_threshold`` consecutive failures open it.
    Open: no work; after ``reset_timeout`` seconds the next
    :meth:`try_probe` moves it to half-open and returns True once, so a single
    probe (a health check) tests the cluster. Half-open: a success closes it,
    a failure opens it again for another ``reset_timeout``.

    Not thread-safe: the control loop owns it. ``clock`` is injectable so
    tests can drive time.
    """

    def __init__(self, failure_threshold: int = 3, reset_timeout: float = 5.0, clock=None):
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if reset_timeout <= 0:
            raise ValueError("reset_timeout must be > 0")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock or time.monotonic
        self.state = CLOSED
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self.times_opened = 0
        self.last_error: str | None = None

    def allows_work(self) -> bool:
        """True when the cluster may take new work (closed only: half-open
        admits just the probe)."""
        return self.state == CLOSED

    def try_probe(self) -> bool:
        """True if a probe should run now: when closed (routine checks), or
        once when an open breaker's timeout has passed (moving to half-open)."""
        if self.state == OPEN and self._clock() - self.opened_at >= self.reset_timeout:
            self.state = HALF_OPEN
            return True
        return self.state == CLOSED

    def record_success(self) -> None:
        self.consecutive_failures = 0
        if self.state != CLOSED:
            self.state = CLOSED
            self.opened_at = None

    def record_failure(self, reason: str = "") -> bool:
        """Count a failure; returns True when this call opened the breaker."""
        self.last_error = reason or self.last_error
        self.consecutive_failures += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and
                                       self.consecutive_failures >= self.failure_threshold):
            self.trip()
            return True
        return False

    def trip(self) -> None:
        """Open now (e.g. the connection to the cluster is gone)."""
        if self.state != OPEN:
            self.times_opened += 1
        self.state = OPEN
        self.opened_at = self._clock()

    def snapshot(self) -> dict:
        return {"state": self.state, "consecutive_failures": self.consecutive_failures,
                "times_opened": self.times_opened, "last_error": self.last_error}
