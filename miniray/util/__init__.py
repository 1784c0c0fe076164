"""Utilities built on actors: :class:`ActorPool` and :class:`~miniray.util.queue.Queue`."""

from .actor_pool import ActorPool
from .queue import Queue

__all__ = ["ActorPool", "Queue"]
