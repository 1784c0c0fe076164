"""Ray's small ``ray.util`` helpers: results as they finish, named actors,
the node's address and a serializability inspector."""

from __future__ import annotations

import collections
import sys
from typing import Any, Iterable, NamedTuple


def as_completed(refs, *, chunk_size: int = 10, yield_obj_refs: bool = False, **wait_kwargs):
    """Yield the values of ``refs`` (or the refs, with ``yield_obj_refs=True``) as
    they become ready, up to ``chunk_size`` at a time (Ray's ``ray.util.as_completed``)."""
    from ..api import get, wait

    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    pending = list(refs)
    while pending:
        ready, pending = wait(pending, num_returns=min(chunk_size, len(pending)),
                              **wait_kwargs)
        if yield_obj_refs:
            yield from ready
        else:
            yield from get(ready)


def map_unordered(fn, items: Iterable[Any], *, backpressure_size: int | None = 100,
                  chunk_size: int = 10, yield_obj_refs: bool = False, **wait_kwargs):
    """Run the remote function ``fn`` on each item, at most ``backpressure_size``
    tasks in flight, and yield the results as they finish (in no fixed order)."""
    from ..api import get, wait

    if not hasattr(fn, "remote"):
        raise TypeError(f"map_unordered() needs a remote function, got {fn!r}; "
                        "decorate it with @miniray.remote")
    if backpressure_size is not None and backpressure_size < 1:
        raise ValueError(f"backpressure_size must be >= 1 or None, got {backpressure_size!r}")
    pending: list = []
    for item in items:
        pending.append(fn.remote(item))
        if backpressure_size is not None and len(pending) >= backpressure_size:
            ready, pending = wait(pending, num_returns=min(chunk_size, len(pending)),
                                  **wait_kwargs)
            yield from (ready if yield_obj_refs else get(ready))
    yield from as_completed(pending, chunk_size=chunk_size, yield_obj_refs=yield_obj_refs,
                            **wait_kwargs)


def list_named_actors(all_namespaces: bool = False) -> list:
    """Names of the live named actors in this namespace, or ``{"name", "namespace"}``
    dicts for every namespace with ``all_namespaces=True``."""
    from ..api import _client

    return _client().generic("list_named_actors", bool(all_namespaces))


def get_node_ip_address(address=None) -> str:
    """The node's IP address: miniray's node is this machine, on the loopback.

    It names the node's ``node:<ip>`` resource, as in Ray:
    ``resources={f"node:{get_node_ip_address()}": 0.01}`` pins work to it."""
    from .._core.node.state import NODE_IP

    return NODE_IP


class FailureTuple(NamedTuple):
    obj: Any
    name: str
    parent: Any


def inspect_serializability(base_obj, name: str | None = None, depth: int = 3,
                            print_file=None):
    """Find what keeps ``base_obj`` from being pickled (Ray's developer helper).

    Returns ``(serializable, failures)``; each failure names the innermost part
    (a closure variable, a global a function uses, an attribute) that fails,
    searched up to ``depth`` levels deep. Findings are printed to ``print_file``.
    """
    import cloudpickle

    out = print_file if print_file is not None else sys.stdout
    failures: set = set()

    def fails(obj) -> bool:
        try:
            cloudpickle.dumps(obj)
        except Exception:
            return True
        return False

    def parts(obj):
        if callable(obj) and hasattr(obj, "__code__"):
            closure = obj.__closure__ or ()
            for var, cell in zip(obj.__code__.co_freevars, closure):
                try:
                    yield var, cell.cell_contents
                except ValueError:  # an empty cell
                    continue
            for var in obj.__code__.co_names:
                if var in obj.__globals__:
                    yield var, obj.__globals__[var]
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            yield from vars(obj).items()
        elif isinstance(obj, dict):
            for key, value in obj.items():
                yield repr(key), value
        elif isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
            for index, value in enumerate(obj):
                yield f"[{index}]", value

    def walk(obj, label, parent, level):
        if not fails(obj):
            return
        found = False
        if level < depth:
            for part_name, part in parts(obj):
                if fails(part):
                    found = True
                    walk(part, part_name, obj, level + 1)
        if not found:
            print(f"Serializing {label!r} {obj!r} failed", file=out)
            failures.add(FailureTuple(obj, label, parent))

    label = name or getattr(base_obj, "__name__", type(base_obj).__name__)
    walk(base_obj, label, None, 0)
    return not failures, failures


# -- log_once: Ray's helper for warnings that should appear once -----------------------
_logged: dict = {}
_log_once_disabled = False
_periodic_s: float | None = None


def log_once(key: str) -> bool:
    """True the first time it is called with ``key`` (in this process), then False;
    after :func:`enable_periodic_logging`, True again once a minute."""
    import time

    if _log_once_disabled:
        return False
    now = time.monotonic()
    last = _logged.get(key)
    if last is None or (_periodic_s is not None and now - last >= _periodic_s):
        _logged[key] = now
        return True
    return False


def disable_log_once_globally() -> None:
    """Make :func:`log_once` return False from now on (silences such warnings)."""
    global _log_once_disabled
    _log_once_disabled = True


def enable_periodic_logging() -> None:
    """Let :func:`log_once` return True again for a key once a minute."""
    global _periodic_s
    _periodic_s = 60.0


# -- custom serializers (Ray's register_serializer) ------------------------------------
_registered_serializers: set = set()


def register_serializer(cls: type, *, serializer, deserializer) -> None:
    """Serialize instances of ``cls`` as ``serializer(obj)``, rebuilt with
    ``deserializer(value)`` where they are read.

    As in Ray, the registration belongs to this process: register in the process
    that sends such objects (the driver, or a task via a ``worker_process_setup_hook``).
    The deserializer travels with each object, so readers need not register.
    """
    import copyreg

    if not isinstance(cls, type):
        raise TypeError(f"register_serializer() takes a class, got {cls!r}")
    if not callable(serializer) or not callable(deserializer):
        raise TypeError("serializer and deserializer must be callables")

    def reduce(obj):
        return deserializer, (serializer(obj),)

    copyreg.pickle(cls, reduce)
    _registered_serializers.add(cls)


def deregister_serializer(cls: type) -> None:
    """Undo :func:`register_serializer` for ``cls`` in this process."""
    import copyreg

    if cls not in _registered_serializers:
        raise ValueError(f"no serializer was registered for {cls!r}")
    copyreg.dispatch_table.pop(cls, None)
    _registered_serializers.discard(cls)
