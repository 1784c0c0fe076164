# C declarations for actors.py, compiled in Cython's pure Python mode (see core.pxd).

cimport cython

from miniray._core.node.placement_groups cimport PlacementGroups
from miniray._core.node.state cimport ObjectEntry, Task, WorkerHandle


cdef class ActorManager(PlacementGroups):
    # The actor manager's state (see actors.py).
    cdef public object actors
    cdef public object named_actors
    cdef public object namespace

    cpdef _actor_pump(self, actor)
