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
