"""miniray: a light, asyncio-native runtime with Ray's API.

``import miniray as ray`` and write Ray Core code: ``@ray.remote`` functions
and classes, ``ray.put``/``ray.get``/``ray.wait``, and ``await ref`` in asyncio
code. Sub-libraries (``miniray.tune``, ``miniray.train``, ``miniray.dashboard``,
``miniray.cluster``) import their heavy dependencies only when used.
"""

from . import exceptions
from ._core.actor import ActorClass, ActorHandle, exit_actor, method
from ._core.generators import DynamicObjectRefGenerator, ObjectRefGenerator
from ._core.refs import ObjectRef
from ._core.remote_function import RemoteFunction
from . import _layers  # noqa: F401  (installs the core's hooks into the layers above)
from .api import (
    available_resources,
    cancel,
    cluster_resources,
    get,
    get_actor,
    get_gpu_ids,
    get_runtime_context,
    init,
    is_initialized,
    kill,
    nodes,
    put,
    remote,
    shutdown,
    timeline,
    wait,
)

__version__ = "0.1.0"

# Ray's worker modes, what ``get_runtime_context().worker_mode`` says.
SCRIPT_MODE = "SCRIPT_MODE"
WORKER_MODE = "WORKER_MODE"

__all__ = [
    "ActorClass", "ActorHandle", "DynamicObjectRefGenerator", "LoggingConfig", "ObjectRef",
    "ObjectRefGenerator", "RemoteFunction", "SCRIPT_MODE", "WORKER_MODE",
    "available_resources", "cancel", "cluster_resources", "exceptions", "exit_actor", "get", "get_actor",
    "get_gpu_ids", "get_runtime_context", "init", "is_initialized", "kill", "method", "nodes",
    "put", "remote", "shutdown", "timeline", "wait", "__version__",
]

# ``ray.util.ActorPool``, ``ray.actor.exit_actor()``... work after ``import ray``
# alone; here the submodules load on first use, so ``import miniray`` stays light.
_LAZY_SUBMODULES = {"actor", "util", "tune", "train", "dashboard", "cluster", "dag",
                    "experimental", "runtime_context", "cloudpickle"}


def __getattr__(name):
    if name == "LoggingConfig":
        from ._logging_config import LoggingConfig

        return LoggingConfig
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    from ._surface import missing

    raise missing(__name__, name)
