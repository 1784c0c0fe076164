"""SlotAllocator, run against the pure-Python and the compiled twin.

Every test takes the ``allocator_class`` fixture, so the whole file runs once
per implementation.  The compiled param is skipped only when the extension is
not built (e.g. a ``MINIRAY_PUREPYTHON=1`` install).
"""

import importlib
import os
import random
import subprocess
import sys

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from miniray._speedups import allocator as pure_module

try:
    import miniray._speedups._allocator_c as compiled_module
except ModuleNotFoundError:  # not built
    compiled_module = None


PAGE = 4096

IMPLEMENTATIONS = [
    pytest.param(pure_module.SlotAllocator, id="pure"),
    pytest.param(
        getattr(compiled_module, "SlotAllocator", None),
        id="compiled",
        marks=pytest.mark.skipif(
            compiled_module is None,
            reason="miniray._speedups._allocator_c is not built "
            "(pure-Python install or build_ext not run)",
        ),
    ),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def allocator_class(request):
    return request.param


@pytest.fixture
def make_allocator(allocator_class):
    """Build allocators and check at teardown that nothing leaked."""
    created = []

    def make(capacity, min_block=PAGE):
        allocator = allocator_class(capacity, min_block)
        created.append(allocator)
        return allocator

    yield make
    for allocator in created:
        assert allocator.allocated_count == allocator.freed_count, allocator.stats()
        assert allocator.bytes_in_use == 0
        assert allocator.bytes_requested == 0
        assert allocator.largest_free == largest_power_of_two_chunk(
            allocator.capacity, allocator.min_block
        )


def largest_power_of_two_chunk(capacity, min_block):
    units = capacity // min_block
    return min_block << (units.bit_length() - 1)


def assert_consistent(allocator, live):
    """Free and live blocks tile the arena exactly, with no overlap.

    ``live`` maps offset -> requested size, as the caller remembers it.
    """
    blocks = [(offset, allocator.block_size(offset), "live") for offset in live]
    blocks += [(offset, size, "free") for offset, size in allocator.free_blocks()]
    blocks.sort()
    position = 0
    for offset, size, _ in blocks:
        assert offset == position, f"gap or overlap at {position}: {blocks}"
        assert size & (size - 1) == 0 and size >= allocator.min_block
        assert offset % size == 0, f"block {offset}+{size} is not size-aligned"
        position += size
    assert position == allocator.capacity
    assert allocator.bytes_in_use == sum(allocator.block_size(o) for o in live)
    assert allocator.bytes_requested == sum(live.values())
    assert allocator.allocated_count - allocator.freed_count == len(live)
    free_sizes = [size for _, size in allocator.free_blocks()]
    assert allocator.largest_free == max(free_sizes, default=0)


# -- construction ----------------------------------------------------------


@pytest.mark.skipif(compiled_module is None, reason="compiled twin not built")
def test_compiled_twin_uses_the_pxd_types():
    # If the build did not find allocator.pxd, Cython still compiles the file,
    # but as an ordinary Python class: slower, with an instance __dict__.
    allocator = compiled_module.SlotAllocator(PAGE * 4)
    assert not hasattr(allocator, "__dict__")
    with pytest.raises(AttributeError):
        allocator._first_free



@pytest.mark.parametrize(
    ("capacity", "min_block", "message"),
    [
        (PAGE * 8, 3000, "power of two"),
        (PAGE * 8, 0, "power of two"),
        (PAGE * 8, -4096, "power of two"),
        (PAGE - 1, PAGE, "at least min_block"),
        (0, PAGE, "at least min_block"),
        (PAGE * 3 + 1, PAGE, "multiple of min_block"),
        (1 << 62, PAGE, "must be below"),
        ((1 << 41) + 1, 1, "larger min_block"),
    ],
)
def test_rejects_bad_geometry(allocator_class, capacity, min_block, message):
    with pytest.raises(ValueError, match=message):
        allocator_class(capacity, min_block)


def test_rejects_non_integers(allocator_class):
    with pytest.raises(TypeError):
        allocator_class(PAGE * 4.0)
    with pytest.raises(TypeError):
        allocator_class(PAGE * 4, "4096")


def test_geometry_is_readonly(make_allocator):
    allocator = make_allocator(PAGE * 8)
    assert (allocator.capacity, allocator.min_block) == (PAGE * 8, PAGE)
    with pytest.raises(AttributeError):
        allocator.capacity = 1
    with pytest.raises(AttributeError):
        allocator.min_block = 1


def test_default_min_block_is_a_page(allocator_class):
    assert allocator_class(PAGE * 2).min_block == PAGE


# -- allocate / free -------------------------------------------------------


def test_offsets_are_aligned_and_blocks_rounded_up(make_allocator):
    allocator = make_allocator(PAGE * 64)
    live = {}
    for size in [1, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE, 5 * PAGE, 17]:
        offset = allocator.allocate(size)
        assert offset >= 0
        assert offset % PAGE == 0
        block = allocator.block_size(offset)
        assert block >= size and block & (block - 1) == 0
        assert block < 2 * max(size, PAGE)  # smallest power of two that fits
        assert offset % block == 0
        live[offset] = size
    assert_consistent(allocator, live)
    for offset in live:
        allocator.free(offset)


def test_split_then_coalesce_back_to_one_block(make_allocator):
    allocator = make_allocator(PAGE * 16)
    offsets = [allocator.allocate(PAGE) for _ in range(16)]
    assert sorted(offsets) == [i * PAGE for i in range(16)]
    assert allocator.largest_free == 0
    assert allocator.free_blocks() == []
    # Free in an order that makes every merge wait for its buddy.
    for offset in offsets[::2] + offsets[1::2]:
        assert allocator.free(offset) == PAGE
    assert allocator.free_blocks() == [(0, PAGE * 16)]
    assert allocator.largest_free == PAGE * 16


def test_whole_arena_in_one_block(make_allocator):
    allocator = make_allocator(PAGE * 8)
    offset = allocator.allocate(PAGE * 8)
    assert offset == 0
    assert allocator.allocate(1) == -1
    assert allocator.free(offset) == PAGE * 8


def test_exhaustion_returns_minus_one(make_allocator):
    allocator = make_allocator(PAGE * 4)
    assert allocator.allocate(PAGE * 4 + 1) == -1
    assert allocator.allocate(1 << 40) == -1
    first = allocator.allocate(PAGE * 2)
    assert allocator.allocate(PAGE * 3) == -1  # 2 pages left, not 4
    second = allocator.allocate(PAGE)
    third = allocator.allocate(PAGE)
    assert allocator.allocate(1) == -1
    assert allocator.largest_free == 0
    # A failed allocate changes no counter.
    assert allocator.allocated_count == 3
    for offset in (first, second, third):
        allocator.free(offset)


def test_fragmentation_blocks_large_request(make_allocator):
    allocator = make_allocator(PAGE * 4)
    offsets = [allocator.allocate(PAGE) for _ in range(4)]
    allocator.free(offsets[0])
    allocator.free(offsets[2])
    # Two free pages, but not buddies: no two-page block exists.
    assert allocator.largest_free == PAGE
    assert allocator.allocate(PAGE * 2) == -1
    allocator.free(offsets[1])
    assert allocator.largest_free == PAGE * 2
    allocator.free(offsets[3])


@pytest.mark.parametrize("size", [0, -1, -PAGE])
def test_rejects_non_positive_size(make_allocator, size):
    allocator = make_allocator(PAGE * 4)
    with pytest.raises(ValueError, match="positive"):
        allocator.allocate(size)
    assert allocator.allocated_count == 0


def test_double_free_names_the_offset(make_allocator):
    allocator = make_allocator(PAGE * 4)
    offset = allocator.allocate(PAGE)
    other = allocator.allocate(PAGE)
    allocator.free(other)
    with pytest.raises(ValueError, match=rf"offset {other}\b.*double free"):
        allocator.free(other)
    assert allocator.freed_count == 1
    allocator.free(offset)


@pytest.mark.parametrize("offset", [-PAGE, 1, PAGE + 8, PAGE * 2, PAGE * 4, PAGE * 100])
def test_bad_offsets_are_rejected(make_allocator, offset):
    allocator = make_allocator(PAGE * 4)
    live = allocator.allocate(PAGE)
    assert live == 0 or live == PAGE  # whichever half the split kept
    if offset == live:
        return
    with pytest.raises(ValueError, match=rf"offset {offset}\b"):
        allocator.free(offset)
    with pytest.raises(ValueError, match=rf"offset {offset}\b"):
        allocator.block_size(offset)
    assert allocator.freed_count == 0
    allocator.free(live)


def test_interior_offset_of_a_block_is_not_a_block(make_allocator):
    allocator = make_allocator(PAGE * 8)
    offset = allocator.allocate(PAGE * 4)
    with pytest.raises(ValueError):
        allocator.free(offset + PAGE)
    allocator.free(offset)


def test_counters_and_stats(make_allocator):
    allocator = make_allocator(PAGE * 8)
    first = allocator.allocate(100)
    second = allocator.allocate(PAGE + 1)
    stats = allocator.stats()
    assert stats == {
        "capacity": PAGE * 8,
        "min_block": PAGE,
        "bytes_in_use": PAGE + 2 * PAGE,
        "bytes_requested": 100 + PAGE + 1,
        "largest_free": PAGE * 4,
        "allocated_count": 2,
        "freed_count": 0,
        "live_blocks": 2,
    }
    assert allocator.free(first) == PAGE
    assert allocator.bytes_requested == PAGE + 1
    assert allocator.free(second) == 2 * PAGE
    assert allocator.stats()["freed_count"] == 2
    assert "bytes_in_use=0" in repr(allocator)


def test_min_block_other_than_a_page(make_allocator):
    allocator = make_allocator(64 * 7, min_block=64)
    offsets = [allocator.allocate(1) for _ in range(7)]
    assert sorted(offsets) == [i * 64 for i in range(7)]
    assert allocator.allocate(1) == -1
    for offset in offsets:
        allocator.free(offset)


# -- capacities that are not a power of two --------------------------------


@pytest.mark.parametrize("pages", [3, 5, 6, 7, 12, 13, 100, 1023])
def test_non_power_of_two_capacity_uses_every_page(make_allocator, pages):
    allocator = make_allocator(PAGE * pages)
    expected_trees = [1 << bit for bit in range(pages.bit_length()) if pages >> bit & 1]
    sizes = sorted((size // PAGE for _, size in allocator.free_blocks()))
    assert sizes == sorted(expected_trees)
    offsets = [allocator.allocate(PAGE) for _ in range(pages)]
    assert sorted(offsets) == [i * PAGE for i in range(pages)]
    assert allocator.allocate(1) == -1
    random.Random(pages).shuffle(offsets)
    for offset in offsets:
        allocator.free(offset)
    # Everything merged back into the top-level trees, and never across them.
    sizes = sorted((size // PAGE for _, size in allocator.free_blocks()))
    assert sizes == sorted(expected_trees)


def test_trees_of_a_non_power_of_two_arena_do_not_merge(make_allocator):
    # 6 pages = a 4-page tree at 0 and a 2-page tree at 4 pages.
    allocator = make_allocator(PAGE * 6)
    assert allocator.largest_free == PAGE * 4
    assert allocator.allocate(PAGE * 8) == -1
    big = allocator.allocate(PAGE * 4)
    small = allocator.allocate(PAGE * 2)
    assert (big, small) == (0, PAGE * 4)
    allocator.free(big)
    allocator.free(small)
    assert allocator.free_blocks() == [(0, PAGE * 4), (PAGE * 4, PAGE * 2)]


# -- randomized, against a reference model ---------------------------------


def test_random_workload_against_model(make_allocator):
    rng = random.Random(20240501)
    allocator = make_allocator(PAGE * 1000)
    live = {}
    for step in range(4000):
        if live and (rng.random() < 0.45 or allocator.largest_free == 0):
            offset = rng.choice(list(live))
            size = allocator.block_size(offset)
            assert allocator.free(offset) == size
            del live[offset]
        else:
            size = rng.choice([1, PAGE, 3 * PAGE, rng.randrange(1, 70 * PAGE)])
            fits = allocator.largest_free >= size
            offset = allocator.allocate(size)
            assert (offset >= 0) == fits, (size, allocator.stats())
            if offset >= 0:
                assert offset not in live
                live[offset] = size
        if step % 97 == 0:
            assert_consistent(allocator, live)
    assert_consistent(allocator, live)
    for offset in list(live):
        allocator.free(offset)


def expected_trees(pages):
    """(offset, size) of the top-level buddy trees of a ``pages``-page arena."""
    trees = []
    offset = 0
    for bit in range(pages.bit_length() - 1, -1, -1):
        if pages >> bit & 1:
            trees.append((offset, PAGE << bit))
            offset += PAGE << bit
    return trees


class AllocatorMachine(RuleBasedStateMachine):
    """Hypothesis drives allocate/free; a dict of live blocks is the model."""

    allocator_class = None  # set per implementation by the test below
    live_offsets = Bundle("live_offsets")
    freed_offsets = Bundle("freed_offsets")

    @initialize(pages=st.integers(1, 70))
    def create(self, pages):
        self.pages = pages
        self.allocator = self.allocator_class(PAGE * pages)
        self.live = {}

    @rule(target=live_offsets, size=st.integers(1, PAGE * 80))
    def allocate(self, size):
        fits = self.allocator.largest_free >= size
        offset = self.allocator.allocate(size)
        assert (offset >= 0) == fits
        if offset < 0:
            return multiple()
        assert offset not in self.live
        self.live[offset] = size
        return offset

    @rule(target=freed_offsets, offset=consumes(live_offsets))
    def free(self, offset):
        size = self.allocator.block_size(offset)
        assert self.allocator.free(offset) == size
        del self.live[offset]
        return offset

    @rule(offset=freed_offsets)
    def double_free_is_rejected(self, offset):
        if offset in self.live:  # allocated again since
            return
        with pytest.raises(ValueError, match=f"offset {offset}"):
            self.allocator.free(offset)

    @invariant()
    def consistent(self):
        assert_consistent(self.allocator, self.live)

    def teardown(self):
        for offset in list(self.live):
            self.allocator.free(offset)
        assert self.allocator.allocated_count == self.allocator.freed_count
        assert self.allocator.free_blocks() == expected_trees(self.pages)


def test_stateful_against_model(allocator_class):
    machine = type(
        "AllocatorMachineFor" + allocator_class.__module__.rsplit(".", 1)[-1],
        (AllocatorMachine,),
        {"allocator_class": allocator_class},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=80, stateful_step_count=60, deadline=None, database=None
        ),
    )


# -- which implementation miniray._speedups picks ---------------------------


def _selected_implementation(env_value):
    # Import the same miniray as this process, installed or in-tree.
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(pure_module.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [package_root, env.get("PYTHONPATH")])
    )
    env.pop("MINIRAY_PUREPYTHON", None)
    if env_value is not None:
        env["MINIRAY_PUREPYTHON"] = env_value
    code = (
        "import miniray._speedups as s; "
        "print(s.COMPILED, s.SlotAllocator.__module__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    compiled, module = result.stdout.split()
    return compiled == "True", module


@pytest.mark.parametrize("value", ["1", "yes", "true"])
def test_env_var_forces_pure_python(value):
    assert _selected_implementation(value) == (False, "miniray._speedups.allocator")


@pytest.mark.parametrize("value", [None, "", "0"])
def test_compiled_is_preferred_when_built(value):
    expected = (
        (True, "miniray._speedups._allocator_c")
        if compiled_module is not None
        else (False, "miniray._speedups.allocator")
    )
    assert _selected_implementation(value) == expected


def test_package_exports():
    speedups = importlib.import_module("miniray._speedups")
    assert speedups.PUREPYTHON_ENV == "MINIRAY_PUREPYTHON"
    forced = os.environ.get("MINIRAY_PUREPYTHON", "") not in ("", "0")
    if forced:
        assert speedups.COMPILED is False
        assert speedups.SlotAllocator is pure_module.SlotAllocator
    elif speedups.COMPILED:
        assert speedups.SlotAllocator is compiled_module.SlotAllocator
    else:
        assert compiled_module is None
