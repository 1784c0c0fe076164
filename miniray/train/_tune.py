"""A trainer as a ``miniray.tune`` trainable.

``miniray.tune`` is built separately and may be absent; everything here finds
it at call time through ``sys.modules``/import, so ``miniray.train`` works
without it.
"""

from __future__ import annotations

import copy
import dataclasses


def _tune_module():
    try:
        import miniray.tune as tune
    except ImportError:
        return None
    return tune


def in_tune_trial() -> bool:
    """True inside a function trainable that ``miniray.tune`` is running."""
    import sys

    tune = sys.modules.get("miniray.tune")
    if tune is None:
        return False
    return _trial_context(tune) is not None


def _trial_context(tune):
    get_context = getattr(tune, "get_context", None)
    if get_context is None:
        return None
    try:
        context = get_context()
    except Exception:  # outside a trial
        return None
    if context is None:
        return None
    trial_id = getattr(context, "get_trial_id", lambda: None)()
    return context if trial_id else None


def _call(context, name, default=None):
    try:
        return getattr(context, name)()
    except Exception:
        return default


def _tune_checkpoint(tune, checkpoint):
    """``checkpoint`` as the tune module expects it (it may share our class)."""
    tune_cls = getattr(tune, "Checkpoint", None)
    if checkpoint is None or tune_cls is None or isinstance(checkpoint, tune_cls):
        return checkpoint
    return tune_cls.from_directory(checkpoint.path)


def as_trainable(trainer):
    """A function trainable ``fn(config)`` that runs ``trainer.fit()`` for one trial.

    The trial's config updates the trainer's ``train_loop_config``: either
    under a ``"train_loop_config"`` key (Ray's ``param_space`` layout) or, when
    there is no such key, the whole config. A ``"scaling_config"`` entry
    replaces the trainer's ScalingConfig. Inside a ``miniray.tune`` trial,
    every report of the run (rank 0's metrics and the checkpoint) is
    forwarded to ``miniray.tune.report``, the run is named after the trial,
    and a trial restored from a checkpoint resumes from it. Outside tune the
    function returns the :class:`~miniray.train.Result`.

    The trial itself only waits for the workers: give it no CPU of its own
    (for example ``tune.with_resources(fn, {"cpu": 0})``) so that the workers
    the trainer starts find free CPUs. ``fn.trainer_resources`` tells what
    the worker group reserves.
    """
    from ._config import ScalingConfig

    def train_func(config: dict | None = None):
        config = dict(config or {})
        t = copy.copy(trainer)
        loop_config = dict(trainer.train_loop_config or {})
        scaling = config.pop("scaling_config", None)
        if isinstance(scaling, ScalingConfig):
            t.scaling_config = scaling
        if isinstance(config.get("train_loop_config"), dict):
            loop_config.update(config["train_loop_config"])
        else:
            loop_config.update(config)
        t.train_loop_config = loop_config
        tune = _tune_module()
        context = _trial_context(tune) if tune is not None else None
        if context is not None:
            trial = _call(context, "get_trial_name") or _call(context, "get_trial_id")
            base = trainer.run_config.name or type(trainer).__name__
            t.run_config = dataclasses.replace(
                trainer.run_config, name=f"{base}_{trial}",
                storage_path=trainer.run_config.storage_path or _call(context, "get_trial_dir"))
            restored = getattr(tune, "get_checkpoint", lambda: None)()
            if restored is not None:
                from ._checkpoint import Checkpoint

                t.resume_from_checkpoint = Checkpoint(getattr(restored, "path", restored))

            def forward(metrics, checkpoint):
                tune.report(metrics, checkpoint=_tune_checkpoint(tune, checkpoint))

            t._report_callback = forward
            t.fit()
            return None
        return t.fit()

    train_func.__name__ = f"{type(trainer).__name__}_trainable"
    train_func.__qualname__ = train_func.__name__
    train_func.trainer_resources = trainer.scaling_config.total_resources
    return train_func
