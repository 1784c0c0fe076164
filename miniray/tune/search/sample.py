"""Search-space primitives (Ray Tune's ``tune.uniform``, ``tune.grid_search``, ...) and
variant generation: resolving a nested ``param_space`` into concrete configs."""

from __future__ import annotations

import itertools
import math
import random
from typing import Callable, Sequence

__all__ = [
    "Domain", "Float", "Integer", "Categorical", "Normal", "Function",
    "grid_search", "choice", "uniform", "quniform", "loguniform", "qloguniform",
    "randint", "qrandint", "lograndint", "qlograndint", "randn", "qrandn", "sample_from",
]


class Domain:
    """A distribution to sample one config value from.

    Subclasses implement :meth:`sample`; searchers such as ``OptunaSearch``
    translate them to their own distributions.
    """

    def sample(self, rng: random.Random, spec=None):
        """Draw one value using ``rng`` (``spec`` is the partly resolved config)."""
        raise NotImplementedError

    def is_grid(self) -> bool:
        """True for grid axes (never true for a sampled Domain)."""
        return False


def _quantize(value, q):
    # Rounding to a multiple of q, as Ray does: keeps the value a float for float domains.
    return round(value / q) * q


class Float(Domain):
    """A float in ``[lower, upper]``; ``log`` samples uniformly in log space, ``q`` rounds."""

    def __init__(self, lower: float, upper: float, log: bool = False, q: float | None = None,
                 base: float = 10):
        if not lower < upper:
            raise ValueError(f"the lower bound ({lower}) must be smaller than the upper bound "
                             f"({upper})")
        if log and lower <= 0:
            raise ValueError(f"a log-uniform range needs a positive lower bound, got {lower}")
        if q is not None and q <= 0:
            raise ValueError(f"q must be positive, got {q}")
        self.lower, self.upper, self.log, self.q, self.base = float(lower), float(upper), log, q, base

    def sample(self, rng, spec=None):
        """Draw one float."""
        if self.log:
            lo, hi = math.log(self.lower, self.base), math.log(self.upper, self.base)
            value = self.base ** rng.uniform(lo, hi)
        else:
            value = rng.uniform(self.lower, self.upper)
        if self.q is not None:
            value = _quantize(value, self.q)
        return min(max(value, self.lower), self.upper) if self.q is None else value

    def __repr__(self):
        kind = "loguniform" if self.log else "uniform"
        q = f", q={self.q}" if self.q is not None else ""
        return f"{kind}({self.lower}, {self.upper}{q})"


class Integer(Domain):
    """An int in ``[lower, upper)`` (``randint``) or ``[lower, upper]`` when ``q`` is given."""

    def __init__(self, lower: int, upper: int, q: int | None = None, log: bool = False,
                 inclusive: bool = False):
        if not lower < upper and not (inclusive and lower == upper):
            raise ValueError(f"the lower bound ({lower}) must be smaller than the upper bound "
                             f"({upper})")
        if log and lower <= 0:
            raise ValueError(f"a log range needs a positive lower bound, got {lower}")
        self.lower, self.upper, self.q, self.log = int(lower), int(upper), q, log
        # The largest value that may be drawn: Ray's randint excludes upper, qrandint includes it.
        self.high = self.upper if inclusive else self.upper - 1

    def sample(self, rng, spec=None):
        """Draw one int."""
        if self.log:
            value = int(round(math.exp(rng.uniform(math.log(self.lower), math.log(self.high)))))
        else:
            value = rng.randint(self.lower, self.high)
        if self.q:
            value = int(_quantize(value, self.q))
        return min(max(value, self.lower), self.high)

    def __repr__(self):
        return f"randint({self.lower}, {self.upper}{', q=%s' % self.q if self.q else ''})"


class Categorical(Domain):
    """One of ``categories``, uniformly."""

    def __init__(self, categories: Sequence):
        categories = list(categories)
        if not categories:
            raise ValueError("choice() needs at least one category")
        self.categories = categories

    def sample(self, rng, spec=None):
        """Draw one category."""
        return self.categories[rng.randrange(len(self.categories))]

    def __repr__(self):
        return f"choice({self.categories!r})"


class Normal(Domain):
    """A normally distributed float (``randn``), optionally rounded to a multiple of ``q``."""

    def __init__(self, mean: float = 0.0, sd: float = 1.0, q: float | None = None):
        if sd <= 0:
            raise ValueError(f"sd must be positive, got {sd}")
        self.mean, self.sd, self.q = mean, sd, q

    def sample(self, rng, spec=None):
        """Draw one float."""
        value = rng.gauss(self.mean, self.sd)
        return _quantize(value, self.q) if self.q else value

    def __repr__(self):
        return f"randn({self.mean}, {self.sd})"


class _Spec:
    """What ``sample_from`` functions receive: ``spec.config`` is the config so far."""

    def __init__(self, config):
        self.config = _AttrDict.wrap(config)


class _AttrDict(dict):
    # Ray's sample_from lambdas read ``spec.config.lr``; plain dict access works too.
    @classmethod
    def wrap(cls, value):
        if isinstance(value, dict):
            return cls({k: cls.wrap(v) for k, v in value.items()})
        return value

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Function(Domain):
    """A value computed by ``func(spec)`` (``sample_from``); ``spec.config`` holds the
    config's other values, already resolved."""

    def __init__(self, func: Callable):
        if not callable(func):
            raise TypeError(f"sample_from() needs a callable, got {type(func).__name__}")
        self.func = func

    def sample(self, rng, spec=None):
        """Call the function."""
        try:
            return self.func(_Spec(spec if spec is not None else {}))
        except TypeError:
            # Ray also accepts functions without the spec argument.
            import inspect

            if len(inspect.signature(self.func).parameters) == 0:
                return self.func()
            raise

    def __repr__(self):
        return f"sample_from({getattr(self.func, '__name__', self.func)!r})"


def grid_search(values: Sequence) -> dict:
    """Try every one of ``values``; several grid axes combine as a cartesian product."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"grid_search() needs a list of values, got {type(values).__name__}")
    values = list(values)
    if not values:
        raise ValueError("grid_search() got an empty list: a grid axis needs at least one value")
    return {"grid_search": values}


def choice(categories: Sequence) -> Categorical:
    """Sample one of ``categories`` uniformly."""
    return Categorical(categories)


def uniform(lower: float, upper: float) -> Float:
    """Sample a float uniformly in ``[lower, upper]``."""
    return Float(lower, upper)


def quniform(lower: float, upper: float, q: float) -> Float:
    """Like :func:`uniform`, rounded to a multiple of ``q``."""
    return Float(lower, upper, q=q)


def loguniform(lower: float, upper: float, base: float = 10) -> Float:
    """Sample a float uniformly in log space between ``lower`` and ``upper``."""
    return Float(lower, upper, log=True, base=base)


def qloguniform(lower: float, upper: float, q: float, base: float = 10) -> Float:
    """Like :func:`loguniform`, rounded to a multiple of ``q``."""
    return Float(lower, upper, log=True, q=q, base=base)


def randint(lower: int, upper: int) -> Integer:
    """Sample an int in ``[lower, upper)`` (upper excluded, as in Ray)."""
    return Integer(lower, upper)


def qrandint(lower: int, upper: int, q: int = 1) -> Integer:
    """Sample an int in ``[lower, upper]`` (upper included), a multiple of ``q``."""
    return Integer(lower, upper, q=q, inclusive=True)


def lograndint(lower: int, upper: int) -> Integer:
    """Sample an int in ``[lower, upper)`` uniformly in log space."""
    return Integer(lower, upper, log=True)


def qlograndint(lower: int, upper: int, q: int = 1) -> Integer:
    """Like :func:`lograndint`, upper included, a multiple of ``q``."""
    return Integer(lower, upper, q=q, log=True, inclusive=True)


def randn(mean: float = 0.0, sd: float = 1.0) -> Normal:
    """Sample from a normal distribution."""
    return Normal(mean, sd)


def qrandn(mean: float, sd: float, q: float) -> Normal:
    """Like :func:`randn`, rounded to a multiple of ``q``."""
    return Normal(mean, sd, q)


def sample_from(func: Callable) -> Function:
    """Compute a value with ``func(spec)``; ``spec.config`` is the rest of the config."""
    return Function(func)


# ---------------------------------------------------------------------------------------
# Walking a param_space

def is_grid(value) -> bool:
    """True if ``value`` is a ``grid_search`` axis."""
    return isinstance(value, dict) and len(value) == 1 and "grid_search" in value


def parse_space(space) -> tuple[list, list]:
    """Return ``(grid_axes, domains)``: lists of ``(path, values_or_domain)`` in a stable order.

    Paths are tuples of dict keys / list indices. Nested dicts and lists are walked.
    """
    grids, domains = [], []

    def walk(value, path):
        if is_grid(value):
            values = value["grid_search"]
            if not isinstance(values, (list, tuple)) or not values:
                raise ValueError(f"grid_search at {'/'.join(map(str, path))!r} is empty: a grid "
                                 "axis needs at least one value")
            grids.append((path, list(values)))
        elif isinstance(value, Domain):
            domains.append((path, value))
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, path + (k,))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, path + (i,))

    walk(space, ())
    return grids, domains


def grid_size(space) -> int:
    """The number of points of the space's grid (1 without grid axes)."""
    grids, _ = parse_space(space)
    size = 1
    for _, values in grids:
        size *= len(values)
    return size


def set_path(config, path, value):
    """Set ``config[path[0]][path[1]]... = value`` (in place)."""
    target = config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def get_path(config, path):
    """Read ``config[path[0]][path[1]]...``."""
    for key in path:
        config = config[key]
    return config


def resolve(space, grid_index: int, rng: random.Random, overrides: dict | None = None):
    """Return one concrete config of ``space``: grid point ``grid_index`` (wrapping), every
    Domain sampled with ``rng``, ``overrides`` (flat ``{"a/b": value}`` or nested) applied."""
    grids, domains = parse_space(space)
    config = _copy_structure(space)
    # The last grid axis varies fastest, like itertools.product over the axes in order.
    for path, values in reversed(grids):
        grid_index, pos = divmod(grid_index, len(values))
        set_path(config, path, values[pos])
    flat_overrides = flatten(overrides) if overrides else {}
    functions = []
    for path, domain in domains:
        key = "/".join(map(str, path))
        if key in flat_overrides:
            set_path(config, path, flat_overrides.pop(key))
        elif isinstance(domain, Function):
            functions.append((path, domain))
        else:
            set_path(config, path, domain.sample(rng, config))
    for key, value in flat_overrides.items():
        _set_flat(config, key, value)
    for path, domain in functions:
        set_path(config, path, domain.sample(rng, config))
    return config


def _copy_structure(value):
    # Copy the dicts and lists that values get written into; leaves are shared, which
    # is ~10x cheaper than deepcopy for the 1,000s of configs of a big experiment.
    if isinstance(value, dict):
        if len(value) == 1 and "grid_search" in value:
            return value
        return {k: _copy_structure(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_structure(v) for v in value]
    return value


def _set_flat(config, key: str, value):
    parts = key.split("/")
    target = config
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def flatten(config, prefix: str = "", sep: str = "/") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and not is_grid(value):
            out.update(flatten(value, name + sep, sep))
        else:
            out[name] = value
    return out


def unflatten(flat: dict, sep: str = "/") -> dict:
    """``{"a/b": 1}`` -> ``{"a": {"b": 1}}``."""
    out: dict = {}
    for key, value in flat.items():
        target = out
        parts = key.split(sep)
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return out


def grid_points(space):
    """Iterate over every grid point's values (for tests and summaries)."""
    grids, _ = parse_space(space)
    return itertools.product(*(values for _, values in grids))


def constant_config(space):
    """The space with grid axes and domains removed (only the constant values kept)."""
    if isinstance(space, dict):
        return {k: constant_config(v) for k, v in space.items()
                if not (is_grid(v) or isinstance(v, Domain))}
    return space

