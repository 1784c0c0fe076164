"""``OptunaSearch``: Optuna samplers as a Tune searcher, and Optuna pruners stopping trials
from their intermediate results (which Ray Tune's integration leaves unused)."""

from __future__ import annotations

import importlib
import math
import threading
import warnings

from . import sample
from .searcher import Searcher, _check_mode

__all__ = ["OptunaSearch"]


def _optuna():
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("OptunaSearch needs Optuna: pip install 'miniray[tune]'") from exc
    return optuna


def to_distributions(space) -> tuple[dict, list]:
    """Translate a Tune param_space into ``({name: optuna distribution}, post)``.

    ``post`` lists ``(name, q)`` pairs to round after sampling, for quantized log domains,
    which Optuna cannot express (its ``step`` and ``log`` exclude each other).
    """
    optuna = _optuna()
    dist = optuna.distributions
    grids, domains = sample.parse_space(space)
    if grids:
        names = ", ".join("/".join(map(str, p)) for p, _ in grids)
        raise ValueError(f"OptunaSearch cannot search grid_search axes ({names}); use "
                         "tune.choice(...) instead, or the default search algorithm for grids.")
    out, post = {}, []
    for path, domain in domains:
        name = "/".join(map(str, path))
        if isinstance(domain, sample.Function):
            continue  # computed from the sampled values after Optuna's suggestion
        if isinstance(domain, sample.Float):
            if domain.q is not None and domain.log:
                out[name] = dist.FloatDistribution(domain.lower, domain.upper, log=True)
                post.append((name, domain.q))
            elif domain.q is not None:
                high = domain.lower + math.floor(
                    round((domain.upper - domain.lower) / domain.q, 9)) * domain.q
                out[name] = dist.FloatDistribution(domain.lower, high, step=domain.q)
            else:
                out[name] = dist.FloatDistribution(domain.lower, domain.upper, log=domain.log)
        elif isinstance(domain, sample.Integer):
            if domain.log:
                out[name] = dist.IntDistribution(domain.lower, domain.high, log=True)
                if domain.q:
                    post.append((name, domain.q))
            else:
                step = domain.q or 1
                high = domain.lower + ((domain.high - domain.lower) // step) * step
                out[name] = dist.IntDistribution(domain.lower, high, step=step)
        elif isinstance(domain, sample.Categorical):
            out[name] = dist.CategoricalDistribution(domain.categories)
        else:
            raise ValueError(f"OptunaSearch cannot translate {domain!r} at {name!r}; use "
                             "uniform/loguniform/randint/choice (or a define-by-run function).")
    return out, post


class OptunaSearch(Searcher):
    """Search with an Optuna sampler (TPE by default), with Ray Tune's arguments.

    Args:
        space: a Tune param_space dict, a dict of Optuna distributions, or a
            define-by-run function ``fn(optuna_trial) -> dict | None`` that calls
            ``trial.suggest_*`` (its returned dict adds constant values).
            ``None``: the Tuner's ``param_space`` is used.
        metric: the metric to optimize, or a list of metrics (multi-objective).
        mode: ``"min"``/``"max"``, or a list matching ``metric``.
        points_to_evaluate: configs to try first (enqueued in the study).
        sampler: any Optuna sampler (``TPESampler``, ``CmaEsSampler``, ``GPSampler``,
            ``NSGAIISampler``, ...); default: Optuna's default for the number of objectives.
        seed: seed for the default sampler.
        evaluated_rewards: the metric values of ``points_to_evaluate`` that were already
            evaluated (warm start: they are added to the study without running).
        pruner: an Optuna pruner (``MedianPruner()``, ``HyperbandPruner()``, ...). Each
            intermediate result is reported to the Optuna trial at step
            ``training_iteration``; a trial the pruner prunes is stopped and told to the
            study as PRUNED. ``None``: no pruning (as in Ray).
        study_name: passed to ``optuna.create_study``.
        storage: passed to ``optuna.create_study`` (e.g. to keep the study in a
            database); by default an in-memory study.
    """

    def __init__(self, space=None, metric=None, mode=None, points_to_evaluate=None,
                 sampler=None, seed=None, evaluated_rewards=None, pruner=None,
                 study_name: str | None = None, storage=None):
        _optuna()
        if mode is not None:
            _check_mode(mode)
        super().__init__(metric=metric, mode=mode)
        if evaluated_rewards is not None and (
                not points_to_evaluate or len(evaluated_rewards) != len(points_to_evaluate)):
            raise ValueError("evaluated_rewards needs one value per point of points_to_evaluate")
        self._space = space
        self._points = list(points_to_evaluate or [])
        self._rewards = evaluated_rewards
        self._sampler = sampler
        self._seed = seed
        self._pruner = pruner
        self._study_name = study_name
        self._storage = storage
        self._study = None
        self._dists = None
        self._post = []
        self._param_space = None
        self._ot_trials: dict = {}
        self._last_step: dict = {}
        self._pruned: set = set()
        self._n_asked = 0
        self._replay = None  # what a restored searcher replays into its fresh study
        self._records: dict = {}  # trial number -> saved record, for finished trials

    @property
    def study(self):
        """The underlying ``optuna.Study`` (created on the first suggestion)."""
        return self._study

    def set_search_properties(self, metric, mode, config, **spec):
        """Take metric/mode and the Tuner's param_space (if no space was given)."""
        super().set_search_properties(metric, mode, config)
        if config:
            self._param_space = config
            if self._space is None:
                to_distributions(config)  # raise on grid axes now, before any trial starts
        return True

    def _setup(self):
        optuna = _optuna()
        if self._metric is None or self._mode is None:
            raise ValueError("OptunaSearch needs a metric and a mode (in OptunaSearch(...) or "
                             "TuneConfig(metric=..., mode=...)).")
        metrics = self._metric if isinstance(self._metric, (list, tuple)) else [self._metric]
        modes = self._mode if isinstance(self._mode, (list, tuple)) else [self._mode]
        if len(metrics) != len(modes):
            raise ValueError(f"OptunaSearch got {len(metrics)} metrics but {len(modes)} modes")
        directions = ["maximize" if m == "max" else "minimize" for m in modes]
        sampler = self._sampler
        if sampler is None and self._seed is not None:
            sampler = (optuna.samplers.TPESampler(seed=self._seed) if len(directions) == 1
                       else optuna.samplers.NSGAIISampler(seed=self._seed))
        space = self._space if self._space is not None else (self._param_space or {})
        if isinstance(space, dict) and space and all(
                isinstance(v, optuna.distributions.BaseDistribution) for v in space.values()):
            self._dists = dict(space)
        elif isinstance(space, dict):
            self._dists, self._post = to_distributions(space)
            self._template = space
        self._study = optuna.create_study(
            directions=directions, sampler=sampler, pruner=self._pruner,
            study_name=self._study_name, storage=self._storage,
            load_if_exists=self._study_name is not None)
        if self._replay is not None:
            self._replay_into_study(optuna)
            return
        if self._rewards is not None:
            for point, reward in zip(self._points, self._rewards):
                flat = sample.flatten(point)
                dists = {k: d for k, d in (self._dists or {}).items() if k in flat}
                values = list(reward) if isinstance(reward, (list, tuple)) else [reward]
                self._study.add_trial(optuna.trial.create_trial(
                    params={k: flat[k] for k in dists}, distributions=dists, values=values))
        else:
            for point in self._points:
                self._study.enqueue_trial(sample.flatten(point))

    def suggest(self, trial_id):
        """Ask the study for a trial and build its config."""
        if self._study is None:
            self._setup()
        if callable(self._space):
            ot_trial = self._study.ask()
            extra = self._space(ot_trial) or {}
            if not isinstance(extra, dict):
                raise TypeError("a define-by-run function must return a dict of constants or "
                                f"None, got {type(extra).__name__}")
            config = sample.unflatten({**ot_trial.params, **sample.flatten(extra)})
            if self._param_space:
                config = sample.resolve(self._param_space, 0, _NoRandom(), sample.flatten(config))
        else:
            ot_trial = self._study.ask(fixed_distributions=self._dists)
            params = dict(ot_trial.params)
            for name, q in self._post:
                params[name] = type(params[name])(round(params[name] / q) * q)
            template = getattr(self, "_template", None) or self._param_space or {}
            config = sample.resolve(template, 0, _NoRandom(), params)
        self._ot_trials[trial_id] = ot_trial
        self._n_asked += 1
        return config

    def on_trial_result(self, trial_id, result):
        """Report the metric to the Optuna trial; return ``"STOP"`` if the pruner prunes it."""
        if self._study is None and self._replay is not None:
            self._setup()  # restored: rerun trials report before any new suggestion
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or isinstance(self._metric, (list, tuple)):
            return None
        value = result.get(self._metric)
        step = result.get("training_iteration")
        if value is None or step is None or step <= self._last_step.get(trial_id, -1):
            return None  # Optuna warns on a repeated step; a restored trial repeats some
        self._last_step[trial_id] = step
        ot_trial.report(float(value), int(step))
        if self._pruner is not None and ot_trial.should_prune():
            self._pruned.add(trial_id)
            return "STOP"
        return None

    def on_trial_complete(self, trial_id, result=None, error=False):
        """Tell the study the final value (or FAIL / PRUNED)."""
        optuna = _optuna()
        if self._study is None and self._replay is not None:
            self._setup()
        ot_trial = self._ot_trials.pop(trial_id, None)
        self._last_step.pop(trial_id, None)
        if ot_trial is None:
            return
        state = optuna.trial.TrialState
        if trial_id in self._pruned:
            self._pruned.discard(trial_id)
            self._study.tell(ot_trial, state=state.PRUNED)
            return
        metrics = self._metric if isinstance(self._metric, (list, tuple)) else [self._metric]
        if error or not result or any(result.get(m) is None for m in metrics):
            self._study.tell(ot_trial, state=state.FAIL)
            return
        values = [float(result[m]) for m in metrics]
        self._study.tell(ot_trial, values if len(values) > 1 else values[0])

    def add_evaluated_point(self, parameters, value, error=False, pruned=False,
                            intermediate_values=None):
        """Add an already evaluated config to the study (warm start)."""
        optuna = _optuna()
        if self._study is None:
            self._setup()
        flat = sample.flatten(parameters)
        dists = {k: d for k, d in (self._dists or {}).items() if k in flat}
        state = (optuna.trial.TrialState.FAIL if error else
                 optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE)
        values = None if state != optuna.trial.TrialState.COMPLETE else (
            list(value) if isinstance(value, (list, tuple)) else [value])
        self._study.add_trial(optuna.trial.create_trial(
            params={k: flat[k] for k in dists}, distributions=dists, values=values, state=state,
            intermediate_values=dict(enumerate(intermediate_values or []))))


    # -- experiment state ------------------------------------------------------------------
    #
    # The controller saves the searcher in experiment_state.pkl. A live study holds its
    # sampler's internals (NSGA-II's thread lock in Optuna 5 cannot be pickled at all) and
    # ties the file to the Optuna version that wrote it. So the searcher saves data only:
    # every finished Optuna trial (params, distributions as JSON, values, state,
    # intermediate values, attributes) and the params of the trials still running, and a
    # restored searcher replays them into a fresh study. A study in the user's own
    # ``storage`` is already persistent: it is loaded by name instead of replayed.

    def __getstate__(self):
        state = self.__dict__.copy()
        if self._study is not None:
            state["_replay"] = self._export()
        state["_study"] = None
        state["_ot_trials"] = {}
        state["_records"] = {}
        state["_sampler"] = _Portable.wrap(self._sampler)
        state["_pruner"] = _Portable.wrap(self._pruner)
        return state

    def __setstate__(self, state):
        state.setdefault("_records", {})
        self.__dict__.update(state)
        self._sampler = _Portable.unwrap(self._sampler, "sampler")
        self._pruner = _Portable.unwrap(self._pruner, "pruner")

    def _export(self) -> dict:
        optuna = _optuna()
        to_json = optuna.distributions.distribution_to_json

        def record(t):
            return {"params": dict(t.params),
                    "distributions": {k: to_json(d) for k, d in t.distributions.items()},
                    "values": None if t.values is None else [float(v) for v in t.values],
                    "state": t.state.name,
                    "intermediate": {int(k): float(v)
                                     for k, v in t.intermediate_values.items()},
                    "user_attrs": dict(t.user_attrs), "system_attrs": dict(t.system_attrs),
                    "number": t.number}

        frozen = {t.number: t for t in self._study.get_trials(deepcopy=False)}
        running = {tid: record(frozen[t.number]) for tid, t in self._ot_trials.items()}
        numbers = {r["number"] for r in running.values()}
        # A finished Optuna trial never changes: its record is built once, not at every
        # save (twice a second), which kept 1,000-trial studies at ~0.2 s per save.
        cache = self._records
        finished = []
        for number, t in frozen.items():
            if number in numbers or not t.state.is_finished():
                continue
            rec = cache.get(number)
            if rec is None:
                rec = cache[number] = record(t)
            finished.append(rec)
        return {"finished": finished, "running": running,
                "persistent": self._storage is not None}

    def _replay_into_study(self, optuna):
        replay, self._replay = self._replay, None
        dist = optuna.distributions
        state = optuna.trial.TrialState
        if not replay["persistent"]:
            # Finished trials first, in their order, so the sampler sees the same history.
            for r in replay["finished"]:
                self._study.add_trial(optuna.trial.create_trial(
                    params=r["params"],
                    distributions={k: dist.json_to_distribution(d)
                                   for k, d in r["distributions"].items()},
                    values=r["values"], state=state[r["state"]],
                    intermediate_values=r["intermediate"], user_attrs=r["user_attrs"],
                    system_attrs=r["system_attrs"]))
        else:
            # Trials that were running when the driver stopped are left RUNNING in the
            # user's storage; they are asked again below, so close the stale ones.
            stale = {r["number"] for r in replay["running"].values()}
            for t in self._study.get_trials(deepcopy=False):
                if t.number in stale and t.state == state.RUNNING:
                    self._study.tell(t.number, state=state.FAIL)
        # The controller reruns unfinished trials with their saved configs: give each one
        # an Optuna trial with the same params, and its intermediate values so far.
        for trial_id, r in replay["running"].items():
            dists = {k: dist.json_to_distribution(d) for k, d in r["distributions"].items()}
            self._study.enqueue_trial(r["params"], skip_if_exists=False)
            ot_trial = self._study.ask(fixed_distributions=dists)
            for step, value in sorted(r["intermediate"].items()):
                ot_trial.report(value, step)
            self._ot_trials[trial_id] = ot_trial
        if self._rewards is None:
            # points_to_evaluate not handed out yet (they are asked first, in order).
            for point in self._points[self._n_asked:]:
                self._study.enqueue_trial(sample.flatten(point))


class _Portable:
    """A user's sampler or pruner, saved by value where it pickles (locks are recreated
    empty on load), and by class otherwise: a restore under another Optuna version that
    cannot read the old pickle gets a fresh instance of the same class, with a warning."""

    _LOCKS = (type(threading.Lock()), type(threading.RLock()))

    def __init__(self, obj):
        import io

        import cloudpickle

        cls = type(obj)
        self.cls = (cls.__module__, cls.__qualname__)
        class Pickler(cloudpickle.Pickler):
            # Read by the C pickler when it is created, so it must be a class attribute.
            dispatch_table = {**cloudpickle.Pickler.dispatch_table,
                              **{t: _Portable._reduce_lock for t in _Portable._LOCKS}}

        buf = io.BytesIO()
        try:
            Pickler(buf).dump(obj)
            self.blob = buf.getvalue()
        except Exception:
            self.blob = None

    @staticmethod
    def _reduce_lock(lock):
        return (threading.RLock if isinstance(lock, _Portable._LOCKS[1]) else threading.Lock,
                ())

    @classmethod
    def wrap(cls, obj):
        return None if obj is None or isinstance(obj, _Portable) else cls(obj)

    @staticmethod
    def unwrap(obj, what):
        if not isinstance(obj, _Portable):
            return obj
        import pickle

        if obj.blob is not None:
            try:
                return pickle.loads(obj.blob)
            except Exception as exc:
                reason = f"its saved state cannot be loaded ({type(exc).__name__}: {exc})"
        else:
            reason = "it could not be saved"
        module, qualname = obj.cls
        try:
            target = importlib.import_module(module)
            for part in qualname.split("."):
                target = getattr(target, part)
            fresh = target()
        except Exception as exc:
            raise ValueError(f"OptunaSearch: the {what} {qualname} cannot be restored: {reason}"
                             f", and {qualname}() fails ({exc}). Restore the experiment with the Optuna "
                             "version that wrote it.") \
                from None
        warnings.warn(f"OptunaSearch: the {what} {qualname} is restored with its default "
                      f"arguments: {reason}. The study's trials are replayed into it.",
                      RuntimeWarning, stacklevel=2)
        return fresh


class _NoRandom:
    # OptunaSearch configs are fully decided by the sampler; resolving the template must
    # never draw a value at random. Any Domain left unsampled would hit this.
    def __getattr__(self, name):
        raise ValueError("OptunaSearch: a search-space value was not sampled by Optuna")
