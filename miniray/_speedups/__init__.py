"""Hot paths of miniray, compiled with Cython when possible.

Every module here is one plain-Python source (``allocator.py``) plus an
augmenting ``.pxd``.  The build compiles that source a second time under a
``_<name>_c`` module name, so the pure twin stays importable next to the
compiled one and both are tested by the same suite.

Set ``MINIRAY_PUREPYTHON`` to a non-empty value other than ``"0"`` to use the
pure-Python twins even when the extensions are built (handy for debugging
and for running the test suite against both builds).  Without it the
compiled modules are used, falling back to pure Python when they were not
built; ``COMPILED`` tells which one was picked.
"""

import os

__all__ = ["COMPILED", "PUREPYTHON_ENV", "SlotAllocator"]

PUREPYTHON_ENV = "MINIRAY_PUREPYTHON"


def _pure_python_requested():
    return os.environ.get(PUREPYTHON_ENV, "") not in ("", "0")


if _pure_python_requested():
    from .allocator import SlotAllocator

    COMPILED = False
else:
    try:
        from ._allocator_c import SlotAllocator
    except ModuleNotFoundError as error:
        # Only "not built" falls back; a built but broken extension raises.
        if error.name != __name__ + "._allocator_c":
            raise
        from .allocator import SlotAllocator

        COMPILED = False
    else:
        COMPILED = True
