"""What miniray says about a Ray name it does not have.

``ray_exclusions.txt`` (beside this file) lists each Ray public name miniray leaves
out, with a category and a reason; ``tests/test_ray_surface.py`` keeps it complete.
Modules with Ray's names end their ``__getattr__`` with :func:`missing`, so
``miniray.data`` or ``miniray.util.collective`` fail with that reason (and the
alternative, where there is one) instead of a bare ``AttributeError``.
"""

from __future__ import annotations

import functools
import pathlib

EXCLUSIONS = pathlib.Path(__file__).with_name("ray_exclusions.txt")


@functools.lru_cache(maxsize=1)
def _reasons() -> dict:
    out = {}
    try:
        text = EXCLUSIONS.read_text()
    except OSError:  # an install without the data file: plain AttributeErrors
        return out
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3:
                out[parts[0]] = (parts[1], parts[2])
    return out


def missing(module: str, name: str) -> AttributeError:
    """The error for ``module.name`` missing (``module`` is a miniray module name)."""
    plain = AttributeError(f"module {module!r} has no attribute {name!r}")
    if name.startswith("__"):
        return plain
    ray_module = "ray" + module[len("miniray"):]
    found = _reasons().get(f"{ray_module}:{name}")
    if found is None:
        return plain
    category, reason = found
    return AttributeError(
        f"module {module!r} has no attribute {name!r}: Ray's {ray_module}.{name} is not "
        f"in miniray ({category}): {reason}")
