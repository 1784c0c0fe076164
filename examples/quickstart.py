"""miniray quickstart: a load -> preprocess -> train DAG on numpy.

    python examples/quickstart.py

What it shows, in order:

1. ``ray.init()`` and how long it takes.
2. A task DAG built by passing ObjectRefs as arguments: ``load`` makes data
   shards, ``preprocess`` normalizes each one, ``train`` fits a least-squares
   linear model on all of them.  The driver only submits; each task starts as
   soon as its inputs are ready.
3. ``ray.put`` of a large array, passed to several tasks that read it as a
   zero-copy, read-only view of shared memory.
4. ``ray.wait`` to handle results in the order they finish.
5. asyncio: ``await ref``, ``asyncio.gather(*refs)`` and ``await ray.get(refs)``.

Runs in a few seconds on two cores.  The same program runs on Ray with
``import ray`` (except ``await ray.get(...)``: Ray's ``get`` always blocks).
"""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np

import miniray as ray

NUM_SHARDS = 4
ROWS_PER_SHARD = 50_000
NUM_FEATURES = 16  # float64: each shard is 50,000 x 17 x 8 bytes = 6.8 MB
NOISE = 0.1


# -- the DAG -----------------------------------------------------------------

@ray.remote
def load(shard_index: int) -> np.ndarray:
    """Make one shard: features and, in the last column, a noisy linear target."""
    rng = np.random.default_rng(shard_index)
    true_weights = np.random.default_rng(1234).normal(size=NUM_FEATURES)
    features = rng.normal(loc=3.0, scale=2.0, size=(ROWS_PER_SHARD, NUM_FEATURES))
    target = features @ true_weights + rng.normal(scale=NOISE, size=ROWS_PER_SHARD)
    return np.column_stack([features, target])


@ray.remote
def preprocess(shard: np.ndarray) -> np.ndarray:
    """Standardize the features and center the target (a new array: inputs are read-only)."""
    features, target = shard[:, :-1], shard[:, -1]
    features = (features - features.mean(axis=0)) / features.std(axis=0)
    return np.column_stack([features, target - target.mean()])


@ray.remote
def train(*shards: np.ndarray) -> dict:
    """Fit a linear model by least squares on all the shards; return weights and loss."""
    data = np.concatenate(shards)
    features, target = data[:, :-1], data[:, -1]
    weights, *_ = np.linalg.lstsq(features, target, rcond=None)
    loss = float(np.mean((features @ weights - target) ** 2))
    return {"weights": weights, "loss": loss, "rows": len(data), "pid": os.getpid()}


# -- one big array, many readers -----------------------------------------------

@ray.remote
def column_block_stats(table: np.ndarray, start: int, stop: int) -> dict:
    """Read a block of columns of a shared table; the table itself is never copied."""
    block = table[:, start:stop]
    return {
        "columns": (start, stop),
        "mean": float(block.mean()),
        "read_only": not table.flags.writeable,  # a view of shared memory
    }


@ray.remote
def sleepy_square(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x * x


@ray.remote
def add(a: int, b: int) -> int:
    return a + b


# -- asyncio -------------------------------------------------------------------

async def main() -> None:
    """Await refs from a coroutine: nothing here blocks the event loop."""
    started = time.perf_counter()
    single = await add.remote(20, 22)
    gathered = await asyncio.gather(*[add.remote(i, i) for i in range(5)])
    # In async code, ray.get returns an awaitable.
    listed = await ray.get([add.remote(i, 1) for i in range(5)])
    elapsed = time.perf_counter() - started
    print(f"  await ref                   -> {single}")
    print(f"  await asyncio.gather(*refs) -> {gathered}")
    print(f"  await ray.get(refs)         -> {listed}")
    print(f"  async section took {elapsed * 1000:.1f} ms")
    assert single == 42
    assert gathered == [0, 2, 4, 6, 8]
    assert listed == [1, 2, 3, 4, 5]


def run() -> None:
    total_started = time.perf_counter()

    print("1. ray.init()")
    started = time.perf_counter()
    ray.init(num_cpus=2)
    print(f"  node ready in {(time.perf_counter() - started) * 1000:.0f} ms")
    try:
        print(f"\n2. load -> preprocess -> train DAG ({NUM_SHARDS} shards of "
              f"{ROWS_PER_SHARD * (NUM_FEATURES + 1) * 8 / 1e6:.1f} MB)")
        started = time.perf_counter()
        # Only submissions here: every call returns an ObjectRef at once.
        processed = [preprocess.remote(load.remote(i)) for i in range(NUM_SHARDS)]
        model_ref = train.remote(*processed)
        submitted = time.perf_counter() - started
        model = ray.get(model_ref)
        dag_time = time.perf_counter() - started
        print(f"  submitted {2 * NUM_SHARDS + 1} tasks in {submitted * 1000:.1f} ms")
        print(f"  trained on {model['rows']:,} rows in worker pid {model['pid']}: "
              f"loss {model['loss']:.5f} (noise variance {NOISE ** 2:.5f})")
        print(f"  first weights: {np.round(model['weights'][:4], 3)}")
        print(f"  DAG took {dag_time * 1000:.0f} ms")
        # The model explains everything but the noise.
        assert model["rows"] == NUM_SHARDS * ROWS_PER_SHARD
        assert model["loss"] < 2 * NOISE ** 2, model["loss"]

        print("\n3. ray.put of a large array, read by several tasks")
        table = np.random.default_rng(7).random((2_000, 2_048))  # 32.8 MB
        started = time.perf_counter()
        table_ref = ray.put(table)  # written to shared memory once
        put_time = time.perf_counter() - started
        blocks = [(j, j + 512) for j in range(0, table.shape[1], 512)]
        stats = ray.get([column_block_stats.remote(table_ref, a, b) for a, b in blocks])
        for s in stats:
            print(f"  columns {s['columns'][0]:>4}-{s['columns'][1]:<4} mean {s['mean']:.4f}"
                  f"  read-only view: {s['read_only']}")
        print(f"  put {table.nbytes / 1e6:.1f} MB in {put_time * 1000:.1f} ms; "
              f"{len(blocks)} tasks read it without copying")
        assert all(s["read_only"] for s in stats)
        assert abs(np.mean([s["mean"] for s in stats]) - table.mean()) < 1e-9
        del table_ref

        print("\n4. ray.wait: results in the order they finish")
        delays = {0: 0.3, 1: 0.1, 2: 0.2, 3: 0.0}
        pending = [sleepy_square.remote(x, delays[x]) for x in delays]
        order = []
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            value = ray.get(ready[0])
            order.append(value)
            print(f"  ready: {value}  ({len(pending)} still pending)")
        assert sorted(order) == [0, 1, 4, 9]

        print("\n5. asyncio: asyncio.run(main())")
        asyncio.run(main())
    finally:
        ray.shutdown()

    print(f"\nquickstart OK: all steps passed in {time.perf_counter() - total_started:.2f} s")


if __name__ == "__main__":
    run()
