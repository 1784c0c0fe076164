# C declarations for runtime.py, compiled in Cython's pure Python mode (see core.pxd).

cimport cython

from miniray._core.node.drivers cimport DriverServer
from miniray._core.node.state cimport ObjectEntry, Task, WorkerHandle


# Not final: Cython refuses a final class overriding a base's cpdef (_on_message).
cdef class NodeRuntime(DriverServer):
    cpdef _on_message(self, WorkerHandle worker, message)
