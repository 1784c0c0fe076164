"""``miniray.actor``: Ray's ``ray.actor`` names."""

from ._core.actor import (
    ActorClass,
    ActorClassInheritanceException,
    ActorHandle,
    ActorMethod,
    exit_actor,
    method,
)

__all__ = ["ActorClass", "ActorClassInheritanceException", "ActorHandle", "ActorMethod",
           "exit_actor", "method"]


def __getattr__(name):
    from ._surface import missing

    raise missing(__name__, name)
