"""``miniray.cloudpickle``: Ray's ``ray.cloudpickle`` (the serializer tasks use).

Ray vendors cloudpickle under this name; miniray serializes with the
``cloudpickle`` package itself, so this module is that package's API, plus
Ray's ``dumps_debug`` / ``dump_debug`` (which pickle and, on failure, say which
part of the object could not be serialized).
"""

from __future__ import annotations

import cloudpickle as _cloudpickle
from cloudpickle import *  # noqa: F401,F403  (the package's API under Ray's name)
from cloudpickle import CloudPickler, Pickler, dump, dumps, load, loads  # noqa: F401
from cloudpickle.cloudpickle import (  # noqa: F401  (Ray's module exposes these too)
    dynamic_subimport,
    instance,
    is_tornado_coroutine,
    list_registry_pickle_by_value,
    subimport,
)

__all__ = [name for name in dir(_cloudpickle) if not name.startswith("_")
           and not isinstance(getattr(_cloudpickle, name), type(_cloudpickle))]
__all__ += ["dumps_debug", "dump_debug"]


def dumps_debug(obj, *args, **kwargs) -> bytes:
    """``dumps``; when ``obj`` cannot be pickled, the error names what failed."""
    try:
        return dumps(obj, *args, **kwargs)
    except Exception as exc:
        from .util import inspect_serializability

        _, failures = inspect_serializability(obj, print_file=_Discard())
        culprits = ", ".join(sorted({f.name for f in failures})) or type(obj).__name__
        raise type(exc)(f"{exc} (could not serialize: {culprits})") from exc


def dump_debug(obj, file, *args, **kwargs) -> None:
    """``dump`` with :func:`dumps_debug`'s error message."""
    file.write(dumps_debug(obj, *args, **kwargs))


class _Discard:
    def write(self, text):
        return len(text)

    def flush(self):
        pass
