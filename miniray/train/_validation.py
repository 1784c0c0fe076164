"""Ray Train v2's checkpoint validation: ``report(..., validation=True)`` runs
``ValidationConfig.fn(checkpoint, **fn_kwargs)`` as a task beside training;
the metrics it returns are merged into that checkpoint's reported metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ValidationConfig", "ValidationFn", "ValidationTaskConfig"]

# Where a worker's report carries its validation request to the driver.
REQUEST_KEY = "_miniray_validation"


class ValidationFn(Protocol):
    """A function that validates a checkpoint: ``fn(checkpoint, **kwargs) -> dict``."""

    def __call__(self, checkpoint, **kwargs: Any) -> dict:
        ...


@dataclass
class ValidationTaskConfig:
    """One validation, passed to ``report(validation=...)``.

    Args:
        fn_kwargs: keyword arguments for the validation function (JSON values);
            they override ``ValidationConfig.task_config``'s.
        timeout_s: seconds the validation task may take (``None``: no limit).
    """

    fn_kwargs: dict | None = None
    timeout_s: float | None = None

    def __post_init__(self):
        if self.fn_kwargs is None:
            self.fn_kwargs = {}
        if not isinstance(self.fn_kwargs, dict):
            raise TypeError(f"fn_kwargs must be a dict, got {self.fn_kwargs!r}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be None or greater than zero, got "
                             f"{self.timeout_s!r}")


class ValidationConfig:
    """How checkpoints are validated, passed to the trainer
    (``TorchTrainer(..., validation_config=ValidationConfig(fn))``).

    Args:
        fn: ``fn(checkpoint, **kwargs) -> dict`` of metrics, run as a miniray
            task for each checkpoint reported with ``validation``.
        task_config: default :class:`ValidationTaskConfig`.
        ray_remote_kwargs: options of the task (``num_cpus``, ``max_retries``...).
    """

    def __init__(self, fn: ValidationFn, task_config: ValidationTaskConfig | None = None,
                 ray_remote_kwargs: dict | None = None):
        if not callable(fn):
            raise TypeError(f"ValidationConfig(fn) takes a function, got {fn!r}")
        self.fn = fn
        self.task_config = task_config or ValidationTaskConfig()
        self.ray_remote_kwargs = dict(ray_remote_kwargs or {})


def request(validation, checkpoint) -> dict | None:
    """The request a worker's report carries (None: no validation)."""
    if validation is False or validation is None:
        return None
    if checkpoint is None:
        raise ValueError("report(validation=...) validates a checkpoint: pass checkpoint=")
    if validation is True:
        return {"fn_kwargs": {}, "timeout_s": None}
    if isinstance(validation, ValidationTaskConfig):
        return {"fn_kwargs": dict(validation.fn_kwargs), "timeout_s": validation.timeout_s}
    raise TypeError(f"validation must be a bool or a ValidationTaskConfig, got {validation!r}")


class Validator:
    """On the driver: runs the requested validations and merges their metrics."""

    def __init__(self, config: ValidationConfig | None):
        self.config = config
        self.pending: list = []  # (ref, metrics dict to update, deadline)

    def submit(self, checkpoint, metrics: dict, req: dict) -> None:
        import time

        import miniray

        if self.config is None:
            raise ValueError("report(validation=...) needs the trainer's validation_config="
                             "ValidationConfig(fn): none was given")
        kwargs = {**self.config.task_config.fn_kwargs, **req["fn_kwargs"]}
        timeout = req["timeout_s"] if req["timeout_s"] is not None else \
            self.config.task_config.timeout_s
        task = miniray.remote(**self.config.ray_remote_kwargs)(self.config.fn) \
            if self.config.ray_remote_kwargs else miniray.remote(self.config.fn)
        ref = task.remote(checkpoint, **kwargs)
        deadline = None if timeout is None else time.monotonic() + timeout
        self.pending.append((ref, metrics, deadline))

    def collect_ready(self, logger) -> bool:
        """Merge the validations already done, without waiting (between reports)."""
        import miniray

        if not self.pending:
            return False
        refs = [p[0] for p in self.pending]
        done, _ = miniray.api._wait_blocking(refs, num_returns=len(refs), timeout=0)
        done_ids = {ref.hex() for ref in done}
        ready = [p for p in self.pending if p[0].hex() in done_ids]
        self.pending = [p for p in self.pending if p[0].hex() not in done_ids]
        return self._merge(ready, logger)

    def collect(self, logger) -> bool:
        """Wait for every pending validation; True if some metrics changed."""
        pending, self.pending = self.pending, []
        return self._merge(pending, logger)

    def _merge(self, pending, logger) -> bool:
        import time

        import miniray

        changed = False
        for ref, metrics, deadline in pending:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                found = miniray.api._get_blocking(ref, timeout=timeout)
            except miniray.exceptions.GetTimeoutError:
                miniray.cancel(ref, force=True)
                logger.warning("a checkpoint validation ran past its timeout_s; cancelled")
                continue
            except Exception as exc:
                logger.warning("a checkpoint validation failed: %s", exc)
                continue
            if not isinstance(found, dict):
                logger.warning("the validation function returned %r, not a dict of "
                               "metrics; ignored", type(found).__name__)
                continue
            metrics.update({str(k): v for k, v in found.items()})
            changed = True
        return changed
