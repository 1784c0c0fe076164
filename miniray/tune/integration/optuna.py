"""Run an existing Optuna study's ``optimize`` with its trials spread over miniray workers.

Optuna's ``n_jobs`` runs trials in threads of one process, so CPU-bound
objectives do not run in parallel. :func:`optimize` runs ``n_workers`` miniray
tasks instead; each loads the study and runs trials one by one until
``n_trials`` (or ``timeout``) is used up. The study's storage stays in charge:

* a database or journal storage is used by the workers directly, as in
  Optuna's own distributed mode;
* an in-memory study is served to the workers by an actor holding a copy of
  its storage, and the new trials are added back to your study at the end.

Example::

    import optuna
    from miniray.tune.integration.optuna import optimize

    study = optuna.create_study(direction="minimize")
    optimize(study, objective, n_trials=100, n_workers=2)
    print(study.best_params)
"""

from __future__ import annotations

import pickle
import time

import optuna

from ... import api

__all__ = ["optimize"]


class _StorageActor:
    """Holds the in-memory storage; workers call its methods one at a time."""

    def __init__(self, storage_blob, n_trials, timeout):
        self.storage = pickle.loads(storage_blob)
        self.left = n_trials
        self.deadline = time.monotonic() + timeout if timeout else None
        self.stopped = False

    def call(self, name, args, kwargs):
        return getattr(self.storage, name)(*args, **kwargs)

    def claim(self):
        return _claim(self)

    def stop(self):
        self.stopped = True

    def dump(self):
        return pickle.dumps(self.storage)


class _Counter:
    """Hands out trial tickets when the storage is a shared database."""

    def __init__(self, n_trials, timeout):
        self.left = n_trials
        self.deadline = time.monotonic() + timeout if timeout else None
        self.stopped = False

    def claim(self):
        return _claim(self)

    def stop(self):
        self.stopped = True


def _claim(state) -> bool:
    if state.stopped or (state.deadline is not None and time.monotonic() >= state.deadline):
        return False
    if state.left is None:
        return True
    if state.left <= 0:
        return False
    state.left -= 1
    return True


class _ActorStorage(optuna.storages.BaseStorage):
    """An Optuna storage whose every call goes to a :class:`_StorageActor`."""

    def __init__(self, actor):
        self._actor = actor


def _forwarder(name):
    def method(self, *args, **kwargs):
        return api._get_blocking(self._actor.call.remote(name, args, kwargs))

    method.__name__ = name
    return method


# Every public storage method (abstract or not) is forwarded: one round trip each,
# and the actor's storage applies its own consistency rules.
for _name in dir(optuna.storages.BaseStorage):
    if not _name.startswith("_") and callable(getattr(optuna.storages.BaseStorage, _name)):
        setattr(_ActorStorage, _name, _forwarder(_name))
_ActorStorage.__abstractmethods__ = frozenset()


def _worker(storage, study_name, sampler, pruner, func, counter, catch, callbacks, seed):
    sampler.reseed_rng()  # workers must not all draw the same "random" points
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler,
                              pruner=pruner)
    done = 0
    while api._get_blocking(counter.claim.remote()):
        study.optimize(func, n_trials=1, catch=catch, callbacks=callbacks)
        done += 1
    return done


def optimize(study, func, n_trials: int | None = None, timeout: float | None = None,
             n_workers: int | None = None, catch=(), callbacks=None,
             worker_options: dict | None = None):
    """Run ``study.optimize(func, n_trials, timeout)`` with trials in parallel processes.

    Args:
        study: an ``optuna.Study`` (any storage; its sampler and pruner are used in
            every worker).
        func: the objective ``func(trial) -> float`` (or a sequence for several
            objectives); it runs in worker processes, so it must be picklable.
        n_trials: trials to run in total (None: until ``timeout``).
        timeout: stop starting trials after this many seconds.
        n_workers: parallel workers (default: the node's CPUs).
        catch: exception types that fail a trial without stopping the optimization.
        callbacks: ``fn(study, frozen_trial)`` called in the workers after each trial.
        worker_options: miniray task options per worker (default ``{"num_cpus": 1}``).

    Returns:
        ``study``, with the new trials in its storage.
    """
    if n_trials is None and timeout is None:
        raise ValueError("optimize() needs n_trials or timeout (it would never end)")
    if n_trials is not None and (not isinstance(n_trials, int) or n_trials < 0):
        raise ValueError(f"n_trials must be a non-negative int, got {n_trials!r}")
    if not callable(func):
        raise TypeError("func must be the objective function")
    api._auto_init()
    if n_workers is None:
        n_workers = max(1, int(api.cluster_resources().get("CPU", 1)))
    n_workers = max(1, min(n_workers, n_trials if n_trials else n_workers))
    storage = study._storage
    in_memory = isinstance(storage, optuna.storages.InMemoryStorage)
    before = len(study.trials)
    if in_memory:
        actor = api.remote(_StorageActor).options(num_cpus=0).remote(
            pickle.dumps(storage), n_trials, timeout)
        worker_storage, counter = _ActorStorage(actor), actor
    else:
        # RDB storages come wrapped in a cache; workers get the backend and cache themselves.
        worker_storage = getattr(storage, "_backend", storage)
        counter = api.remote(_Counter).options(num_cpus=0).remote(n_trials, timeout)
    task = api.remote(max_retries=0)(_worker).options(**(worker_options or {"num_cpus": 1}))
    refs = [task.remote(worker_storage, study.study_name, study.sampler, study.pruner, func,
                        counter, tuple(catch), callbacks, i) for i in range(n_workers)]
    error = None
    pending = list(refs)
    try:
        while pending:
            ready, pending = api._wait_blocking(pending, num_returns=1)
            try:
                api._get_blocking(ready[0])
            except Exception as exc:  # an objective raised something not in catch
                if error is None:
                    error = exc
                    api._get_blocking(counter.stop.remote())
        if in_memory:
            final = pickle.loads(api._get_blocking(actor.dump.remote()))
            study_id = final.get_study_id_from_name(study.study_name)
            new = final.get_all_trials(study_id, deepcopy=False)[before:]
            study.add_trials(new)
    finally:
        api.kill(counter)
    if error is not None:
        raise error
    return study
