"""The shape of ``miniray._core``: imports point one way, and never in a circle.

``_core`` is the bottom of the package: the public API and the libraries
(``miniray.api``, ``util``, ``tune``, ``train``, ``dashboard``, ``cluster``,
``dag``, ...) are built on it, so nothing in ``_core`` may import them; where
the core must call up it uses a registration hook (``_core/hooks.py``).
Below ``_core`` sit only modules that import nothing from miniray above them
(``ALLOWED_BELOW``), which this test checks too.

Inside ``_core`` the import graph has no cycle, counting every import in a
module (function-local ones included: a lazy import still makes the two
modules depend on each other). See docs/architecture.md for the layers.
"""

from __future__ import annotations

import ast
import os

import miniray

PACKAGE_DIR = os.path.dirname(os.path.abspath(miniray.__file__))
CORE = "miniray._core"
# Modules outside _core that _core may import: they import nothing of miniray
# but each other (checked below), so they sit under _core. ``_surface`` says
# which Ray names miniray leaves out (the exceptions module asks it).
ALLOWED_BELOW = ("miniray.exceptions", "miniray._version", "miniray._speedups",
                 "miniray._surface")


def _module_name(path: str) -> str:
    relative = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[: -len(".py")]
    parts = relative.split(os.sep)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules_under(package: str) -> dict[str, str]:
    root = os.path.join(os.path.dirname(PACKAGE_DIR), *package.split("."))
    found = {}
    if os.path.isfile(root + ".py"):
        return {package: root + ".py"}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                found[_module_name(path)] = path
    return found


def _imports(name: str, path: str) -> set[str]:
    """Every miniray module ``name`` imports, anywhere in its source."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # `from . import x` / `from .pkg import mod` import submodules too.
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(node.args[0].value)
    return {m for m in found if m == "miniray" or m.startswith("miniray.")}


def _resolve(imported: str, known: dict[str, str]) -> str | None:
    """The module an imported name lives in (``a.b.C`` -> ``a.b``), if known."""
    while imported and imported not in known:
        imported = imported.rpartition(".")[0]
    return imported or None


def _core_graph() -> dict[str, set[str]]:
    modules = _modules_under(CORE)
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(name, path):
            if imported == CORE or not imported.startswith(CORE + "."):
                continue
            target = _resolve(imported, modules)
            if target and target != name and target != CORE:
                targets.add(target)
        graph[name] = targets
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node):
        color[node] = GREY
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if color.get(nxt) == GREY:
                return stack[stack.index(nxt):] + [nxt]
            if color.get(nxt) == WHITE:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        color[node] = BLACK
        return None

    for node in sorted(graph):
        if color[node] == WHITE:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def _is_below(module: str) -> bool:
    return any(module == allowed or module.startswith(allowed + ".") for allowed in ALLOWED_BELOW)


def test_core_imports_nothing_above_it():
    upward = []
    for name, path in sorted(_modules_under(CORE).items()):
        for imported in sorted(_imports(name, path)):
            if imported == CORE or imported.startswith(CORE + ".") or _is_below(imported):
                continue
            upward.append(f"{name} imports {imported}")
    assert not upward, ("miniray._core imports modules above it (use a hook in "
                        "miniray/_core/hooks.py or move the piece into _core):\n  "
                        + "\n  ".join(upward))


def test_modules_below_core_import_only_each_other():
    upward = []
    for allowed in ALLOWED_BELOW:
        for name, path in sorted(_modules_under(allowed).items()):
            for imported in sorted(_imports(name, path)):
                if not _is_below(imported):
                    upward.append(f"{name} imports {imported}")
    assert not upward, "modules allowed below _core import upward:\n  " + "\n  ".join(upward)


def test_no_import_cycle_in_core():
    graph = _core_graph()
    assert len(graph) > 10, graph  # the walk found the package
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle in miniray._core: " + " -> ".join(cycle)


def test_the_checks_see_cycles_and_local_imports(tmp_path):
    # The checker itself: a function-local import counts, and a cycle is found.
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from miniray.api import get\n    from . import sibling\n")
    assert _imports("miniray._core.m", str(source)) == {
        "miniray.api", "miniray.api.get", "miniray._core", "miniray._core.sibling"}
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_upward_hook_is_installed():
    # The core calls up only through hooks that miniray/_layers.py installs when
    # the package loads; one left unset would fail only when first used.
    from miniray._core import hooks

    names = ("auto_init", "get_blocking", "start_dashboard", "requested_group",
             "placement_resources", "placement_group", "dag_nodes", "take_progress_line",
             "worker_logging", "breakpoint_hook")
    with open(hooks.__file__, encoding="utf-8") as f:
        source = f.read()
    declared = [line.split(" = ")[0] for line in source.splitlines()
                if line.endswith(" = None") or " = None  # " in line]
    assert set(names) <= set(declared), declared
    unset = [name for name in declared if name in names and not callable(getattr(hooks, name))]
    assert not unset, f"hooks not installed by miniray/_layers.py: {unset}"
