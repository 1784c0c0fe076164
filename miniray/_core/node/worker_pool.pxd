# C declarations for worker_pool.py, compiled in Cython's pure Python mode (see core.pxd).

cimport cython

from miniray._core.node.objects cimport ObjectDirectory
from miniray._core.node.state cimport ObjectEntry, Task, WorkerHandle


cdef class WorkerPool(ObjectDirectory):
    # The worker pool's state (see worker_pool.py).
    cdef public dict workers
    cdef public object workers_by_pid
    cdef public list idle
    cdef public object _dead_workers
    cdef public object _next_worker_id
    cdef public object _worker_target
    cdef public object _startup_deaths
    cdef public object watchdog
    cdef public object setup_error
    cdef public object setup_cause
    cdef public object log_dir
    cdef public object log_to_driver
    cdef public bint _closing

    cpdef _make_idle(self, WorkerHandle worker)
