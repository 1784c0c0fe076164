# C declarations for drivers.py, compiled in Cython's pure Python mode (see core.pxd).

cimport cython

from miniray._core.node.streams cimport Streams
from miniray._core.node.state cimport ObjectEntry, Task, WorkerHandle


cdef class DriverServer(Streams):
    # The driver server's state (see drivers.py).
    cdef public object drivers
    cdef public object ended_drivers
    cdef public object _driver_servers
    cdef public object _unauthenticated
