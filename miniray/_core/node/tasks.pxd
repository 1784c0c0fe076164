# C declarations for tasks.py, compiled in Cython's pure Python mode (see core.pxd).

cimport cython

from miniray._core.node.scheduler cimport Scheduler
from miniray._core.node.state cimport ObjectEntry, Task, WorkerHandle


cdef class TaskManager(Scheduler):
    # The task manager's state (see tasks.py).
    cdef public dict tasks
    cdef public dict functions

    cpdef _finish_task(self, Task task)
    cpdef _fail_task(self, Task task, bytes error, bint schedule=*)
    cpdef _take_assigned(self, WorkerHandle worker, bytes task_id)
    cpdef _on_task_done(self, WorkerHandle worker, bytes task_id, results, run_s=*)
    cpdef _set_results(self, return_ids, results)
    cpdef _hold_args(self, Task task)
