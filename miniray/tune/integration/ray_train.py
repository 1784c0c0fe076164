"""Train inside Tune (``ray.tune.integration.ray_train``): a trainer run from a Tune
function trainable reports each of its reports to the trial.

::

    from miniray.tune.integration.ray_train import TuneReportCallback

    def driver(config):
        trainer = TorchTrainer(loop, train_loop_config=config,
                               scaling_config=train.ScalingConfig(num_workers=2),
                               run_config=train.RunConfig(callbacks=[TuneReportCallback()]))
        trainer.fit()

    tune.Tuner(tune.with_resources(driver, {"cpu": 0}), param_space=...).fit()
"""

from __future__ import annotations

__all__ = ["CHECKPOINT_PATH_KEY", "TuneReportCallback"]

CHECKPOINT_PATH_KEY = "checkpoint_path"


def _in_tune_trial() -> bool:
    from ...train._tune import in_tune_trial

    return in_tune_trial()


from ...train._callback import UserCallback  # noqa: E402 (light: no torch)


class TuneReportCallback(UserCallback):
    """A Train ``UserCallback`` that reports rank 0's metrics of every Train report to
    the Tune trial it runs in, with the persisted checkpoint's path under
    ``"checkpoint_path"`` (as in Ray, the checkpoint itself is not reported again: it
    is already in the run's storage).

    Raises ``RuntimeError`` when created outside a Tune trial.
    """

    def __init__(self):
        if not _in_tune_trial():
            raise RuntimeError("TuneReportCallback must be used in a Tune session: create it "
                               "inside the function trainable that runs trainer.fit().")

    def after_report(self, run_context, metrics: list, checkpoint):
        from ... import tune

        out = dict(metrics[0])
        if checkpoint is not None:
            out[CHECKPOINT_PATH_KEY] = checkpoint.path
        tune.report(out)

    def after_exception(self, run_context, worker_exceptions: dict):
        """Nothing to report: the trial fails with the trainer's exception."""
