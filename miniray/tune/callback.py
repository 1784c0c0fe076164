"""``tune.Callback``: hooks into the experiment loop (Ray Tune's ``ray.tune.Callback``).

The controller calls each hook of every callback in ``RunConfig(callbacks=[...])``, in
order, on the driver, with keyword arguments (as Ray does), so a hook may take only the
ones it needs plus ``**info``.
"""

from __future__ import annotations

__all__ = ["Callback"]


class Callback:
    """Base class of Tune callbacks: override the hooks you need.

    ``iteration`` is the number of steps of the experiment loop so far (one step waits
    for the next result or trial end), ``trials`` every trial so far, ``trial`` the one
    the event is about (its ``trial_id``, ``config``, ``status``, ``last_result``,
    ``local_path``...).

    Example::

        class Best(tune.Callback):
            def on_trial_result(self, iteration, trials, trial, result, **info):
                print(trial.trial_id, result["loss"])

        tune.Tuner(fn, run_config=tune.RunConfig(callbacks=[Best()])).fit()
    """

    def setup(self, stop=None, num_samples: int | None = None,
              total_num_samples: int | None = None, **info):
        """Called once before the first trial starts."""

    def on_step_begin(self, iteration: int, trials: list, **info):
        """Called at the start of each step of the experiment loop."""

    def on_step_end(self, iteration: int, trials: list, **info):
        """Called at the end of each step of the experiment loop."""

    def on_trial_start(self, iteration: int, trials: list, trial, **info):
        """A trial was started (first time, or again after PBT exploited it)."""

    def on_trial_restore(self, iteration: int, trials: list, trial, **info):
        """A trial was started again from its checkpoint."""

    def on_trial_save(self, iteration: int, trials: list, trial, **info):
        """A trial saved a checkpoint (called before ``on_checkpoint``)."""

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info):
        """A trial reported a result (``result`` has the auto-filled keys too)."""

    def on_trial_complete(self, iteration: int, trials: list, trial, **info):
        """A trial finished without error."""

    def on_trial_recover(self, iteration: int, trials: list, trial, **info):
        """A trial failed and will be retried (``FailureConfig(max_failures=...)``)."""

    def on_trial_error(self, iteration: int, trials: list, trial, **info):
        """A trial failed for good (``trial.error`` holds the exception)."""

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info):
        """A trial reported a checkpoint (a :class:`~miniray.tune.Checkpoint`)."""

    def on_experiment_end(self, trials: list, **info):
        """Called once after every trial ended (also when the experiment was stopped)."""

    def get_state(self) -> dict | None:
        """State to save with the experiment (None: nothing)."""
        return None

    def set_state(self, state: dict):
        """Restore what :meth:`get_state` returned, when the experiment is restored."""
