"""Grid search of a RandomForest on sklearn's digits with miniray.tune.

    python examples/tune_digits.py          # small grid (8 configs)
    python examples/tune_digits.py --full   # the 48-config grid of the benchmark

The data set is passed once through the object store (tune.with_parameters);
each trial is one cross-validated fit.
"""

import argparse
import tempfile
import time

import miniray
from miniray import tune


def train_rf(config, X, y):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import cross_val_score

    model = RandomForestClassifier(n_estimators=config["n_estimators"],
                                   max_depth=config["max_depth"],
                                   min_samples_split=config["min_samples_split"],
                                   random_state=0, n_jobs=1)
    return {"accuracy": float(cross_val_score(model, X, y, cv=3).mean())}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="the 48-config grid")
    args = parser.parse_args()
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    if args.full:
        space = {"n_estimators": tune.grid_search([10, 50, 100, 200]),
                 "max_depth": tune.grid_search([3, 5, 10, None]),
                 "min_samples_split": tune.grid_search([2, 5, 10])}
    else:
        space = {"n_estimators": tune.grid_search([10, 50]),
                 "max_depth": tune.grid_search([5, None]),
                 "min_samples_split": tune.grid_search([2, 10])}
    miniray.init()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as storage:
        results = tune.Tuner(
            tune.with_parameters(train_rf, X=X, y=y), param_space=space,
            tune_config=tune.TuneConfig(metric="accuracy", mode="max"),
            run_config=tune.RunConfig(storage_path=storage, name="digits", verbose=1),
        ).fit()
        best = results.get_best_result()
    print(f"{len(results)} configs in {time.perf_counter() - started:.1f} s, "
          f"{results.num_errors} errors")
    print(f"best accuracy {best.metrics['accuracy']:.4f} with {best.config}")
    miniray.shutdown()


if __name__ == "__main__":
    main()
