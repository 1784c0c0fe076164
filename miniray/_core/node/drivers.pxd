# C declarations for drivers.py, compiled in Cython's pure Python mode (see core.pxd).

cimport cython

from miniray._core.node.streams cimport Streams
from miniray._core.node.state cimport ObjectEntry, Task, WorkerHandle


cdef class DriverServer(Streams):
    pass
