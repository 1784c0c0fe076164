"""miniray: a light, asyncio-native runtime with Ray's API.

``import miniray as ray`` and write Ray Core code: ``@ray.remote`` functions
and classes, ``ray.put``/``ray.get``/``ray.wait``, and ``await ref`` in asyncio
code. Sub-libraries (``miniray.tune``, ``miniray.train``, ``miniray.dashboard``,
``miniray.cluster``) import their heavy dependencies only when used.
"""

from . import exceptions
from ._core.actor import ActorClass, ActorHandle, exit_actor, method
from ._core.refs import ObjectRef
from ._core.remote_function import RemoteFunction
from .api import (
    available_resources,
    cancel,
    cluster_resources,
    get,
    get_actor,
    get_runtime_context,
    init,
    is_initialized,
    kill,
    nodes,
    put,
    remote,
    shutdown,
    wait,
)

__version__ = "0.1.0"

__all__ = [
    "ActorClass", "ActorHandle", "ObjectRef", "RemoteFunction", "available_resources",
    "cancel", "cluster_resources", "exceptions", "exit_actor", "get", "get_actor",
    "get_runtime_context", "init", "is_initialized", "kill", "method", "nodes", "put",
    "remote", "shutdown", "wait", "__version__",
]
