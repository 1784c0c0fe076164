"""A counter actor incremented by several tasks at once.

Each task gets the actor's handle and increments it; calls from one caller
run in order, and the actor processes them one at a time, so no update is lost.
"""

import time

import miniray as ray


@ray.remote
class Counter:
    def __init__(self):
        self.value = 0

    def incr(self, by=1):
        self.value += by
        return self.value

    def get(self):
        return self.value


@ray.remote
def bump(counter, times):
    # The handle travels to the task; the task's calls go straight to the actor.
    for _ in range(times):
        counter.incr.remote()
    return ray.get(counter.get.remote())


def main():
    ray.init()
    start = time.perf_counter()
    counter = Counter.remote()
    ray.get([bump.remote(counter, 250) for _ in range(8)])
    total = ray.get(counter.get.remote())
    print(f"8 tasks x 250 increments -> counter = {total} "
          f"({time.perf_counter() - start:.2f} s)")
    assert total == 2000, total
    ray.shutdown()
    print("actor_counter: OK")


if __name__ == "__main__":
    main()
