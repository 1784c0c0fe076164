# C declarations for runtime.py, compiled in Cython's pure Python mode.
#
# Only declarations: the logic stays in runtime.py, which is also the
# pure-Python twin. The per-task objects and the node become extension types,
# so the node's hot paths (submit, dispatch, done, set value) read and write
# their fields as C struct members instead of through Python's generic
# attribute lookup, which profiling showed was the largest single cost of the
# node thread (attribute lookups and method binding, ~20 % of its CPU).

cimport cython

from miniray._core.events cimport EventBus


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


@cython.final
cdef class NodeRuntime:
    cdef dict __dict__
    cdef public dict objects
    cdef public dict functions
    cdef public dict tasks
    cdef public object ready
    cdef public dict workers
    cdef public list idle
    cdef public object _blocked_workers
    cdef public object actors
    cdef public object store
    cdef public object store_used
    cdef public object capacity
    cdef public object _state_lock
    cdef public object _used_lock
    cdef public object _ops
    cdef public bint _wake_pending
    cdef public set _flush_pending
    cdef public bint _flush_scheduled
    cdef public bint _batching
    cdef public bint _closing
    cdef public object loop
    cdef public object thread
    cdef public bint owns_loop
    cdef public object _user_loop_thread
    cdef public object counters
    cdef public dict fn_cost
    cdef public bint _steal_hint
    cdef public object _pack
    cdef public EventBus events
    cdef public object setup_error
    cdef public object free_gpu_ids
    cdef public object available

    # The hot internal methods: cpdef, so calls between them on the (typed)
    # node are direct C calls rather than attribute lookups and bound methods.
    cpdef _send(self, WorkerHandle worker, message)
    cpdef _flush_all(self)
    cpdef _flush_worker(self, WorkerHandle worker)
    cpdef _on_message(self, WorkerHandle worker, message)
    cpdef _schedule(self)
    cpdef _short_cost(self, fn_id)
    cpdef _pipeline_target(self, dict resources, double cost)
    cpdef _unassign(self, WorkerHandle worker, Task task)
    cpdef _dispatch(self, Task task, WorkerHandle worker)
    cpdef _resolve_args(self, Task task)
    cpdef _set_value(self, bytes object_id, state, data, contained=*, size=*)
    cpdef _add_used(self, delta)
    cpdef _release_contained(self, contained)
    cpdef _incref(self, bytes object_id, n=*)
    cpdef _decref(self, bytes object_id, n=*)
    cpdef _delete(self, bytes object_id, ObjectEntry entry)
    cpdef _unpin(self, bytes object_id, n=*)
    cpdef _finish_task(self, Task task)
    cpdef _fail_task(self, Task task, bytes error, bint schedule=*)
    cpdef _make_idle(self, WorkerHandle worker)
    cpdef _take_assigned(self, WorkerHandle worker, bytes task_id)
    cpdef _on_task_done(self, WorkerHandle worker, bytes task_id, results, run_s=*)
    cpdef _release_lease(self, WorkerHandle worker)
    cpdef _fits(self, dict resources)
    cpdef _acquire(self, dict resources)
    cpdef _release(self, dict resources)
    cpdef _gpus_of(self, dict resources)
    cpdef _hold_args(self, Task task)
    cpdef _actor_pump(self, actor)
