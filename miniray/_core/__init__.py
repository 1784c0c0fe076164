"""The runtime's private core: node runtime, workers, object store, protocol.

The hot modules here (listed in setup.py's ``CORE_MODULES``) are compiled by
Cython from these very sources; each extension sits beside its ``.py`` twin.
With ``MINIRAY_PUREPYTHON`` set (non-empty, not ``"0"``) an import hook loads
the ``.py`` twins instead, in the driver and, through the inherited
environment, in every worker. ``COMPILED`` tells which build is running.
"""

import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _pure_python_requested() -> bool:
    return os.environ.get("MINIRAY_PUREPYTHON", "") not in ("", "0")


class _PreferSource:
    """Meta-path finder: ``miniray._core.<name>`` from ``<name>.py``."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if not name.startswith(__name__ + ".") or name.count(".") != 2:
            return None
        source = os.path.join(_HERE, name.rpartition(".")[2] + ".py")
        if not os.path.exists(source):
            return None
        return importlib.util.spec_from_file_location(name, source)


if _pure_python_requested() and not any(f is _PreferSource for f in sys.meta_path):
    sys.meta_path.insert(0, _PreferSource)


def _is_compiled() -> bool:
    from . import runtime

    return not runtime.__file__.endswith(".py")
