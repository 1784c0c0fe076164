"""Entry point of worker processes (``python -m miniray._core.worker.worker_main``).

A separate module so that ``miniray._core.worker.worker`` is imported under its own
name, not as ``__main__`` (its classes must be the ones the API raises).
"""

from miniray._core.worker.worker import main

if __name__ == "__main__":
    import os

    if os.environ.get("MINIRAY_LOGGING_CONFIG"):  # init(logging_config=...) in the driver
        from miniray._core import hooks

        hooks.worker_logging()
    if "PYTHONBREAKPOINT" not in os.environ:
        import sys

        def _breakpoint(*args, **kwargs):
            # breakpoint() in a task: no terminal here, so a remote pdb (as in Ray).
            from miniray._core import hooks

            hooks.breakpoint_hook(sys._getframe(1))

        sys.breakpointhook = _breakpoint
    main()
