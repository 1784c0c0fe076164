# C declarations for placement_groups.py, compiled in Cython's pure Python mode (see core.pxd).

cimport cython

from miniray._core.node.tasks cimport TaskManager
from miniray._core.node.state cimport ObjectEntry, Task, WorkerHandle


cdef class PlacementGroups(TaskManager):
    # The placement groups' state (see placement_groups.py).
    cdef public object placement_groups
    cdef public object _pgs_removed
