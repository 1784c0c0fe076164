"""Ray Tune's classic ``Experiment`` specs and ``run_experiments``."""

from __future__ import annotations

__all__ = ["Experiment", "run_experiments"]

_SPEC_KEYS = ("run", "stop", "time_budget_s", "config", "resources_per_trial", "num_samples",
              "storage_path", "local_dir", "sync_config", "checkpoint_config",
              "trial_name_creator", "trial_dirname_creator", "log_to_file", "export_formats",
              "max_failures", "restore")


class Experiment:
    """One experiment to run with :func:`run_experiments`: a name, a trainable
    (``run``: function, Trainable class or registered name) and ``tune.run``'s
    options (``stop``, ``config``, ``num_samples``, ``resources_per_trial``,
    ``storage_path``, ``checkpoint_config``, ``max_failures``...)."""

    def __init__(self, name: str, run, *, stop=None, time_budget_s=None, config=None,
                 resources_per_trial=None, num_samples: int = 1, storage_path=None,
                 storage_filesystem=None, sync_config=None, checkpoint_config=None,
                 trial_name_creator=None, trial_dirname_creator=None, log_to_file=False,
                 export_formats=None, max_failures: int = 0, restore=None, local_dir=None):
        from .trainable import resolve_trainable

        if not name or not isinstance(name, str):
            raise ValueError(f"Experiment needs a name, got {name!r}")
        self.name = name
        self.run = resolve_trainable(run)
        self.spec = {"stop": stop, "time_budget_s": time_budget_s, "config": config or {},
                     "resources_per_trial": resources_per_trial, "num_samples": num_samples,
                     "storage_path": storage_path or local_dir,
                     "checkpoint_config": checkpoint_config, "max_failures": max_failures,
                     "trial_name_creator": trial_name_creator,
                     "trial_dirname_creator": trial_dirname_creator}
        if isinstance(checkpoint_config, dict):
            from .config import CheckpointConfig

            self.spec["checkpoint_config"] = CheckpointConfig(**checkpoint_config)

    @classmethod
    def from_json(cls, name: str, spec: dict) -> "Experiment":
        """An Experiment from a dict spec ``{"run": fn, "config": {...}, ...}``."""
        if "run" not in spec:
            raise ValueError(f"experiment {name!r} has no 'run' entry (the trainable)")
        unknown = set(spec) - set(_SPEC_KEYS)
        if unknown:
            raise ValueError(f"experiment {name!r}: unknown keys {sorted(unknown)}; known: "
                             f"{list(_SPEC_KEYS)}")
        spec = dict(spec)
        return cls(name, spec.pop("run"), **spec)

    def __repr__(self):
        return f"Experiment({self.name!r}, {getattr(self.run, '__name__', self.run)!r})"


def run_experiments(experiments, scheduler=None, server_port=None, verbose=2,
                    progress_reporter=None, resume=False, resume_config=None,
                    reuse_actors=False, raise_on_failed_trial=True, concurrent=True,
                    callbacks=None):
    """Run experiments (an :class:`Experiment`, a list of them, or a dict
    ``{name: spec}``) with ``tune.run``; returns every trial.

    The experiments run one after the other (Ray's ``concurrent=True`` interleaves
    their trials in one loop; the trials and results are the same).
    """
    from .tuner import run

    if isinstance(experiments, Experiment):
        experiments = [experiments]
    elif isinstance(experiments, dict):
        experiments = [Experiment.from_json(name, spec) for name, spec in experiments.items()]
    elif not isinstance(experiments, (list, tuple)) or not all(
            isinstance(e, Experiment) for e in experiments):
        raise TypeError("experiments must be an Experiment, a list of them or a dict of specs")
    trials = []
    for experiment in experiments:
        spec = experiment.spec
        analysis = run(experiment.run, config=spec["config"], name=experiment.name,
                       stop=spec["stop"], time_budget_s=spec["time_budget_s"],
                       num_samples=spec["num_samples"], storage_path=spec["storage_path"],
                       resources_per_trial=spec["resources_per_trial"],
                       checkpoint_config=spec["checkpoint_config"],
                       max_failures=spec["max_failures"], scheduler=scheduler,
                       verbose=verbose, progress_reporter=progress_reporter, resume=resume,
                       raise_on_failed_trial=raise_on_failed_trial, callbacks=callbacks,
                       trial_name_creator=spec["trial_name_creator"],
                       trial_dirname_creator=spec["trial_dirname_creator"])
        trials.extend(analysis.trials)
    return trials
