"""Trainables: the class API (``setup``/``step``/checkpoints) and the wrappers
``with_parameters`` and ``with_resources``."""

from __future__ import annotations

import inspect
import os
import pickle

__all__ = ["Trainable", "with_parameters", "with_resources"]


class Trainable:
    """Base class of class trainables (Ray Tune's class API).

    Override :meth:`setup` (called with the trial's config), :meth:`step`
    (one training iteration; returns a dict of metrics, with ``done: True`` to
    finish), and for checkpointing :meth:`save_checkpoint` /
    :meth:`load_checkpoint`. Tune calls ``step`` until a stopper or scheduler
    ends the trial, or ``step`` returns ``done``.

    Example::

        class MyTrainable(tune.Trainable):
            def setup(self, config):
                self.x = 0
            def step(self):
                self.x += self.config["lr"]
                return {"score": self.x}
    """

    def __init__(self, config: dict | None = None, **kwargs):
        self.config = dict(config or {})
        self._iteration = 0
        self._trial_info = kwargs.pop("_trial_info", {})
        self.setup(dict(self.config), **kwargs)

    @property
    def iteration(self) -> int:
        """Iterations completed so far (restored ones included)."""
        return self._iteration

    training_iteration = iteration

    @property
    def trial_id(self) -> str:
        """The trial's id."""
        return self._trial_info.get("trial_id", "default")

    @property
    def trial_name(self) -> str:
        """The trial's name."""
        return self._trial_info.get("trial_name", "default")

    @property
    def logdir(self) -> str:
        """The trial's directory."""
        return self._trial_info.get("trial_dir", os.getcwd())

    trial_dir = logdir

    def setup(self, config: dict, **kwargs) -> None:
        """Prepare the trial (build the model, load data...)."""

    def step(self) -> dict:
        """Run one iteration and return its metrics."""
        raise NotImplementedError(f"{type(self).__name__} must implement step()")

    def save_checkpoint(self, checkpoint_dir: str) -> dict | None:
        """Save state into ``checkpoint_dir`` (or return a dict, which Tune pickles there)."""
        return None

    def load_checkpoint(self, checkpoint) -> None:
        """Restore state: ``checkpoint`` is the dict ``save_checkpoint`` returned, or the
        checkpoint directory if it returned None."""

    def cleanup(self) -> None:
        """Release resources when the trial ends."""

    def reset_config(self, new_config: dict) -> bool:
        """Switch to ``new_config`` in place; return True if supported (not required)."""
        return False

    @classmethod
    def default_resource_request(cls, config: dict):
        """Resources one trial needs, e.g. ``{"cpu": 2}`` (None: Tune's default)."""
        return None

    # Used by the trial runner.
    def _save(self, checkpoint_dir: str) -> str:
        os.makedirs(checkpoint_dir, exist_ok=True)
        data = self.save_checkpoint(checkpoint_dir)
        if data is not None:
            if not isinstance(data, dict):
                raise TypeError(f"save_checkpoint must return None or a dict, got "
                                f"{type(data).__name__}")
            with open(os.path.join(checkpoint_dir, "checkpoint_dict.pkl"), "wb") as f:
                pickle.dump(data, f)
        return checkpoint_dir

    def _restore(self, checkpoint_dir: str) -> None:
        dict_file = os.path.join(checkpoint_dir, "checkpoint_dict.pkl")
        if os.path.exists(dict_file):
            with open(dict_file, "rb") as f:
                self.load_checkpoint(pickle.load(f))
        else:
            self.load_checkpoint(checkpoint_dir)


def is_class_trainable(trainable) -> bool:
    """True for a subclass of :class:`Trainable`."""
    return inspect.isclass(trainable) and issubclass(trainable, Trainable)


class _Wrapped:
    """A trainable with extra attributes (parameters or resources), still callable."""

    def __init__(self, trainable, parameters=None, resources=None):
        inner = trainable
        if isinstance(trainable, _Wrapped):
            parameters = {**trainable._parameters, **(parameters or {})}
            resources = resources if resources is not None else trainable._resources
            inner = trainable._trainable
        self._trainable = inner
        self._parameters = dict(parameters or {})
        self._resources = resources
        self._refs = None  # (client, names, refs): put once per node
        self.__name__ = getattr(inner, "__name__", type(inner).__name__)
        self.__doc__ = getattr(inner, "__doc__", None)

    def __call__(self, config, **kwargs):
        # Calling it directly (outside Tune) works like the wrapped function.
        return self._trainable(config, **{**self._parameters, **kwargs})

    def _parameter_refs(self):
        """Put the parameters in the object store once; return ``(names, refs)``."""
        from .. import api
        from .._core.refs import get_client

        client = get_client()
        if self._refs is None or self._refs[0] is not client:
            names = list(self._parameters)
            refs = [api.put(self._parameters[n]) for n in names]
            self._refs = (client, names, refs)
        return self._refs[1], self._refs[2]

    def __getstate__(self):
        # The parameter values travel through the object store, never in the pickle.
        return {"_trainable": self._trainable, "_parameters": {k: None for k in self._parameters},
                "_resources": self._resources, "_refs": None, "__name__": self.__name__,
                "__doc__": self.__doc__}


def with_parameters(trainable, **kwargs):
    """Pass large objects (data sets, models) to every trial through the object store.

    The values are stored once when the experiment starts and each trial reads
    them from shared memory, instead of pickling them into every trial:
    ``fn(config, **kwargs)`` for functions, ``setup(config, **kwargs)`` for
    class trainables.
    """
    if not callable(trainable):
        raise TypeError(f"with_parameters() needs a trainable, got {type(trainable).__name__}")
    return _Wrapped(trainable, parameters=kwargs)


def with_resources(trainable, resources):
    """Set the resources each trial needs: ``{"cpu": 2, "gpu": 1}`` (custom resources by
    name), or a function ``config -> dict``."""
    if not callable(trainable):
        raise TypeError(f"with_resources() needs a trainable, got {type(trainable).__name__}")
    if not (isinstance(resources, dict) or callable(resources)):
        raise TypeError("with_resources() needs a dict like {'cpu': 2} or a function of config")
    if isinstance(resources, dict):
        normalize_resources(resources)  # reject bad values now
    return _Wrapped(trainable, resources=resources)


def normalize_resources(resources) -> dict:
    """``{"cpu": 2, "gpu": 0.5, "custom": 1}`` -> task options ``{"num_cpus": ...}``."""
    if resources is None:
        return {"num_cpus": 1}
    if hasattr(resources, "required_resources"):  # a PlacementGroupFactory-like object
        resources = resources.required_resources
    if not isinstance(resources, dict):
        raise TypeError(f"trial resources must be a dict like {{'cpu': 1}}, got "
                        f"{type(resources).__name__}")
    out = {"num_cpus": 1, "num_gpus": 0}
    custom = {}
    for key, value in resources.items():
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"trial resource {key!r} must be a non-negative number, got "
                             f"{value!r}")
        low = key.lower()
        if low in ("cpu", "num_cpus"):
            out["num_cpus"] = value
        elif low in ("gpu", "num_gpus"):
            out["num_gpus"] = value
        elif low in ("memory", "extra_cpu", "extra_gpu"):
            continue
        else:
            custom[key] = value
    if custom:
        out["resources"] = custom
    return out


def unwrap(trainable):
    """``(inner trainable, parameter names, parameter refs, resources)``."""
    if isinstance(trainable, _Wrapped):
        names, refs = trainable._parameter_refs()
        return trainable._trainable, names, refs, trainable._resources
    return trainable, [], [], None
