"""Workers never idle while work waits: each busy worker holds its next task,
task costs come from the workers' own run times, and work queued behind a
task that runs long is taken back when another worker goes idle."""

from __future__ import annotations

import os
import signal
import socket
import time

import msgpack

import miniray
from miniray._core import protocol as P


def _spin(seconds: float) -> None:
    # A pure-Python loop (not a sleep): the task holds its worker's CPU.
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _workers_up(n: int = 2) -> None:
    """Wait for the node's n task workers to have started (a loaded machine
    can take a while): the tests are about how work spreads over them."""
    runtime = miniray.api._runtime
    deadline = time.monotonic() + 60
    while sum(1 for w in list(runtime.workers.values())
              if w.ready and w.actor is None) < n:
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.02)


def _next_task_is_here(timeout: float) -> bool:
    """In a task: True once the node has sent this worker another task (in the
    socket, unread, or already read into the worker's inbox by a signal)."""
    from miniray._core import refs

    client = refs._client
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(m[0] == P.TASK for m in list(client.inbox)):
            return True
        try:
            data = client.sock.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            data = b""
        if data:
            unpacker = msgpack.Unpacker(raw=False)
            unpacker.feed(data)
            if any(m[0] == P.TASK for m in unpacker):
                return True
        time.sleep(0.002)
    return False


def test_each_busy_worker_gets_its_next_task_before_it_finishes(ray):
    # A stream of 10 ms tasks on 2 workers: while one runs, its successor is
    # already at the worker (old: tasks over 2 ms were never queued behind a
    # busy worker, so each worker waited a node round trip between two).
    @ray.remote
    def step(seconds, look):
        _spin(seconds)
        return os.getpid(), look and _next_task_is_here(2.0)

    _workers_up()
    ray.get([step.remote(0.01, False) for _ in range(6)])  # the cost is known: 10 ms
    n = 12
    results = ray.get([step.remote(0.01, True) for _ in range(n)], timeout=60)
    assert len({pid for pid, _ in results}) == 2
    saw_next = [seen for _, seen in results]
    # Every task had its successor waiting but the last few: the last two, and
    # the one before them when both of those went to the other worker.
    assert all(saw_next[:n - 3]), (saw_next, ray.api._node_stats()["counters"])


def test_task_cost_is_the_workers_run_time_not_the_round_trip(ray):
    # The node's estimate of a function's cost is what the worker measured
    # running it: a task dispatched to a worker that cannot run it for a while
    # (stopped here) costs what it took to run, not dispatch-to-done.
    @ray.remote
    def quick():
        return 1

    _workers_up()
    ray.get([quick.remote() for _ in range(2)])
    runtime = miniray.api._runtime
    pids = [w.pid for w in list(runtime.workers.values()) if w.actor is None]
    runtime.fn_cost.clear()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        ref = quick.remote()
        time.sleep(0.5)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert ray.get(ref, timeout=30) == 1
    # A direct call (the usual path here) reaches the node's books lazily: a
    # call on the node's loop runs after what is queued for it.
    runtime.call_threadsafe_wait(lambda: None, timeout=10)
    costs = list(runtime.fn_cost.values())
    assert len(costs) == 1
    assert costs[0] < 0.25, costs  # old: >= 0.5 s, the time the worker was stopped


def test_work_queued_behind_a_long_task_is_stolen_by_an_idle_worker(ray_factory):
    # The long task's worker holds the short one as its next task (the other
    # worker runs work of another shape, so it cannot); when that other worker
    # finishes, it takes the short task back instead of idling for 3 s.
    ray = ray_factory(num_cpus=2, resources={"slot": 1})

    @ray.remote
    def work(seconds):
        _spin(seconds)
        return os.getpid()

    slot_work = work.options(resources={"slot": 1})
    _workers_up()
    ray.get([work.remote(0.01), slot_work.remote(0.01)])
    long = work.remote(3.0)
    time.sleep(0.2)  # running: the next one goes to the other worker
    other = slot_work.remote(0.3)
    time.sleep(0.1)
    short = work.remote(0.01)
    ready, _ = ray.wait([long, short], num_returns=1, timeout=60)
    assert ready == [short]
    assert ray.get(short) == ray.get(other) != ray.get(long)
    assert ray.api._node_stats()["counters"].get("steals", 0) >= 1


def test_a_short_task_that_runs_long_does_not_hold_back_its_queue(ray_factory):
    # Tasks known to be short pipeline deep behind each other; one that
    # overruns (3 s instead of microseconds) must not keep the ones queued
    # behind it from the worker that goes idle (old: they waited the 3 s).
    ray = ray_factory(num_cpus=2, resources={"slot": 1})

    @ray.remote
    def maybe_slow(seconds):
        if seconds:
            _spin(seconds)
        return os.getpid()

    @ray.remote(resources={"slot": 1})
    def other(seconds):
        _spin(seconds)
        return os.getpid()

    _workers_up()
    ray.get([maybe_slow.remote(0) for _ in range(50)])  # known: microseconds
    ray.get(other.remote(0))
    slow = maybe_slow.remote(3.0)
    time.sleep(0.2)
    busy = other.remote(0.3)
    time.sleep(0.1)
    behind = [maybe_slow.remote(0) for _ in range(3)]
    ready, _ = ray.wait([slow] + behind, num_returns=3, timeout=60)
    assert slow not in ready
    pid_other = ray.get(busy)
    assert set(ray.get(behind)) == {pid_other} != {ray.get(slow)}


def test_cancel_a_task_queued_behind_a_running_one(ray):
    @ray.remote
    def hold(seconds):
        _spin(seconds)
        return "done"

    _workers_up()
    ray.get([hold.remote(0.01) for _ in range(2)])
    running = [hold.remote(3.0) for _ in range(2)]
    time.sleep(0.2)
    queued = hold.remote(0.01)  # at a busy worker, as its next task
    time.sleep(0.2)
    runtime = miniray.api._runtime
    assert any(len(w.assigned) == 2 for w in list(runtime.workers.values()))
    ray.cancel(queued)
    ready, _ = ray.wait([queued] + running, num_returns=1, timeout=60)
    assert ready == [queued]
    try:
        ray.get(queued)
    except miniray.exceptions.TaskCancelledError:
        pass
    else:
        raise AssertionError("the queued task ran")
    assert ray.get(running, timeout=60) == ["done", "done"]


def test_worker_gives_back_queued_tasks_when_signalled_mid_task():
    # Worker side of a steal, in one process: the node's notice and SIGUSR1
    # arrive while a task runs (outside any socket I/O): the handler reads the
    # socket and answers at once with the tasks not started; a notice that
    # lands during I/O is answered when the I/O is done.
    from miniray._core.worker.worker import WorkerClient

    node_side, worker_side = socket.socketpair()
    client = WorkerClient(worker_side, os.getpid(), 1 << 20, 1 << 20, 1)
    previous = signal.signal(signal.SIGUSR1, client._on_sigusr1)
    unpacker = msgpack.Unpacker(raw=False)
    node_side.settimeout(5)

    def task(task_id):
        return [P.TASK, task_id, b"f", [], {}, [b"r" * 16], "t", None, None, None]

    def answers():
        unpacker.feed(node_side.recv(1 << 16))
        return list(unpacker)

    try:
        client.current_task = b"running" * 2
        node_side.sendall(P.pack(task(b"a" * 16)) + P.pack([P.NOTIFY, "steal", []]))
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert answers() == [[P.NOTIFY, "requeue", [[b"a" * 16]]]]
        assert not client.inbox

        node_side.sendall(P.pack(task(b"b" * 16)) + P.pack([P.NOTIFY, "steal", []]))
        time.sleep(0.05)
        client.in_io = True  # as inside a flush of the running task
        os.kill(os.getpid(), signal.SIGUSR1)
        client.in_io = False
        client.flush()  # the end of that flush reads what the signal announced
        assert answers() == [[P.NOTIFY, "requeue", [[b"b" * 16]]]]
    finally:
        signal.signal(signal.SIGUSR1, previous)
        client.current_task = None
        client.store.close()
        node_side.close()
        worker_side.close()


def test_no_steal_when_no_idle_worker_could_run_the_task(ray_factory):
    # The queued task needs what its worker's lease holds (the one "slot"):
    # an idle worker cannot take it, so it is not stolen (stolen, it would be
    # queued straight back, and again, as long as the long task runs).
    ray = ray_factory(num_cpus=2, resources={"slot": 1})

    @ray.remote(resources={"slot": 1})
    def hold(seconds):
        _spin(seconds)
        return os.getpid()

    _workers_up()
    ray.get(hold.remote(0.01))
    first = hold.remote(1.5)
    time.sleep(0.2)
    second = hold.remote(0.01)  # queued behind the first, the other worker idle
    assert ray.get(first, timeout=60) == ray.get(second, timeout=60)
    assert ray.api._node_stats()["counters"].get("steals", 0) == 0


def test_steals_racing_the_end_of_a_task_leave_every_worker_idle(ray):
    # Bursts of 3 equal tasks on 2 workers: the worker done first steals the
    # third from the other, often just as that one finishes its task and so
    # gives the stolen task back after its DONE: the worker, left with nothing,
    # must go idle again with its CPU released (not drop out of the pool).
    @ray.remote
    def work(seconds):
        _spin(seconds)
        return os.getpid()

    _workers_up()
    for _ in range(60):
        ray.get([work.remote(0.005) for _ in range(3)], timeout=60)
    runtime = miniray.api._runtime
    deadline = time.monotonic() + 10
    while len(runtime.idle) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(runtime.idle) == 2
    assert runtime.available["CPU"] == 2
    assert ray.api._node_stats()["counters"].get("steals", 0) >= 1


def _second_worker_starts_late() -> None:
    # worker_process_setup_hook: the first worker to get here starts at once,
    # the others a second later (so work is scheduled while one is starting).
    path = os.environ["MINIRAY_TEST_FIRST_WORKER"]
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        time.sleep(1.0)


def test_work_waits_for_a_starting_worker_rather_than_behind_a_busy_one(ray_factory,
                                                                        tmp_path):
    # A free CPU whose worker is still starting: the second task waits for it
    # on the node. Queued as the busy worker's next task it would wait for the
    # whole first task, while the starting worker took the third from the node
    # (Tune's first trials ran out of order that way).
    os.environ["MINIRAY_TEST_FIRST_WORKER"] = str(tmp_path / "first")
    try:
        ray = ray_factory(runtime_env={"worker_process_setup_hook": _second_worker_starts_late})

        @ray.remote
        def stamp(seconds):
            started = time.time()
            _spin(seconds)
            return os.getpid(), started, time.time()

        first = stamp.remote(3.0)
        time.sleep(0.2)  # the first worker is up and runs it; the other is starting
        second = stamp.remote(0.0)
        third = stamp.remote(3.0)  # waiting on the node: the starting worker's first pick
        pid2, started2, _ = ray.get(second, timeout=60)
        ray.get(third, timeout=60)
        pid1, _, ended1 = ray.get(first, timeout=60)
    finally:
        del os.environ["MINIRAY_TEST_FIRST_WORKER"]
    assert pid2 != pid1
    assert started2 < ended1
