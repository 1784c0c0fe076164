import concurrent.futures
import os
import signal
import threading
import time

import pytest

from miniray import exceptions


def test_worker_killed_during_a_1000_task_map_loses_nothing(ray):
    @ray.remote
    def work(i):
        time.sleep(0.002)
        return i * i, os.getpid()

    refs = [work.remote(i) for i in range(1000)]
    # Kill a task worker while the map is in flight.
    time.sleep(0.3)
    pids = {p for _, p in ray.get(refs[:20])}
    os.kill(next(iter(pids)), signal.SIGKILL)
    results = ray.get(refs, timeout=120)
    assert [r for r, _ in results] == [i * i for i in range(1000)]
    assert ray.api._node_stats()["counters"].get("workers_died", 0) >= 1


def test_object_ref_future_and_threads(ray):
    @ray.remote
    def slow_square(x):
        time.sleep(0.05)
        return x * x

    futures = [slow_square.remote(i).future() for i in range(4)]
    done = [f.result(timeout=30) for f in concurrent.futures.as_completed(futures)]
    assert sorted(done) == [0, 1, 4, 9]

    # get() from several threads at once.
    out = {}

    def fetch(i):
        out[i] = ray.get(slow_square.remote(i))

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out == {i: i * i for i in range(6)}


def test_object_ref_api(ray):
    ref = ray.put("x")
    assert len(ref.hex()) == 32 and ref.binary() == bytes.fromhex(ref.hex())
    assert ref == ray.api.ObjectRef(ref.binary()) and hash(ref) == hash(ref.binary())
    assert "ObjectRef(" in repr(ref)
    with pytest.raises(TypeError, match="put\\(\\) on an ObjectRef"):
        ray.put(ref)


def test_wait_input_errors(ray):
    ref = ray.put(1)
    with pytest.raises(TypeError, match="list"):
        ray.wait(ref)
    with pytest.raises(ValueError, match="duplicate"):
        ray.wait([ref, ref])
    with pytest.raises(ValueError, match="cannot exceed"):
        ray.wait([ref], num_returns=2)
    with pytest.raises(ValueError, match="timeout"):
        ray.get(ref, timeout=-1)
    assert ray.wait([]) == ([], [])


def test_remote_decorator_errors(ray):
    with pytest.raises(TypeError, match="function or class"):
        ray.remote(42)
    with pytest.raises(TypeError, match="keyword options"):
        ray.remote(lambda: 1, lambda: 2)
    with pytest.raises(ValueError, match="num_cpus"):
        ray.remote(num_cpus=-1)(lambda: 1).remote()
    with pytest.raises(TypeError, match="resources"):
        ray.remote(resources=[1])(lambda: 1).remote()
    with pytest.raises(ValueError, match="num_cpus/num_gpus"):
        ray.remote(resources={"CPU": 1})(lambda: 1).remote()
    with pytest.raises(TypeError, match="retry_exceptions"):
        ray.remote(retry_exceptions=[int])(lambda: 1).remote()
    with pytest.raises(ValueError, match="max_retries"):
        ray.remote(max_retries=-5)(lambda: 1).remote()
    with pytest.raises(ValueError, match="num_returns"):
        ray.remote(num_returns=-1)(lambda: 1).remote()


def test_options_chain_and_num_returns_zero(ray):
    @ray.remote
    def f(x):
        return x

    assert ray.get(f.options(name="renamed").options(num_cpus=1).remote(3)) == 3
    assert f.options(num_returns=0).remote(1) is None


def test_init_argument_errors():
    import miniray

    with pytest.raises(ValueError, match="address"):
        miniray.init(address="somewhere-without-a-port")
    with pytest.raises(ValueError, match="runtime_env"):
        miniray.init(runtime_env={"pip": ["x"]})
    with pytest.raises(ValueError, match="object_store_memory"):
        miniray.init(object_store_memory=10)
    with pytest.raises(TypeError, match="unexpected"):
        miniray.init(not_an_option=True)
    assert not miniray.is_initialized()


def test_actor_errors(ray):
    @ray.remote
    class A:
        def f(self):
            return 1

    with pytest.raises(ValueError, match="max_concurrency"):
        A.options(max_concurrency=0).remote()
    with pytest.raises(ValueError, match="lifetime"):
        A.options(lifetime="forever").remote()
    with pytest.raises(TypeError, match="actor handle"):
        ray.kill("not an actor")
    a = A.remote()
    with pytest.raises(TypeError, match=r"f.remote\(\)"):
        a.f()
    assert "Actor(A" in repr(a)
    with pytest.raises(ValueError, match="force=True"):
        ray.cancel(a.f.remote(), force=True)


def test_unpicklable_return_value_is_reported(ray):
    @ray.remote
    def bad():
        return threading.Lock()

    with pytest.raises(exceptions.RayTaskError, match="return value 0"):
        ray.get(bad.remote())


def test_runtime_context_in_driver_and_actor(ray):
    ctx = ray.get_runtime_context()
    assert ctx.worker_mode == "SCRIPT_MODE" and ctx.get_task_id() is None
    assert ctx.get_job_id() and ctx.get_node_id().startswith("node-")
    assert ctx.get_worker_id().startswith("worker-")
    assert isinstance(ctx.get_accelerator_ids()["GPU"], list)
    assert ctx.get_assigned_resources() == {} and not ctx.was_current_actor_reconstructed

    @ray.remote
    class Who:
        def ids(self):
            c = ray.get_runtime_context()
            return c.get_actor_id(), c.worker_mode

    actor_id, mode = ray.get(Who.remote().ids.remote())
    assert actor_id and mode == "WORKER_MODE"

    @ray.remote(num_cpus=2, resources={"disk": 1})
    def held():
        return ray.get_runtime_context().get_assigned_resources()

    assert ray.get(held.options(resources={}).remote()) == {"CPU": 2.0}

    @ray.remote(max_restarts=1, num_cpus=1)  # an actor holds no CPU unless asked, as in Ray
    class Phoenix:
        def status(self):
            ctx = ray.get_runtime_context()
            return ctx.was_current_actor_reconstructed, ctx.get_assigned_resources()

        def die(self):
            os._exit(1)

    phoenix = Phoenix.remote()
    assert ray.get(phoenix.status.remote()) == (False, {"CPU": 1.0})
    phoenix.die.remote()
    assert ray.get(phoenix.status.options(max_task_retries=3).remote(), timeout=30)[0] is True


async def test_as_future_and_async_wait(ray):
    import asyncio

    @ray.remote
    def f(x):
        return x + 1

    assert await f.remote(1).as_future() == 2
    refs = [f.remote(i) for i in range(3)]
    ready, pending = await ray.wait(refs, num_returns=3, timeout=10)
    assert ready == refs and pending == []
    assert await asyncio.wait_for(ray.get(refs), 10) == [1, 2, 3]


def test_workers_default_to_one_numeric_thread_per_cpu(ray, monkeypatch):
    import os

    if "OMP_NUM_THREADS" in os.environ:
        pytest.skip("OMP_NUM_THREADS is set for this run; workers keep it")

    @ray.remote
    def threads():
        import os
        return os.environ.get("OMP_NUM_THREADS")

    @ray.remote(num_cpus=2)
    class Wide:
        def threads(self):
            import os
            return os.environ.get("OMP_NUM_THREADS")

    assert ray.get(threads.remote()) == "1"
    assert ray.get(Wide.remote().threads.remote()) == "2"


def test_runtime_env_bad_input_is_named_before_anything_starts():
    import miniray

    with pytest.raises(ValueError, match=r"\['pip', 'working_dir'\].*install packages"):
        miniray.init(runtime_env={"pip": ["x"], "working_dir": "."})
    with pytest.raises(TypeError, match="env_vars.*dict of str to str"):
        miniray.init(runtime_env={"env_vars": {"N": 4}})
    with pytest.raises(ValueError, match="module.function"):
        miniray.init(runtime_env={"worker_process_setup_hook": "no_dots"})
    with pytest.raises(TypeError, match="callable"):
        miniray.init(runtime_env={"worker_process_setup_hook": 42})
    assert not miniray.is_initialized()


def _mark_setup():
    os.environ["MINIRAY_TEST_SETUP_RAN"] = str(os.getpid())


def test_runtime_env_sets_env_vars_and_runs_the_setup_hook_in_every_worker(ray_factory):
    ray = ray_factory(runtime_env={"env_vars": {"MINIRAY_TEST_VAR": "hello",
                                                "OMP_NUM_THREADS": "3"},
                                   "worker_process_setup_hook": _mark_setup})

    @ray.remote
    def probe():
        return (os.environ.get("MINIRAY_TEST_VAR"), os.environ.get("OMP_NUM_THREADS"),
                os.environ.get("MINIRAY_TEST_SETUP_RAN") == str(os.getpid()))

    @ray.remote
    class Probe:
        def probe(self):
            return os.environ.get("MINIRAY_TEST_SETUP_RAN") == str(os.getpid())

    assert set(ray.get([probe.remote() for _ in range(8)])) == {("hello", "3", True)}
    assert ray.get(Probe.remote().probe.remote()) is True
    assert "MINIRAY_TEST_VAR" not in os.environ  # the driver's own environment is untouched


def test_runtime_env_of_one_task_or_actor(ray_factory):
    ray = ray_factory(num_cpus=1, runtime_env={"env_vars": {"MINIRAY_TEST_VAR": "job"}})

    @ray.remote
    def probe():
        return os.environ.get("MINIRAY_TEST_VAR"), os.environ.get("MINIRAY_TEST_OTHER")

    task_env = {"env_vars": {"MINIRAY_TEST_VAR": "task", "MINIRAY_TEST_OTHER": "x"}}
    # One worker (num_cpus=1) runs all three: the task's variables are undone after it.
    assert ray.get(probe.remote()) == ("job", None)
    assert ray.get(probe.options(runtime_env=task_env).remote()) == ("task", "x")
    assert ray.get(probe.remote()) == ("job", None)

    @ray.remote(runtime_env={"env_vars": {"MINIRAY_TEST_OTHER": "actor"}})
    class Probe:
        def probe(self):
            return os.environ.get("MINIRAY_TEST_VAR"), os.environ.get("MINIRAY_TEST_OTHER")

    assert ray.get(Probe.remote().probe.remote()) == ("job", "actor")

    with pytest.raises(ValueError, match="not supported"):
        probe.options(runtime_env={"pip": ["requests"]}).remote()
    with pytest.raises(TypeError, match="dict of str to str"):
        probe.options(runtime_env={"env_vars": {"N": 1}}).remote()
    with pytest.raises(ValueError, match="init"):
        Probe.options(runtime_env={"worker_process_setup_hook": _mark_setup}).remote()


def test_runtime_env_setup_hook_given_by_path(ray_factory):
    ray = ray_factory(runtime_env={"worker_process_setup_hook": "json.loads"})

    @ray.remote
    def f():
        return 1

    # json.loads() with no argument raises: the path was resolved and called.
    with pytest.raises(exceptions.RuntimeEnvSetupError, match="json.loads|TypeError"):
        ray.get(f.remote(), timeout=30)


def _failing_setup():
    raise RuntimeError("no GPU driver here")


def _assert_no_work_runs(ray, error, task_match, actor_match, batch, max_workers_started,
                         first_timeout):
    """Tasks (one, then a batch) fail with ``error`` and an actor with
    ActorDiedError, each naming the cause; no more workers were started."""

    @ray.remote
    def f():
        return 1

    @ray.remote
    class A:
        def m(self):
            return 1

    with pytest.raises(error, match=task_match):
        ray.get(f.remote(), timeout=first_timeout)
    with pytest.raises(error):
        ray.get([f.remote() for _ in range(batch)], timeout=30)
    with pytest.raises(exceptions.ActorDiedError, match=actor_match):
        ray.get(A.remote().m.remote(), timeout=30)
    stats = ray.api._node_stats()
    assert stats["counters"]["workers_started"] <= max_workers_started


def test_failing_setup_hook_fails_the_work_clearly_and_spawns_no_more(ray_factory):
    ray = ray_factory(runtime_env={"worker_process_setup_hook": _failing_setup},
                      log_to_driver=False)
    # two task workers + the actor's
    _assert_no_work_runs(ray, exceptions.RuntimeEnvSetupError, "no GPU driver here",
                         "setup hook", batch=5, max_workers_started=3,
                         first_timeout=30)


def test_workers_that_cannot_start_fail_the_work_instead_of_respawning_forever(
        ray_factory, tmp_path, monkeypatch):
    # A module in the working directory shadowing one the worker imports: every
    # worker exits at start-up. get() must raise, naming the cause, not hang.
    (tmp_path / "msgpack.py").write_text(
        "raise ImportError('this msgpack.py shadows the real package')\n")
    monkeypatch.chdir(tmp_path)
    ray = ray_factory(log_to_driver=False)
    _assert_no_work_runs(ray, exceptions.WorkerCrashedError,
                         "(?s)in a row exited while starting.*shadows the real package",
                         "exited while starting", batch=3, max_workers_started=4,
                         first_timeout=60)


def test_cancel_signal_during_socket_io_is_not_lost():
    # The node writes CANCEL, then sends SIGUSR1. A signal that lands while
    # the worker is inside a send or recv cannot read the socket there; the
    # task about to start must still see the CANCEL, not run to the end.
    import signal
    import socket

    import msgpack

    from miniray._core import protocol as P
    from miniray._core.worker.worker import WorkerClient

    node_side, worker_side = socket.socketpair()
    client = WorkerClient(worker_side, os.getpid(), 1 << 20, 1 << 20, 1)
    previous = signal.signal(signal.SIGUSR1, client._on_sigusr1)
    try:
        task_id = b"t" * 16
        message = [P.TASK, task_id, b"no-such-function", [], {}, [b"r" * 16], "slow", None,
                   None, None]
        node_side.sendall(P.pack([P.CANCEL, task_id]))
        client.in_io = True  # as inside sendall of the previous task's DONE
        os.kill(os.getpid(), signal.SIGUSR1)
        client.in_io = False
        client._run_task(message)  # must not try to load and run the function
        client.flush()
        node_side.settimeout(5)
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(node_side.recv(1 << 16))
        replies = list(unpacker)
        assert replies and replies[0][0] == P.FAILED and replies[0][1] == task_id
        assert replies[0][3] is True  # reported as cancelled
    finally:
        signal.signal(signal.SIGUSR1, previous)
        client.store.close()
        node_side.close()
        worker_side.close()
