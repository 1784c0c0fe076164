# C declarations for streams.py, compiled in Cython's pure Python mode (see core.pxd).

cimport cython

from miniray._core.node.actors cimport ActorManager
from miniray._core.node.state cimport ObjectEntry, Task, WorkerHandle


cdef class Streams(ActorManager):
    # The streams' state (see streams.py).
    cdef public object streams
