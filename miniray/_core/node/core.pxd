# C declarations for core.py, compiled in Cython's pure Python mode.
#
# The node is one object built from a chain of component classes, each in its
# own module (core -> objects -> worker_pool -> scheduler -> tasks ->
# placement_groups -> actors -> streams -> drivers -> runtime; see
# docs/architecture.md). Each component declares the state it owns in its own
# .pxd (this one: the core's), so a component reads its own state and that of
# the components below it as C struct members; each component's hot methods
# are cpdef in its own .pxd, so calls to a component below are direct C calls.
# State owned above (the loop, for one) is read through Python attribute
# access. The few hot calls that go up the chain (_schedule, _on_message) are
# declared here too and overridden above.

cimport cython

from miniray._core.node.events cimport EventBus
from miniray._core.node.state cimport ObjectEntry, Task, WorkerHandle


cdef class NodeCore:
    # The core's state (see core.py). No instance __dict__: every attribute of
    # the node is declared in the .pxd of the component that owns it, and a
    # class without one skips Cython's check for a Python-level override on
    # every cpdef call.
    cdef public object node_pid
    cdef public object _ops
    cdef public bint _wake_pending
    cdef public set _flush_pending
    cdef public bint _flush_scheduled
    cdef public bint _batching
    cdef public object _pack
    cdef public EventBus events
    cdef public object counters

    # The hot internal methods: cpdef, so calls between them on the (typed)
    # node are direct C calls rather than attribute lookups and bound methods.
    cpdef _send(self, WorkerHandle worker, message)
    cpdef _set_batching(self, bint batching)
    cpdef _flush_all(self)
    cpdef _flush_worker(self, WorkerHandle worker)
    # Defined above (Scheduler, NodeRuntime): here so the worker pool's and the
    # drivers' protocols, which hold the node typed as this class, call them in C.
    cpdef _schedule(self)
    cpdef _on_message(self, WorkerHandle worker, message)
