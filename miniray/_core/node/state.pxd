# C declarations for state.py, compiled in Cython's pure Python mode.
#
# The node's per-task records become extension types, so the node's hot paths
# (submit, dispatch, done, set value) read and write their fields as C struct
# members instead of through Python's generic attribute lookup, which
# profiling showed was the largest single cost of the node thread (attribute
# lookups and method binding, ~20 % of its CPU). events.pxd cimports Task
# from here; nothing here cimports back.

cimport cython


@cython.final
cdef class ObjectEntry:
    cdef public object state
    cdef public object data
    cdef public object refcount
    cdef public object pins
    cdef public object contained
    cdef public object waiters
    cdef public object size
    cdef public object free_when_unpinned
    cdef public object is_actor_handle


@cython.final
cdef class Task:
    cdef public object task_id
    cdef public object fn_id
    cdef public object args
    cdef public object kwargs
    cdef public object contained
    cdef public object return_ids
    cdef public object name
    cdef public object resources
    cdef public object retries_left
    cdef public object retry_exceptions
    cdef public object deps
    cdef public object worker
    cdef public object cancelled
    cdef public object force_cancelled
    cdef public object actor
    cdef public object method
    cdef public object pinned
    cdef public object held
    cdef public object gpu_ids
    cdef public object finished
    cdef public object dispatched_at
    cdef public object has_refs
    cdef public object cost
    cdef public object state
    cdef public object submitted_at
    cdef public object started_at
    cdef public object ended_at
    cdef public object worker_id
    cdef public object error
    cdef public object attempt
    cdef public object deps_ids
    cdef public object max_calls
    cdef public object placement
    cdef public object group
    cdef public object env
    cdef public bint record_events


# Not final: DriverConn (a driver connected to a head node) is a subclass.
cdef class WorkerHandle:
    cdef dict __dict__
    cdef public object worker_id
    cdef public object proc
    cdef public object pid
    cdef public object sock
    cdef public object transport
    cdef public object ready
    cdef public object dead
    cdef public object killed
    cdef public object last_task_name
    cdef public dict assigned
    cdef public object queued_cost
    cdef public object long_queued
    cdef public object lease
    cdef public object blocked
    cdef public object known_functions
    cdef public object held
    cdef public object pins
    cdef public object actor
    cdef public list out
    cdef public object started
    cdef public object idle_since
    cdef public object logs
