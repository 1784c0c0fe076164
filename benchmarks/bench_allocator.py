"""Time SlotAllocator allocate/free cycles, pure Python vs compiled.

    python benchmarks/bench_allocator.py [--cycles N] [--repeat R]

Two workloads on a 1 GiB arena of 4 KiB pages:

* ``churn``: a steady state of ~2000 live blocks of mixed sizes; each op
  frees a random live block and allocates a new one (splits and merges).
* ``pairs``: allocate one page and free it at once, the shortest path.

Prints ops/s (one op = one allocate or one free) for each implementation and
the compiled/pure ratio.  Absolute numbers depend on the machine; compare
ratios measured in the same run only.
"""

import argparse
import random
import sys
import time

from miniray._speedups import allocator as pure_module

try:
    import miniray._speedups._allocator_c as compiled_module
except ModuleNotFoundError:  # not built
    compiled_module = None

PAGE = 4096
ARENA = 1 << 30
LIVE_BLOCKS = 2000


def make_sizes(count, seed):
    rng = random.Random(seed)
    # Mostly small objects, a tail of large ones, like an object store.
    choices = [PAGE // 2, PAGE, 3 * PAGE, 16 * PAGE, 100 * PAGE, 1000 * PAGE]
    weights = [30, 30, 20, 12, 6, 2]
    return rng.choices(choices, weights, k=count)


def churn(allocator_class, cycles, sizes, victims):
    allocator = allocator_class(ARENA, PAGE)
    allocate = allocator.allocate
    free = allocator.free
    live = [allocate(size) for size in sizes[:LIVE_BLOCKS]]
    start = time.perf_counter()
    for cycle in range(cycles):
        slot = victims[cycle]
        free(live[slot])
        live[slot] = allocate(sizes[cycle])
    elapsed = time.perf_counter() - start
    for offset in live:
        free(offset)
    assert allocator.allocated_count == allocator.freed_count
    return 2 * cycles / elapsed


def pairs(allocator_class, cycles, sizes, victims):
    allocator = allocator_class(ARENA, PAGE)
    allocate = allocator.allocate
    free = allocator.free
    start = time.perf_counter()
    for _ in range(cycles):
        free(allocate(PAGE))
    elapsed = time.perf_counter() - start
    assert allocator.allocated_count == allocator.freed_count == cycles
    return 2 * cycles / elapsed


def best_of(repeat, workload, *args):
    return max(workload(*args) for _ in range(repeat))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    sizes = make_sizes(args.cycles + LIVE_BLOCKS, seed=1)
    rng = random.Random(2)
    victims = [rng.randrange(LIVE_BLOCKS) for _ in range(args.cycles)]
    implementations = [("pure", pure_module.SlotAllocator)]
    if compiled_module is None:
        print("compiled twin not built; run `pip install -e .` first", file=sys.stderr)
    else:
        implementations.append(("compiled", compiled_module.SlotAllocator))

    print(f"python {sys.version.split()[0]}, {args.cycles} cycles, best of {args.repeat}")
    for name, workload in [("churn", churn), ("pairs", pairs)]:
        rates = {}
        for label, allocator_class in implementations:
            rates[label] = best_of(
                args.repeat, workload, allocator_class, args.cycles, sizes, victims
            )
            print(f"  {name:6} {label:9} {rates[label] / 1e6:7.2f} M ops/s")
        if "compiled" in rates:
            print(f"  {name:6} compiled/pure ratio: {rates['compiled'] / rates['pure']:.1f}x")


if __name__ == "__main__":
    main()
