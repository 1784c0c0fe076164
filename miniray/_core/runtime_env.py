"""``init(runtime_env=...)`` on the embedded node.

Workers run in the driver's Python environment, so of Ray's runtime
environments the node supports what does not need another one:
``env_vars`` (set in every worker) and ``worker_process_setup_hook`` (run in
every worker before it takes work, e.g. to import heavy modules or configure
logging once per process).
"""

from __future__ import annotations

import os

SUPPORTED = ("env_vars", "worker_process_setup_hook")
HOOK_ENV = "MINIRAY_SETUP_HOOK"  # path of the serialized hook, set in workers' environment


def parse(runtime_env) -> tuple[dict, bytes | None]:
    """Check ``runtime_env``; returns (env_vars, serialized setup hook or None)."""
    if runtime_env is None:
        return {}, None
    if not isinstance(runtime_env, dict):
        raise TypeError(f"runtime_env must be a dict, got {type(runtime_env).__name__}")
    unsupported = sorted(set(runtime_env) - set(SUPPORTED))
    if unsupported:
        raise ValueError(
            f"runtime_env {unsupported} is not supported by a miniray node: its workers run "
            "in the driver's Python environment, so install packages into it (for per-job "
            "environments run on Ray clusters through miniray.cluster). Supported keys: "
            f"{', '.join(SUPPORTED)}.")
    env_vars = runtime_env.get("env_vars") or {}
    if not isinstance(env_vars, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()):
        raise TypeError("runtime_env['env_vars'] must be a dict of str to str, "
                        "e.g. {'OMP_NUM_THREADS': '4'}")
    hook = runtime_env.get("worker_process_setup_hook")
    if hook is None:
        return dict(env_vars), None
    if isinstance(hook, str):
        module, _, name = hook.rpartition(".")
        if not module or not name:
            raise ValueError("runtime_env['worker_process_setup_hook'] must be a callable or "
                             f"a 'module.function' path, got {hook!r}")
        return dict(env_vars), b"S" + hook.encode()
    if not callable(hook):
        raise TypeError("runtime_env['worker_process_setup_hook'] must be a callable or a "
                        f"'module.function' path, got {type(hook).__name__}")
    import cloudpickle

    try:
        blob = cloudpickle.dumps(hook)
    except Exception as exc:
        raise TypeError(f"runtime_env['worker_process_setup_hook'] cannot be pickled "
                        f"({type(exc).__name__}: {exc}); define it at module level or pass "
                        "its 'module.function' path") from exc
    return dict(env_vars), b"P" + blob


def task_env(runtime_env, what: str) -> dict | None:
    """The ``runtime_env`` option of one task or actor: its ``env_vars`` (or None).

    They are set in the worker for the task's run (then restored: the worker
    is reused), or for the actor's whole life, on top of ``init()``'s."""
    if runtime_env is None:
        return None
    if isinstance(runtime_env, dict) and "worker_process_setup_hook" in runtime_env:
        raise ValueError(
            f"runtime_env of {what}: worker_process_setup_hook runs once per worker "
            "process, so it is an init(runtime_env=...) setting, not a per-task one.")
    env_vars, _ = parse(runtime_env)
    return env_vars or None


def run_setup_hook():
    """In a worker, before it serves: ``None``, or the serialized
    ``RuntimeEnvSetupError`` to report (the traceback goes to the worker's
    stderr, which the driver echoes)."""
    path = os.environ.get(HOOK_ENV)
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            blob = f.read()
        if blob[:1] == b"S":
            import importlib

            module, _, name = blob[1:].decode().rpartition(".")
            hook = getattr(importlib.import_module(module), name)
        else:
            import cloudpickle

            hook = cloudpickle.loads(blob[1:])
        hook()
    except BaseException as exc:  # noqa: BLE001 - any failure is reported, not raised
        import traceback

        from ..exceptions import RuntimeEnvSetupError
        from .store.serialization import serialize

        traceback.print_exc()
        error = RuntimeEnvSetupError(
            f"runtime_env worker_process_setup_hook failed in worker pid {os.getpid()}: "
            f"{type(exc).__name__}: {exc}")
        return serialize(error).to_inline()
    return None
