# C declarations for runtime.py, compiled in Cython's pure Python mode (see core.pxd).

cimport cython

from miniray._core.node.drivers cimport DriverServer
from miniray._core.node.state cimport ObjectEntry, Task, WorkerHandle


# Not final: Cython refuses a final class overriding a base's cpdef (_on_message).
cdef class NodeRuntime(DriverServer):
    # The runtime's state (see runtime.py): the loop, the lifecycle, what init() sets.
    cdef public object loop
    cdef public object thread
    cdef public bint owns_loop
    cdef public object _user_loop_thread
    cdef public object started_at
    cdef public object worker_env
    cdef public object _omp_default
    cdef public object runtime_env_vars
    cdef public object setup_hook
    cdef public object sampler
    cdef public object user_metrics
    cdef public object memory_monitor
    cdef public object dashboard
    cdef public object dashboard_boot
    cdef public object dashboard_token
    cdef public set direct_leases
    cdef public object direct_caller

    cpdef _on_message(self, WorkerHandle worker, message)
