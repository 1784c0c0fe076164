"""The runtime's private core, one folder per process or part (docs/architecture.md):

- ``node/``: the node runtime (``NodeRuntime`` and its components), its event bus;
- ``worker/``: the worker process; ``driver/``: the driver's side, sessions, the head;
- ``store/``: shared memory, the object store, serialization, spilling;
- here, shared by all of them: protocol, refs, client base, remote functions and
  actor handles, hooks (how the layers above register themselves).

Nothing here imports the public API or the libraries above (tests/test_architecture.py).

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
    """Meta-path finder: ``miniray._core.<pkg>.<name>`` from ``<pkg>/<name>.py``."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if not name.startswith(__name__ + "."):
            return None
        # A subpackage (a folder) is not matched: the normal finder loads it.
        source = os.path.join(_HERE, *name[len(__name__) + 1:].split(".")) + ".py"
        if not os.path.exists(source):
            return None
        return importlib.util.spec_from_file_location(name, source)


if _pure_python_requested() and not any(f is _PreferSource for f in sys.meta_path):
    sys.meta_path.insert(0, _PreferSource)


def _is_compiled() -> bool:
    from .node import runtime

    return not runtime.__file__.endswith(".py")


_STALE_CHECKED_ENV = "MINIRAY_STALE_CHECKED"


def _stale_sources(core_dir: str, speedups_dir: str, suffix: str) -> list:
    """Sources (``.py``/``.pxd``) newer than the extension built from them.

    Every folder under ``core_dir`` counts: the compiled modules sit in subpackages.
    """
    pairs = [(folder, name[: -len(suffix)], name) for folder, _dirs, names in os.walk(core_dir)
             for name in names if name.endswith(suffix)]
    pairs += [(speedups_dir, name[1: -len(suffix) - 2], name) for name in os.listdir(speedups_dir)
              if name.startswith("_") and name.endswith("_c" + suffix)]
    stale = []
    for folder, stem, extension in pairs:
        built = os.stat(os.path.join(folder, extension)).st_mtime
        for source in (stem + ".py", stem + ".pxd"):
            path = os.path.join(folder, source)
            # Seconds of slack: a wheel unpacks its files in no set order.
            if os.path.exists(path) and os.stat(path).st_mtime > built + 2.0:
                stale.append(path)
    return sorted(stale)


def _warn_if_extensions_are_stale() -> None:
    """Warn when a source is newer than the extension compiled from it.

    In an editable install the ``.so`` beside an edited ``.py`` (or ``.pxd``)
    keeps loading silently, so an edit seems to do nothing. The check runs
    once per process tree: workers inherit the marker through the environment.
    """
    import importlib.machinery

    os.environ[_STALE_CHECKED_ENV] = "1"
    root = os.path.dirname(os.path.dirname(_HERE))
    stale = _stale_sources(_HERE, os.path.join(os.path.dirname(_HERE), "_speedups"),
                           importlib.machinery.EXTENSION_SUFFIXES[0])
    if stale:
        import warnings

        names = ", ".join(os.path.relpath(path, root) for path in stale)
        warnings.warn(
            f"miniray: {names} changed after the compiled extension was built, and the old "
            "extension is what runs. Rebuild it with `python setup.py build_ext --inplace` "
            "(or `pip install -e .`), or set MINIRAY_PUREPYTHON=1 to run the sources.",
            RuntimeWarning, stacklevel=3)


if not _pure_python_requested() and not os.environ.get(_STALE_CHECKED_ENV):
    try:
        _warn_if_extensions_are_stale()
    except OSError:  # a read-only or odd install layout: nothing to compare
        pass
