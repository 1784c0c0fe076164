"""Buddy allocator for the slots of a shared-memory arena.

The object store carves large objects out of ``/dev/shm`` segments.  Readers
``mmap`` page-aligned sub-ranges of a segment, so every offset handed out here
is a multiple of ``min_block`` (a power of two, the page size by default).

This file is plain Python and is also compiled by Cython in "pure Python
mode": ``allocator.pxd`` next to it adds C types to the hot paths.  The build
compiles it under the module name ``_allocator_c`` (see ``setup.py``), so
both twins come from this one source.  Keep it valid Python: no ``cython``
import, no C-only syntax.

Layout
------
Sizes are measured in *units* of ``min_block``.  A block of *order* ``k`` is
``2**k`` units long and starts at a unit index that is a multiple of ``2**k``;
its buddy is the block at ``unit ^ 2**k``.

A capacity that is not a power of two units is managed as several top-level
buddy trees, one per set bit of the unit count, largest first.  Because the
trees are laid out in decreasing size, every tree of ``2**k`` units starts at
a multiple of ``2**(k+1)`` units, and everything after it belongs to smaller
trees.  So the buddy address of a whole tree never holds a free block of the
same order, and coalescing by "is my buddy free at my order?" stops at tree
boundaries by itself, without a table of tree extents.

Free blocks of each order form a doubly linked list threaded through
per-unit tables (``array`` objects, typed memoryviews in the compiled twin),
so allocate and free touch no Python objects on the compiled path.  The
tables cost 18 bytes per unit: about 0.4% of the arena with 4 KiB units.

Invariants (checked by ``tests/test_allocator.py``):

* every unit of the arena is in exactly one free block or one allocated block;
* the list of order ``k`` holds exactly the free blocks of order ``k``, and
  ``_free_order[unit] == k`` for each of them;
* two free buddies never coexist (they are merged on ``free``);
* ``bytes_in_use`` is the sum of allocated block sizes, and
  ``allocated_count - freed_count`` is the number of live blocks.
"""

from array import array
from operator import index as _as_index

__all__ = ["SlotAllocator"]

# Unit counts above this would make the per-unit tables absurdly large.
_MAX_UNITS = 1 << 40


class SlotAllocator:
    """Hand out power-of-two, ``min_block``-aligned slots of an arena.

    ``allocate(size)`` returns the byte offset of a free block of at least
    ``size`` bytes, or ``-1`` when no block fits; ``free(offset)`` gives it
    back and merges it with its buddy.  Both run in O(log(capacity /
    min_block)) time.

    The counters ``allocated_count`` and ``freed_count`` only grow; a test
    that tears an arena down asserts they are equal, i.e. nothing leaked.
    """

    def __init__(self, capacity, min_block=4096):
        capacity = _as_index(capacity)
        min_block = _as_index(min_block)
        if min_block <= 0 or min_block & (min_block - 1):
            raise ValueError(
                f"min_block must be a positive power of two, got {min_block}"
            )
        if capacity < min_block:
            raise ValueError(
                f"capacity ({capacity}) must be at least min_block ({min_block})"
            )
        if capacity % min_block:
            raise ValueError(
                f"capacity ({capacity}) must be a multiple of min_block "
                f"({min_block})"
            )
        total_units = capacity // min_block
        if total_units > _MAX_UNITS:
            raise ValueError(
                f"capacity ({capacity}) must be below {_MAX_UNITS} * min_block "
                f"({min_block}); use a larger min_block"
            )

        self._capacity = capacity
        self._min_block = min_block
        self._unit_shift = min_block.bit_length() - 1
        self._total_units = total_units
        self._max_order = total_units.bit_length() - 1
        # Per-unit tables; only the entry of a block's first unit is used.
        # _free_order[u]: order of the free block starting at u, else -1.
        # _allocated_order[u]: order of the allocated block at u, else -1.
        # _next[u]: for a free block, the next free block of the same order
        #   (-1 ends the list); for an allocated block, the requested size
        #   (an allocated block is on no list, so its link is unused).
        # _previous[u]: for a free block, the previous one, or -1.
        self._free_order = array("b", [-1]) * total_units
        self._allocated_order = array("b", [-1]) * total_units
        self._next = array("q", [-1]) * total_units
        self._previous = array("q", [-1]) * total_units
        # _first_free[k]: head of the free list of order k, or -1.
        self._first_free = array("q", [-1]) * (self._max_order + 1)
        self._bytes_in_use = 0
        self._bytes_requested = 0
        self._allocated_count = 0
        self._freed_count = 0

        # One top-level tree per set bit of ``total_units``, largest first.
        unit = 0
        for order in range(self._max_order, -1, -1):
            if total_units >> order & 1:
                self._push_free(unit, order)
                unit += 1 << order

    # -- free lists (doubly linked, through the per-unit tables) ------------

    def _push_free(self, unit, order):
        head = self._first_free[order]
        self._next[unit] = head
        self._previous[unit] = -1
        if head >= 0:
            self._previous[head] = unit
        self._first_free[order] = unit
        self._free_order[unit] = order

    def _remove_free(self, unit, order):
        following = self._next[unit]
        preceding = self._previous[unit]
        if preceding >= 0:
            self._next[preceding] = following
        else:
            self._first_free[order] = following
        if following >= 0:
            self._previous[following] = preceding
        self._free_order[unit] = -1

    def _allocated_unit(self, offset):
        """Unit index of the live block at ``offset``, or -1."""
        if offset < 0 or offset & (self._min_block - 1):
            return -1
        unit = offset >> self._unit_shift
        if unit >= self._total_units or self._allocated_order[unit] < 0:
            return -1
        return unit

    def _largest_free_order(self):
        order = self._max_order
        while order >= 0 and self._first_free[order] < 0:
            order -= 1
        return order

    # -- hot paths ---------------------------------------------------------

    def allocate(self, size):
        """Return the offset of a free block of at least ``size`` bytes.

        Returns ``-1`` when no free block is large enough.  The block is the
        smallest power-of-two multiple of ``min_block`` that holds ``size``.
        """
        if size <= 0:
            raise ValueError(f"allocation size must be positive, got {size}")
        if size > self._capacity:
            return -1
        units = (size + self._min_block - 1) >> self._unit_shift
        order = 0
        block_units = 1
        while block_units < units:
            block_units <<= 1
            order += 1

        # Smallest order at or above the wanted one that has a free block.
        found = order
        while found <= self._max_order and self._first_free[found] < 0:
            found += 1
        if found > self._max_order:
            return -1
        unit = self._first_free[found]
        self._remove_free(unit, found)

        # Split down to the wanted order; the upper halves become free.
        while found > order:
            found -= 1
            half = 1
            half <<= found
            self._push_free(unit + half, found)

        self._allocated_order[unit] = order
        self._next[unit] = size
        self._bytes_in_use += self._min_block << order
        self._bytes_requested += size
        self._allocated_count += 1
        return unit << self._unit_shift

    def free(self, offset):
        """Give the block at ``offset`` back; return its size in bytes.

        Raises ``ValueError`` for an offset that is not the start of a live
        block (never allocated, or already freed).
        """
        unit = self._allocated_unit(offset)
        if unit < 0:
            raise ValueError(
                f"offset {offset} is not an allocated block "
                f"(double free or never allocated)"
            )
        order = self._allocated_order[unit]
        self._allocated_order[unit] = -1
        freed_size = self._min_block << order
        self._bytes_in_use -= freed_size
        self._bytes_requested -= self._next[unit]
        self._freed_count += 1

        # Merge with the buddy while it is free at the same order.  The
        # buddy of the last, partial tree may lie past the arena's end.
        buddy_bit = 1
        buddy_bit <<= order
        while order < self._max_order:
            buddy = unit ^ buddy_bit
            if buddy >= self._total_units or self._free_order[buddy] != order:
                break
            self._remove_free(buddy, order)
            unit &= ~buddy_bit
            buddy_bit <<= 1
            order += 1
        self._push_free(unit, order)
        return freed_size

    def block_size(self, offset):
        """Size in bytes of the allocated block at ``offset``."""
        unit = self._allocated_unit(offset)
        if unit < 0:
            raise ValueError(f"offset {offset} is not an allocated block")
        return self._min_block << self._allocated_order[unit]

    # -- introspection -----------------------------------------------------

    @property
    def capacity(self):
        """Arena size in bytes."""
        return self._capacity

    @property
    def min_block(self):
        """Smallest block size and the alignment of every offset, in bytes."""
        return self._min_block

    @property
    def bytes_in_use(self):
        """Sum of the sizes of the allocated blocks."""
        return self._bytes_in_use

    @property
    def bytes_requested(self):
        """Sum of the sizes callers asked for, over the live blocks."""
        return self._bytes_requested

    @property
    def largest_free(self):
        """Size of the largest block ``allocate`` could return right now."""
        order = self._largest_free_order()
        return self._min_block << order if order >= 0 else 0

    @property
    def allocated_count(self):
        """Number of successful ``allocate`` calls, ever."""
        return self._allocated_count

    @property
    def freed_count(self):
        """Number of successful ``free`` calls, ever."""
        return self._freed_count

    def stats(self):
        """All counters in one dict, for logs and ``statistics()`` views."""
        return {
            "capacity": self._capacity,
            "min_block": self._min_block,
            "bytes_in_use": self._bytes_in_use,
            "bytes_requested": self._bytes_requested,
            "largest_free": self.largest_free,
            "allocated_count": self._allocated_count,
            "freed_count": self._freed_count,
            "live_blocks": self._allocated_count - self._freed_count,
        }

    def free_blocks(self):
        """Sorted ``(offset, size)`` pairs of the free blocks (for tests)."""
        blocks = []
        for order in range(self._max_order + 1):
            unit = self._first_free[order]
            while unit >= 0:
                blocks.append((unit << self._unit_shift, self._min_block << order))
                unit = self._next[unit]
        return sorted(blocks)

    def __repr__(self):
        return (
            f"<{type(self).__name__} capacity={self._capacity} "
            f"min_block={self._min_block} bytes_in_use={self._bytes_in_use} "
            f"live_blocks={self._allocated_count - self._freed_count}>"
        )
