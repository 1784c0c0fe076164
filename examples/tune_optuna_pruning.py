"""Early stopping of a noisy "training curve" two ways: ASHA, and an Optuna pruner
driving OptunaSearch (TPE). Both prune trials from their intermediate reports.

    python examples/tune_optuna_pruning.py
"""

import math
import tempfile
import time

import optuna

import miniray
from miniray import tune
from miniray.tune.schedulers import ASHAScheduler
from miniray.tune.search.optuna import OptunaSearch

EPOCHS = 20


def train(config):
    # A learning curve whose final loss depends on lr and momentum; the curve's shape
    # makes bad configs recognizable after a few epochs, as in real training.
    best = (math.log10(config["lr"]) + 2.5) ** 2 + (config["momentum"] - 0.8) ** 2
    for epoch in range(1, EPOCHS + 1):
        time.sleep(0.01)  # "training"
        tune.report({"loss": best + 2.0 / epoch})


def run(name, storage, **tune_config):
    results = tune.Tuner(
        train,
        param_space={"lr": tune.loguniform(1e-4, 1e-1), "momentum": tune.uniform(0.1, 0.99)},
        tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=24, **tune_config),
        run_config=tune.RunConfig(storage_path=storage, name=name, verbose=0),
    ).fit()
    epochs = [r.metrics["training_iteration"] for r in results]
    pruned = sum(e < EPOCHS for e in epochs)
    best = results.get_best_result()
    print(f"{name:>14}: {len(results)} trials, {pruned} stopped early, "
          f"{sum(epochs)}/{len(results) * EPOCHS} epochs run, best loss "
          f"{best.metrics['loss']:.4f} (lr={best.config['lr']:.2e}, "
          f"momentum={best.config['momentum']:.2f})")
    return pruned


def main():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    miniray.init()
    with tempfile.TemporaryDirectory() as storage:
        asha = ASHAScheduler(max_t=EPOCHS, grace_period=2, reduction_factor=3)
        pruned_asha = run("ASHA", storage, scheduler=asha)
        search = OptunaSearch(seed=0, pruner=optuna.pruners.MedianPruner(
            n_startup_trials=4, n_warmup_steps=2))
        pruned_optuna = run("Optuna+Median", storage, search_alg=search,
                            max_concurrent_trials=2)
    states = [t.state.name for t in search.study.trials]
    print(f"Optuna study: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned")
    assert pruned_asha > 0 and pruned_optuna > 0
    miniray.shutdown()


if __name__ == "__main__":
    main()
