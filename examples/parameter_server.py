"""A parameter server updated by worker actors with numpy gradients.

Linear regression by data-parallel SGD: each worker actor holds a shard of the
data, pulls the current weights, computes a gradient on its shard and pushes it.

- sync:  every step waits for all workers' gradients, then applies their mean.
- async: workers push as soon as they finish; the server applies each gradient
         as it comes (no waiting on the slowest worker).

Run: python examples/parameter_server.py [--mode sync|async|both] [--workers N]
"""

import argparse
import time

import numpy as np

import miniray as ray

DIM = 50


@ray.remote
class ParameterServer:
    def __init__(self, dim, lr):
        self.weights = np.zeros(dim)
        self.lr = lr
        self.updates = 0

    def get_weights(self):
        return self.weights

    def apply_gradients(self, *gradients):
        self.weights = self.weights - self.lr * np.mean(gradients, axis=0)
        self.updates += 1
        return self.weights


@ray.remote
class DataWorker:
    def __init__(self, seed, true_weights, n=4000):
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(n, DIM))
        self.y = self.x @ true_weights + rng.normal(scale=0.1, size=n)

    def gradient(self, weights):
        error = self.x @ weights - self.y
        return self.x.T @ error / len(self.y)

    def loss(self, weights):
        return float(np.mean((self.x @ weights - self.y) ** 2))


def run_sync(server, workers, steps):
    weights = server.get_weights.remote()
    for _ in range(steps):
        gradients = [w.gradient.remote(weights) for w in workers]
        weights = server.apply_gradients.remote(*gradients)
    return ray.get(weights)


def run_async(server, workers, steps):
    weights = ray.get(server.get_weights.remote())
    in_flight = {w.gradient.remote(weights): w for w in workers}
    for _ in range(steps * len(workers)):
        [done], _ = ray.wait(list(in_flight), num_returns=1)
        worker = in_flight.pop(done)
        weights = ray.get(server.apply_gradients.remote(done))
        in_flight[worker.gradient.remote(weights)] = worker
    ray.wait(list(in_flight), num_returns=len(in_flight))
    return ray.get(server.get_weights.remote())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["sync", "async", "both"], default="both")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()

    ray.init()
    true_weights = np.random.default_rng(0).normal(size=DIM)
    truth = ray.put(true_weights)
    modes = ["sync", "async"] if args.mode == "both" else [args.mode]
    for mode in modes:
        server = ParameterServer.remote(DIM, lr=0.1)
        workers = [DataWorker.remote(i + 1, truth) for i in range(args.workers)]
        start = time.perf_counter()
        run = run_sync if mode == "sync" else run_async
        weights = run(server, workers, args.steps)
        took = time.perf_counter() - start
        loss = np.mean(ray.get([w.loss.remote(weights) for w in workers]))
        error = float(np.linalg.norm(weights - true_weights))
        print(f"{mode:5s}: {args.workers} workers, {args.steps} steps, {took:.2f} s, "
              f"loss {loss:.4f}, |w - w*| = {error:.4f}")
        assert loss < 0.05, f"{mode} did not converge: loss {loss}"
    ray.shutdown()
    print("parameter_server: OK")


if __name__ == "__main__":
    main()
