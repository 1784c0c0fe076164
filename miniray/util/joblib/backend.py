"""The joblib backend: joblib's ``ParallelBackendBase`` over miniray tasks."""

from __future__ import annotations

from joblib.parallel import ParallelBackendBase

try:  # joblib's batching of tiny calls (not public API: without it, one call a task)
    from joblib._parallel_backends import AutoBatchingMixin
except ImportError:  # pragma: no cover - a joblib that moved it
    class AutoBatchingMixin:
        pass

from ... import api


def _run_batch(batch):
    return batch()


class RayBackend(AutoBatchingMixin, ParallelBackendBase):
    """Runs each joblib batch as a miniray task; results come back through the
    ref's future, so joblib's callbacks fire as tasks finish."""

    supports_retrieve_callback = True
    supports_inner_max_num_threads = False
    uses_threads = False
    supports_sharedmem = False
    default_n_jobs = -1

    def __init__(self, nesting_level=None, inner_max_num_threads=None, **kwargs):
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads, **kwargs)
        self._task = None
        self._pending: set = set()

    @staticmethod
    def _node_cpus() -> int:
        if not api.is_initialized():
            api.init()
        return max(1, int(api.cluster_resources().get("CPU", 1)))

    def effective_n_jobs(self, n_jobs):
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        cpus = self._node_cpus()
        if n_jobs is None or n_jobs == -1:
            return cpus
        if n_jobs < 0:  # joblib's convention: -2 is all CPUs but one
            return max(1, cpus + 1 + n_jobs)
        return n_jobs

    def configure(self, n_jobs=1, parallel=None, **backend_kwargs):
        n_jobs = self.effective_n_jobs(n_jobs)
        self.parallel = parallel
        if self._task is None:
            self._task = api.remote(_run_batch)
        return n_jobs

    def submit(self, func, callback=None):
        ref = self._task.remote(func)
        self._pending.add(ref)
        future = ref.future()
        future.add_done_callback(lambda _: self._pending.discard(ref))
        if callback is not None:
            future.add_done_callback(callback)
        return future

    apply_async = submit  # the name joblib before 1.5 calls

    def retrieve_result_callback(self, out):
        return out.result()

    def retrieve_result(self, out, timeout=None):
        return out.result(timeout=timeout)

    def abort_everything(self, ensure_ready=True):
        # A failed call ends the Parallel run: the batches not finished are not needed.
        for ref in list(self._pending):
            try:
                api.cancel(ref)
            except Exception:  # already finished
                pass
        self._pending.clear()
        if ensure_ready:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel)

    def terminate(self):
        self._pending.clear()
