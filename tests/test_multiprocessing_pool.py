"""miniray.util.multiprocessing.Pool: the standard library's Pool on actors."""

from __future__ import annotations

import os
import threading

import pytest

from miniray.util.multiprocessing import Pool, TimeoutError

_initialized = None


def _init(value):
    global _initialized
    _initialized = value


def _state(_):
    return _initialized, os.getpid()


def _square(x):
    return x * x


def _fail_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


def test_map_starmap_apply_and_initializer(ray):
    with Pool(2, initializer=_init, initargs=("ready",)) as pool:
        assert pool.map(_square, range(20)) == [x * x for x in range(20)]
        assert pool.map(_square, range(7), chunksize=3) == [x * x for x in range(7)]
        assert pool.map(_square, []) == []
        assert pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
        assert pool.apply(divmod, (7, 2)) == (3, 1)
        assert pool.apply(int, ("ff",), {"base": 16}) == 255
        states = pool.map(_state, range(8), chunksize=1)
        assert {s for s, _ in states} == {"ready"}  # the initializer ran in each process
        assert len({pid for _, pid in states}) == 2
        assert os.getpid() not in {pid for _, pid in states}
        with pytest.raises(ValueError, match="three"):
            pool.map(_fail_on_three, range(6))
        with pytest.raises(ValueError, match="chunksize"):
            pool.map(_square, range(3), chunksize=0)


def test_async_results_callbacks_and_iterators(ray):
    pool = Pool(2)
    done = threading.Event()
    seen = []
    result = pool.map_async(_square, range(5), callback=lambda v: (seen.append(v), done.set()))
    assert result.get(timeout=30) == [0, 1, 4, 9, 16]
    assert done.wait(10) and seen == [[0, 1, 4, 9, 16]]
    assert result.ready() and result.successful()

    errors = []
    failing = pool.apply_async(_fail_on_three, (3,), error_callback=errors.append)
    failing.wait(30)
    assert not failing.successful()
    with pytest.raises(ValueError, match="three"):
        failing.get()
    assert isinstance(errors[0], ValueError)

    slow = pool.apply_async(__import__("time").sleep, (2,))
    with pytest.raises(TimeoutError):
        slow.get(timeout=0.05)
    with pytest.raises(ValueError, match="not ready"):
        slow.successful()

    assert list(pool.imap(_square, range(6), chunksize=2)) == [0, 1, 4, 9, 16, 25]
    assert sorted(pool.imap_unordered(_square, range(6))) == [0, 1, 4, 9, 16, 25]
    assert pool.starmap_async(pow, [(2, 2)]).get(30) == [4]

    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(_square, [1])
    pool.join()  # waits for the sleeping call, then stops the processes
    assert slow.ready()


def test_maxtasksperchild_replaces_processes(ray):
    import collections

    with Pool(2, initializer=_init, initargs=("fresh",), maxtasksperchild=2) as pool:
        states = pool.map(_state, range(12), chunksize=1)
        per_process = collections.Counter(pid for _, pid in states)
        assert max(per_process.values()) <= 2 and len(per_process) >= 6
        assert {s for s, _ in states} == {"fresh"}  # each new process was initialized
        assert pool.map(_square, range(10), chunksize=3) == [x * x for x in range(10)]
    with Pool(1, maxtasksperchild=None) as pool:  # the default: processes live on
        assert len({pid for _, pid in pool.map(_state, range(6), chunksize=1)}) == 1
    with pytest.raises(ValueError, match="maxtasksperchild"):
        Pool(1, maxtasksperchild=0)


def test_bad_input_is_named(ray):
    with pytest.raises(ValueError, match="processes must be a positive int"):
        Pool(0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        Pool(1, initializer="not callable")
    pool = Pool(1)
    with pytest.raises(ValueError, match="close\\(\\) or terminate\\(\\) before join"):
        pool.join()
    pool.terminate()
