"""Actors: ``@remote`` classes, handles and method calls."""

from __future__ import annotations

import inspect
import os

from . import hooks as _hooks
from .generators import GENERATOR_MODES, ObjectRefGenerator, wants_generator
from .refs import _require_client, get_client
from .remote_function import (
    BoundOptions,
    _dag_nodes,
    check_feasible,
    check_options,
    placement_option,
    retry_exceptions_option,
    requested_placement,
    task_events_option,
    validate_resources,
)
from .runtime_env import task_env
from .store.serialization import _collect_ref, serialize_function

ACTOR_OPTIONS = {
    "num_cpus", "num_gpus", "resources", "memory", "name", "namespace", "lifetime",
    "max_restarts", "max_task_retries", "max_concurrency", "get_if_exists",
    "scheduling_strategy", "runtime_env", "max_pending_calls", "concurrency_groups",
    "accelerator_type", "label_selector", "cluster", "tags",
    "placement_group", "placement_group_bundle_index", "placement_group_capture_child_tasks",
    "enable_task_events",
}
METHOD_OPTIONS = {"num_returns", "name", "max_task_retries", "retry_exceptions",
                  "concurrency_group", "enable_task_events"}
# Ray's methods every actor has (the worker answers them without the class).
_BUILTIN_METHOD_META = {"num_returns": 1, "generator": False, "is_async": False, "options": {}}


def method(*args, **kwargs):
    """Decorate an actor method to set its options, e.g. ``@method(num_returns=2)``.

    Options: ``num_returns``, ``name``, ``max_task_retries``, ``retry_exceptions``,
    ``concurrency_group`` and ``enable_task_events`` (False keeps the calls out of the
    event bus: the state API, the dashboard's task table and the timeline).
    """
    check_options(kwargs, METHOD_OPTIONS, "@miniray.method")
    task_events_option(kwargs, "@miniray.method")

    def decorate(fn):
        fn.__miniray_method_options__ = kwargs
        return fn

    if args and callable(args[0]) and len(args) == 1 and not kwargs:
        return decorate(args[0])
    return decorate


def _method_meta(cls) -> dict:
    meta = {}
    for name, member in inspect.getmembers(cls, predicate=callable):
        if name.startswith("__") and name != "__call__":
            continue
        options = getattr(member, "__miniray_method_options__", {})
        meta[name] = {
            "num_returns": options.get("num_returns", 1),
            "generator": wants_generator(inspect.isgeneratorfunction(member)
                                         or inspect.isasyncgenfunction(member),
                                         options.get("num_returns")),
            "is_async": (inspect.iscoroutinefunction(member)
                         or inspect.isasyncgenfunction(member)),
            "options": {k: v for k, v in options.items() if k != "num_returns"},
        }
    return meta


def _check_concurrency_groups(groups, meta: dict, what: str):
    """Ray's ``concurrency_groups={"name": max_concurrency, ...}``, checked
    against the groups the methods name (``@method(concurrency_group=...)``)."""
    if groups is None:
        groups = {}
    if not isinstance(groups, dict) or not all(
            isinstance(k, str) and k and type(v) is int and v >= 1 for k, v in groups.items()):
        raise ValueError(
            f"concurrency_groups of {what} must map group names to ints >= 1, e.g. "
            f'{{"io": 2, "compute": 4}}; got {groups!r}')
    for name, m in meta.items():
        group = m["options"].get("concurrency_group")
        if group is not None and group not in groups:
            raise ValueError(
                f"{what}: method {name} is in concurrency group {group!r}, which "
                f"concurrency_groups does not define (it defines {sorted(groups)}); add "
                f"it, e.g. concurrency_groups={{{group!r}: 1}}")
    return groups or None


class ActorClassInheritanceException(TypeError):
    """A class was defined with an actor class (``@remote`` applied) as a base.
    Inherit from the plain class and decorate the subclass instead (Ray's name)."""


class ActorClass:
    """A class turned into an actor factory by ``@miniray.remote``.

    ``Cls.remote(*args)`` starts the actor in its own worker process and
    returns an :class:`ActorHandle`; ``Cls.options(...)`` overrides options.
    """

    def __mro_entries__(self, bases):
        # Python asks a non-class base for the classes to inherit instead:
        # the moment to refuse with Ray's error rather than a confusing one.
        raise ActorClassInheritanceException(
            f"Attempted to define a subclass of actor class '{self.__name__}'. Inheriting "
            "from actor classes is not supported: inherit from the plain class and make "
            "the derived class an actor class with @remote (define the base undecorated, "
            "then Actor = remote(Base) where you need it as an actor).")

    def __init__(self, cls, options: dict):
        check_options(options, ACTOR_OPTIONS, f"actor class {cls.__name__}")
        self._cls = cls
        self._options = options
        self._fn_id = os.urandom(16)
        self._blob = None
        self._meta = _method_meta(cls)
        if task_events_option(options, f"actor class {cls.__name__}") is False:
            for meta in self._meta.values():  # as in Ray: the class's calls are not recorded
                meta["options"].setdefault("enable_task_events", False)
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__
        self.__module__ = cls.__module__

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"Actors cannot be instantiated directly. Instead of '{self.__name__}()', "
            f"use '{self.__name__}.remote()'.")

    def _blob_getter(self) -> bytes:
        if self._blob is None:
            self._blob = serialize_function(self._cls)
        return self._blob

    def remote(self, *args, **kwargs) -> "ActorHandle":
        """Create the actor; returns its handle."""
        return self._remote(args, kwargs, self._options)

    def bind(self, *args, **kwargs):
        """A DAG node that creates this actor (see ``miniray.dag``); bind its
        methods with ``node.method.bind(...)``."""
        return _dag_nodes().bind_class(self, args, kwargs)

    def options(self, **options):
        """Return a factory with some options overridden."""
        check_options(options, ACTOR_OPTIONS, f"actor class {self.__name__}")
        merged = {**self._options, **options}
        return BoundOptions(lambda args, kwargs: self._remote(args, kwargs, merged),
                            self.options, options)

    def _remote(self, args, kwargs, options) -> "ActorHandle":
        what = f"actor {self.__name__}"
        router = _hooks.router
        if router is not None:
            routed = router.create_actor(self, args, kwargs, options)
            if routed is not NotImplemented:
                return routed
        elif _hooks.needs_router(options):
            raise _hooks.no_router_error(what)
        placement = requested_placement(options, what)
        resources = validate_resources(options, what, 0, placement)
        check_feasible(resources, what)
        max_concurrency = options.get("max_concurrency")
        if max_concurrency is not None and (not isinstance(max_concurrency, int)
                                            or max_concurrency < 1):
            raise ValueError(f"max_concurrency of {what} must be an int >= 1")
        groups = _check_concurrency_groups(options.get("concurrency_groups"), self._meta,
                                           what)
        lifetime = options.get("lifetime")
        if lifetime not in (None, "detached", "non_detached"):
            raise ValueError("lifetime must be None, 'detached' or 'non_detached'")
        name = options.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError("The actor name must be a non-empty string")
        for key in ("max_restarts", "max_task_retries"):
            value = options.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < -1:
                raise ValueError(f"{key} of {what} must be an int >= -1 (-1: no limit), "
                                 f"got {value!r}")
        namespace = options.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            raise TypeError(f"namespace of {what} must be a string, got "
                            f"{type(namespace).__name__}")
        client = _require_client()
        client.register_function(self._fn_id, self._blob_getter)
        enc_args, enc_kwargs, contained, keepalive = client.encode_args(
            args, kwargs, f"{self.__name__}.__init__")
        node_options = {
            "resources": {k: v for k, v in resources.items() if v},
            "max_restarts": options.get("max_restarts", 0),
            "max_task_retries": options.get("max_task_retries", 0),
            "max_concurrency": max_concurrency,
            "concurrency_groups": groups,
            "env": task_env(options.get("runtime_env"), what),
            "name": name,
            "namespace": options.get("namespace"),
            "lifetime": lifetime,
            "get_if_exists": bool(options.get("get_if_exists")),
            "_handle_meta": [self.__name__, self._meta],
        }
        pg = placement_option(placement)
        if pg is not None:
            node_options["pg"] = pg
        actor_id = client.ids.new()
        actual = client.generic("create_actor", actor_id, self._fn_id, enc_args, enc_kwargs,
                                contained, node_options, self.__name__)
        del keepalive
        return ActorHandle(actual, self.__name__, self._meta, _counted=True)


class ActorHandle:
    """A handle to an actor; call methods with ``handle.method.remote(...)``.

    Handles can be passed to tasks and other actors. Calls made through
    handles in one process run in the order they were made.
    """

    def __init__(self, actor_id: bytes, class_name: str, meta: dict, _counted=False):
        self._id = actor_id
        self._class_name = class_name
        self._meta = meta
        client = get_client()
        self._client = client
        if client is not None:
            client.add_local_ref(actor_id, _counted)

    def __del__(self):
        client = self._client
        if client is not None:
            try:
                client.remove_local_ref(self._id)
            except Exception:
                pass

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        meta = self._meta.get(name)
        if meta is None:
            raise AttributeError(
                f"Actor {self._class_name} has no method {name!r}; its methods are "
                f"{sorted(m for m in self._meta if not m.startswith('_'))}.")
        return ActorMethod(self, name, meta)

    @property
    def __ray_ready__(self) -> "ActorMethod":
        """``ray.get(handle.__ray_ready__.remote())`` returns True once the actor's
        constructor has finished (and raises the actor's error if it failed)."""
        return ActorMethod(self, "__ray_ready__", dict(_BUILTIN_METHOD_META))

    @property
    def __ray_call__(self) -> "ActorMethod":
        """``handle.__ray_call__.remote(fn, *args)`` runs ``fn(actor, *args)`` in the actor."""
        return ActorMethod(self, "__ray_call__", dict(_BUILTIN_METHOD_META))

    def __repr__(self):
        return f"Actor({self._class_name}, {self._id.hex()})"

    def __hash__(self):
        return hash(self._id)

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._id == self._id

    def __reduce__(self):
        _collect_ref(self)
        return (ActorHandle, (self._id, self._class_name, self._meta))

    @property
    def _actor_id(self):
        return self._id


class ActorMethod:
    """``handle.method``: call it with ``.remote(...)``; ``.options(num_returns=...)``."""

    __slots__ = ("_handle", "_name", "_meta", "_overrides")

    def __init__(self, handle, name, meta, overrides=None):
        self._handle = handle
        self._name = name
        self._meta = meta
        self._overrides = overrides  # None or a non-empty dict: no dict per attribute access

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"Actor methods cannot be called directly. Instead of running "
            f"'{self._name}()', try '{self._name}.remote()'.")

    def bind(self, *args, **kwargs):
        """A DAG node calling this method of the actor (see ``miniray.dag``)."""
        return _dag_nodes().bind_method(self._handle, self._name, args, kwargs,
                                        self._overrides)

    def options(self, **options):
        check_options(options, METHOD_OPTIONS, f"actor method {self._name}")
        return ActorMethod(self._handle, self._name, self._meta,
                           {**(self._overrides or {}), **options} or None)

    def remote(self, *args, **kwargs):
        handle = self._handle
        client = handle._client or _require_client()
        plan = None if self._overrides else self._meta.get("_plan")
        if plan is None:
            plan = self._plan()
        num_returns, generator, what, node_options = plan
        enc_args, enc_kwargs, contained, keepalive = client.encode_args(args, kwargs, what)
        refs = client.submit_actor_task(handle._id, self._name, enc_args, enc_kwargs,
                                        contained, node_options, num_returns)
        del keepalive
        if num_returns == 1:
            return ObjectRefGenerator(source=refs[0]) if generator else refs[0]
        if num_returns == 0:
            return None
        return refs

    def _plan(self) -> tuple:
        """What every call with these options sends; kept in the method's meta
        when there are no per-call overrides (the node never changes it)."""
        overrides = self._overrides or {}
        options = {**self._meta["options"], **overrides}
        num_returns = options.pop("num_returns", self._meta["num_returns"])
        generator = (self._meta.get("generator", False) if "num_returns" not in overrides
                     else num_returns == "streaming")
        if num_returns in GENERATOR_MODES:
            num_returns = 1
        what = f"{self._handle._class_name}.{self._name}"
        node_options = {"name": options.get("name") or what}
        for key in ("max_task_retries", "concurrency_group"):
            if options.get(key) is not None:
                node_options[key] = options[key]
        if task_events_option(options, what) is False:
            node_options["task_events"] = False
        if generator:  # never a direct call (direct.py)
            node_options["generator"] = True
        if options.get("retry_exceptions"):
            node_options["retry_exceptions"] = retry_exceptions_option(
                options["retry_exceptions"])
        plan = (num_returns, generator, what, node_options)
        if not self._overrides:
            self._meta["_plan"] = plan
        return plan


def exit_actor():
    """End the current actor from inside one of its methods (no restart)."""
    from . import context
    from .worker.worker import _ExitActor

    if context.current_actor_id is None:
        raise TypeError("exit_actor() can only be called inside an actor method")
    raise _ExitActor()
