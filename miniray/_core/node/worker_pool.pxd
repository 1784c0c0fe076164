# C declarations for worker_pool.py, compiled in Cython's pure Python mode (see core.pxd).

cimport cython

from miniray._core.node.objects cimport ObjectDirectory
from miniray._core.node.state cimport ObjectEntry, Task, WorkerHandle


cdef class WorkerPool(ObjectDirectory):
    cpdef _make_idle(self, WorkerHandle worker)
