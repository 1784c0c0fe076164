"""Build the Cython twins of miniray's pure-Python hot paths.

Metadata lives in setup.cfg; this file only knows about extensions.

Each name in ``COMPILED_MODULES`` is a pair ``miniray/_speedups/<name>.py`` +
``<name>.pxd``, written in Cython's pure Python mode.  The build copies the
pair into the build temp directory as ``_<name>_c.py`` / ``_<name>_c.pxd``
and compiles it as ``miniray._speedups._<name>_c``: one source of truth, and
the compiled module does not shadow the pure one.  To compile a new module,
add its ``.py`` + ``.pxd`` and its name to the list.

A compiler failure fails the install, with a message saying how to get a
pure-Python install instead: set ``MINIRAY_PUREPYTHON=1`` (any non-empty value
but ``0``), and no extension is built at all.
"""

import os
import shutil
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

COMPILED_MODULES = ["allocator"]

# Core modules compiled under their own names: the extension sits beside its
# .py source, which stays the pure twin (picked by MINIRAY_PUREPYTHON through
# an import hook in miniray/_core/__init__.py). Measured: driver-side
# put/get/submit 1.3-2x faster, batched throughput up. runtime.py also has a
# .pxd making the node's per-task classes extension types (node CPU per task
# -18 to -28 %).
CORE_PACKAGE = "miniray._core"
CORE_DIR = os.path.join("miniray", "_core")
# Dotted names under miniray._core (subpackages are folders).
# The node's components form one chain of cdef classes (node/core.py ... node/runtime.py):
# each base must be compiled for the class above it to be.
CORE_MODULES = ["node.state", "node.core", "node.objects", "node.worker_pool", "node.scheduler",
                "node.tasks", "node.placement_groups", "node.actors", "node.streams", "node.drivers",
                "node.runtime", "node.events", "worker.worker", "driver.driver", "client", "refs",
                "remote_function", "actor", "store.serialization"]

SPEEDUPS_PACKAGE = "miniray._speedups"
SPEEDUPS_DIR = os.path.join("miniray", "_speedups")
PUREPYTHON_ENV = "MINIRAY_PUREPYTHON"

CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
}

CORE_DIRECTIVES = {
    "language_level": 3,
    # Compiled functions keep Python's introspection (inspect, signatures).
    "binding": True,
}


def pure_python_requested():
    return os.environ.get(PUREPYTHON_ENV, "") not in ("", "0")


def compiled_name(name):
    return f"_{name}_c"


def compile_args():
    if sys.platform == "win32":
        return ["/O2"]
    return ["-O2"]


class CythonizeAndBuild(build_ext):
    """Copy each pure-mode pair under its compiled name, cythonize, compile.

    Cythonizing here, not when setup.py is imported, keeps the generated
    ``.c`` files in the build temp directory, out of the source tree, and
    lets a pure-Python install run without Cython.
    """

    def finalize_options(self):
        super().finalize_options()
        # pip gives no way to pass -j: compile the C files on every core.
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def run(self):
        if self.extensions:
            self._cythonize(self.extensions)
        super().run()

    def build_extension(self, extension):
        try:
            super().build_extension(extension)
        except Exception as error:  # compiler or linker failure
            self._fail(f"compiling {extension.name} failed: {error}")

    def _cythonize(self, extensions):
        try:
            from Cython.Build import cythonize
        except ImportError:
            self._fail("Cython>=3.0 is not installed in the build environment")
        source_root = os.path.join(self.build_temp, "cython_sources")
        for extension in extensions:
            extension.sources = [
                self._copy_under_compiled_name(source, extension.name, source_root)
                for source in extension.sources
            ]
        # Typed hot paths get the fast directives; core modules are ordinary
        # Python and keep Python semantics (negative indices, checked bounds).
        groups = [
            ([e for e in extensions if not e.name.startswith(CORE_PACKAGE + ".")],
             CYTHON_DIRECTIVES),
            ([e for e in extensions if e.name.startswith(CORE_PACKAGE + ".")],
             CORE_DIRECTIVES),
        ]
        for group, directives in groups:
            if not group:
                continue
            try:
                cythonized = cythonize(
                    group,
                    compiler_directives=directives,
                    # Cython finds a module's .pxd by its dotted name on this path.
                    include_path=[source_root],
                    quiet=True,
                    nthreads=os.cpu_count() or 1,
                )
            except Exception as error:  # Cython prints the details above
                self._fail(f"cythonizing failed: {error}")
            # cythonize returns new Extension objects, but setuptools already
            # prepared ours in finalize_options; keep ours, take the C sources.
            for extension, generated in zip(group, cythonized):
                extension.sources = generated.sources

    @staticmethod
    def _copy_under_compiled_name(source, module_name, source_root):
        """Copy ``<name>.py`` and ``<name>.pxd`` to the module's path."""
        target = os.path.join(source_root, *module_name.split(".")) + ".py"
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target)
        pxd = source[: -len(".py")] + ".pxd"
        if os.path.exists(pxd):
            shutil.copyfile(pxd, target[: -len(".py")] + ".pxd")
        return target

    def _fail(self, reason):
        sys.exit(
            f"\nerror: miniray: {reason}\n"
            "miniray's compiled speedups could not be built. Install a C "
            "compiler and the Python headers, or set "
            f"{PUREPYTHON_ENV}=1 to install the pure-Python build.\n"
        )


def extensions():
    if pure_python_requested():
        return []
    speedups = [
        Extension(
            f"{SPEEDUPS_PACKAGE}.{compiled_name(name)}",
            sources=[os.path.join(SPEEDUPS_DIR, f"{name}.py")],
            extra_compile_args=compile_args(),
        )
        for name in COMPILED_MODULES
    ]
    core = [
        Extension(
            f"{CORE_PACKAGE}.{name}",
            sources=[os.path.join(CORE_DIR, *name.split(".")) + ".py"],
            extra_compile_args=compile_args(),
        )
        for name in CORE_MODULES
    ]
    return speedups + core


setup(ext_modules=extensions(), cmdclass={"build_ext": CythonizeAndBuild})
