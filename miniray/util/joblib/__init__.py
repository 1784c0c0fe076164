"""``miniray.util.joblib``: run joblib (and scikit-learn's ``n_jobs``) on miniray.

::

    import joblib
    from miniray.util.joblib import register_ray

    register_ray()
    with joblib.parallel_backend("ray"):
        scores = cross_val_score(model, X, y, cv=5, n_jobs=-1)

Each batch of joblib calls runs as a miniray task on the node's workers;
``n_jobs=-1`` means the node's CPUs. ``miniray.init()`` is called with its
defaults when no node is running yet (as Ray's backend does).
"""

from __future__ import annotations

__all__ = ["register_ray"]


def register_ray() -> None:
    """Register the ``"ray"`` joblib backend (joblib's ``register_parallel_backend``)."""
    try:
        from joblib.parallel import register_parallel_backend
    except ImportError as exc:
        raise ImportError(
            "miniray.util.joblib needs joblib: pip install joblib (or scikit-learn, "
            "which brings it)") from exc
    from .backend import RayBackend

    register_parallel_backend("ray", RayBackend)
