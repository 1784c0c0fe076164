"""Search algorithms: grid/random variant generation, Optuna, and wrappers.

``OptunaSearch`` is imported on first access, so ``import miniray.tune`` does not
import Optuna.
"""

from .sample import Domain, grid_search
from .searcher import BasicVariantGenerator, ConcurrencyLimiter, Repeater, Searcher

__all__ = ["BasicVariantGenerator", "ConcurrencyLimiter", "Domain", "OptunaSearch",
           "Repeater", "Searcher", "grid_search"]


def __getattr__(name):
    if name == "OptunaSearch":
        from .optuna import OptunaSearch

        return OptunaSearch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
