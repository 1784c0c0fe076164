"""Extension points the core calls into, installed by optional sub-libraries.

Kept in a tiny pure-Python module so the compiled core reads one global per
call and nothing heavy is imported unless a sub-library installs itself.

``router``: when set (by :mod:`miniray.cluster`), every ``f.remote()`` and
``Actor.remote()`` in the driver first asks it where to go::

    router.submit_task(remote_function, args, kwargs, options) -> ObjectRef | list | None
    router.create_actor(actor_class, args, kwargs, options) -> handle

Returning ``NotImplemented`` means "run on the local node as usual". The
options dict is the merged one (decorator + ``.options()``) and may contain
``cluster`` and ``tags``.

``shutdown_callbacks``: called (newest first) at the start of ``shutdown()``.

``progress_line(line)``: worker output lines that are JSON with :data:`PROGRESS_MAGIC`
(``miniray.experimental.tqdm_ray`` bars) go to the driver's bar manager instead
of the terminal; it returns True for a line it took.
"""

router = None
shutdown_callbacks: list = []

# -- Calls up into the layers above the core --------------------------------------
# Installed by miniray/_layers.py when the package loads (``import miniray``
# runs before any of the core, in the driver and in every worker). The core
# calls these instead of importing the API or the libraries, so its imports
# point one way (tests/test_architecture.py).
auto_init = None  # () -> None: start a local node for a call made before init()
get_blocking = None  # (refs, timeout=None) -> value(s): ``get`` that blocks wherever called
start_dashboard = None  # (runtime, include_dashboard, host, port) -> url or None
requested_group = None  # (options, what) -> (PlacementGroup or None, bundle index, capture)
placement_resources = None  # (resources, group, index) -> resources renamed into the group
placement_group = None  # (pg_id, bundle_specs) -> a PlacementGroup handle
dag_nodes = None  # () -> the miniray.dag.nodes module (the DAG layer loads on first bind())
take_progress_line = None  # (line) -> bool: a tqdm_ray bar line, taken by the bar manager
worker_logging = None  # () -> None: a worker applies init(logging_config=...)
breakpoint_hook = None  # (frame) -> None: breakpoint() in a task opens a remote pdb
# Set in a Ray worker (miniray.cluster._in_ray): get/put/wait/kill/get_actor
# answered by that Ray cluster instead of a miniray node.
ray_worker = None

ROUTING_OPTIONS = ("cluster", "tags")


def needs_router(options) -> bool:
    return bool(options) and ("cluster" in options or "tags" in options)


def no_router_error(what: str) -> ValueError:
    return ValueError(
        f"{what} asks for cluster=/tags= placement, but no cluster control plane is "
        "connected. Call miniray.init(clusters='clusters.yaml') or "
        "miniray.cluster.connect(...) first, or drop the cluster/tags options.")


# Ray's token, so bars written by Ray's own tqdm_ray are understood too.
PROGRESS_MAGIC = b"__ray_tqdm_magic_token__"


def progress_line(line: bytes) -> bool:
    if not line.startswith(b"{") or PROGRESS_MAGIC not in line:
        return False
    # The renderer sits above the core; it loads with the first bar.
    return take_progress_line(line)
