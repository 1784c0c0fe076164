"""miniray.tune vs Ray Tune vs plain loops, side by side (each part in a fresh process).

    .venv/bin/python benchmarks/bench_tune.py            # everything (a few minutes)
    .venv/bin/python benchmarks/bench_tune.py --skip-ray

Parts:
  digits   the 48-config RandomForest grid on sklearn's digits (one fit and a hold-out
           score per config): a sequential loop, miniray.tune, a bare 2-process pool
           and Ray Tune; target miniray <= 0.6x sequential on 2 cores. Sequential
           and miniray runs alternate (--rounds, default 3) and each ratio is taken
           against the sequential run beside it; the median is reported. Each
           node runs the grid twice: "fresh" pays for starting workers and
           importing sklearn in them (once per node, ~2 s here), "warm" is what
           every later experiment costs.
  trivial  1,000 trials that return at once: all of the time is overhead; target <= 2 s.
  optuna   100 trivial trials through OptunaSearch (TPE) vs plain study.optimize;
           target <= 3x. Both in one process, interleaved rounds after one untimed
           round each (noise from other load hits both alike); the median ratio is
           the result. "cold" is the first OptunaSearch experiment of a fresh node:
           it also pays for starting the hub actor and importing tune in workers.

miniray parts start the node without the dashboard, as the Ray parts do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

GRID = {"n_estimators": [10, 50, 100, 200], "max_depth": [3, 5, 10, None],
        "min_samples_split": [2, 5, 10]}


def _data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.25, random_state=0)


def fit_rf(config, data):
    from sklearn.ensemble import RandomForestClassifier

    X_train, X_test, y_train, y_test = data
    model = RandomForestClassifier(n_estimators=config["n_estimators"],
                                   max_depth=config["max_depth"],
                                   min_samples_split=config["min_samples_split"],
                                   random_state=0, n_jobs=1)
    model.fit(X_train, y_train)
    return {"accuracy": float(model.score(X_test, y_test))}


def _configs():
    import itertools

    keys = list(GRID)
    return [dict(zip(keys, values)) for values in itertools.product(*GRID.values())]


def part_sequential():
    data = _data()
    start = time.perf_counter()
    best = max(fit_rf(c, data)["accuracy"] for c in _configs())
    return {"seconds": time.perf_counter() - start, "best": best}


def _digits_grid(tune):
    """The digits grid through ``tune`` (miniray's or Ray's: the same API)."""
    data = _data()
    space = {k: tune.grid_search(v) for k, v in GRID.items()}
    with tempfile.TemporaryDirectory() as storage:
        start = time.perf_counter()
        grid = tune.Tuner(tune.with_parameters(fit_rf, data=data), param_space=space,
                          tune_config=tune.TuneConfig(metric="accuracy", mode="max"),
                          run_config=tune.RunConfig(storage_path=storage, verbose=0)).fit()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "best": grid.get_best_result().metrics["accuracy"],
            "trials": len(grid)}


def _cold_warm(run):
    """The grid twice on one node: the first run pays for starting workers and
    importing sklearn in them (once per node); the second is what every later
    experiment of a session costs."""
    cold = run()
    warm = run()
    return {**cold, "seconds": cold["seconds"], "warm": warm["seconds"]}


def part_miniray_digits():
    import miniray
    from miniray import tune

    miniray.init(num_cpus=2, include_dashboard=False)
    return _cold_warm(lambda: _digits_grid(tune))


def _preload_sklearn():
    import sklearn.ensemble  # noqa: F401


def part_miniray_digits_preload():
    """A fresh node whose workers import sklearn as they start (the runtime_env
    setup hook), while the driver loads the data."""
    import miniray
    from miniray import tune

    miniray.init(num_cpus=2, include_dashboard=False,
                 runtime_env={"worker_process_setup_hook": _preload_sklearn})
    return _digits_grid(tune)


def part_ray_digits():
    import ray
    from ray import tune

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    return _cold_warm(lambda: _digits_grid(tune))


def part_pool_digits():
    """A bare 2-process pool (spawned, like miniray's and Ray's workers): what
    this machine gives two parallel fits, with no tuning library at all."""
    import concurrent.futures
    import functools
    import multiprocessing

    data = _data()
    pool = concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))

    def run():
        start = time.perf_counter()
        best = max(r["accuracy"] for r in pool.map(functools.partial(fit_rf, data=data),
                                                   _configs()))
        return {"seconds": time.perf_counter() - start, "best": best}

    try:
        return _cold_warm(run)
    finally:
        pool.shutdown()


def trivial(config):
    return {"score": config["x"]}


def part_miniray_trivial():
    import miniray
    from miniray import tune

    miniray.init(num_cpus=2, include_dashboard=False)
    with tempfile.TemporaryDirectory() as storage:
        # A warm-up experiment: worker processes started, tune imported in them.
        tune.Tuner(trivial, param_space={"x": tune.uniform(0, 1)},
                   tune_config=tune.TuneConfig(num_samples=4),
                   run_config=tune.RunConfig(storage_path=storage, verbose=0)).fit()
        start = time.perf_counter()
        grid = tune.Tuner(trivial, param_space={"x": tune.uniform(0, 1)},
                          tune_config=tune.TuneConfig(metric="score", mode="max",
                                                      num_samples=1000),
                          run_config=tune.RunConfig(storage_path=storage, verbose=0)).fit()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "trials": len(grid)}


def part_ray_trivial():
    import ray
    from ray import tune

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    n = 100  # 1,000 would take minutes under Ray Tune; the per-trial cost is reported
    with tempfile.TemporaryDirectory() as storage:
        start = time.perf_counter()
        grid = tune.Tuner(trivial, param_space={"x": tune.uniform(0, 1)},
                          tune_config=tune.TuneConfig(metric="score", mode="max",
                                                      num_samples=n),
                          run_config=tune.RunConfig(storage_path=storage, verbose=0)).fit()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "trials": len(grid)}


def _plain_optuna(optuna):
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    start = time.perf_counter()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=100)
    return time.perf_counter() - start


def _miniray_optuna(tune, storage):
    from miniray.tune.search.optuna import OptunaSearch

    start = time.perf_counter()
    tune.Tuner(trivial, param_space={"x": tune.uniform(0, 1)},
               tune_config=tune.TuneConfig(metric="score", mode="min", num_samples=100,
                                           search_alg=OptunaSearch(seed=0)),
               run_config=tune.RunConfig(storage_path=storage, verbose=0)).fit()
    return time.perf_counter() - start


def part_optuna(rounds=7):
    import optuna

    import miniray
    from miniray import tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    miniray.init(num_cpus=2, include_dashboard=False)
    with tempfile.TemporaryDirectory() as storage:
        cold = _miniray_optuna(tune, storage)
        _plain_optuna(optuna)
        plain, ours = [], []
        for _ in range(rounds):
            plain.append(_plain_optuna(optuna))
            ours.append(_miniray_optuna(tune, storage))
    ratios = sorted(o / p for o, p in zip(ours, plain))
    return {"seconds": statistics.median(ours), "plain": statistics.median(plain),
            "ratio": statistics.median(ratios), "ratio_range": [ratios[0], ratios[-1]],
            "cold": cold, "spread": [min(ours), max(ours)],
            "plain_spread": [min(plain), max(plain)]}


PARTS = {name[5:]: fn for name, fn in globals().items() if name.startswith("part_")}


def _run_child(name, timeout):
    started = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout} s"}
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": tail[0][:120], "wall": time.perf_counter() - started}


def _median_ratio(values, baselines):
    ratios = sorted(v / b for v, b in zip(values, baselines) if v and b)
    return (statistics.median(ratios), ratios[0], ratios[-1]) if ratios else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved sequential/miniray rounds of the digits grid")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    if args.child:
        result = PARTS[args.child]()
        print("RESULT " + json.dumps(result), flush=True)
        os._exit(0)  # skip slow interpreter/runtime teardown in the child
    res = {}

    def run(name):
        res[name] = r = _run_child(name, args.timeout)
        print(f"  {name}: {r}", file=sys.stderr, flush=True)
        return r

    # The digits grid: sequential and miniray alternate, each ratio taken against
    # the sequential run beside it (this VM's speed drifts by 30 % over minutes).
    seq, cold, warm = [], [], []
    for _ in range(args.rounds):
        seq.append(run("sequential").get("seconds"))
        r = run("miniray_digits")
        cold.append(r.get("seconds"))
        warm.append(r.get("warm"))
    preload = run("miniray_digits_preload")
    pool = run("pool_digits")
    ray_r = {} if args.skip_ray else run("ray_digits")
    for name in ("miniray_trivial", "ray_trivial", "optuna"):
        if not (args.skip_ray and name.startswith("ray_")):
            run(name)

    def fmt(x):
        return f"{x:.2f} s" if x else "error"

    def ratio_cell(values):
        m = _median_ratio(values, seq)
        if m is None:
            return "-"
        return f"{m[0]:.2f}x" + (f" ({m[1]:.2f}-{m[2]:.2f})" if len(values) > 1 else "")

    seq_ok = [x for x in seq if x]
    seq_med = statistics.median(seq_ok) if seq_ok else None
    rows = [("48-config RF digits grid", f"sequential loop ({args.rounds} runs)",
             fmt(seq_med), "1.00x", "")]
    for label, values, target in (
            ("miniray.tune, warm node", warm, "target <= 0.6x"),
            ("miniray.tune, fresh node", cold, "workers import sklearn (~2 s)")):
        ok = [x for x in values if x]
        rows.append(("", label, fmt(statistics.median(ok) if ok else None),
                     ratio_cell(values), target))
    for label, r in (("miniray.tune, fresh node, setup hook imports sklearn", preload),
                     ("process pool (spawn), warm", pool and {"seconds": pool.get("warm")}),
                     ("process pool (spawn), fresh", pool),
                     ("Ray Tune, warm", ray_r and {"seconds": ray_r.get("warm")}),
                     ("Ray Tune, fresh", ray_r)):
        if not r:
            continue
        x = r.get("seconds")
        rows.append(("", label, fmt(x), f"{x / seq_med:.2f}x" if x and seq_med else "-",
                     "vs median sequential"))

    def sec(name):
        return (res.get(name) or {}).get("seconds")

    def cell(name):
        r = res.get(name)
        if r is None:
            return "skipped"
        return f"{r['seconds']:.2f} s" if "seconds" in r else f"error: {r['error']}"

    s = sec("miniray_trivial")
    rows.append(("1,000 trivial trials", "miniray.tune", cell("miniray_trivial"),
                 f"{s / 1000 * 1e3:.2f} ms/trial" if s else "-", "target <= 2 s total"))
    s = sec("ray_trivial")
    if "ray_trivial" in res:
        rows.append(("", "Ray Tune (100 trials)", cell("ray_trivial"),
                     f"{s / 100 * 1e3:.2f} ms/trial" if s else "-", ""))
    r = res.get("optuna") or {}
    if "ratio" in r:
        rows.append(("100 trivial trials, TPE", "study.optimize",
                     f"{r['plain']:.2f} s", "1.00x", "median of interleaved rounds"))
        rows.append(("", "miniray.tune OptunaSearch", f"{r['seconds']:.2f} s",
                     f"{r['ratio']:.2f}x", f"target <= 3x (rounds {r['ratio_range'][0]:.2f}-"
                     f"{r['ratio_range'][1]:.2f}x; cold first run {r['cold']:.2f} s)"))
    else:
        rows.append(("100 trivial trials, TPE", "", cell("optuna"), "-", ""))
    header = ("workload", "system", "wall time", "ratio", "")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(5)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))


if __name__ == "__main__":
    main()
