# C declarations for objects.py, compiled in Cython's pure Python mode (see core.pxd).

cimport cython

from miniray._core.node.core cimport NodeCore
from miniray._core.node.state cimport ObjectEntry, Task, WorkerHandle


cdef class ObjectDirectory(NodeCore):
    # The object directory's state (see objects.py).
    cdef public dict objects
    cdef public object _pinned_garbage
    cdef public object _state_lock
    cdef public object _used_lock
    cdef public object store
    cdef public object store_used
    cdef public object capacity
    cdef public object arena_size
    cdef public object store_dir
    cdef public object spill_dir
    cdef public object spill

    cpdef _set_value(self, bytes object_id, state, data, contained=*, size=*)
    cpdef _add_used(self, delta)
    cpdef _release_contained(self, contained)
    cpdef _incref(self, bytes object_id, n=*)
    cpdef _decref(self, bytes object_id, n=*)
    cpdef _delete(self, bytes object_id, ObjectEntry entry)
    cpdef _unpin(self, bytes object_id, n=*)
