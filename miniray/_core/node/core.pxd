# C declarations for core.py, compiled in Cython's pure Python mode.
#
# The node is one object built from a chain of component classes, each in its
# own module (core -> objects -> worker_pool -> scheduler -> tasks ->
# placement_groups -> actors -> streams -> drivers -> runtime; see
# docs/architecture.md). The state they share is declared here, on the base,
# so every component reads and writes it as C struct members; each
# component's hot methods are cpdef in its own .pxd, so calls to a component
# below are direct C calls. The few hot calls that go up the chain
# (_schedule, _on_message) are declared here too and overridden above.

cimport cython

from miniray._core.node.events cimport EventBus
from miniray._core.node.state cimport ObjectEntry, Task, WorkerHandle


cdef class NodeCore:
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
    # Defined above (Scheduler, NodeRuntime): here so the worker pool's and the
    # drivers' protocols, which hold the node typed as this class, call them in C.
    cpdef _schedule(self)
    cpdef _on_message(self, WorkerHandle worker, message)
