"""miniray.util.joblib: joblib's Parallel and scikit-learn's n_jobs on miniray workers."""

from __future__ import annotations

import os

import pytest

joblib = pytest.importorskip("joblib")

from miniray.util.joblib import register_ray  # noqa: E402


def _pid_and_square(x):
    return os.getpid(), x * x


def _fail_on(x):
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x


def test_parallel_runs_on_miniray_workers(ray):
    register_ray()
    with joblib.parallel_backend("ray"):
        out = joblib.Parallel(n_jobs=-1)(joblib.delayed(_pid_and_square)(i) for i in range(20))
    assert [square for _, square in out] == [i * i for i in range(20)]
    pids = {pid for pid, _ in out}
    assert os.getpid() not in pids  # not in the driver: in the node's worker processes
    workers = {w["pid"] for w in ray.util.state.list_workers()}
    assert pids <= workers
    with joblib.parallel_backend("ray"):
        assert joblib.Parallel(n_jobs=-1)._effective_n_jobs() == 2  # the node's CPUs


def test_errors_propagate(ray):
    register_ray()
    with joblib.parallel_backend("ray"), pytest.raises(ValueError, match="bad item 3"):
        joblib.Parallel(n_jobs=2)(joblib.delayed(_fail_on)(i) for i in range(6))


def test_sklearn_cross_val_score_with_n_jobs(ray):
    datasets = pytest.importorskip("sklearn.datasets")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    X, y = datasets.load_iris(return_X_y=True)
    register_ray()
    with joblib.parallel_backend("ray"):
        scores = cross_val_score(LogisticRegression(max_iter=500), X, y, cv=4, n_jobs=-1)
    expected = cross_val_score(LogisticRegression(max_iter=500), X, y, cv=4, n_jobs=1)
    assert list(scores) == pytest.approx(list(expected))
    assert scores.mean() > 0.9
    batches = ray.util.state.list_tasks(filters=[("name", "=", "_run_batch")])
    assert batches and all(t["state"] == "FINISHED" for t in batches)  # the folds ran as tasks
