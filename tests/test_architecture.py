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


# -- the node's components own their state -------------------------------------------
# NodeRuntime is a chain of component classes, one module each in _core/node/
# (docs/architecture.md, "The node's components"). Each component declares the
# state it owns as cdef attributes in its own .pxd and is the only one that
# assigns it: a write to another component's state is a call on that component.
# Compiled, the node has no instance __dict__, so an undeclared attribute
# cannot be set at all; this check says which .pxd it belongs in, without a build.

NODE_DIR = os.path.join(PACKAGE_DIR, "_core", "node")
NODE_CHAIN = ("core", "objects", "worker_pool", "scheduler", "tasks", "placement_groups",
              "actors", "streams", "drivers", "runtime")


def _pxd_class(module: str) -> tuple[str, str | None, list[str]]:
    """The component's class, its base and the attributes its .pxd declares."""
    import re

    with open(os.path.join(NODE_DIR, module + ".pxd"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    name = base = None
    declared: list[str] = []
    for line in lines:
        header = re.match(r"cdef class (\w+)(?:\((\w+)\))?:", line)
        if header:
            assert name is None, f"{module}.pxd declares more than one class"
            name, base = header.groups()
            continue
        if name is None or not line.startswith("    ") or line.strip().startswith("#"):
            continue
        attribute = re.match(r"\s+cdef\s+(?:public\s+|readonly\s+)?[\w.]+\s+([\w\s,]+)$", line)
        if attribute:
            declared += [n.strip() for n in attribute.group(1).split(",")]
    assert name is not None, f"{module}.pxd declares no cdef class"
    return name, base, declared


def _self_targets(target, names: set[str]):
    if isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            yield from _self_targets(element, names)
    elif isinstance(target, ast.Starred):
        yield from _self_targets(target.value, names)
    elif (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
          and target.value.id in names):
        yield target.attr


def _nodes_outside_classes(node):
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, ast.ClassDef):
            yield child
            yield from _nodes_outside_classes(child)


def _write_targets(node) -> list:
    if isinstance(node, ast.Assign):
        return node.targets
    if isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.NamedExpr)):
        return [node.target]
    if isinstance(node, ast.Delete):
        return node.targets
    if isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
        return [node.target]
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return [item.optional_vars for item in node.items if item.optional_vars]
    return []


def _assigned_on_self(source: str, class_name: str) -> dict[str, list[str]]:
    """Attribute -> where the class's methods assign, augment or delete it on the node.

    The node is the method's ``self`` and any local it is copied to
    (``runtime = self``), which the methods of a class nested in the method (a
    Protocol) use: their own ``self`` is not the node.
    """
    tree = ast.parse(source)
    found: dict[str, list[str]] = {}
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef) or cls.name != class_name:
            continue
        for method in cls.body:
            if not isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)) or not method.args.args:
                continue
            self_name = method.args.args[0].arg
            outside = list(_nodes_outside_classes(method))
            aliases = {target.id for node in outside if isinstance(node, ast.Assign)
                       and isinstance(node.value, ast.Name) and node.value.id == self_name
                       for target in node.targets if isinstance(target, ast.Name)}
            outside_ids = {id(node) for node in outside}
            for node in ast.walk(method):
                names = {self_name} | aliases if id(node) in outside_ids else aliases
                for target in _write_targets(node):
                    for attribute in _self_targets(target, names):
                        found.setdefault(attribute, []).append(f"{method.name}:{node.lineno}")
    return found


def test_node_components_form_one_chain():
    previous = None
    for module in NODE_CHAIN:
        name, base, _declared = _pxd_class(module)
        if previous is not None:
            assert base == previous, f"{module}.pxd: {name} derives from {base}, not {previous}"
        previous = name


def test_each_node_component_assigns_only_its_own_state():
    # Reads of another component's state are fine; a write to it is not: the
    # owner gets a small method for it, so the state's invariants live in one module.
    misplaced = []
    for module in NODE_CHAIN:
        name, _base, declared = _pxd_class(module)
        with open(os.path.join(NODE_DIR, module + ".py"), encoding="utf-8") as f:
            source = f.read()
        assigned = _assigned_on_self(source, name)
        assert name in source, f"{module}.py defines no class {name}"
        for attribute, where in sorted(assigned.items()):
            if attribute not in declared:
                misplaced.append(f"{module}.py {name} assigns self.{attribute} ({', '.join(where)})"
                                 f" not declared in {module}.pxd")
    assert not misplaced, ("node components assign state they do not own (declare it in the "
                           "component's own .pxd, or call the owner):\n  " + "\n  ".join(misplaced))


def test_node_state_is_declared_once_and_without_instance_dict():
    seen: dict[str, str] = {}
    twice = []
    for module in NODE_CHAIN:
        _name, _base, declared = _pxd_class(module)
        assert "__dict__" not in declared, (
            f"{module}.pxd gives the node an instance __dict__: undeclared state would land "
            "there unseen, and every cpdef call between components checks for an override")
        for attribute in declared:
            if attribute in seen:
                twice.append(f"{attribute}: {seen[attribute]}.pxd and {module}.pxd")
            seen[attribute] = module
    assert not twice, "node state declared more than once:\n  " + "\n  ".join(twice)


def test_the_ownership_check_sees_every_kind_of_write():
    source = (
        "class C:\n"
        "    def m(me, x):\n"
        "        me.a = 1\n"
        "        me.b += 1\n"
        "        del me.c\n"
        "        me.d, (me.e, *me.f) = x\n"
        "        me.g: int = 2\n"
        "        for me.h in x: pass\n"
        "        me.read.append(me.other)\n"
        "        def closure():\n"
        "            me.i = 3\n"
        "        node = me\n"
        "        class Nested:\n"
        "            def n(self):\n"
        "                self.j = 4\n"
        "                node.k += 5\n")
    assert sorted(_assigned_on_self(source, "C")) == [
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "k"]
