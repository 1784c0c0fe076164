"""Trial schedulers: early stopping (ASHA, median stopping) and population-based
training. Each returns a decision for every intermediate result."""

from __future__ import annotations

import copy
import math
import random
import statistics

from .search import sample
from .search.searcher import MetricModeMixin

__all__ = ["TrialScheduler", "FIFOScheduler", "AsyncHyperBandScheduler", "ASHAScheduler",
           "HyperBandScheduler", "MedianStoppingRule", "PopulationBasedTraining",
           "PopulationBasedTrainingReplay", "ResourceChangingScheduler", "DistributeResources",
           "create_scheduler"]


class TrialScheduler(MetricModeMixin):
    """Base class. :meth:`on_trial_result` returns ``CONTINUE``, ``PAUSE`` or ``STOP``."""

    CONTINUE = "CONTINUE"
    PAUSE = "PAUSE"
    STOP = "STOP"
    NOOP = "NOOP"

    def set_search_properties(self, metric, mode, **spec) -> bool:
        """Take the experiment's metric and mode unless the scheduler has its own."""
        if self._metric is None:
            self._metric = metric
        if self._mode is None:
            self._mode = mode
        return True

    def _needs_metric(self):
        if self._metric is None or self._mode is None:
            raise ValueError(f"{type(self).__name__} needs a metric and a mode (pass them to "
                             "the scheduler or to TuneConfig(metric=..., mode=...)).")

    def _score(self, result):
        # Higher is better, whatever the mode.
        value = result.get(self._metric)
        if value is None:
            return None
        value = float(value)
        return value if self._mode == "max" else -value

    def on_trial_add(self, controller, trial):
        """A trial was created."""

    def on_trial_result(self, controller, trial, result) -> str:
        """Decide about a trial after one of its results."""
        return self.CONTINUE

    def on_trial_complete(self, controller, trial, result):
        """The trial finished normally."""

    def on_trial_error(self, controller, trial):
        """The trial failed."""

    def on_trial_remove(self, controller, trial):
        """The trial was stopped."""

    def on_trial_paused(self, controller, trial):
        """The trial ended after this scheduler returned ``PAUSE``; resume it later with
        ``controller.resume_trial(trial)`` or end it with
        ``controller.stop_paused_trial(trial)``."""

    def on_no_running_trials(self, controller):
        """No trial runs and none waits to start while some are paused: the last chance
        to resume them (those left paused are stopped)."""


class FIFOScheduler(TrialScheduler):
    """Run every trial to completion (the default)."""

    def set_search_properties(self, metric, mode, **spec):
        return True


class AsyncHyperBandScheduler(TrialScheduler):
    """Asynchronous successive halving (ASHA).

    Rungs sit at ``grace_period * reduction_factor**k`` (in ``time_attr`` units)
    below ``max_t``. A trial reaching a rung is stopped unless its metric is in the
    top ``1/reduction_factor`` of the trials recorded at that rung so far; every
    trial stops at ``max_t``.
    """

    def __init__(self, time_attr: str = "training_iteration", metric: str | None = None,
                 mode: str | None = None, max_t: float = 100, grace_period: float = 1,
                 reduction_factor: float = 4, brackets: int = 1, stop_last_trials: bool = True):
        super().__init__(metric, mode)
        if grace_period <= 0 or max_t <= 0 or grace_period > max_t:
            raise ValueError("need 0 < grace_period <= max_t")
        if reduction_factor <= 1:
            raise ValueError("reduction_factor must be > 1")
        if brackets < 1:
            raise ValueError("brackets must be >= 1")
        self._time_attr = time_attr
        self._max_t = max_t
        self._stop_last = stop_last_trials
        self._rf = reduction_factor
        # Bracket s starts its rungs at grace_period * rf**s; trials are spread over them.
        self._brackets = []
        for s in range(brackets):
            rungs, t = [], grace_period * reduction_factor ** s
            while t < max_t:
                rungs.append((t, {}))
                t *= reduction_factor
            self._brackets.append(list(reversed(rungs)))
        self._trial_bracket: dict = {}
        self._counter = 0

    def on_trial_add(self, controller, trial):
        self._needs_metric()
        # Ray weighs brackets by their budget; round-robin is enough for 1-3 brackets.
        self._trial_bracket[trial.trial_id] = self._counter % len(self._brackets)
        self._counter += 1

    def on_trial_result(self, controller, trial, result):
        """Stop the trial at a rung if it is not in the top fraction there."""
        t = result.get(self._time_attr)
        if t is None:
            return self.CONTINUE
        if self._stop_last and t >= self._max_t:
            return self.STOP
        score = self._score(result)
        rungs = self._brackets[self._trial_bracket.get(trial.trial_id, 0)]
        action = self.CONTINUE
        for milestone, recorded in rungs:  # highest rung first
            if t < milestone or trial.trial_id in recorded:
                continue
            if recorded and score is not None and _percentile(list(recorded.values()), 0) is not None:
                cutoff = _percentile(list(recorded.values()), (1 - 1 / self._rf) * 100)
                if score < cutoff:
                    action = self.STOP
            if score is not None:
                recorded[trial.trial_id] = score
            break
        return action

    def debug_string(self) -> str:
        """The rungs and how many trials each recorded."""
        return "; ".join(
            "Bracket: " + ", ".join(f"{m:g}: {len(r)}" for m, r in rungs)
            for rungs in self._brackets)


ASHAScheduler = AsyncHyperBandScheduler


class _Bracket:
    """One bracket of synchronous HyperBand: up to ``n`` trials run to the rung
    ``milestone``; when all of them got there (or ended), the best ``ceil(n / eta)``
    go on to ``milestone * eta`` and the others stop."""

    def __init__(self, n: int, r: float, max_t: float, eta: float, s: int):
        self.capacity = n
        self.n = n
        self.milestone = min(r, max_t)
        self.max_t = max_t
        self.eta = eta
        self.s = s
        self.live: dict = {}  # trial -> score at the current milestone (None: not yet)
        self.added = 0

    def full(self) -> bool:
        return self.added >= self.capacity

    def add(self, trial):
        self.live[trial] = None
        self.added += 1


class HyperBandScheduler(TrialScheduler):
    """Synchronous HyperBand (Li et al.), as Ray Tune's ``HyperBandScheduler``.

    Trials are put into brackets in order of creation: bracket ``s`` (from
    ``s_max = round(log(max_t) / log(eta))`` down to 0) takes
    ``ceil((s_max + 1) / (s + 1) * eta**s)`` trials that first run to
    ``max_t * eta**-s`` (in ``time_attr`` units). A trial reaching its bracket's
    milestone is *paused* (its function is ended after that report, a class trainable
    is checkpointed); once every trial of the bracket got there, the best
    ``1/eta`` resume from their latest checkpoint towards ``milestone * eta`` and the
    others stop. Every trial stops at ``max_t``.

    Function trainables should report a checkpoint with each result (and resume
    from ``tune.get_checkpoint()``), or a resumed trial starts from scratch.
    """

    def __init__(self, time_attr: str = "training_iteration", metric: str | None = None,
                 mode: str | None = None, max_t: float = 81, reduction_factor: float = 3,
                 stop_last_trials: bool = True):
        super().__init__(metric, mode)
        if max_t <= 0:
            raise ValueError("max_t must be positive")
        if reduction_factor <= 1:
            raise ValueError("reduction_factor must be > 1")
        self._time_attr = time_attr
        self._max_t = max_t
        self._eta = reduction_factor
        self._stop_last = stop_last_trials
        self._s_max_1 = int(round(math.log(max_t) / math.log(reduction_factor))) + 1
        self._band: list = []
        self._brackets: list = []
        self._of: dict = {}  # trial_id -> bracket

    def _new_bracket(self):
        if len(self._band) >= self._s_max_1:
            self._band = []
        s = self._s_max_1 - len(self._band) - 1
        n = int(math.ceil(self._s_max_1 / (s + 1) * self._eta ** s))
        r = self._max_t * self._eta ** -s
        bracket = _Bracket(n, r, self._max_t, self._eta, s)
        self._band.append(bracket)
        self._brackets.append(bracket)
        return bracket

    def on_trial_add(self, controller, trial):
        self._needs_metric()
        bracket = self._brackets[-1] if self._brackets else None
        if bracket is None or bracket.full():
            bracket = self._new_bracket()
        bracket.add(trial)
        self._of[trial.trial_id] = bracket

    def on_trial_result(self, controller, trial, result):
        """Pause the trial at its bracket's milestone; stop it at ``max_t``."""
        bracket = self._of.get(trial.trial_id)
        t = result.get(self._time_attr)
        if t is None:
            return self.CONTINUE
        if self._stop_last and t >= self._max_t:
            return self.STOP  # also for trials of a restored experiment, in no bracket
        if bracket is None or trial not in bracket.live:
            return self.CONTINUE
        if t < bracket.milestone:
            return self.CONTINUE
        bracket.live[trial] = self._score(result)
        return self.PAUSE

    def on_trial_paused(self, controller, trial):
        self._process(controller, self._of[trial.trial_id])

    def _ended(self, controller, trial):
        bracket = self._of.get(trial.trial_id)
        if bracket is not None and bracket.live.pop(trial, "gone") != "gone":
            self._process(controller, bracket)

    def on_trial_complete(self, controller, trial, result):
        self._ended(controller, trial)

    def on_trial_error(self, controller, trial):
        self._ended(controller, trial)

    def on_no_running_trials(self, controller):
        for bracket in self._brackets:
            self._process(controller, bracket, force=True)

    def _process(self, controller, bracket, force=False):
        live = bracket.live
        if not live or any(t.status != "PAUSED" for t in live):
            return  # some trial is still on its way to the milestone
        if not force and not bracket.full() and controller.more_trials_coming():
            return  # the bracket still fills up
        bracket.n = int(math.ceil(bracket.n / self._eta))
        ranked = sorted(live, key=lambda t: -math.inf if live[t] is None else live[t],
                        reverse=True)
        good, bad = ranked[:bracket.n], ranked[bracket.n:]
        bracket.milestone = min(bracket.milestone * self._eta, self._max_t)
        bracket.capacity = bracket.added  # halving closed it to new trials
        for trial in bad:
            del live[trial]
            controller.stop_paused_trial(trial)
        for trial in good:
            live[trial] = None
            controller.resume_trial(trial)

    def debug_string(self) -> str:
        """Brackets: trials live and their next milestone."""
        return "; ".join(f"Bracket(s={b.s}, live={len(b.live)}, milestone={b.milestone})"
                         for b in self._brackets)


class PopulationBasedTrainingReplay(TrialScheduler):
    """Replay the config schedule a PBT run found for one trial (Ray Tune's
    ``PopulationBasedTrainingReplay``).

    ``policy_file`` is a trial's ``pbt_policy_<trial_id>.txt`` in a PBT experiment's
    directory. ``replay.config`` is the config the schedule starts from: the single
    trial of the replay run starts with it, and at each recorded iteration it is
    restarted from its latest checkpoint with the next config. The trainable must
    report checkpoints (as for PBT) and resume from ``tune.get_checkpoint()``.
    """

    def __init__(self, policy_file: str):
        import os

        policy_file = os.path.expanduser(os.fspath(policy_file))
        if not os.path.exists(policy_file):
            raise ValueError(f"Policy file not found: {policy_file}")
        self.policy_file = policy_file
        super().__init__()
        self.config, self._policy = self._load_policy(policy_file)
        self.current_config = self.config
        self.experiment_tag = f"replay_{os.path.basename(policy_file)}"
        self._trial = None
        self._next = 0
        self._num_perturbations = 0

    @staticmethod
    def _load_policy(policy_file):
        import json

        rows = []
        with open(policy_file) as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise ValueError(f"Could not read PBT policy file: {policy_file}.") \
                        from None
        # Follow the lineage back from the last exploit: each row's trial must be the
        # clone of the row after it.
        policy, last_clone, first_config = [], None, None
        for trial_tag, clone_tag, _, clone_step, clone_config, new_config in reversed(rows):
            if last_clone is not None and trial_tag != last_clone:
                break
            last_clone = clone_tag
            first_config = clone_config
            policy.append((clone_step, new_config))
        return first_config, list(reversed(policy))

    def set_search_properties(self, metric, mode, **spec):
        return True

    def _needs_metric(self):
        pass  # replaying a schedule compares nothing

    def on_trial_add(self, controller, trial):
        if self._trial is not None:
            raise ValueError("More than one trial added to PBT replay run. This means the "
                             "same schedule will be trained multiple times. Do you want to "
                             "set `num_samples=1`?")
        self._trial = trial
        if not self._policy:
            if not trial.config:
                raise ValueError("No replay policy found and trial initialized without a "
                                 "valid config: pass a param_space to tune.Tuner().")
            self.config = trial.config
        trial.config = copy.deepcopy(self.config)

    def on_trial_result(self, controller, trial, result):
        """At the recorded iteration, restart the trial from its checkpoint with the
        next config."""
        step = result.get("training_iteration")
        if step is None or self._next >= len(self._policy):
            return self.CONTINUE
        change_at, new_config = self._policy[self._next]
        if step < change_at:
            return self.CONTINUE
        if not trial.checkpoint:
            raise ValueError(f"PBT replay must switch trial {trial.trial_id} to a new config "
                             f"at iteration {step}, but the trial reported no checkpoint to "
                             "restart from: report checkpoints in the trainable.")
        self._next += 1
        self._num_perturbations += 1
        self.current_config = new_config
        trial._exploit = (copy.deepcopy(new_config), trial.checkpoint, trial.trial_id)
        return self.PAUSE

    def debug_string(self) -> str:
        return (f"PopulationBasedTraining replay: {self._num_perturbations} of "
                f"{len(self._policy)} config changes applied")


class DistributeResources:
    """Ray's default allocation for :class:`ResourceChangingScheduler`: the node's CPUs
    (and GPUs, for trials that use them), less ``reserve_resources``, split evenly among
    the live trials, never below a trial's own request. With ``increase_by`` (e.g.
    ``{"CPU": 2}``) a trial grows in those steps, at most ``increase_by_times`` times
    (-1: no limit)."""

    def __init__(self, add_bundles: bool = False, increase_by: dict | None = None,
                 increase_by_times: int = -1, reserve_resources: dict | None = None):
        self.add_bundles = add_bundles
        self.increase_by = dict(increase_by or {})
        self.increase_by_times = increase_by_times
        self.reserve_resources = dict(reserve_resources or {})

    def __call__(self, controller, trial, result, scheduler):
        from .. import api

        total = api.cluster_resources()
        live = [t for t in controller.get_trials()
                if t.status in ("RUNNING", "PENDING", "PAUSED")]
        share = max(len(live), 1)
        base = controller._resource_options(trial.config)
        out = {}
        for key, option in (("CPU", "num_cpus"), ("GPU", "num_gpus")):
            own = base.get(option, 0) or 0
            if key == "GPU" and not own and not self.increase_by.get("GPU"):
                continue  # a CPU trial is not handed GPUs
            free = total.get(key, 0) - self.reserve_resources.get(key, 0)
            value = max(own, math.floor(free / share))
            step = self.increase_by.get(key)
            if step:
                times = max(0, int((value - own) // step))
                if self.increase_by_times >= 0:
                    times = min(times, self.increase_by_times)
                value = own + times * step
            out[key] = value
        return out


class ResourceChangingScheduler(TrialScheduler):
    """Change a trial's resources while the experiment runs (Ray Tune's
    ``ResourceChangingScheduler``), on top of ``base_scheduler`` (FIFO by default).

    After each result the base scheduler decides first; if the trial continues,
    ``resources_allocation_function(controller, trial, result, scheduler)`` returns
    its new resources (a dict like ``{"CPU": 2}``, a ``PlacementGroupFactory``, or
    ``None`` to keep them). A change restarts the trial from its latest checkpoint
    with the new resources (``tune.get_context().get_trial_resources()`` shows
    them), so the trainable must report checkpoints; one without a checkpoint keeps
    its resources.
    """

    def __init__(self, base_scheduler: TrialScheduler | None = None,
                 resources_allocation_function=None):
        super().__init__()
        self._base = base_scheduler or FIFOScheduler()
        self._allocate = (resources_allocation_function if resources_allocation_function
                          is not None else DistributeResources())

    @property
    def metric(self):
        return self._base.metric

    @property
    def mode(self):
        return self._base.mode

    def set_search_properties(self, metric, mode, **spec):
        return self._base.set_search_properties(metric, mode, **spec)

    def _needs_metric(self):
        if not isinstance(self._base, FIFOScheduler):
            self._base._needs_metric()

    def on_trial_add(self, controller, trial):
        self._base.on_trial_add(controller, trial)

    def on_trial_complete(self, controller, trial, result):
        self._base.on_trial_complete(controller, trial, result)

    def on_trial_error(self, controller, trial):
        self._base.on_trial_error(controller, trial)

    def on_trial_paused(self, controller, trial):
        self._base.on_trial_paused(controller, trial)

    def on_no_running_trials(self, controller):
        self._base.on_no_running_trials(controller)

    def on_trial_result(self, controller, trial, result):
        """The base decision; then maybe a restart with new resources."""
        decision = self._base.on_trial_result(controller, trial, result)
        if decision != self.CONTINUE:
            return decision
        new = self._allocate(controller, trial, result, self)
        if new is None or not trial.checkpoint:
            return decision
        from .trainable import normalize_resources

        if normalize_resources(new) == controller.trial_resources(trial):
            return decision
        trial._resources_override = new
        trial._exploit = (trial.config, trial.checkpoint, trial.trial_id)  # restart in place
        return self.PAUSE


def _percentile(values, q):
    # numpy.nanpercentile's linear interpolation, without importing numpy in every worker.
    values = sorted(v for v in values if v == v)
    if not values:
        return None
    k = (len(values) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


class MedianStoppingRule(TrialScheduler):
    """Stop a trial whose best result so far is worse than the median of the other
    trials' running means at the same point in time (after ``grace_period``)."""

    def __init__(self, time_attr: str = "time_total_s", metric: str | None = None,
                 mode: str | None = None, grace_period: float = 60.0,
                 min_samples_required: int = 3, min_time_slice: float = 0,
                 hard_stop: bool = True):
        super().__init__(metric, mode)
        self._time_attr = time_attr
        self._grace = grace_period
        self._min_samples = min_samples_required
        self._hard_stop = hard_stop
        self._history: dict = {}  # trial_id -> [(t, score)]
        self._stopped: set = set()

    def on_trial_add(self, controller, trial):
        self._needs_metric()

    def on_trial_result(self, controller, trial, result):
        """Compare the trial's best score with the others' median running mean."""
        t = result.get(self._time_attr)
        score = self._score(result)
        if t is None or score is None:
            return self.CONTINUE
        self._history.setdefault(trial.trial_id, []).append((t, score))
        if t < self._grace:
            return self.CONTINUE
        others = []
        for trial_id, history in self._history.items():
            if trial_id == trial.trial_id:
                continue
            scores = [s for when, s in history if when <= t]
            if scores:
                others.append(sum(scores) / len(scores))
        if len(others) < self._min_samples:
            return self.CONTINUE
        best = max(s for _, s in self._history[trial.trial_id])
        if best < statistics.median(others):
            self._stopped.add(trial.trial_id)
            return self.STOP if self._hard_stop else self.PAUSE
        return self.CONTINUE


class PopulationBasedTraining(TrialScheduler):
    """Population-based training: every ``perturbation_interval`` (in ``time_attr``
    units), a trial in the bottom ``quantile_fraction`` copies the latest checkpoint
    of a trial in the top fraction (exploit) and continues with that trial's config,
    perturbed (explore): numbers multiplied by one of ``perturbation_factors``, list
    values moved to a neighbour, or resampled with ``resample_probability``.

    Trials must save checkpoints (``tune.report(..., checkpoint=...)``, or
    ``checkpoint_frequency`` for class trainables) to be exploitable.
    """

    def __init__(self, time_attr: str = "time_total_s", metric: str | None = None,
                 mode: str | None = None, perturbation_interval: float = 60.0,
                 burn_in_period: float = 0.0, hyperparam_mutations: dict | None = None,
                 quantile_fraction: float = 0.25, resample_probability: float = 0.25,
                 perturbation_factors: tuple = (1.2, 0.8), custom_explore_fn=None,
                 log_config: bool = True, require_attrs: bool = True, synch: bool = False,
                 seed: int | None = None):
        super().__init__(metric, mode)
        if not hyperparam_mutations and custom_explore_fn is None:
            raise ValueError("PopulationBasedTraining needs hyperparam_mutations or "
                             "custom_explore_fn")
        if not 0 <= quantile_fraction <= 0.5:
            raise ValueError("quantile_fraction must be between 0 and 0.5")
        if perturbation_interval <= 0:
            raise ValueError("perturbation_interval must be positive")
        self._time_attr = time_attr
        self._interval = perturbation_interval
        self._burn_in = burn_in_period
        self._mutations = hyperparam_mutations or {}
        self._quantile = quantile_fraction
        self._resample_p = resample_probability
        self._factors = perturbation_factors
        self._explore_fn = custom_explore_fn
        self._rng = random.Random(seed)
        self._log_config = log_config
        self._last_perturb: dict = {}
        self._last_score: dict = {}
        self.num_perturbations = 0
        self.exploits: list = []  # (time, trial_id, cloned trial_id, new config)

    def on_trial_add(self, controller, trial):
        self._needs_metric()
        self._last_perturb.setdefault(trial.trial_id, 0)

    def on_trial_result(self, controller, trial, result):
        """At each interval, move a bottom trial onto a top trial's checkpoint."""
        t = result.get(self._time_attr)
        score = self._score(result)
        if t is None or score is None:
            return self.CONTINUE
        self._last_score[trial.trial_id] = score
        if t < self._burn_in or t - self._last_perturb.get(trial.trial_id, 0) < self._interval:
            return self.CONTINUE
        self._last_perturb[trial.trial_id] = t
        lower, upper = self._quantiles(controller)
        if trial.trial_id not in lower:
            return self.CONTINUE
        candidates = [c for c in upper if controller.trial(c).checkpoint]
        if not candidates:
            return self.CONTINUE
        donor = controller.trial(self._rng.choice(candidates))
        new_config = self._explore(donor.config)
        self.num_perturbations += 1
        self.exploits.append((t, trial.trial_id, donor.trial_id, new_config))
        trial._exploit = (new_config, donor.checkpoint, donor.trial_id)
        if self._log_config:
            self._log_policy(controller, trial, donor, result, new_config)
        return self.PAUSE

    def _log_policy(self, controller, trial, donor, result, new_config):
        # Ray's policy files (PopulationBasedTrainingReplay reads them): one JSON row
        # [trial, cloned trial, trial's iteration, clone's iteration, clone's config,
        # new config] per exploit, in pbt_global.txt and in the trial's own file, which
        # starts as a copy of the cloned trial's history.
        import json
        import os
        import shutil

        row = json.dumps([trial.trial_id, donor.trial_id,
                          result.get("training_iteration", 0),
                          (donor.last_result or {}).get("training_iteration", 0),
                          donor.config, new_config], default=repr)
        base = controller.experiment_dir
        with open(os.path.join(base, "pbt_global.txt"), "a") as f:
            f.write(row + "\n")
        mine = os.path.join(base, f"pbt_policy_{trial.trial_id}.txt")
        theirs = os.path.join(base, f"pbt_policy_{donor.trial_id}.txt")
        if os.path.exists(theirs):
            shutil.copyfile(theirs, mine)
        elif os.path.exists(mine):
            os.remove(mine)
        with open(mine, "a") as f:
            f.write(row + "\n")

    def _quantiles(self, controller):
        live = [tid for tid in self._last_score if controller.trial(tid).status in
                ("RUNNING", "PENDING", "PAUSED")]
        ranked = sorted(live, key=lambda tid: self._last_score[tid])
        if len(ranked) <= 1:
            return [], []
        n = int(math.ceil(len(ranked) * self._quantile))
        if n > len(ranked) / 2:
            n = int(math.floor(len(ranked) / 2))
        return ranked[:n], ranked[-n:] if n else []

    def _explore(self, config):
        new = copy.deepcopy(config)
        self._perturb(new, self._mutations)
        if self._explore_fn is not None:
            new = self._explore_fn(new)
        return new

    def _perturb(self, config, mutations):
        for key, spec in mutations.items():
            if isinstance(spec, dict) and not sample.is_grid(spec):
                config.setdefault(key, {})
                self._perturb(config[key], spec)
                continue
            value = config.get(key)
            resample = self._rng.random() < self._resample_p
            if isinstance(spec, (list, tuple)):
                values = list(spec)
                if resample or value not in values:
                    config[key] = self._rng.choice(values)
                else:
                    i = values.index(value) + self._rng.choice((-1, 1))
                    config[key] = values[min(max(i, 0), len(values) - 1)]
            elif isinstance(spec, sample.Domain):
                if resample or not isinstance(value, (int, float)):
                    config[key] = spec.sample(self._rng, config)
                else:
                    factor = self._rng.choice(self._factors)
                    config[key] = (int(round(value * factor)) if isinstance(value, int)
                                   else value * factor)
            elif callable(spec):
                if resample or not isinstance(value, (int, float)):
                    config[key] = spec()
                else:
                    factor = self._rng.choice(self._factors)
                    config[key] = (int(round(value * factor)) if isinstance(value, int)
                                   else value * factor)
            else:
                raise TypeError(f"hyperparam_mutations[{key!r}] must be a list, a tune "
                                f"domain or a function, got {type(spec).__name__}")


_SCHEDULERS = {"fifo": "FIFOScheduler", "async_hyperband": "AsyncHyperBandScheduler",
               "asynchyperband": "AsyncHyperBandScheduler",
               "median_stopping_rule": "MedianStoppingRule",
               "medianstopping": "MedianStoppingRule", "hyperband": "HyperBandScheduler",
               "pbt": "PopulationBasedTraining", "pbt_replay": "PopulationBasedTrainingReplay",
               "resource_changing": "ResourceChangingScheduler"}
# Ray's other names, and why miniray has no such scheduler.
_NOT_HERE = {"hb_bohb": "HyperBandForBOHB needs Ray's BOHB searcher (hpbandster)",
             "pb2": "PB2 needs GPy and scikit-learn's Bayesian optimisation of PBT"}


def create_scheduler(scheduler: str, **kwargs) -> TrialScheduler:
    """A scheduler by name (``"fifo"``, ``"async_hyperband"``, ``"median_stopping_rule"``,
    ``"hyperband"``, ``"pbt"``...), as ``ray.tune.create_scheduler``; keyword arguments
    the scheduler does not take are left out, as in Ray."""
    import inspect

    name = scheduler.lower()
    if name in _NOT_HERE:
        raise ValueError(f"scheduler {scheduler!r} is not available in miniray: "
                         f"{_NOT_HERE[name]}. Available: {sorted(_SCHEDULERS)}")
    if name not in _SCHEDULERS:
        raise ValueError(f"The `scheduler` argument must be one of {sorted(_SCHEDULERS)}. "
                         f"Got: {scheduler}")
    cls = globals()[_SCHEDULERS[name]]
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})
