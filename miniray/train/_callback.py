"""``UserCallback``: driver-side hooks of a training run (Ray Train v2's callback API)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TrainRunContext", "UserCallback"]


@dataclass
class TrainRunContext:
    """What a callback learns about the run it is called for."""

    run_config: object
    scaling_config: object = None
    train_loop_config: dict | None = None
    run_dir: str | None = None
    metadata: dict = field(default_factory=dict)

    def get_run_config(self):
        """The run's :class:`~miniray.train.RunConfig`."""
        return self.run_config


class UserCallback:
    """Override the hooks you need; pass instances in ``RunConfig(callbacks=[...])``.

    Hooks run on the driver (in ``fit()``'s process). An exception raised by a hook
    ends the run with :class:`~miniray.train.ControllerError`.
    """

    def after_report(self, run_context: TrainRunContext, metrics: list, checkpoint):
        """Every worker reported: ``metrics`` has one dict per world rank (rank 0
        first), ``checkpoint`` is the persisted checkpoint or ``None``."""

    def after_exception(self, run_context: TrainRunContext, worker_exceptions: dict):
        """Workers failed: ``{world_rank: exception}`` (before a restart, if any)."""
