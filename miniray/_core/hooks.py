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
    import importlib

    # The renderer sits above the core; it loads with the first bar.
    return importlib.import_module("miniray.experimental.tqdm_ray")._take_line(line)
