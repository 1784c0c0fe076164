"""Entry point of worker processes (``python -m miniray._core.worker_main``).

A separate module so that ``miniray._core.worker`` is imported under its own
name, not as ``__main__`` (its classes must be the ones the API raises).
"""

from miniray._core.worker import main

if __name__ == "__main__":
    import os

    if os.environ.get("MINIRAY_LOGGING_CONFIG"):  # init(logging_config=...) in the driver
        from miniray._logging_config import apply_from_env

        apply_from_env()
    if "PYTHONBREAKPOINT" not in os.environ:
        import sys

        def _breakpoint(*args, **kwargs):
            # breakpoint() in a task: no terminal here, so a remote pdb (as in Ray).
            from miniray.util.pdb import _breakpointhook

            _breakpointhook(sys._getframe(1))

        sys.breakpointhook = _breakpoint
    main()
