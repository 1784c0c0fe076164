"""``multiprocessing.Pool`` on miniray actors (Ray's ``ray.util.multiprocessing``).

Swap ``from multiprocessing import Pool`` for ``from miniray.util.multiprocessing
import Pool`` and the same code runs its work in miniray workers: ``apply``,
``map``, ``imap``, ``imap_unordered``, ``starmap`` and their ``_async`` forms,
``AsyncResult`` with ``get``/``wait``/``ready``/``successful``, callbacks,
``close``/``join``/``terminate`` and the context manager (which terminates,
as the standard library's does).

Each pool process is an actor holding one CPU; ``initializer(*initargs)`` runs
once in each. Work is cut into chunks (``chunksize``) handed to the process
with the fewest chunks queued, and the function is stored once per call, not
once per chunk. With ``maxtasksperchild=n`` a process exits after its n-th
chunk (after finishing it) and a fresh one, initialized again, takes its place.
"""

from __future__ import annotations

import threading
from multiprocessing import JoinableQueue, TimeoutError  # noqa: F401  (Ray re-exports them)

__all__ = ["AsyncResult", "JoinableQueue", "Pool", "TimeoutError"]

_actor_class = None


def _pool_actor():
    # Built on first use: ``remote`` needs nothing from a node until .remote().
    global _actor_class
    if _actor_class is None:
        from ..api import remote

        class PoolProcess:
            def __init__(self, initializer, initargs):
                if initializer is not None:
                    initializer(*initargs)

            def run(self, func, chunk, star):
                if star:
                    return [func(*args) for args in chunk]
                return [func(arg) for arg in chunk]

            def ready(self):
                return True

            def retire(self):
                from ..actor import exit_actor

                exit_actor()

        _actor_class = remote(num_cpus=1)(PoolProcess)
    return _actor_class


class AsyncResult:
    """The result of an ``*_async`` call, as in ``multiprocessing.pool``."""

    def __init__(self, refs, single: bool, callback=None, error_callback=None,
                 on_done=None):
        self._refs = refs
        self._on_done = on_done
        self._single = single
        self._done = threading.Event()
        self._value = None
        self._error: BaseException | None = None
        thread = threading.Thread(target=self._collect, args=(callback, error_callback),
                                  name="miniray-pool-result", daemon=True)
        thread.start()

    def _collect(self, callback, error_callback) -> None:
        from ..api import _get_blocking as get

        try:
            chunks = get(self._refs)
            values = [v for chunk in chunks for v in chunk]
            self._value = values[0] if self._single else values
        except BaseException as exc:  # the caller sees it from get()
            self._error = exc
        if self._on_done is not None:
            self._on_done()
        self._done.set()
        if self._error is None and callback is not None:
            callback(self._value)
        elif self._error is not None and error_callback is not None:
            error_callback(self._error)

    def ready(self) -> bool:
        """Whether the call has finished."""
        return self._done.is_set()

    def successful(self) -> bool:
        """Whether it finished without raising; ValueError if not finished yet."""
        if not self._done.is_set():
            raise ValueError("the result is not ready yet; call wait() or get() first")
        return self._error is None

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is ready or ``timeout`` seconds pass."""
        self._done.wait(timeout)

    def get(self, timeout: float | None = None):
        """The result; re-raises the call's exception; TimeoutError after ``timeout``."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"the result was not ready within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value


class Pool:
    """A pool of ``processes`` actors (default: the node's CPUs) running functions.

    Args:
        processes: how many pool processes (actors of one CPU each).
        initializer: called as ``initializer(*initargs)`` once in each process.
        initargs: arguments for ``initializer``.
        maxtasksperchild: chunks a process runs before it is replaced by a
            fresh one (``None``: it lives as long as the pool), as in the
            standard library: for work that leaks memory or state.
        ray_remote_args: options for the actors, e.g. ``{"num_cpus": 2}``.
    """

    def __init__(self, processes: int | None = None, initializer=None, initargs=(),
                 maxtasksperchild=None, context=None, ray_address=None,
                 ray_remote_args: dict | None = None):
        from ..api import cluster_resources, init, is_initialized

        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if not is_initialized():
            init(address=ray_address)
        if processes is None:
            processes = max(int(cluster_resources().get("CPU", 1)), 1)
        if not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes must be a positive int, got {processes!r}")
        if maxtasksperchild is not None and (
                not isinstance(maxtasksperchild, int) or isinstance(maxtasksperchild, bool)
                or maxtasksperchild < 1):
            raise ValueError("maxtasksperchild must be None or a positive int, got "
                             f"{maxtasksperchild!r}")
        actor = _pool_actor()
        if ray_remote_args:
            actor = actor.options(**ray_remote_args)
        self._processes = processes
        self._new_process = lambda: actor.remote(initializer, tuple(initargs or ()))
        self._actors = [self._new_process() for _ in range(processes)]
        self._queued = [0] * processes  # chunks handed to each, not yet collected
        self._maxtasks = maxtasksperchild
        self._handed = [0] * processes  # chunks handed to each process so far
        self._retired: list = []  # (process, its exit's ref): finishing their last chunks
        self._inflight: set = set()
        self._lock = threading.Lock()
        self._state = "RUN"

    # -- submitting ---------------------------------------------------------------
    def _check_running(self) -> None:
        if self._state != "RUN":
            raise ValueError("Pool not running (close() or terminate() was called)")

    def _submit(self, func, iterable, chunksize, star: bool) -> list:
        from ..api import put

        self._check_running()
        items = list(iterable)
        if chunksize is None:  # as the standard library: about 4 chunks per process
            chunksize = max(1, -(-len(items) // (self._processes * 4)))
        elif not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize must be a positive int, got {chunksize!r}")
        func_ref = put(func)
        refs = []
        for start in range(0, len(items), chunksize):
            chunk = items[start:start + chunksize]
            with self._lock:
                index = min(range(self._processes), key=self._queued.__getitem__)
                self._queued[index] += 1
                process = self._actors[index]
                self._handed[index] += 1
                retire = self._maxtasks is not None and self._handed[index] >= self._maxtasks
                if retire:
                    self._actors[index] = self._new_process()
                    self._handed[index] = 0
            ref = process.run.remote(func_ref, chunk, star)
            if retire:
                self._retire(process)
            refs.append((ref, index))
        with self._lock:
            self._inflight.update(ref for ref, _ in refs)
        return refs

    def _retire(self, process) -> None:
        """The process exits after the chunks queued on it (an actor runs its
        calls in order); kept until then so that terminate() can stop it."""
        from ..api import wait

        done = self._retired and wait([r for _, r in self._retired],
                                      num_returns=len(self._retired), timeout=0)[0]
        if done:
            gone = set(done)
            self._retired = [(p, r) for p, r in self._retired if r not in gone]
        self._retired.append((process, process.retire.remote()))

    def _settle(self, refs) -> None:
        with self._lock:
            for ref, index in refs:
                if ref in self._inflight:
                    self._inflight.discard(ref)
                    self._queued[index] -= 1

    def _result(self, refs, single, callback, error_callback) -> AsyncResult:
        return AsyncResult([ref for ref, _ in refs], single, callback, error_callback,
                           on_done=lambda: self._settle(refs))

    def _run(self, func, iterable, chunksize, star: bool) -> list:
        from ..api import _get_blocking as get

        refs = self._submit(func, iterable, chunksize, star)
        try:
            chunks = get([ref for ref, _ in refs])
        finally:
            self._settle(refs)
        return [value for chunk in chunks for value in chunk]

    # -- the multiprocessing API ------------------------------------------------------
    def apply(self, func, args=(), kwds=None):
        """``func(*args, **kwds)`` in a pool process; returns its result."""
        return self._run(_Call(func, kwds) if kwds else func, [tuple(args)], 1, True)[0]

    def apply_async(self, func, args=(), kwds=None, callback=None, error_callback=None):
        """Like :meth:`apply`, returning an :class:`AsyncResult`."""
        kwds = kwds or {}
        call = _Call(func, kwds) if kwds else func
        refs = self._submit(call, [tuple(args)], 1, True)
        return self._result(refs, True, callback, error_callback)

    def map(self, func, iterable, chunksize=None):
        """``[func(x) for x in iterable]``, in the pool processes; the first error raises."""
        return self._run(func, iterable, chunksize, False)

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        """Like :meth:`map`, returning an :class:`AsyncResult`."""
        refs = self._submit(func, iterable, chunksize, False)
        return self._result(refs, False, callback, error_callback)

    def starmap(self, func, iterable, chunksize=None):
        """``[func(*args) for args in iterable]``, in the pool processes."""
        return self._run(func, iterable, chunksize, True)

    def starmap_async(self, func, iterable, chunksize=None, callback=None,
                      error_callback=None):
        """Like :meth:`starmap`, returning an :class:`AsyncResult`."""
        refs = self._submit(func, iterable, chunksize, True)
        return self._result(refs, False, callback, error_callback)

    def imap(self, func, iterable, chunksize=1):
        """An iterator of ``func(x)`` in input order, yielding as chunks finish.
        The work is submitted at the call, not at the first ``next()``."""
        refs = self._submit(func, iterable, chunksize, False)
        return self._iterate(refs, ordered=True)

    def imap_unordered(self, func, iterable, chunksize=1):
        """Like :meth:`imap`, in completion order."""
        refs = self._submit(func, iterable, chunksize, False)
        return self._iterate(refs, ordered=False)

    def _iterate(self, refs, ordered: bool):
        from ..api import _get_blocking as get, _wait_blocking as wait

        pending = [ref for ref, _ in refs]
        try:
            while pending:
                if ordered:
                    ready, pending = pending[:1], pending[1:]
                else:
                    ready, pending = wait(pending, num_returns=1)
                yield from get(ready[0])
        finally:
            self._settle(refs)

    # -- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        """Accept no more work; what was submitted still runs."""
        if self._state == "RUN":
            self._state = "CLOSE"

    def terminate(self) -> None:
        """Stop the pool processes now; unfinished work is lost."""
        from ..api import is_initialized, kill

        if self._state == "TERMINATE":
            return
        self._state = "TERMINATE"
        if is_initialized():
            for actor in self._actors + [process for process, _ in self._retired]:
                kill(actor)
        self._actors = []
        self._retired = []

    def join(self) -> None:
        """Wait for submitted work to finish, then stop the processes (after close())."""
        from ..api import wait

        if self._state == "RUN":
            raise ValueError("call close() or terminate() before join()")
        with self._lock:
            inflight = list(self._inflight)
        if inflight:
            wait(inflight, num_returns=len(inflight))
        self.terminate()

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, *exc_info):
        self.terminate()

    def __repr__(self) -> str:
        return f"<miniray.util.multiprocessing.Pool processes={self._processes} {self._state}>"


class _Call:
    """``func`` with keyword arguments bound, for apply(kwds=...)."""

    __slots__ = ("func", "kwds")

    def __init__(self, func, kwds):
        self.func = func
        self.kwds = kwds

    def __call__(self, *args):
        return self.func(*args, **self.kwds)

