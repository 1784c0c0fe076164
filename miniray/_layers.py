"""Wires the core to the layers above it, once, when ``miniray`` loads.

``miniray._core`` imports nothing above it (tests/test_architecture.py); where
it must call up (start a node on first use, open the dashboard, turn placement
options into resources, load the DAG layer, ...) it calls a hook in
``miniray/_core/hooks.py``. This module installs them. Each loads what it
calls on first use, so ``import miniray`` stays light.
"""

from __future__ import annotations

import importlib

from ._core import hooks as _hooks


def _module(name: str):
    return importlib.import_module(name)


def _auto_init() -> None:
    _module("miniray.api")._auto_init()


def _get_blocking(refs, timeout=None):
    return _module("miniray.api")._get_blocking(refs, timeout)


def _start_dashboard(runtime, include_dashboard, host, port):
    return _module("miniray.api")._maybe_start_dashboard(runtime, include_dashboard, host, port)


def _requested_group(options, what):
    return _module("miniray.util.scheduling_strategies").requested_group(options, what)


def _placement_resources(resources, group, index):
    return _module("miniray.util.scheduling_strategies").placement_resources(resources, group,
                                                                             index)


def _placement_group(pg_id, bundle_specs):
    return _module("miniray.util.placement_group").PlacementGroup(pg_id, bundle_specs)


def _dag_nodes():
    return _module("miniray.dag.nodes")


def _take_progress_line(line) -> bool:
    return _module("miniray.experimental.tqdm_ray")._take_line(line)


def _worker_logging() -> None:
    _module("miniray._logging_config").apply_from_env()


def _breakpoint_hook(frame) -> None:
    _module("miniray.util.pdb")._breakpointhook(frame)


_hooks.auto_init = _auto_init
_hooks.get_blocking = _get_blocking
_hooks.start_dashboard = _start_dashboard
_hooks.requested_group = _requested_group
_hooks.placement_resources = _placement_resources
_hooks.placement_group = _placement_group
_hooks.dag_nodes = _dag_nodes
_hooks.take_progress_line = _take_progress_line
_hooks.worker_logging = _worker_logging
_hooks.breakpoint_hook = _breakpoint_hook
