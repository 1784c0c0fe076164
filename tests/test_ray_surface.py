"""Ray's public API surface against miniray (issue #20).

``tests/data/ray_public_names.txt`` is the snapshot of Ray 2.60's public names
(``python tools/ray_surface.py snapshot`` with ``ray`` installed); this test reads
it, so it needs no ``ray``. Each name must exist in miniray under the same path
(``ray.X`` -> ``miniray.X``) or be in ``miniray/ray_exclusions.txt``
with a category and a reason. ``docs/coming-from-ray.md``'s table is generated
from the same data and must be current.
"""

from __future__ import annotations

import importlib.util
import pathlib
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load_tool():
    spec = importlib.util.spec_from_file_location("ray_surface", ROOT / "tools" / "ray_surface.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


surface = _load_tool()


@pytest.fixture(scope="module")
def result():
    return surface.coverage()


def test_every_ray_name_is_in_miniray_or_excluded_with_a_reason(result):
    missing = [f"{module}:{name}" for module, name, status, _, _ in result["rows"]
               if status == "missing"]
    assert not missing, (
        f"{len(missing)} Ray public names are neither in miniray nor excluded; add them, or "
        "list them in miniray/ray_exclusions.txt with a category and reason:\n  "
        + "\n  ".join(missing))


def test_exclusions_are_current(result):
    assert not result["unknown_exclusions"], (
        "exclusions naming no Ray public name (typo, or Ray dropped it): "
        f"{result['unknown_exclusions']}")
    present = sorted(key for key in result["exclusions"]
                     if surface.has_name(*key.split(":", 1)))
    assert not present, (
        "miniray has these excluded names now; delete their exclusion entries "
        f"(then run python tools/ray_surface.py docs):\n  " + "\n  ".join(present))


def test_snapshot_covers_the_issue_modules():
    modules = {module for module, _ in surface.read_snapshot()}
    for expected in ("ray", "ray.util", "ray.exceptions", "ray.runtime_context", "ray.actor",
                     "ray.dag", "ray.util.metrics", "ray.util.queue", "ray.util.state",
                     "ray.tune", "ray.tune.schedulers", "ray.tune.search", "ray.tune.stopper",
                     "ray.tune.logger", "ray.tune.callback", "ray.tune.result",
                     "ray.tune.utils", "ray.train", "ray.train.v2.api.config"):
        assert expected in modules, expected


def test_docs_table_matches_the_lists(result):
    doc = surface.DOC.read_text()
    expected = surface.render_doc(doc, surface.docs_section(result))
    assert doc == expected, ("docs/coming-from-ray.md's surface table is out of date; run "
                             "python tools/ray_surface.py docs")


def test_public_name_rule(tmp_path):
    with_all = types.ModuleType("ray.fake")
    with_all.__all__ = ["b", "a"]
    assert surface.public_names(with_all) == ["a", "b"]

    source = tmp_path / "plain_module.py"
    source.write_text(
        "import os\nimport logging\nfrom typing import Optional, TypeVar\n"
        "from json import JSONDecoder\n"
        "logger = logging.getLogger(__name__)\nT = TypeVar('T')\nCONSTANT = 'x'\n"
        "KEYS = ['a']\n_private = 1\nTYPE_CHECKING = False\n"
        "def helper():\n    pass\n"
        "class Thing:\n    pass\n"
        "Alias = Thing\n")
    spec = importlib.util.spec_from_file_location("plain_module", source)
    plain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plain)
    # Defined here: classes, functions, plain data; not imports, loggers, TypeVars.
    assert surface.public_names(plain) == ["Alias", "CONSTANT", "KEYS", "Thing", "helper"]


def test_exclusion_file_format_is_checked(tmp_path):
    bad = tmp_path / "exclusions.txt"
    bad.write_text("ray:thing | no-such-category | why\n")
    with pytest.raises(ValueError, match="unknown category"):
        surface.read_exclusions(bad)
    bad.write_text("ray:thing | not-yet\n")
    with pytest.raises(ValueError, match="expected 'module:name"):
        surface.read_exclusions(bad)


def test_an_excluded_name_fails_with_its_reason():
    import miniray
    import miniray.util
    from miniray import exceptions

    with pytest.raises(AttributeError, match=r"ray\.data is not in miniray \(ray\.data\)"):
        miniray.data  # noqa: B018
    with pytest.raises(AttributeError, match=r"\(multi-node\): another machine died"):
        exceptions.NodeDiedError  # noqa: B018
    with pytest.raises(AttributeError, match="CUDA-stream futures"):
        miniray.dag.GPUFuture  # noqa: B018
    assert miniray.dag.DAGContext.get_current().max_inflight_executions >= 1
    assert not hasattr(miniray, "data")
    with pytest.raises(AttributeError, match=r"^module 'miniray' has no attribute 'nothing'$"):
        miniray.nothing  # noqa: B018
