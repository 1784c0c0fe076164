# C types for allocator.py, compiled in Cython's pure Python mode.
#
# This file only adds declarations; the logic lives in allocator.py.  The
# build copies both files to ``_allocator_c.{py,pxd}`` (see setup.py), so the
# pure and the compiled twin cannot drift apart.  The per-unit ``array``
# tables become typed memoryviews here, so the hot paths index raw memory.

cimport cython


@cython.final
cdef class SlotAllocator:
    cdef Py_ssize_t _capacity
    cdef Py_ssize_t _min_block
    cdef Py_ssize_t _unit_shift
    cdef Py_ssize_t _total_units
    cdef Py_ssize_t _max_order
    cdef signed char[::1] _free_order
    cdef signed char[::1] _allocated_order
    cdef long long[::1] _next
    cdef long long[::1] _previous
    cdef long long[::1] _first_free
    cdef Py_ssize_t _bytes_in_use
    cdef Py_ssize_t _bytes_requested
    cdef Py_ssize_t _allocated_count
    cdef Py_ssize_t _freed_count

    @cython.locals(head=Py_ssize_t)
    cdef inline void _push_free(self, Py_ssize_t unit, Py_ssize_t order) noexcept

    @cython.locals(following=Py_ssize_t, preceding=Py_ssize_t)
    cdef inline void _remove_free(self, Py_ssize_t unit, Py_ssize_t order) noexcept

    @cython.locals(unit=Py_ssize_t)
    cdef inline Py_ssize_t _allocated_unit(self, Py_ssize_t offset) noexcept

    @cython.locals(order=Py_ssize_t)
    cdef Py_ssize_t _largest_free_order(self) noexcept

    @cython.locals(order=Py_ssize_t, unit=Py_ssize_t)
    cpdef list free_blocks(self)

    @cython.locals(
        units=Py_ssize_t,
        order=Py_ssize_t,
        block_units=Py_ssize_t,
        found=Py_ssize_t,
        half=Py_ssize_t,
        unit=Py_ssize_t,
    )
    cpdef Py_ssize_t allocate(self, Py_ssize_t size) except -2

    @cython.locals(
        unit=Py_ssize_t,
        order=Py_ssize_t,
        freed_size=Py_ssize_t,
        buddy_bit=Py_ssize_t,
        buddy=Py_ssize_t,
    )
    cpdef Py_ssize_t free(self, Py_ssize_t offset) except -1

    @cython.locals(unit=Py_ssize_t)
    cpdef Py_ssize_t block_size(self, Py_ssize_t offset) except -1
