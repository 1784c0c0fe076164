"""Search algorithms: grid/random variant generation, Optuna, and wrappers.

``OptunaSearch`` is imported on first access, so ``import miniray.tune`` does not
import Optuna.
"""

from .sample import Domain, grid_search
from .searcher import BasicVariantGenerator, ConcurrencyLimiter, Repeater, Searcher

__all__ = ["BasicVariantGenerator", "ConcurrencyLimiter", "Domain", "OptunaSearch",
           "Repeater", "Searcher", "UNDEFINED_METRIC_MODE", "UNDEFINED_SEARCH_SPACE",
           "UNRESOLVED_SEARCH_SPACE", "create_searcher", "grid_search"]

# Ray's message templates (same text, same placeholders) for searcher errors.
UNRESOLVED_SEARCH_SPACE = (
    "You passed a `{par}` parameter to {cls} that contained unresolved search space "
    "definitions. {cls} should however be instantiated with fully configured search spaces "
    "only. To use Ray Tune's automatic search space conversion, pass the space definition "
    "as part of the `param_space` argument to `tune.Tuner()` instead.")
UNDEFINED_SEARCH_SPACE = (
    "Trying to sample a configuration from {cls}, but no search space has been defined. "
    "Either pass the `{space}` argument when instantiating the search algorithm, or pass a "
    "`param_space` to `tune.Tuner()`.")
UNDEFINED_METRIC_MODE = (
    "Trying to sample a configuration from {cls}, but the `metric` ({metric}) or `mode` "
    "({mode}) parameters have not been set. Either pass these arguments when instantiating "
    "the search algorithm, or pass them to `tune.TuneConfig()`.")

# Ray's searcher names that miniray does not have, and what to use instead.
_NOT_HERE = ("ax", "hyperopt", "bayesopt", "bohb", "nevergrad", "zoopt", "hebo")


def create_searcher(search_alg: str, **kwargs) -> Searcher:
    """A search algorithm by name, as ``ray.tune.create_searcher``:
    ``"variant_generator"``/``"random"`` (``BasicVariantGenerator``) or ``"optuna"``
    (``OptunaSearch``); keyword arguments it does not take are left out, as in Ray."""
    import inspect

    name = search_alg.lower()
    if name in ("variant_generator", "random"):
        cls = BasicVariantGenerator
    elif name == "optuna":
        from .optuna import OptunaSearch as cls
    elif name in _NOT_HERE:
        raise ValueError(f"search algorithm {search_alg!r} is not available in miniray "
                         "(its library is not integrated); use 'optuna' (OptunaSearch: TPE, "
                         "CMA-ES, GP, NSGA-II samplers) or 'variant_generator'")
    else:
        raise ValueError("The `search_alg` argument must be one of ['optuna', 'random', "
                         f"'variant_generator']. Got: {search_alg}")
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})


def __getattr__(name):
    if name == "OptunaSearch":
        from .optuna import OptunaSearch

        return OptunaSearch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
