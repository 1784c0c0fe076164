"""What the caller of ``get``/``wait``/``init`` asked for, read from its frame.

"Is an event loop running in this thread?" does not say whether the caller can
await: a Jupyter kernel runs every cell, synchronous ones too, inside its
running loop, and so does the ``python -m asyncio`` REPL. The calling frame's
code does say it:

- Code compiled as a coroutine (``async def``, an async generator, or a
  generator-based coroutine) is async code: ``get``/``wait`` there return an
  awaitable, as miniray always did in async code (``await ray.get(ref)``,
  ``asyncio.gather(ray.get(a), ray.get(b))``, ``asyncio.wait_for(ray.get(r), 5)``).
- Top-level code that awaits (a notebook cell or REPL statement compiled with
  ``PyCF_ALLOW_TOP_LEVEL_AWAIT``) is flagged as a coroutine too, but mixes
  Ray's synchronous code with ``await``: there the call is awaitable only when
  the instruction right after it awaits its result (``await ray.get(ref)``);
  ``x = ray.get(ref)`` in the same statement gets the value.
- Comprehensions that Python < 3.12 runs as frames of their own are judged by
  the code they are written in, so ``[ray.get(r) for r in refs]`` means the same
  on every version.
- Anything else is synchronous code, which gets the value.

Invariant: nothing here touches the node; it only reads frames and code objects.
"""

from __future__ import annotations

import sys
from inspect import CO_ASYNC_GENERATOR, CO_COROUTINE, CO_ITERABLE_COROUTINE

ASYNC_CODE = CO_COROUTINE | CO_ITERABLE_COROUTINE | CO_ASYNC_GENERATOR
_COMPREHENSIONS = frozenset({"<listcomp>", "<setcomp>", "<dictcomp>", "<genexpr>"})
_TOP_LEVEL = "<module>"  # the name of code compiled in exec/eval/single mode
# Async code with one of these names is not an async def: see wants_awaitable.
NOT_A_DEF = _COMPREHENSIONS | {_TOP_LEVEL}

# (code, offset of the call) -> whether the next instruction awaits. Cells are
# few and small; the bound only keeps a long session from growing it forever.
_awaited_at: dict = {}
_AWAITED_CACHE_SIZE = 512


def is_async_def(code) -> bool:
    """True for the code of an ``async def`` (or async generator), not for
    top-level code that awaits nor for a comprehension."""
    return bool(code.co_flags & ASYNC_CODE) and code.co_name not in NOT_A_DEF


def wants_awaitable(frame) -> bool:
    """Whether the code running in ``frame`` asked ``get``/``wait`` for an awaitable."""
    code = frame.f_code
    name = code.co_name
    if name in _COMPREHENSIONS:
        owner = frame.f_back
        while owner is not None and owner.f_code.co_name in _COMPREHENSIONS:
            owner = owner.f_back
        if owner is not None and is_async_def(owner.f_code):
            return True
        return bool(code.co_flags & ASYNC_CODE) and awaited_here(frame)
    if code.co_flags & ASYNC_CODE:
        return name != _TOP_LEVEL or awaited_here(frame)
    return False


def awaited_here(frame) -> bool:
    """True if the instruction after the call running in ``frame`` awaits its result.

    ``f_lasti`` falls within that call: at its start (3.10, 3.13) or on its last
    inline cache entry (3.11, 3.12). ``dis`` lists instructions by byte offset
    without the caches, so the first one listed past ``f_lasti`` is the one that
    runs next, and ``await <call>`` compiles to ``GET_AWAITABLE`` there on 3.10
    to 3.13.
    """
    code = frame.f_code
    key = (code, frame.f_lasti)
    awaited = _awaited_at.get(key)
    if awaited is None:
        import dis

        awaited = False
        for instruction in dis.get_instructions(code):
            if instruction.offset > key[1]:
                awaited = instruction.opname == "GET_AWAITABLE"
                break
        if len(_awaited_at) >= _AWAITED_CACHE_SIZE:
            _awaited_at.clear()
        _awaited_at[key] = awaited
    return awaited


def in_ipython_session() -> bool:
    """True inside IPython (a terminal session or a Jupyter kernel).

    Their event loop runs only while a cell runs (terminal IPython), or is the
    kernel's, which every synchronous cell blocks: no place for the node.
    """
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        return ipython.get_ipython() is not None
    except Exception:  # a half-imported or stubbed IPython
        return False
