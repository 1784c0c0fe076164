"""``@remote`` functions: option handling and submission."""

from __future__ import annotations

import functools
import inspect
import os

from . import context as _context
from . import hooks as _hooks
from .generators import GENERATOR_MODES, ObjectRefGenerator, wants_generator
from .refs import _require_client, get_client
from .runtime_env import task_env
from .store.serialization import serialize, serialize_function

TASK_OPTIONS = {
    "num_cpus", "num_gpus", "resources", "num_returns", "max_retries", "retry_exceptions",
    "name", "memory", "scheduling_strategy", "runtime_env", "max_calls",
    "accelerator_type", "label_selector", "cluster", "tags",
    "placement_group", "placement_group_bundle_index", "placement_group_capture_child_tasks",
    "enable_task_events",
}


def validate_resources(options: dict, what: str, default_cpus: float,
                       placement: tuple = (None, -1, False)) -> dict:
    """The resources ``options`` ask for, renamed into the placement group
    ``placement`` (from :func:`requested_placement`) when there is one."""
    num_cpus = options.get("num_cpus", default_cpus)
    num_gpus = options.get("num_gpus", 0)
    for key, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if not _amount_ok(value):
            raise ValueError(f"{key} of {what} must be a non-negative number, got {value!r}")
    resources = {"CPU": float(num_cpus), "GPU": float(num_gpus)}
    custom = options.get("resources") or {}
    if not isinstance(custom, dict):
        raise TypeError(f"resources of {what} must be a dict like {{'my_resource': 1}}, "
                        f"got {type(custom).__name__}")
    for key, value in custom.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"resource names of {what} must be non-empty strings, got "
                            f"{key!r}")
        if key in ("CPU", "GPU"):
            raise ValueError(f"Use num_cpus/num_gpus instead of resources={{{key!r}: ...}} "
                             f"for {what}")
        if not _amount_ok(value):
            raise ValueError(f"resource {key!r} of {what} must be a non-negative number, "
                             f"got {value!r}")
        resources[key] = float(value)
    memory = options.get("memory")
    if memory:
        if not _amount_ok(memory):
            raise ValueError(f"memory of {what} must be a non-negative number of bytes, "
                             f"got {memory!r}")
        resources["memory"] = float(memory)
    if placement[0] is not None:
        resources = _hooks.placement_resources(resources, placement[0], placement[1])
    return resources


def _amount_ok(value) -> bool:
    """A resource amount: a finite non-negative number (NaN and infinity would
    poison the node's resource arithmetic)."""
    import math

    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def check_name(options: dict, what: str) -> None:
    name = options.get("name")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name of {what} must be a string, got {type(name).__name__}")


def requested_placement(options: dict, what: str) -> tuple:
    """``(group, bundle index, capture)`` the work runs in (group ``None``:
    none). Inside work placed with ``placement_group_capture_child_tasks=True``,
    work naming no strategy or group of its own goes into the same group and
    captures its own children, as in Ray."""
    if options.get("scheduling_strategy") is None and not options.get("placement_group"):
        if _context.capture_group is not None:
            return _context.capture_group, -1, True
        return None, -1, False
    return _hooks.requested_group(options, what)


def placement_option(placement: tuple):
    """What the node passes on to the worker (``get_current_placement_group``):
    ``[pg_id, capture]``, or None outside a group."""
    return None if placement[0] is None else [placement[0]._id, placement[2]]


_warned_shapes: set = set()


def check_feasible(resources: dict, what: str) -> None:
    """Refuse work in a placement group it can never fit (the group's size is
    fixed); warn about other work the node can never give resources to. That
    work stays pending, as in Ray (the node says so too, once per shape)."""
    client = get_client()
    total = getattr(getattr(client, "runtime", None), "total", None)
    if total is None:
        return
    short = {}
    for key, amount in resources.items():
        if not amount:
            continue
        if "_group_" in key and key not in total:
            raise ValueError(
                f"{what} asks to run in placement group {key.rsplit('_', 1)[-1]}, which was "
                "removed (or never created on this node).")
        if total.get(key, 0.0) < amount:
            if "_group_" in key:
                raise ValueError(
                    f"{what} asks for {amount:g} {key}, but its placement group has "
                    f"{total.get(key, 0.0):g} in total, so it could never run. Lower the "
                    "request, or create the group with larger bundles.")
            short[key] = total.get(key, 0.0)
    # A driver of a head node: the head's own warning goes to its log, not here.
    if short and getattr(client, "warns_infeasible", False):
        shape = tuple(sorted((k, v) for k, v in resources.items() if v))
        if shape not in _warned_shapes:
            _warned_shapes.add(shape)
            import sys

            print(f"miniray: warning: the resource request {dict(shape)} of {what} is "
                  f"infeasible: the node has {short} in total, so it stays pending.",
                  file=sys.stderr, flush=True)


def check_options(options: dict, allowed: set, what: str) -> None:
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(
            f"Invalid option(s) {sorted(unknown)} for {what}; valid options are "
            f"{sorted(allowed)}.")


class BoundOptions:
    """What ``.options(...)`` returns: ``.remote()`` with the overridden options,
    and ``.options()`` to override more."""

    __slots__ = ("_submit", "_rebind", "_overrides")

    def __init__(self, submit, rebind, overrides: dict):
        self._submit = submit
        self._rebind = rebind
        self._overrides = overrides

    def remote(self, *args, **kwargs):
        """Submit with the overridden options."""
        return self._submit(args, kwargs)

    def options(self, **more):
        """Override more options."""
        return self._rebind(**{**self._overrides, **more})

    def bind(self, *args, **kwargs):
        """A DAG node calling the function or class with these options (``miniray.dag``)."""
        return self._rebind.__self__.bind(*args, **kwargs)._with_options(self._overrides)


def task_events_option(options: dict, what: str):
    """``enable_task_events`` (Ray's option): a bool, True by default."""
    value = options.get("enable_task_events", True)
    if not isinstance(value, bool):
        raise TypeError(f"enable_task_events of {what} must be True or False, got {value!r}")
    return value


def _dag_nodes():
    # The DAG layer sits above the core; it loads on the first bind().
    return _hooks.dag_nodes()


def retry_exceptions_option(retry):
    """``retry_exceptions`` as the node takes it: a bool, or the pickled list of
    exception classes."""
    if isinstance(retry, (list, tuple)):
        for cls in retry:
            if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                raise TypeError("retry_exceptions must be a bool or a list of exception "
                                f"classes, got {cls!r}")
        return serialize(list(retry)).to_inline()
    if not isinstance(retry, bool):
        raise TypeError("retry_exceptions must be a bool or a list of exception classes")
    return retry


class RemoteFunction:
    """A function turned into a task by ``@miniray.remote``.

    Call it with ``.remote(*args, **kwargs)`` to run it as a task and get an
    ``ObjectRef`` (a list of refs when ``num_returns > 1``); ``.options(...)``
    overrides options for one call site.
    """

    def __init__(self, function, options: dict):
        check_options(options, TASK_OPTIONS, f"remote function {function.__qualname__}")
        if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
            # As in Ray: a task runs in a plain worker, with no event loop of its own.
            raise ValueError(
                f"'async def' cannot be a remote function ({function.__qualname__}). "
                "Wrap it in a plain function that runs it with asyncio.run(...), or make "
                "it a method of an actor: an actor with async methods runs them on its "
                "event loop.")
        self._function = function
        self._options = options
        self._fn_id = os.urandom(16)
        self._blob = None
        self._name = getattr(function, "__qualname__", "task")
        self._prepared = None
        self._routed = _hooks.needs_router(options)
        self._is_generator = inspect.isgeneratorfunction(function)
        functools.update_wrapper(self, function)

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"Remote functions cannot be called directly. Instead of running "
            f"'{self._name}()', try '{self._name}.remote()'.")

    def _blob_getter(self) -> bytes:
        if self._blob is None:
            self._blob = serialize_function(self._function)
        return self._blob

    def _prepare(self, options: dict):
        what = f"remote function {self._name}"
        placement = requested_placement(options, what)
        resources = validate_resources(options, what, 1, placement)
        check_feasible(resources, what)
        check_name(options, what)
        num_returns = options.get("num_returns", 1)
        if num_returns in GENERATOR_MODES:
            num_returns = 1  # one return: the ObjectRefGenerator of the yielded values
        elif not isinstance(num_returns, int) or num_returns < 0:
            raise ValueError(
                f"num_returns of {what} must be a non-negative int, 'streaming' or "
                f"'dynamic', got {num_returns!r}")
        retry = retry_exceptions_option(options.get("retry_exceptions", False))
        max_retries = options.get("max_retries", 3)
        if not isinstance(max_retries, int) or max_retries < -1:
            raise ValueError(f"max_retries of {what} must be an int >= -1, got {max_retries!r}")
        # As in Ray: a worker runs a GPU function once, then exits, so whatever
        # the function left on the GPU (a framework's cached memory) is released.
        max_calls = options.get("max_calls", 1 if resources.get("GPU") else 0)
        if not isinstance(max_calls, int) or isinstance(max_calls, bool) or max_calls < 0:
            raise ValueError(f"max_calls of {what} must be an int >= 0 (0: no limit), "
                             f"got {max_calls!r}")
        task_options = {
            "name": options.get("name") or self._name,
            "resources": {k: v for k, v in resources.items() if v},
            "max_retries": max_retries,
            "retry_exceptions": retry,
        }
        if max_calls:
            task_options["max_calls"] = max_calls
        if self._is_generator:  # never a direct call (direct.py)
            task_options["generator"] = True
        if task_events_option(options, what) is False:
            task_options["task_events"] = False  # not recorded in the event bus / state API
        env = task_env(options.get("runtime_env"), what)
        if env:
            task_options["env"] = env
        pg = placement_option(placement)
        if pg is not None:
            task_options["pg"] = pg
        return task_options, num_returns

    def remote(self, *args, **kwargs):
        """Run the function as a task; returns an ObjectRef (or a list of them)."""
        return self._remote(args, kwargs)

    def _remote(self, args, kwargs, options=None):
        router = _hooks.router
        if router is not None:
            routed = router.submit_task(self, args, kwargs,
                                        self._options if options is None else options)
            if routed is not NotImplemented:
                return routed
        elif self._routed or (options is not None and _hooks.needs_router(options)):
            raise _hooks.no_router_error(f"remote function {self._name}")
        client = _require_client()  # before _prepare: feasibility needs the node
        if options is None and _context.capture_group is None:
            prepared = self._prepared
            if prepared is None or prepared[2] is not client:
                task_options, num_returns = self._prepare(self._options)
                # Once per client, with the preparation (a failure is retried).
                client.register_function(self._fn_id, self._blob_getter)
                self._prepared = (task_options, num_returns, client)
            else:
                task_options, num_returns = prepared[0], prepared[1]
        else:  # per-call options, or inside a group capturing its children
            task_options, num_returns = self._prepare(self._options if options is None
                                                      else options)
            client.register_function(self._fn_id, self._blob_getter)
        enc_args, enc_kwargs, contained, keepalive = client.encode_args(
            args, kwargs, self._name)
        refs = client.submit_task(self._fn_id, enc_args, enc_kwargs, contained, task_options,
                                  num_returns)
        del keepalive  # held until the node has the submission queued, in order
        if num_returns == 1:
            if self._is_generator or options is not None:
                mode = (self._options if options is None else options).get("num_returns")
                if wants_generator(self._is_generator, mode):
                    return ObjectRefGenerator(source=refs[0])
            return refs[0]
        if num_returns == 0:
            return None
        return refs

    def bind(self, *args, **kwargs):
        """A DAG node that runs this function on ``args`` (see ``miniray.dag``);
        ``dag.execute()`` submits it."""
        return _dag_nodes().bind_function(self, args, kwargs)

    def options(self, **options):
        """Return a copy of this function with some options overridden."""
        check_options(options, TASK_OPTIONS, f"remote function {self._name}")
        merged = {**self._options, **options}
        return BoundOptions(lambda args, kwargs: self._remote(args, kwargs, merged),
                            self.options, options)

    def __reduce__(self):
        return (_rebuild_remote_function, (self._function, self._options, self._fn_id))


def _rebuild_remote_function(function, options, fn_id):
    rf = RemoteFunction(function, options)
    rf._fn_id = fn_id
    return rf
