"""Utilities: :class:`ActorPool`, :class:`~miniray.util.queue.Queue` (built on actors)
and Ray's state API, :mod:`miniray.util.state`."""

from . import state
from .actor_pool import ActorPool
from .queue import Queue

__all__ = ["ActorPool", "Queue", "state"]
