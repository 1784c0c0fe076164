# C types for allocator.py, compiled in Cython's pure Python mode.
#
# This file only adds declarations; the logic lives in allocator.py.  The
# build copies both files to ``_allocator_c.{py,pxd}`` (see setup.py), so the
# pure and the compiled twin cannot drift apart.

cimport cython

cdef Py_ssize_t _ORDER_BITS
cdef Py_ssize_t _ORDER_MASK
cdef Py_ssize_t _MAX_CAPACITY


@cython.final
cdef class SlotAllocator:
    cdef Py_ssize_t _capacity
    cdef Py_ssize_t _min_block
    cdef Py_ssize_t _unit_shift
    cdef Py_ssize_t _max_order
    # _free_blocks[order] is the set of unit indexes of free blocks of that order.
    cdef list _free_blocks
    # unit index -> requested_size << _ORDER_BITS | order
    cdef dict _allocated
    cdef Py_ssize_t _bytes_in_use
    cdef Py_ssize_t _bytes_requested
    cdef Py_ssize_t _allocated_count
    cdef Py_ssize_t _freed_count

    @cython.locals(
        units=Py_ssize_t,
        order=Py_ssize_t,
        block_units=Py_ssize_t,
        found=Py_ssize_t,
        half=Py_ssize_t,
        unit=Py_ssize_t,
        blocks=set,
    )
    cpdef Py_ssize_t allocate(self, Py_ssize_t size) except -2

    @cython.locals(
        unit=Py_ssize_t,
        packed=Py_ssize_t,
        order=Py_ssize_t,
        freed_size=Py_ssize_t,
        buddy_bit=Py_ssize_t,
        buddy=Py_ssize_t,
        blocks=set,
    )
    cpdef Py_ssize_t free(self, Py_ssize_t offset) except -1

    @cython.locals(packed=Py_ssize_t)
    cpdef Py_ssize_t block_size(self, Py_ssize_t offset) except -1
