"""Trainables: the class API (``setup``/``step``/checkpoints) and the wrappers
``with_parameters`` and ``with_resources``."""

from __future__ import annotations

import inspect
import os
import pickle

__all__ = ["PlacementGroupFactory", "Trainable", "register_trainable", "with_parameters",
           "with_resources"]

# Trainables registered by name (this process): Tuner("name") and tune.run("name").
_REGISTRY: dict = {}


def register_trainable(name: str, trainable, warn: bool = True) -> None:
    """Register ``trainable`` (a function or a :class:`Trainable` subclass) under
    ``name``, so that ``Tuner(name)`` and ``tune.run(name)`` find it, as in Ray."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_trainable() needs a non-empty name, got {name!r}")
    if not callable(trainable) or (inspect.isclass(trainable)
                                   and not issubclass(trainable, Trainable)):
        raise TypeError(f"Second argument must be convertible to a Trainable: {trainable!r}")
    _REGISTRY[name] = trainable


def resolve_trainable(trainable):
    """A registered trainable for a name; anything else unchanged."""
    if isinstance(trainable, str):
        try:
            return _REGISTRY[trainable]
        except KeyError:
            raise ValueError(f"Unknown trainable {trainable!r}: register it first with "
                             f"tune.register_trainable({trainable!r}, fn). Registered: "
                             f"{sorted(_REGISTRY)}") from None
    return trainable


class PlacementGroupFactory:
    """Resources of one trial as bundles, as Ray Tune's ``PlacementGroupFactory``:
    ``PlacementGroupFactory([{"CPU": 1}, {"CPU": 2, "GPU": 1}])``.

    On one node a trial reserves the sum of its bundles (``required_resources``);
    ``strategy`` is kept for compatibility (every bundle is on this node anyway).
    Pass it to ``tune.with_resources`` or return it from
    ``Trainable.default_resource_request``.
    """

    def __init__(self, bundles: list, strategy: str = "PACK", *args, **kwargs):
        if not bundles or not all(isinstance(b, dict) for b in bundles):
            raise ValueError("PlacementGroupFactory needs a non-empty list of resource dicts, "
                             f"got {bundles!r}")
        self.bundles = [dict(b) for b in bundles]
        self.strategy = strategy
        self.head_bundle_is_empty = not any(self.bundles[0].values())

    @property
    def required_resources(self) -> dict:
        """The sum of the bundles: what the trial reserves."""
        total: dict = {}
        for bundle in self.bundles:
            for key, value in bundle.items():
                total[key] = total.get(key, 0) + value
        return total

    def __eq__(self, other):
        return isinstance(other, PlacementGroupFactory) and \
            (self.bundles, self.strategy) == (other.bundles, other.strategy)

    def __hash__(self):
        return hash((repr(self.bundles), self.strategy))

    def __repr__(self):
        return f"PlacementGroupFactory({self.bundles!r}, strategy={self.strategy!r})"


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

    # Ray's driver-facing methods: drive a trainable by hand (or in an actor), outside Tune.
    def train(self) -> dict:
        """Run one :meth:`step` and return its result with Tune's keys added
        (``training_iteration``, ``done``, ``time_this_iter_s``...)."""
        import time

        started = time.time()
        metrics = self.step()
        if not isinstance(metrics, dict):
            raise TypeError(f"{type(self).__name__}.step() must return a dict of metrics, got "
                            f"{type(metrics).__name__}")
        self._iteration += 1
        now = time.time()
        self._time_total = getattr(self, "_time_total", 0.0) + (now - started)
        result = dict(metrics)
        result.setdefault("done", False)
        result.update(training_iteration=self._iteration, time_this_iter_s=now - started,
                      time_total_s=self._time_total, timestamp=int(now),
                      trial_id=self.trial_id, pid=os.getpid())
        return result

    def save(self, checkpoint_dir: str | None = None):
        """Save a checkpoint (in ``checkpoint_dir``, or a new temporary directory);
        returns it as a :class:`~miniray.tune.Checkpoint`, with the iteration."""
        import json
        import tempfile

        from .checkpoint import Checkpoint
        from .session import _META

        path = self._save(checkpoint_dir or tempfile.mkdtemp(prefix="checkpoint_"))
        with open(os.path.join(path, _META), "w") as f:
            json.dump({"training_iteration": self._iteration,
                       "time_total_s": getattr(self, "_time_total", 0.0)}, f)
        return Checkpoint(path)

    def restore(self, checkpoint) -> None:
        """Load a checkpoint :meth:`save` made (a Checkpoint or its path), iteration
        count included."""
        from .session import read_checkpoint_meta

        path = os.fspath(getattr(checkpoint, "path", checkpoint))
        self._restore(path)
        meta = read_checkpoint_meta(path)
        self._iteration = meta.get("training_iteration", self._iteration)
        self._time_total = meta.get("time_total_s", getattr(self, "_time_total", 0.0))

    def stop(self) -> None:
        """Release resources (calls :meth:`cleanup`)."""
        self.cleanup()

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


class _Parameters:
    """The values given to ``with_parameters``, kept on the trainable it returns.

    Tune puts them in the object store once per session and passes the refs to each
    trial task, so each worker reads them from shared memory; the trial runner sets
    them in :data:`_IN_TRIAL` (by ``key``) before calling the trainable. Pickled
    (e.g. with the trainable, or by ``miniray.remote``), only the refs travel.
    """

    def __init__(self, values: dict):
        import uuid

        self.key = uuid.uuid4().hex
        self.names = list(values)
        self._values = dict(values)
        self._refs = None  # (client, refs): put once per session

    def names_and_refs(self):
        """Put the values in the object store once per session; return ``(names, refs)``."""
        from .. import api
        from .._core.refs import get_client

        if self._values is None:  # an unpickled copy: its refs are all it has
            return self.names, self._refs[1]
        client = get_client()
        if self._refs is None or self._refs[0] is not client:
            self._refs = (client, [api.put(self._values[n]) for n in self.names])
        return self.names, self._refs[1]

    def get(self) -> dict:
        """The values: in a trial from the runner, on the driver from memory, elsewhere
        from the object store."""
        found = _IN_TRIAL.get(self.key)
        if found is not None:
            return found
        if self._values is not None:
            return self._values
        from .. import api

        return dict(zip(self.names, api._get_blocking(self._refs[1])))

    def __getstate__(self):
        from .._core.refs import get_client

        try:
            live = get_client() is not None
        except Exception:
            live = False
        if not live:  # no session: the values themselves travel
            return {"key": self.key, "names": self.names, "_values": self._values,
                    "_refs": None}
        names, refs = self.names_and_refs()
        return {"key": self.key, "names": names, "_values": None, "_refs": (None, refs)}


# Parameter values of the trial running in this process, by _Parameters.key.
_IN_TRIAL: dict = {}


def with_parameters(trainable, **kwargs):
    """Pass large objects (data sets, models) to every trial through the object store.

    As in Ray, this returns a trainable of the same kind: for a function, a new
    function ``fn(config)`` (named like ``trainable``) that calls
    ``trainable(config, **kwargs)``; for a :class:`Trainable` subclass, a subclass
    whose ``setup(config)`` calls ``setup(config, **kwargs)``. The values are stored
    once when the experiment starts and each trial reads them from shared memory,
    instead of pickling them into every trial. A ``with_resources`` request on
    ``trainable`` is kept.
    """
    if not callable(trainable) or (inspect.isclass(trainable)
                                   and not issubclass(trainable, Trainable)):
        raise ValueError(f"tune.with_parameters() only works with function trainables or "
                         f"classes that inherit from tune.Trainable; got {trainable!r}")
    params = _Parameters(kwargs)
    name = getattr(trainable, "__name__", "tune_with_parameters")
    if inspect.isclass(trainable):
        class _Inner(trainable):
            def setup(self, config, **more):
                super().setup(config, **params.get(), **more)

        _Inner.__name__ = _Inner.__qualname__ = name
        _Inner.__module__ = trainable.__module__
        _Inner.__doc__ = trainable.__doc__
        wrapped = _Inner
    else:
        def inner(config):
            return trainable(config, **params.get())

        inner.__name__ = inner.__qualname__ = name
        inner.__doc__ = getattr(trainable, "__doc__", None)
        if hasattr(trainable, "_resources"):
            inner._resources = trainable._resources
        wrapped = inner
    wrapped.__tune_parameters__ = params
    return wrapped


def with_resources(trainable, resources):
    """Set the resources each trial needs: ``{"cpu": 2, "gpu": 1}`` (custom resources by
    name), a :class:`PlacementGroupFactory`, or a function ``config -> dict``.

    As in Ray, a function trainable is returned itself, with its ``_resources``
    attribute set (a bound method is wrapped in a function first, since methods take
    no attributes); a :class:`Trainable` subclass gets a subclass (same name) whose
    ``default_resource_request`` returns ``resources``.
    """
    if not callable(trainable) or (inspect.isclass(trainable)
                                   and not issubclass(trainable, Trainable)):
        raise ValueError(f"tune.with_resources() only works with function trainables or "
                         f"classes that inherit from tune.Trainable; got {trainable!r}")
    pgf = hasattr(resources, "required_resources")  # kept as given, as Ray does
    if not (isinstance(resources, dict) or callable(resources) or pgf):
        raise ValueError(f"Invalid resource type for with_resources(): "
                         f"{type(resources).__name__}; use a dict like {{'cpu': 2}}, a "
                         "PlacementGroupFactory or a function of config")
    if isinstance(resources, dict) or pgf:
        normalize_resources(resources)  # reject bad values now
    if inspect.isclass(trainable):
        class ResourceTrainable(trainable):
            @classmethod
            def default_resource_request(cls, config):
                return resources(config) if callable(resources) else resources

        ResourceTrainable.__name__ = trainable.__name__
        ResourceTrainable.__qualname__ = trainable.__qualname__
        ResourceTrainable.__module__ = trainable.__module__
        return ResourceTrainable
    if inspect.ismethod(trainable):
        method = trainable

        def trainable(config):
            return method(config)

        trainable.__name__ = trainable.__qualname__ = method.__name__
    try:
        trainable._resources = resources
    except AttributeError as exc:
        raise RuntimeError("Could not use tune.with_resources() on this trainable (it takes "
                           "no attributes); wrap it in a regular function first.") from exc
    return trainable


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
    """``(trainable, parameter names, parameter refs, resources)`` for the controller."""
    params = getattr(trainable, "__tune_parameters__", None)
    names, refs = params.names_and_refs() if params is not None else ([], [])
    resources = None if inspect.isclass(trainable) else getattr(trainable, "_resources", None)
    return trainable, names, refs, resources
