# C declarations for events.py, compiled in Cython's pure Python mode.
#
# The node records 3-4 events per task (submitted, dispatched, started,
# ended). As Python-level calls on untyped objects they cost a third of the
# node thread's CPU in batched actor calls (perf, call graphs): method binding,
# generic attribute writes on the Task, three deque.append lookups per event.
# Typed, the node calls them as C methods and they write the Task's fields as
# struct members. core.pxd cimports EventBus; this cimports Task from state.pxd.

cimport cython

from miniray._core.node.state cimport Task


cdef class _Ring:
    cdef public object items
    cdef public Py_ssize_t next_seq


@cython.final
cdef class _TaskRing(_Ring):
    cdef public object times
    cdef public object states
    cdef object _times_append
    cdef object _items_append
    cdef object _states_append

    cpdef add(self, double t, bytes task_id, str state)


cdef class EventBus:
    cdef dict __dict__
    cdef public dict caps
    cdef public object tasks
    cdef public Py_ssize_t task_cap
    cdef public _TaskRing task_ring
    cdef public Py_ssize_t evicted_tasks

    cpdef task_submitted(self, Task task)
    cpdef task_state(self, Task task, state)
    cpdef task_dispatched(self, Task task, worker_id, bint queued)
    cpdef task_started(self, Task task)
    cpdef task_ended(self, Task task, error)
    cpdef task_retried(self, Task task)


cdef tuple _done_record(Task task)
