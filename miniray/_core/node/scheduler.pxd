# C declarations for scheduler.py, compiled in Cython's pure Python mode (see core.pxd).

cimport cython

from miniray._core.node.worker_pool cimport WorkerPool
from miniray._core.node.state cimport ObjectEntry, Task, WorkerHandle


cdef class Scheduler(WorkerPool):
    # The scheduler's state (see scheduler.py).
    cdef public object ready
    cdef public object total
    cdef public object available
    cdef public object free_gpu_ids
    cdef public dict fn_cost
    cdef public object _blocked_workers
    cdef public object infeasible
    cdef public object _infeasible_warned
    cdef public object _pg_pending
    cdef public object _waiting_actors
    cdef public bint _steal_hint
    cdef public object _steal_timer
    cdef public object _steal_watch

    cpdef _schedule(self)
    cpdef _short_cost(self, fn_id)
    cpdef _note_cost(self, fn_id, double run_s)
    cpdef _pipeline_target(self, dict resources, double cost)
    cpdef _unassign(self, WorkerHandle worker, Task task)
    cpdef _dispatch(self, Task task, WorkerHandle worker)
    cpdef _resolve_args(self, Task task)
    cpdef _release_lease(self, WorkerHandle worker)
    cpdef _fits(self, dict resources)
    cpdef _acquire(self, dict resources)
    cpdef _release(self, dict resources)
    cpdef _gpus_of(self, dict resources)
