"""Data-parallel training throughput: 1 vs 2 workers, miniray.train and Ray Train.

The same training loop (an MLP with a large batch, so compute dominates the
all-reduce of its gradients) runs under miniray's TorchTrainer and, when Ray
Train is installed, under Ray's, each with 1 and 2 workers of 1 CPU and 1
torch thread. Per-worker batch size is fixed (weak scaling), so ideal
scaling doubles the samples per second with 2 workers.

Every configuration runs in a fresh child process (Ray and miniray never
share one). The loop times ``--steps`` steps after ``--warmup`` steps, between
two barriers, and rank 0 reports samples/s.

Run: python benchmarks/bench_train.py [--steps 30] [--skip-ray] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def train_loop(config):
    import importlib

    import torch
    import torch.distributed as dist

    train = importlib.import_module(config["train_module"])
    prepare_model = importlib.import_module(config["train_module"] + ".torch").prepare_model
    torch.set_num_threads(1)  # both systems: one thread per 1-CPU worker
    torch.manual_seed(0)
    width, batch = config["width"], config["batch"]
    model = prepare_model(torch.nn.Sequential(
        torch.nn.Linear(256, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
        torch.nn.ReLU(), torch.nn.Linear(width, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(batch, 256), torch.randint(0, 10, (batch,))
    world = dist.get_world_size() if dist.is_initialized() else 1

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(config["warmup"]):
        step()
    if dist.is_initialized():
        dist.barrier()
    started = time.perf_counter()
    for _ in range(config["steps"]):
        step()
    if dist.is_initialized():
        dist.barrier()
    seconds = time.perf_counter() - started
    metrics = {"samples_per_s": world * batch * config["steps"] / seconds,
               "step_ms": 1000 * seconds / config["steps"], "world": world}
    # Ray Train 2.x (v2) keeps only metrics that come with a checkpoint: attach a
    # tiny one from rank 0 on both systems, so the loops stay identical.
    import tempfile as tmp

    with tmp.TemporaryDirectory() as d:
        checkpoint = None
        if train.get_context().get_world_rank() == 0:
            open(os.path.join(d, "done"), "w").close()
            checkpoint = train.Checkpoint.from_directory(d)
        train.report(metrics, checkpoint=checkpoint)


def child(system: str, workers: int, args) -> dict:
    config = {"width": args.width, "batch": args.batch, "steps": args.steps,
              "warmup": args.warmup, "train_module": f"{system}.train"}
    storage = tempfile.mkdtemp(prefix=f"bench_train_{system}_")
    started = time.perf_counter()
    if system == "miniray":
        import miniray
        from miniray.train import RunConfig, ScalingConfig
        from miniray.train.torch import TorchTrainer

        miniray.init(num_cpus=2)
    else:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    result = TorchTrainer(
        train_loop, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=f"bench_{workers}", storage_path=storage)).fit()
    wall = time.perf_counter() - started
    import shutil

    shutil.rmtree(storage, ignore_errors=True)
    return {"system": system, "workers": workers, "fit_wall_s": wall, **result.metrics}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1024, help="per worker")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--child", nargs=2, metavar=("SYSTEM", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child[0], int(args.child[1]), args)), flush=True)
        return

    systems = ["miniray"] + ([] if args.skip_ray else ["ray"])
    passthrough = ["--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--width", str(args.width), "--batch", str(args.batch)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rows = []
    for system in systems:
        for workers in (1, 2):
            proc = subprocess.run([sys.executable, __file__, "--child", system, str(workers),
                                   *passthrough], capture_output=True, text=True, env=env,
                                  timeout=600)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                rows.append({"system": system, "workers": workers, "error": " | ".join(tail)})
            else:
                rows.append(json.loads(line[len("RESULT "):]))
            print(_format(rows[-1]), flush=True)
    print()
    print("| system | workers | samples/s | ms/step | speed-up vs 1 worker | fit() wall s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['system']} | {row['workers']} | error: {row['error'][:80]} | | | |")
            continue
        base = next((r for r in rows if r["system"] == row["system"] and r["workers"] == 1
                     and "error" not in r), None)
        speedup = row["samples_per_s"] / base["samples_per_s"] if base else float("nan")
        print(f"| {row['system']} | {row['workers']} | {row['samples_per_s']:.0f} | "
              f"{row['step_ms']:.1f} | {speedup:.2f}x | {row['fit_wall_s']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def _format(row: dict) -> str:
    if "error" in row:
        return f"{row['system']} x{row['workers']}: error {row['error']}"
    return (f"{row['system']} x{row['workers']}: {row['samples_per_s']:.0f} samples/s, "
            f"{row['step_ms']:.1f} ms/step, fit {row['fit_wall_s']:.1f}s")


if __name__ == "__main__":
    main()
